"""`tapeout study`: a tiny study end to end (sweep, picks, analytic and simulated evaluation, report),
its consistency, the exported designs, and resuming from the output folder."""
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tapeout.chip import load_chip
from tapeout.cli import app
from tapeout.dse.report import check_ratios, headline
from tapeout.dse.study import ROLES, run_study

pytest.importorskip("matplotlib")

SPACE = """
name = "tiny-study"
base = "tapeout-n7"
[knobs]
cores = [8, 16]
array = ["128x128", "128x256"]
dram_stacks = [2, 4]
dram = ["HBM2e", "HBM3"]
[constraints]
max_tdp_w = 400
memory_types = ["HBM2e"]
[objectives]
maximize = ["tok_s_per_chip", "tok_per_j", "tok_s_per_kusd"]
minimize = ["cost_usd"]
[[workloads]]
model = "qwen2.5-7b"
layouts = [[1, 1], [2, 1]]
weights = ["fp8", "int8"]
max_seqs = 64
requests = 150
[study]
question = "A tiny study for the tests."
incumbents = ["h20", "t-head-ppu"]
reference = "tapeout-n7"
picks = 3
notes = ["a test note"]
stacks = ["deployed", "ideal"]
design_stack = "pytorch-cudagraph"
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    f = d / "tiny.toml"
    f.write_text(SPACE)
    return run_study(str(f), d / "out", workers=2), f, d / "out"


def test_report_files_and_contents(study):
    res, _, out = study
    html = (out / "report.html").read_text()
    md = (out / "summary.md").read_text()
    assert html.startswith("<!doctype html>") and html.count("data:image/png;base64,") == 4
    for name in [e.name for e in res.entries]:
        assert name in html and name in md
    assert "a test note" in html and "a test note" in md and "A tiny study" in html
    for png in ("pareto.png", "check.png", "bars_qwen2_5-7b.png", "stacks.png"):
        assert (out / png).stat().st_size > 10_000 and f"({png})" in md
    data = json.loads((out / "results.json").read_text())
    assert data["sweep"]["points"] == 16 and data["sweep"]["feasible"] <= 8   # HBM3 is not obtainable


def test_picks_are_the_front_best_and_export_as_chip_files(study):
    res, _, out = study
    picks = [e for e in res.entries if e.kind == "design"]
    assert {e.chip.chip.stack for e in res.entries if e.kind != "incumbent"} == {"pytorch-cudagraph"}   # design_stack
    assert 1 <= len(picks) <= 3 and {e.kind for e in res.entries} == {"design", "reference", "incumbent"}
    front = {r["id"]: r for r in res.sweep.front}
    for role, metric in ROLES:
        holder = [e for e in picks if role in e.roles]
        assert len(holder) == 1
        best = max(r["metrics"][metric] for r in front.values())
        assert front[holder[0].point_id]["metrics"][metric] == best
    for e in picks:
        c = load_chip(out / "designs" / f"{e.name}.toml")
        assert c.flat() == e.chip.flat() and c.cores.count == e.params["cores"]


def test_tables_agree_with_the_results_and_headline(study):
    res, _, _ = study
    wl = res.space.workloads[0]
    for e in res.entries:
        s = res.simulated[(e.name, wl.name)]
        if "infeasible" in s:
            continue
        assert s["ttft_s"] <= wl.slo_ttft_s and s["tpot_s"] <= wl.slo_tpot_s     # p99 within the SLO
        assert s["tok_s_per_kusd"] == pytest.approx(s["tok_s_per_chip"] / (e.facts["cost_usd"] / 1000))
    h = headline(res, wl)["tok_s_per_chip"]
    designs = [res.simulated[(e.name, wl.name)]["tok_s_per_chip"] for e in res.entries if e.kind == "design"]
    assert h["design_value"] == max(designs) and h["ratio"] == pytest.approx(h["design_value"] / h["incumbent_value"])
    assert all(r > 0 for r in check_ratios(res))


def test_rerun_reuses_every_stage_and_cli_prints_the_tables(study):
    res, f, out = study
    before = json.loads((out / "timing.json").read_text())
    r = CliRunner().invoke(app, ["study", str(f), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "timing.json").read_text()) == before   # nothing was computed again
    assert "serving simulator" in r.output and re.search(r"tok_s_per_chip: \S+ .* vs \S+", r.output)
    lines = (out / "simulated.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(l)["id"] for l in lines}) <= 2 * len(res.entries)   # deployed and ideal
    assert {json.loads(l)["view"] for l in lines} == {"deployed", "ideal"}


def test_unknown_study_is_a_one_line_error():
    r = CliRunner().invoke(app, ["study", "no-such-study"])
    assert r.exit_code != 0 and "no such space file or study" in str(r.exception or r.output)


def test_every_chip_is_evaluated_as_deployed_and_ideal_and_reported_with_its_moat(study):
    res, _, out = study
    wl = res.space.workloads[0]
    assert res.views == ("deployed", "ideal") and res.headline_stack == "deployed"
    assert res.results("simulated") is res.simulated is res.by_stack["deployed"]["simulated"]
    for e in res.entries:
        for v, want in (("deployed", e.chip.chip.stack), ("ideal", "ideal")):
            for src in ("analytic", "simulated"):
                d = res.results(src, v)[(e.name, wl.name)]
                assert "infeasible" in d or d["stack"] == want
    data = json.loads((out / "results.json").read_text())
    assert set(data["by_stack"]) == {"deployed", "ideal"} and data["headline_stack"] == "deployed"
    for e in res.entries:
        d, i = (res.results("simulated", v).get((e.name, wl.name), {}) for v in ("deployed", "ideal"))
        m = data["moat"][f"{e.name}|{wl.name}"]
        if "tok_s_per_chip" in d and "tok_s_per_chip" in i:
            assert m == pytest.approx(i["tok_s_per_chip"] / d["tok_s_per_chip"])
    md = (out / "summary.md").read_text()
    html = (out / "report.html").read_text()
    section = md.split("## Software stacks: as deployed and ideal")[1].split("\n## ")[0]
    assert f"| {wl.name}: as deployed | {wl.name}: ideal | {wl.name}: moat |" in section
    assert "pytorch-cudagraph" in section and "(stacks.png)" in section
    assert "Software stacks: as deployed and ideal" in html and f"{wl.name}: moat" in html
    assert "as deployed (each incumbent on its vendor's stack; our designs on pytorch-cudagraph, assumed)" in md
    assert re.search(r"the software moat \(ideal / deployed tok/s per chip\): designs [\d.]+x(-[\d.]+x)?, reference "
                     r"[\d.]+x, incumbents [\d.]+x-[\d.]+x\.", md)
