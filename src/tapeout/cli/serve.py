"""`tapeout serve`: simulate serving a model on chips (latency percentiles, throughput, goodput under
SLOs, energy and cost per token), sweep request rates, or find the highest rate meeting the SLO."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import POWER_LIMIT, above, at_least, console, output_path, power_limited, print_json, si


def _parse_pd(s: str | None) -> tuple[int, int] | None:
    if s is None:
        return None
    from ..errors import TapeoutError

    try:
        p, d = (int(v) for v in s.split(":"))
    except ValueError:
        raise TapeoutError(f"--disaggregate {s!r}: write PREFILL_CHIPS:DECODE_CHIPS, e.g. 4:4") from None
    if p < 1 or d < 1:
        raise TapeoutError(f"--disaggregate {s!r}: both sides need >= 1 chip")
    return p, d


def _rates(s: str | None) -> list[float] | None:
    if s is None:
        return None
    from ..errors import TapeoutError

    try:
        out = [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise TapeoutError(f"--rates {s!r}: write comma-separated requests/s, e.g. 1,2,4,8") from None
    if not out or not min(out) > 0:
        raise TapeoutError(f"--rates {s!r}: rates must be > 0")
    return out


def _ms(x: float) -> str:
    return "-" if x != x else (f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s")


def _summary(r) -> Table:
    m, s = r.metrics, r.settings
    t = Table(title=f"{s['model']} on {s['chips']}x {s['chip']}  tp={s['tp']} pp={s['pp']} ep={s['ep']}  "
                    f"{s['scheduler']}  {s['arrival']}" + (f" {s['rate']:g} req/s" if s["rate"] else ""))
    t.add_column("metric")
    for col in ("mean", "p50", "p90", "p99"):
        t.add_column(col, justify="right")
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end-to-end")):
        t.add_row(label, *(_ms(m[key][q]) for q in ("mean", "p50", "p90", "p99")))
    console.print(t)
    slo = m["slo"]
    lines = [
        f"requests {m['requests']}   simulated {m['makespan_s']:.1f} s   preemptions {m['preemptions']}",
        f"throughput {si(m['throughput_tok_s'], 'tok/s')} ({si(m['throughput_tok_s_per_chip'], 'tok/s')} per chip), "
        f"{m['request_rate']:.3g} req/s, utilization {m['utilization']:.0%}",
        f"goodput (TTFT <= {slo['ttft_s']:g} s, TPOT <= {slo['tpot_s'] * 1e3:g} ms): {m['goodput_req_s']:.3g} req/s, "
        f"{si(m['goodput_tok_s'], 'tok/s')}, {m['slo_attainment']:.1%} of requests",
        f"energy {m['energy_j_per_token']:.3g} J/token, {m['power_w_per_chip']:.0f} W per chip",
        "cost " + (f"${m['cost_usd_per_mtok']:.3g} per million output tokens "
                   f"(${m['cost_usd_per_hour_per_chip']:.2f}/chip-hour, {m['cost_basis']})"
                   if m["cost_usd_per_mtok"] is not None else f"- ({m['cost_basis']})"),
    ]
    if s.get("speculative"):
        lines.append(f"speculative {s['speculative']}: {s['tokens_per_step']:.3g} tokens per sequence per decode step "
                     f"expected, {m['tokens_per_decode_step']:.3g} simulated")
    if m.get("prefix_hit_rate") is not None:
        lines.append(f"prefix cache hit rate {m['prefix_hit_rate']:.1%}")
    for k, mem in r.memory.items():
        lines.append(f"KV cache{'' if k == 'all' else ' (' + k + ')'}: {mem['kv_tokens']:,} tokens "
                     f"({mem['kv_blocks']:,} blocks), weights {mem['weights_bytes_per_chip'] / 2**30:.1f} GiB per chip")
        if "kv_offload" in mem:
            lines.append(f"  of which {mem['kv_offload_tokens']:,} tokens offloaded to {mem['kv_offload']} "
                         f"({si(mem['kv_offload_bandwidth_bytes_per_s'], 'B/s')} per chip); streaming them took "
                         f"{m['kv_offload_s']:.3g} s of step time")
    for line in lines:
        console.print(line)


def _write_csv(results, path: Path) -> None:
    rows = [r.row() for r in results]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _progress(total: int, label: str):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # on stderr, so --json output stays clean
    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)
    task = prog.add_task(label, total=total)
    return prog, task


def serve_cmd(
    model: str = typer.Option(..., "--model", "-m", help="shipped model name or config.json path"),
    chip: str = typer.Option("h100-sxm", "--chip", "-c", help="chip preset or .toml path"),
    chips: Optional[int] = typer.Option(None, "--chips", help="chips in all (default tp x pp x ep): data-parallel replicas"),
    tp: int = typer.Option(1, "--tp", help="tensor parallel"),
    pp: int = typer.Option(1, "--pp", help="pipeline parallel (stages)"),
    ep: int = typer.Option(1, "--ep", help="expert parallel (MoE; attention data-parallel over ep groups)"),
    rate: Optional[float] = typer.Option(None, "--rate", "-r", help="request rate (requests/s)"),
    duration: float = typer.Option(600.0, "--duration", help="seconds of arrivals (rate x duration requests)"),
    requests: Optional[int] = typer.Option(None, "--requests", "-n", help="number of requests (overrides --duration)"),
    offline: bool = typer.Option(False, "--offline", help="every request at t=0 (MLPerf Offline)"),
    workload: str = typer.Option("chat", "--workload", "-w", help="chat | rag | reasoning | long-context | agentic | mlperf-llama2 | ... | fixed:PROMPT:OUTPUT"),
    arrival: str = typer.Option("poisson", "--arrival", help="poisson | gamma (bursty with --cv)"),
    cv: float = typer.Option(1.0, "--cv", help="coefficient of variation of gamma inter-arrival gaps"),
    trace_in: Optional[Path] = typer.Option(None, "--requests-file", help="trace CSV/JSONL: arrival_s, prompt, output"),
    seed: int = typer.Option(0, "--seed"),
    scheduler: str = typer.Option("continuous", "--scheduler", "-s", help="static | continuous | chunked"),
    disaggregate: Optional[str] = typer.Option(None, "--disaggregate", help="PREFILL:DECODE chips on separate pools"),
    engine: Optional[str] = typer.Option(None, "--engine", help="vllm | trtllm: default limits and memory plan "
                                                                 "(data/serve/engines.toml; default vllm)"),
    max_seqs: Optional[int] = typer.Option(None, "--max-seqs", help="sequences per batch (default: the engine's)"),
    max_tokens: Optional[int] = typer.Option(None, "--max-batched-tokens", help="tokens per step (default: the engine's)"),
    block_size: Optional[int] = typer.Option(None, "--block-size", help="KV cache block, tokens (default: the engine's)"),
    mem_util: Optional[float] = typer.Option(None, "--mem-util", help="the engine's memory fraction: of all chip memory "
                                                                      "(vllm, default 0.9) or of what weights leave (trtllm)"),
    micro_batches: Optional[int] = typer.Option(None, "--micro-batches", help="micro-batches in flight over the pp "
                                                                              "stages (default pp)"),
    prefix_caching: bool = typer.Option(False, "--prefix-caching", help="share cached prefix blocks"),
    kv_offload: Optional[str] = typer.Option(None, "--kv-offload", help="host | pool: KV blocks beyond HBM in host DRAM "
                                             "(over PCIe) or a pooled memory (data/serve/kv_offload.toml)"),
    speculative: Optional[str] = typer.Option(None, "--speculative", help="speculative decoding: draft:MODEL:K or mtp:K "
                                              "(optionally :ALPHA): every decode step verifies K drafted tokens per sequence"),
    prefix_groups: int = typer.Option(0, "--prefix-groups", help="shared prefixes among the generated requests"),
    prefix_len: int = typer.Option(0, "--prefix-len", help="tokens of each shared prefix"),
    weights: str = typer.Option("bf16", "--weights", help="bf16, fp16, fp8, int8, int4"),
    kv: Optional[str] = typer.Option(None, "--kv", help="KV-cache dtype"),
    impl: Optional[str] = typer.Option(None, "--impl", help="fused or pytorch-cudagraph (default: the stack's)"),
    stack: Optional[str] = typer.Option(None, "--stack", help="software stack (default: the chip's deployed stack; "
                                        "see `tapeout stacks`)"),
    slo_ttft: Optional[float] = typer.Option(None, "--slo-ttft", help="TTFT SLO in s (default 2)"),
    slo_tpot: Optional[float] = typer.Option(None, "--slo-tpot", help="TPOT SLO in s (default 0.1)"),
    power_limit: Optional[float] = POWER_LIMIT,
    sweep: Optional[str] = typer.Option(None, "--sweep", help="'rate': sweep request rates; 'max-rate': find the "
                                                               "highest rate whose p99 TTFT/TPOT meet the SLO"),
    rates: Optional[str] = typer.Option(None, "--rates", help="rates for --sweep rate, e.g. 1,2,4,8 (default: around capacity)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="plot of the sweep (PNG/PDF/SVG)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="write one CSV row per run"),
    trace_out: Optional[Path] = typer.Option(None, "--trace", help="write a Perfetto trace of the schedule"),
):
    """Simulate serving MODEL on CHIP: TTFT/TPOT/E2E percentiles, throughput, goodput, energy, cost."""
    from ..serve.api import serve

    out, csv_out, trace_out = (output_path(p, o) for p, o in ((out, "--out"), (csv_out, "--csv"), (trace_out, "--trace")))
    at_least(1, chips=chips, tp=tp, pp=pp, ep=ep, requests=requests, max_seqs=max_seqs, max_batched_tokens=max_tokens,
             block_size=block_size)
    at_least(0, seed=seed, prefix_groups=prefix_groups, prefix_len=prefix_len)
    above(0, rate=rate, duration=duration, cv=cv, mem_util=mem_util, slo_ttft=slo_ttft, slo_tpot=slo_tpot)
    kw = dict(chips=chips, tp=tp, pp=pp, ep=ep, workload=workload, arrival=arrival, cv=cv, seed=seed,
              scheduler=scheduler, max_seqs=max_seqs, max_batched_tokens=max_tokens, block_size=block_size,
              memory_utilization=mem_util, prefix_caching=prefix_caching, prefix_groups=prefix_groups,
              prefix_len=prefix_len, disaggregate=_parse_pd(disaggregate), weights=weights, kv=kv, impl=impl,
              stack=stack, slo_ttft=slo_ttft, slo_tpot=slo_tpot, engine=engine, micro_batches=micro_batches,
              kv_offload=kv_offload, speculative=speculative)
    if trace_in is not None and not trace_in.is_file():
        from ..errors import TapeoutError

        raise TapeoutError(f"--requests-file {trace_in}: no such file")
    chip = power_limited(chip, power_limit)
    grid = _rates(rates)
    if sweep is not None:
        return _sweep(model, chip, sweep, grid, rate, duration, requests, out, as_json, csv_out, kw)
    if rate is None and not offline and trace_in is None:
        from ..errors import TapeoutError

        raise TapeoutError("give --rate R (requests/s), --offline, --requests-file or --sweep")
    reqs = str(trace_in) if trace_in else requests
    if reqs is None and offline:
        reqs = max(1, round((rate or 10) * duration))
    prog, task = _progress(1, "simulating")
    with prog:
        r = serve(model, chip, requests=reqs, rate=rate, duration_s=duration, offline=offline,
                  progress=lambda d, n: prog.update(task, completed=d, total=n), **kw)
    _emit(r, trace_out, csv_out, as_json)


def _emit(r, trace_out, csv_out, as_json) -> None:
    """The outputs of one run: Perfetto trace, CSV row, JSON or the summary table."""
    if trace_out:
        from ..serve.trace import write_trace

        n = write_trace(r.records, trace_out)
        console.print(f"[dim]trace: {n} steps -> {trace_out} (open in https://ui.perfetto.dev)[/]", highlight=False)
    if csv_out:
        _write_csv([r], csv_out)
    if as_json:
        print_json(r.to_dict())
    else:
        _summary(r)


def _sweep(model, chip, what, grid, rate, duration, requests, out, as_json, csv_out, kw):
    from ..errors import TapeoutError
    from ..serve.api import max_rate as find_max_rate, serve, sweep as run_sweep

    if what not in ("rate", "max-rate"):
        raise TapeoutError(f"--sweep {what!r}: use rate or max-rate")
    n = requests or 1000
    if what == "max-rate":
        prog, task = _progress(None, "searching rate")
        with prog:
            best, r = find_max_rate(model, chip, requests=n, progress=lambda i, _, x, ok: prog.update(
                task, advance=1, description=f"rate {x:.3g}/s {'meets' if ok else 'misses'} the SLO"), **kw)
        if as_json:
            print_json({"max_rate": best, "result": r.to_dict()})
        else:
            console.print(f"highest rate meeting p99 TTFT <= {r.metrics['slo']['ttft_s']:g} s and TPOT <= {r.metrics['slo']['tpot_s'] * 1e3:g} ms: "
                          f"[bold]{best:.3g} req/s[/]")
            _summary(r)
        if csv_out:
            _write_csv([r], csv_out)
        return
    if grid is None:
        cap = serve(model, chip, requests=n, offline=True, record_steps=False, **kw).metrics["request_rate"]
        grid = [cap * f for f in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)]
    prog, task = _progress(len(grid), "sweeping rates")
    with prog:
        results = run_sweep(model, chip, grid, requests=n, progress=lambda i, k, x: prog.update(task, completed=i), **kw)
    if csv_out:
        _write_csv(results, csv_out)
    if as_json:
        print_json([r.to_dict() for r in results])
    else:
        t = Table(title=f"{model} on {getattr(chip, 'name', chip)}: rate sweep ({n} requests each)")
        for col in ("rate /s", "tok/s", "tok/s/chip", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "SLO met", "J/tok"):
            t.add_column(col, justify="right")
        for r in results:
            m = r.metrics
            t.add_row(f"{r.settings['rate']:.3g}", si(m["throughput_tok_s"]), si(m["throughput_tok_s_per_chip"]),
                      _ms(m["ttft_s"]["p50"]), _ms(m["ttft_s"]["p99"]), _ms(m["tpot_s"]["p50"]), _ms(m["tpot_s"]["p99"]),
                      f"{m['slo_attainment']:.0%}", f"{m['energy_j_per_token']:.3g}")
        console.print(t)
    if out:
        from ..serve.plot import sweep_plot

        console.print(f"[dim]plot -> {sweep_plot(results, out)}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
