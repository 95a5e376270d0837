"""`tapeout predict / estimate / compare / roofline / measure`: the performance model on the command line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import POWER_LIMIT, above, console, gib, output_path, power_limited, print_json

_MODEL = typer.Option(..., "--model", "-m", help="shipped model name, config.json path or local HF model folder")
_WEIGHTS = typer.Option("bf16", "--weights", help="weight dtype: bf16, fp16, fp8, int8, int4 (weight-only), nvfp4 / mxfp4 / fp4 (= nvfp4; W4A4 where the chip has fp4 MACs, else weight-only)")
_KV = typer.Option(None, "--kv", help="KV-cache dtype (default: fp8 with fp8 weights, else bf16)")
_IMPL = typer.Option(None, "--impl", help="kernel sequence: fused (vLLM/TensorRT-LLM-like) or pytorch-cudagraph "
                     "(default: the stack's)")
_STACK = typer.Option(None, "--stack", help="software stack (default: each chip's deployed stack; ideal: the silicon "
                      "with a mature stack); list them with `tapeout stacks`")
_SKEW = typer.Option(0.0, "--moe-skew", help="MoE routing skew: Zipf exponent of expert popularity (0 = uniform)")
_EP = typer.Option(1, "--ep", help="expert-parallel chips (MoE)")
_SPEC = typer.Option(None, "--speculative", help="speculative decoding: draft:MODEL:K or mtp:K (DeepSeek multi-token "
                     "prediction), optionally :ALPHA (per-token acceptance; default: sourced, data/serve/speculative.toml)")


def predict(file: Path = typer.Argument(..., help="JSON in the calibration format of src/tapeout/data/calibration/ ('ms' optional)"),
            chip: str = typer.Option(..., "--chip", "-c", help="chip preset or .toml path"),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="write the JSON with predicted_ms here")):
    """Add "predicted_ms" to every gemm/attention/memory/llm entry; print error statistics."""
    from ..errors import TapeoutError
    from ..perf.predict import SECTIONS, errors, predict_entries

    out = output_path(out, "--out")
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise TapeoutError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise TapeoutError(f"{file}: is a folder, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TapeoutError(f"{file}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or not any(isinstance(data.get(s), list) for s in SECTIONS):
        raise TapeoutError(f"{file}: no gemm/attention/memory/llm lists: not a calibration-format file")
    res = predict_entries(data, chip)
    stats = errors(res)
    t = Table(title=f"predicted on {chip} ({file.name})")
    for col in ("section", "entries", "measured", "unpredicted", "MAPE %", "median %", "max %"):
        t.add_column(col, justify="right" if col != "section" else "left")
    for s, v in stats.items():
        f = lambda x: "-" if x != x else f"{x:.1f}"
        t.add_row(s, str(v["n"]), str(v["measured"]), str(v["unpredicted"]), f(v["mape"]), f(v["median"]), f(v["max"]))
    console.print(t)
    for s in SECTIONS:
        for e in res.get(s) or []:
            if e.get("predicted_ms") is None:
                console.print(f"[yellow]not predicted[/] {s}: {json.dumps({k: v for k, v in e.items() if k != 'reason'})}: {e['reason']}")
    if out:
        out.write_text(json.dumps(res, indent=1))
        console.print(f"wrote {out}")


def _estimate_kw(batch, prompt, output, weights, kv, impl, tp, ep=1, moe_skew=0.0, stack=None):
    return dict(batch=batch, prompt=prompt, output=output, weights=weights, kv=kv, impl=impl, tp=tp, ep=ep,
                moe_skew=moe_skew, stack=stack)


def estimate(model: str = _MODEL, chip: str = typer.Option("h100-sxm", "--chip", "-c"),
             batch: int = typer.Option(1, "--batch", "-b"), prompt: int = typer.Option(1024, "--prompt", "-p"),
             output: int = typer.Option(128, "--output", "-n"), weights: str = _WEIGHTS, kv: Optional[str] = _KV,
             impl: str = _IMPL, tp: int = typer.Option(1, "--tp", help="tensor-parallel chips"),
             ep: int = _EP, moe_skew: float = _SKEW, stack: Optional[str] = _STACK,
             speculative: Optional[str] = _SPEC,
             power_limit: Optional[float] = POWER_LIMIT,
             json_out: bool = typer.Option(False, "--json")):
    """TTFT, TPOT, latency, tokens/s, memory and what bounds each phase, for one model on one chip."""
    from ..perf.api import estimate as est

    from ..llm.spec import load_model

    load_model(model).check_parallel(tp, ep, strict=True)
    r = est(model, power_limited(chip, power_limit), speculative=speculative, **_estimate_kw(batch, prompt, output, weights, kv, impl, tp, ep,
                                                                moe_skew, stack))
    if json_out:
        print_json(r.to_dict())
        return
    _print_estimates([r])
    b = Table(title="time by kernel kind (prefill step / one " +
                  ("verification step)" if "speculative" in r.settings else "decode step)"))
    b.add_column("kind"); b.add_column("prefill", justify="right"); b.add_column("decode", justify="right")
    kinds = dict.fromkeys([*r.breakdown["prefill"], *r.breakdown["decode"]])
    for k in kinds:
        b.add_row(k, _ms(r.breakdown["prefill"].get(k)), _ms(r.breakdown["decode"].get(k)))
    console.print(b)


def _ms(s: float | None) -> str:
    return "-" if s is None else (f"{s * 1e3:.4g} ms" if s < 1 else f"{s:.3f} s")


def _print_estimates(rs) -> None:
    t = Table(title=f"{rs[0].model}: batch {rs[0].batch}, prompt {rs[0].prompt}, output {rs[0].output}, "
                    f"weights {rs[0].settings['weights']}, kv {rs[0].settings['kv']}")
    t.add_column("metric")
    for r in rs:
        t.add_column(f"{r.chip}\n{r.settings['stack']}", justify="right")
    rows = [("TTFT", lambda r: _ms(r.ttft_s)), ("TPOT", lambda r: _ms(r.tpot_s)), ("end-to-end", lambda r: _ms(r.e2e_s)),
            ("tokens/s (request)", lambda r: f"{r.tokens_per_s:,.0f}"),
            ("tokens/s (decode)", lambda r: f"{r.decode_tokens_per_s:,.0f}"),
            ("memory used", lambda r: f"{gib(r.memory_bytes)} / {gib(r.memory.capacity_bytes)}"),
            ("prefill bound", lambda r: r.bounds["prefill"]), ("decode bound", lambda r: r.bounds["decode"]),
            ("clock (prefill/decode)", lambda r: f"{r.prefill.clock_hz / 1e9:.2f} / {r.decode.clock_hz / 1e9:.2f} GHz")]
    if any("speculative" in r.settings for r in rs):
        rows.append(("tokens per step", lambda r: f"{r.settings.get('tokens_per_step', 1.0):.3f} "
                                                  f"({r.settings.get('speculative', 'none')})"))
    for name, f in rows:
        t.add_row(name, *[f(r) for r in rs])
    console.print(t)


def compare(model: str = _MODEL, chips: str = typer.Option("h100-sxm,h20,tapeout-n7", "--chips", help="comma-separated"),
            batch: int = typer.Option(1, "--batch", "-b"), prompt: int = typer.Option(1024, "--prompt", "-p"),
            output: int = typer.Option(128, "--output", "-n"), weights: str = _WEIGHTS, kv: Optional[str] = _KV,
            impl: str = _IMPL, tp: int = typer.Option(1, "--tp"), ep: int = _EP, moe_skew: float = _SKEW,
            stack: Optional[str] = typer.Option(None, "--stack", help="one stack for every chip (default: each chip "
                                                "as deployed, with its vendor's stack, and with the ideal stack)"),
            json_out: bool = typer.Option(False, "--json")):
    """The same estimate side by side on several chips: as deployed and with the ideal stack (the moat)."""
    from ..errors import DoesNotFitError
    from ..perf.api import estimate as est
    from ..perf.stack import stack_for

    from ..errors import TapeoutError

    names = [c.strip() for c in chips.split(",") if c.strip()]
    if not names:
        raise TapeoutError(f"--chips {chips!r}: name at least one chip (comma-separated)")
    from ..llm.spec import load_model

    load_model(model).check_parallel(tp, ep, strict=True)
    rs, skipped = [], []
    for c in names:
        stacks = [stack] if stack is not None else list(dict.fromkeys([stack_for(c).name, "ideal"]))
        try:
            rs += [est(model, c, **_estimate_kw(batch, prompt, output, weights, kv, impl, tp, ep, moe_skew, s))
                   for s in stacks]
        except DoesNotFitError as e:
            skipped.append(str(e))
    moat = _moat(rs)
    if json_out:
        print_json({"results": [r.to_dict() for r in rs], "moat": moat, "skipped": skipped})
        return
    if rs:
        _print_rows(rs)
    for chip, m in moat.items():
        console.print(f"{chip}: {m['deployed_stack']} reaches {m['fraction_of_ideal']:.0%} of the ideal stack's "
                      f"tokens/s (software moat {m['moat']:.2f}x)", soft_wrap=True, highlight=False)
    for s in skipped:
        console.print(f"[yellow]skipped:[/] {escape(s)}", soft_wrap=True)


def _print_rows(rs) -> None:
    """One row per (chip, stack) estimate."""
    r0 = rs[0]
    t = Table(title=f"{r0.model}: batch {r0.batch}, prompt {r0.prompt}, output {r0.output}, weights "
                    f"{r0.settings['weights']}, tp {r0.settings['tp']}")
    for col in ("chip", "stack", "TTFT", "TPOT", "tokens/s", "decode tok/s", "memory", "bound (prefill/decode)"):
        t.add_column(col, justify="left" if col in ("chip", "stack") else "right")
    for r in rs:
        t.add_row(r.chip, r.settings["stack"], _ms(r.ttft_s), _ms(r.tpot_s), f"{r.tokens_per_s:,.0f}",
                  f"{r.decode_tokens_per_s:,.0f}", gib(r.memory_bytes), f"{r.bounds['prefill']}/{r.bounds['decode']}")
    console.print(t)


def _moat(rs) -> dict:
    """Per chip with both a deployed and an ideal estimate: ideal tokens/s over deployed tokens/s."""
    out = {}
    for r in rs:
        if r.settings["stack"] == "ideal":
            dep = next((d for d in rs if d.chip == r.chip and d.settings["stack"] != "ideal"), None)
            if dep is not None:
                out[r.chip] = {"deployed_stack": dep.settings["stack"], "moat": r.tokens_per_s / dep.tokens_per_s,
                               "fraction_of_ideal": dep.tokens_per_s / r.tokens_per_s}
    return out


def roofline(model: str = _MODEL, chip: str = typer.Option("h100-sxm", "--chip", "-c"),
             batch: int = typer.Option(1, "--batch", "-b"), prompt: int = typer.Option(1024, "--prompt", "-p"),
             output: int = typer.Option(128, "--output", "-n"), weights: str = _WEIGHTS, kv: Optional[str] = _KV,
             impl: str = _IMPL, out: Path = typer.Option(Path("roofline.png"), "--out", "-o")):
    """A roofline plot of every kernel of the prefill and decode steps."""
    from ..perf.plots import roofline_plot

    out = output_path(out, "--out")
    roofline_plot(model, chip, out, **_estimate_kw(batch, prompt, output, weights, kv, impl, 1))
    console.print(f"wrote {out}")


def measure(out: Path = typer.Option(..., "--out", "-o", help="where to write the measurements (JSON)"),
            budget_s: float = typer.Option(300.0, "--budget-s", help="stop measuring after this many seconds"),
            quick: bool = typer.Option(False, "--quick", help="a few entries per section only")):
    """Measure this machine's NVIDIA GPU in the calibration format (needs PyTorch with CUDA)."""
    from ..perf.measure import measure as run

    out = output_path(out, "--out")
    above(0, budget_s=budget_s)
    n = run(out, budget_s=budget_s, quick=quick)
    console.print(f"wrote {out}: {n} entries")


def register(app: typer.Typer) -> None:
    for f in (predict, estimate, compare, roofline, measure):
        app.command(f.__name__)(f)
