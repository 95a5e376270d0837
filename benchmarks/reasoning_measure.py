"""The study's measure for long-output traffic (docs/study.md, "Reasoning"): DeepSeek-V3 on 8 Ascend
910C (ep 8, int8, CANN) serving the `reasoning` workload at its SLO (p99 TTFT 2 s, TPOT 80 ms).

    .venv/bin/python benchmarks/reasoning_measure.py      # ~1-2 min on 2 cores

Prints the old measure (max Poisson rate on 1,000 requests: run-length limited), a 4,000-request
Poisson run's steady window, and the closed-loop steady-state measure with its window and with a
window 4x as long. Goal: the two closed-loop figures within 10 %.
"""
from __future__ import annotations

from tapeout.dse.space import traffic_slo
from tapeout.serve.api import max_concurrency, max_rate, serve
from tapeout.serve.workload import llm_workload

CHIPS = 8


def main() -> None:
    slo = traffic_slo("reasoning")
    kw = dict(tp=1, ep=CHIPS, workload="reasoning", weights="int8", scheduler="chunked", max_seqs=1024,
              slo_ttft=slo["slo_ttft_s"], slo_tpot=slo["slo_tpot_s"])
    out = llm_workload("reasoning")["output_mean"]
    life = out * slo["slo_tpot_s"]
    rate, r = max_rate("deepseek-v3", "ascend-910c", requests=1000, iterations=6, **kw)
    print(f"max Poisson rate, 1,000 requests:   {r.metrics['throughput_tok_s_per_chip']:7,.0f} tok/s per chip "
          f"(rate {rate:.2f}/s)")
    figs = []
    for label, w in (("closed loop, 3-lifetime window", (1.5 * life, 4.5 * life)),
                     ("closed loop, 12-lifetime window", (1.5 * life, 13.5 * life))):
        n, r = max_concurrency("deepseek-v3", "ascend-910c", window_s=w, limit=1024, **kw)
        figs.append(r.metrics["throughput_tok_s_per_chip"])
        print(f"{label + ':':35s} {figs[-1]:7,.0f} tok/s per chip at {n} users, p99 TPOT "
              f"{r.metrics['tpot_s']['p99'] * 1e3:.1f} ms")
    lam = 0.95 * figs[-1] * CHIPS / out
    m = serve("deepseek-v3", "ascend-910c", requests=4000, rate=lam, record_steps=False, **kw).metrics
    print(f"Poisson 4,000 requests at {lam:.2f}/s:  {m['steady_tok_s'] / CHIPS:7,.0f} tok/s per chip in its steady "
          f"window (offered {lam * out / CHIPS:,.0f}; completion ratio {m['completion_ratio']:.2f})")
    d = abs(figs[0] / figs[1] - 1)
    print(f"closed loop, 3- vs 12-lifetime window: {d:.1%} apart (goal <= 10 %): {'ok' if d <= 0.10 else 'MISSED'}")


if __name__ == "__main__":
    main()
