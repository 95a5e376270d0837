"""Design-space sweeps: derived chips stay consistent, infeasible points carry their reason, the
analytic objective agrees with the step times it is built on, the Pareto front matches brute force,
results resume after a kill without duplicates, and Ray gives the same front."""
import dataclasses
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tapeout.chip import load_chip, parse_chip
from tapeout.cli import app
from tapeout.dse.design import Constraints, Infeasible, chip_toml, parts, physicals, point_chip
from tapeout.dse.objective import GRID, Workload, _Layout, analytic
from tapeout.dse.pareto import front_mask, knee, pareto_front
from tapeout.dse.space import context_hash, load_space, parse_space, point_id
from tapeout.dse.sweep import read_records, run_sweep
from tapeout.errors import TapeoutError

ROOT = Path(__file__).resolve().parent.parent
N7 = load_chip("tapeout-n7")
Q72 = Workload("qwen2.5-72b", layouts=((4, 1), (8, 1)), weights=("fp8", "int8"), max_seqs=512)

TINY = {
    "name": "tiny", "base": "tapeout-n7",
    "knobs": {"cores": [8, 16], "array": ["128x128", "256x256"], "clock_hz": [0.8e9, 1.2e9],
              "dram": ["HBM2e", "HBM3"], "dram_stacks": [4, 6], "link_bytes_per_s": [64e9]},
    "constraints": {"max_tdp_w": 400, "memory_types": ["HBM2e"], "min_process_node_nm": 7},
    "objectives": {"maximize": ["tok_s_per_chip", "tok_per_j", "tok_s_per_kusd"], "rank_by": "tok_s_per_kusd"},
    "workloads": [{"model": "qwen2.5-72b", "layouts": [[4, 1], [8, 1]], "weights": ["fp8", "int8"], "max_seqs": 512}],
}


def tiny(**over):
    d = json.loads(json.dumps(TINY))
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) else v
    return parse_space(d, "tiny.toml")


# ---------------------------------------------------------------- derived chips
@settings(max_examples=40, deadline=None)
@given(cores=st.sampled_from([4, 8, 16, 24, 32]), rows=st.sampled_from([32, 64, 128, 256]),
       cols=st.sampled_from([32, 64, 128, 256]), clock=st.floats(0.5e9, 2e9),
       stacks=st.integers(1, 8), links=st.integers(0, 8), link_bw=st.floats(10e9, 200e9))
def test_point_chip_derives_every_dependent_number(cores, rows, cols, clock, stacks, links, link_bw):
    p = {"cores": cores, "array": f"{rows}x{cols}", "clock_hz": clock, "dram_stacks": stacks, "links": links,
         "link_bytes_per_s": link_bw}
    c = point_chip(N7, p, "x")
    m0 = N7.cores.matrix
    for d in ("bf16", "fp8", "int8"):   # peaks follow cores x MACs x clock, from the base's MACs per array cell
        per_cell = m0.macs_per_cycle[d] / (m0.array_rows * m0.array_cols)
        assert c.peak_flops(d) == pytest.approx(2 * cores * rows * cols * per_cell * clock)
    assert c.peaks.stated() == {} and c.peaks.vector_fp32_flops_per_s is None   # quoted peaks dropped
    assert c.chip.die_area_mm2 is None and c.max_clock_hz == clock
    hbm = parts()
    assert c.dram.bytes == stacks * hbm["bytes"]["HBM2e"]
    assert c.dram.bandwidth_bytes_per_s == pytest.approx(stacks * hbm["bytes_per_s"]["HBM2e"])
    l = c.links.chip_to_chip
    assert l.bandwidth_bytes_per_s == pytest.approx(links * link_bw) and l.count == links
    assert l.topology == ("none" if links == 0 else "fully-connected" if links >= 7 else "torus" if links >= 4 else "ring")
    # the global buffer keeps the base's bytes per core-cycle; vector lanes follow the columns
    b0 = N7.shared_buffer.bandwidth_bytes_per_s / (N7.cores.count * N7.cores.clock_hz)
    assert c.shared_buffer.bandwidth_bytes_per_s == pytest.approx(b0 * cores * clock)
    assert c.cores.vector.lanes == round(N7.cores.vector.lanes * cols / m0.array_cols)


def test_no_knobs_reproduces_the_base_design():
    c = point_chip(N7, {}, "same")
    for k, v in N7.flat().items():
        if not k.startswith(("peaks.", "chip.")):
            assert c.flat()[k] == v, k
    assert c.peak_flops("fp8") == N7.peak_flops("fp8")


def test_design_point_exports_as_a_loadable_chip_file(tmp_path):
    c, _ = physicals(point_chip(N7, {"cores": 24, "array": "128x256", "dram_stacks": 8}, "n7-x"), N7, Constraints())
    text = chip_toml(c, "a test point")
    back = parse_chip(text, "x.toml")
    assert back.flat() == c.flat()


def test_idle_power_scales_with_area_and_energy_is_consistent():
    from tapeout.area import area_mm2
    from tapeout.energy import idle_w

    small, _ = physicals(point_chip(N7, {"cores": 8}, "s"), N7, Constraints())
    big, _ = physicals(point_chip(N7, {"cores": 32}, "b"), N7, Constraints())
    ratio = area_mm2(big).total_mm2 / area_mm2(small).total_mm2
    assert idle_w(big) / idle_w(small) == pytest.approx(ratio)
    same, _ = physicals(point_chip(N7, {}, "n"), N7, Constraints())
    assert idle_w(same) == pytest.approx(idle_w(N7))   # the base design keeps its stated idle power


# ---------------------------------------------------------------- infeasible points keep their reason
@pytest.mark.parametrize("params,cons,reason", [
    ({"dram": "HBM3"}, Constraints(memory_types=("HBM2e",)), "not obtainable"),
    ({"process_node_nm": 5}, Constraints(min_process_node_nm=7), "most advanced node"),
    ({"cores": 64, "array": "256x256"}, Constraints(), "reticle"),
    ({"cores": 16, "array": "256x256", "clock_hz": 2e9, "tdp_w": 170}, Constraints(), "over TDP at the minimum clock"),
    ({"dram_stacks": 10}, Constraints(max_dram_stacks=8), "max_dram_stacks"),
    ({"tdp_w": 500}, Constraints(max_tdp_w=400), "max_tdp_w"),
])
def test_physical_infeasibility_is_explained(params, cons, reason):
    with pytest.raises(Infeasible, match=reason):
        physicals(point_chip(N7, params, "p"), N7, cons)


def test_memory_and_slo_infeasibility_are_explained():
    c, _ = physicals(point_chip(N7, {"dram_stacks": 1}, "small"), N7, Constraints())
    with pytest.raises(Infeasible, match="no room for a KV cache"):
        analytic(c, Workload("qwen2.5-72b", layouts=((1, 1),), weights=("fp8",)))
    with pytest.raises(Infeasible, match="SLO missed at batch 1"):
        analytic(N7, Workload("qwen2.5-72b", layouts=((4, 1),), weights=("fp8",), slo_tpot_s=1e-4))


def test_sweep_records_infeasible_points_with_reasons(tmp_path):
    res = run_sweep(tiny(), tmp_path, workers=1)
    assert len(res.records) == tiny().size == 32
    bad = [r for r in res.records if not r["feasible"]]
    assert bad and all(r["reason"] for r in bad)
    assert {r["params"]["dram"] for r in bad if "not obtainable" in r["reason"]} == {"HBM3"}
    assert all(r["params"]["dram"] == "HBM2e" for r in res.feasible)


# ---------------------------------------------------------------- the analytic objective
def test_analytic_objective_matches_its_step_times():
    from tapeout.llm.kernels import Batch
    from tapeout.perf.api import run_batch

    lay = _Layout(__import__("tapeout.llm.spec", fromlist=["load_model"]).load_model("qwen2.5-72b"), N7, Q72, 4, 1, "fp8")
    P, O = Q72.lengths()
    for n in (1, 16, 96):   # at grid points: exactly the perf model's decode step
        assert n in GRID
        st = run_batch("qwen2.5-72b", N7, Batch(decode=(round(P + O / 2),) * n), weights="fp8", tp=4)
        tpot, ttft, t, _ = lay.at(n)
        assert t == st.seconds
        assert tpot == pytest.approx(st.seconds + n * lay.t_pre / (lay.k_pre * O))
        assert ttft == pytest.approx(lay.t_pre + st.seconds)
    s = lay.served()
    assert s.tpot_s <= Q72.slo_tpot_s * (1 + 1e-9) and s.ttft_s <= Q72.slo_ttft_s
    assert s.tok_s_per_chip == pytest.approx(s.batch / s.tpot_s / 4)
    assert s.batch <= Q72.max_seqs and 0 < s.power_w < N7.chip.tdp_w * 1.01


def test_a_tighter_slo_never_raises_throughput():
    prev = math.inf
    for tpot in (0.2, 0.05, 0.03, 0.02):
        s = analytic(N7, dataclasses.replace(Q72, slo_tpot_s=tpot, layouts=((8, 1),)))
        assert s.tpot_s <= tpot * (1 + 1e-9) and s.tok_s_per_chip <= prev * (1 + 1e-9)
        prev = s.tok_s_per_chip


# ---------------------------------------------------------------- Pareto front
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.integers(0, 6)] * 3), min_size=0, max_size=40))
def test_front_matches_brute_force(rows):
    x = np.array(rows, float).reshape(-1, 3)
    brute = [not any(np.all(x[j] >= x[i]) and np.any(x[j] > x[i]) for j in range(len(x))) for i in range(len(x))]
    assert front_mask(x).tolist() == brute


def test_front_minimizes_and_knee_is_on_it():
    recs = [{"id": str(i), "feasible": True, "params": {}, "metrics": {"a": a, "cost": c}}
            for i, (a, c) in enumerate([(1, 1), (2, 3), (2, 2), (3, 5), (1, 2), (0.5, 0.5)])]
    obj = (("a", 1), ("cost", -1))
    front = pareto_front(recs, obj)
    assert {r["id"] for r in front} == {"0", "2", "3", "5"}
    assert knee(front, obj) in front


# ---------------------------------------------------------------- space files and the CLI
def test_space_errors_are_one_line():
    with pytest.raises(TapeoutError, match="unknown knob 'coers'.*did you mean 'cores'"):
        tiny(knobs={"coers": [1]})
    with pytest.raises(TapeoutError, match="unknown constraint"):
        tiny(constraints={"max_tpd_w": 1})
    with pytest.raises(TapeoutError, match="objectives"):
        tiny(objectives={"maximize": ["tokens"]})
    r = CliRunner().invoke(app, ["sweep", str(ROOT / "nope.toml")])
    assert r.exit_code != 0


def test_point_ids_are_stable_and_depend_on_the_context():
    a, b = tiny(), tiny()
    ca = context_hash(a)
    assert ca == context_hash(b)
    p = a.points()[3]
    assert point_id(ca, p) == point_id(context_hash(b), dict(reversed(list(p.items()))))
    c = tiny(workloads=[{**TINY["workloads"][0], "slo_tpot_s": 0.05}])
    assert context_hash(c) != ca


def test_sample_is_deterministic_and_within_the_space():
    sp = load_space("inference-7nm")
    s1, s2 = sp.points(50, seed=3), sp.points(50, seed=3)
    assert s1 == s2 and len({json.dumps(p, sort_keys=True) for p in s1}) == 50
    full = {json.dumps(p, sort_keys=True) for p in itertools.islice(sp.points(), 0, None)}
    assert all(json.dumps(p, sort_keys=True) in full for p in s1)


def test_cli_sweep_writes_front_and_resumes(tmp_path):
    f = tmp_path / "space.toml"
    f.write_text((ROOT / "examples" / "sweep-space.toml").read_text())
    r = CliRunner().invoke(app, ["sweep", str(f), "--out", str(tmp_path / "o"), "--workers", "2", "--json", "--no-plots"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout[r.stdout.index("{"):])
    assert d["evaluated"] == d["points"] == 72 and d["front"]
    r2 = CliRunner().invoke(app, ["sweep", str(f), "--out", str(tmp_path / "o"), "--json", "--no-plots"])
    d2 = json.loads(r2.stdout[r2.stdout.index("{"):])
    assert d2["evaluated"] == 0 and d2["reused"] == 72 and [x["id"] for x in d2["front"]] == [x["id"] for x in d["front"]]


# ---------------------------------------------------------------- crash safety and resume
def _front_ids(path: Path, space) -> list[str]:
    recs = list(read_records(path).values())
    return [r["id"] for r in pareto_front(recs, space.objectives)]


def test_killed_sweep_resumes_to_the_same_front_without_duplicates(tmp_path):
    args = [sys.executable, "-m", "tapeout", "sweep", "inference-7nm", "--sample", "240", "--workers", "1",
            "--no-plots", "--out", str(tmp_path / "killed")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    path = tmp_path / "killed" / "results.jsonl"
    t0 = time.time()
    while time.time() - t0 < 60 and (not path.exists() or path.read_text().count("\n") < 20):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = path.read_text().count("\n")
    assert 20 <= partial < 240, "the sweep was not killed mid-way"
    with open(path, "a") as f:          # a torn last line, as a kill during a write leaves
        f.write('{"id": "torn", "par')
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip().startswith("{") and l.strip().endswith("}")]
    ids = [r["id"] for r in lines]
    assert len(ids) == len(set(ids)) == 240
    sp = load_space("inference-7nm")
    ref = run_sweep(sp, tmp_path / "clean", workers=2, sample=240)
    assert _front_ids(path, sp) == [r["id"] for r in ref.front]
    clean = {r["id"]: r["metrics"] for r in ref.records}
    assert all(clean[r["id"]] == r["metrics"] for r in lines)


def test_ray_local_gives_the_same_front(tmp_path):
    pytest.importorskip("ray")
    sp = tiny()
    local = run_sweep(sp, tmp_path / "local", workers=2)
    ray = run_sweep(sp, tmp_path / "ray", workers=2, ray="local")
    assert [r["id"] for r in ray.front] == [r["id"] for r in local.front]
    assert {r["id"]: r["metrics"] for r in ray.records} == {r["id"]: r["metrics"] for r in local.records}


def test_simulated_evaluator_scores_points_with_the_serving_simulator(tmp_path):
    sp = tiny(knobs={"cores": [8, 16], "array": ["128x128"], "clock_hz": [1e9], "dram": ["HBM2e"], "dram_stacks": [4],
                     "link_bytes_per_s": [64e9]},
              workloads=[{"model": "qwen2.5-7b", "layouts": [[1, 1]], "weights": ["fp8"], "max_seqs": 32,
                          "requests": 80}]).with_evaluator("simulated")
    res = run_sweep(sp, tmp_path, workers=1)
    assert len(res.records) == 2 and all(r["feasible"] for r in res.records)
    for r in res.records:
        m = r["metrics"]
        assert m["qwen2.5-7b.request_rate"] > 0 and m["qwen2.5-7b.tpot_s"] <= 0.1 and m["qwen2.5-7b.ttft_s"] <= 2.0
        assert m["tok_s_per_chip"] == pytest.approx(m["qwen2.5-7b.tok_s_per_chip"]) and m["tok_s_per_chip"] > 0
    assert context_hash(sp) != context_hash(sp.with_evaluator("analytic"))
