"""The performance model's family files: the sourced form, inheritance, and calibrate.py's writer."""
import dataclasses
import shutil
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from bench_helpers import load_benchmark
from tapeout.perf import params as P
from tapeout.sourced import DataFileError, load_table

PERF = Path(str(resources.files("tapeout") / "data" / "perf"))
FAMILIES = sorted(p.stem for p in PERF.glob("*.toml"))


def _calibrate():
    return load_benchmark("calibrate")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_loads_with_its_source(family):
    p = P.load_params(family)
    for f in dataclasses.fields(p):
        if f.name in P.param_names() and f.name != "gemm_tiles" and f.default is dataclasses.MISSING:
            assert p.cite(f.name), (family, f.name)
            assert isinstance(getattr(p, f.name), int if f.type == "int" else (int, float)), (family, f.name)


def test_hopper_fitted_values_are_marked_fitted_and_inherited():
    calibrate = _calibrate()
    t = load_table("perf/hopper.toml")
    fitted = {k for k, q in t["params"].items() if q.confidence == "fitted"}
    assert fitted == set(calibrate.FREE)
    h, ada = P.load_params("hopper"), P.load_params("ada")
    assert "[fitted]" in ada.cite("mma_efficiency") and ada.mma_efficiency == h.mma_efficiency
    assert ada.unaligned_mma_efficiency == 0.70 != h.unaligned_mma_efficiency
    assert P.load_params("no-such-family") == dataclasses.replace(P.load_params("default"), family="no-such-family")


def test_write_params_rewrites_the_fitted_block_in_place(tmp_path):
    calibrate = _calibrate()
    src = PERF / "hopper.toml"
    path = shutil.copy(src, tmp_path / "hopper.toml")
    old = tomllib.loads(src.read_text())
    fit = dict(old["meta"]["fit"])
    values = {k: old["params"][k]["value"] for k in calibrate.FREE}
    calibrate.write_params(Path(path), values, {}, fit)
    assert Path(path).read_text() == src.read_text()          # the shipped file is what the writer writes
    held = {"launch_s": values.pop("launch_s")}                 # --fix launch_s=...: not fitted
    calibrate.write_params(Path(path), {**values, "mma_efficiency": 0.5}, held, {**fit, "date": "2030-01-01"})
    new = tomllib.loads(Path(path).read_text())
    assert new["params"]["mma_efficiency"]["value"] == 0.5 and "2030-01-01" in new["params"]["mma_efficiency"]["note"]
    assert new["params"]["launch_s"]["confidence"] == "assumed" and "--fix" in new["params"]["launch_s"]["note"]
    assert new["params"]["tma_alignment_bytes"] == old["params"]["tma_alignment_bytes"]   # hand-written part kept


def test_a_bare_number_or_unknown_parameter_is_named(tmp_path, monkeypatch):
    data = tmp_path / "tapeout" / "data" / "perf"
    data.mkdir(parents=True)
    (data / "x.toml").write_text('[meta]\ninherit = "default"\n[params.mma_eficiency]\nvalue = 0.5\n'
                                 'ref = "docs/perf-model.md"\nconfidence = "assumed"\nnote = "a typo"\n')
    (data / "y.toml").write_text('mma_efficiency = 0.5\n')
    real = resources.files
    monkeypatch.setattr(resources, "files", lambda pkg: tmp_path / "tapeout" if pkg == "tapeout" else real(pkg))
    for fam, msg in (("x", "params.mma_eficiency: not a performance parameter"), ("y", "mma_efficiency: bare number")):
        with pytest.raises(DataFileError, match=msg):
            P._file(fam)
