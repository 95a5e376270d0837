"""The study's reasoning workload: its SLO comes from the traffic's data, its measure is checked,
and an unranked workload is reported without moving the ranking."""
import pytest

from tapeout.dse.evaluate import workload_metrics
from tapeout.dse.objective import Workload
from tapeout.dse.space import SpaceError, load_space, parse_space

BASE = {"name": "s", "base": "tapeout-n7", "knobs": {"cores": [8]}}


def test_shipped_study_has_reasoning_with_the_mlperf_r1_slo_and_closed_loop_measure():
    wl = {w.name: w for w in load_space("inference-7nm").workloads}
    r = wl["deepseek-v3-reasoning"]
    assert (r.traffic, r.measure, r.ranked) == ("reasoning", "concurrency", False)
    assert (r.slo_ttft_s, r.slo_tpot_s) == (2.0, 0.08)                      # data/serve/workloads.toml
    assert (wl["deepseek-v3"].slo_tpot_s, wl["deepseek-v3"].ranked) == (0.1, True)
    a, b = r.window_s()
    assert a == pytest.approx(1.5 * 4717.5 * 0.08) and b == pytest.approx(4.5 * 4717.5 * 0.08)


def test_a_workload_table_overrides_the_traffic_slo():
    sp = parse_space({**BASE, "workloads": [{"model": "qwen2.5-7b", "traffic": "reasoning", "slo_tpot_s": 0.05}]})
    assert (sp.workloads[0].slo_ttft_s, sp.workloads[0].slo_tpot_s) == (2.0, 0.05)


@pytest.mark.parametrize("wls, msg", [
    ([{"model": "qwen2.5-7b", "measure": "closed"}], "workloads[0].measure: 'closed': use one of rate, concurrency"),
    ([{"model": "qwen2.5-7b", "ranked": False}], "needs at least one ranked workload"),
])
def test_bad_workload_settings_are_one_line_errors(wls, msg):
    with pytest.raises(SpaceError) as e:
        parse_space({**BASE, "workloads": wls})
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_unranked_workload_adds_its_metrics_but_not_to_the_means():
    from tapeout.chip import load_chip

    chat = Workload("qwen2.5-7b", weights=("fp8",), max_seqs=64)
    long = Workload("qwen2.5-7b", "reasoning", weights=("fp8",), max_seqs=64, label="long", ranked=False)
    impossible = Workload("qwen2.5-7b", "reasoning", weights=("fp8",), slo_tpot_s=1e-6, label="never", ranked=False)
    chip = load_chip("h100-sxm")
    one = workload_metrics(chip, (chat,), "analytic", 1000.0)
    both = workload_metrics(chip, (chat, long, impossible), "analytic", 1000.0)
    assert both["tok_s_per_chip"] == one["tok_s_per_chip"] > 0                # the mean is over chat only
    assert both["long.tok_s_per_chip"] > 0 and "SLO missed" in both["never.infeasible"]
