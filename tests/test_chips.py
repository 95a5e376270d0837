"""Chip presets: every file loads, its derived peaks match the peaks it quotes, every number is
sourced, and the `tapeout chips` commands show them.

The peak and balance checks recompute from the raw TOML (tomllib), independently of the Chip
dataclass, so a loader that mapped a key to the wrong field would fail here.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tapeout.chip import CONFIDENCES, DTYPES, PEAK_TOLERANCE, load_chip, parse_chip, preset_names
from tapeout.cli import app

PRESETS = preset_names()
REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("h100-sxm", "h100-pcie", "h200-sxm", "h20", "a100-sxm-80gb", "l20", "l40s", "b200", "ascend-910b",
            "ascend-910c", "mlu370-x8", "br100", "mtt-s4000", "tpu-v5e", "tpu-v6e", "inferentia2", "groq-lpu",
            "hanguang-800", "t-head-ppu", "tapeout-n7", "mi300x", "mi325x", "mi355x", "gaudi2", "gaudi3", "trainium1",
            "trainium2", "metax-c500", "mlu590", "b30a")
NVIDIA_FAMILIES = {"hopper", "ampere", "ada", "blackwell"}
VENDOR_STACKS = {"AMD": "rocm-vllm", "Intel": "gaudi-synapse", "AWS": "neuron", "MetaX": "maca", "Cambricon": "neuware",
                 "Huawei": "cann"}


def raw(name: str) -> dict:
    return tomllib.loads((resources.files("tapeout.chips") / f"{name}.toml").read_text(encoding="utf-8"))


def numbers(d: dict, prefix: str = ""):
    """(dotted key, value) for every number written in a raw TOML dict."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from numbers(v, key + ".")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield key, v


def test_at_least_20_presets_including_the_required_ones():
    assert len(PRESETS) >= 20
    assert set(REQUIRED) <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_file_name_matches(name):
    chip = load_chip(name)
    assert chip.name == name
    assert load_chip(name) is chip  # cached


@pytest.mark.parametrize("name", PRESETS)
def test_stated_peaks_match_cores_x_clock_x_macs(name):
    d = raw(name)
    cores, macs = d["cores"], d["cores"]["matrix"]["macs_per_cycle"]
    assert d.get("peaks"), f"{name} quotes no peak to check against"
    for key, stated in d["peaks"].items():
        dtype = key.split("_")[0]
        if dtype == "vector":
            derived = cores["count"] * cores["vector"]["flops_per_cycle"] * cores.get("max_clock_hz", cores["clock_hz"])
        else:
            derived = 2 * cores["count"] * macs[dtype] * cores["clock_hz"]
        assert abs(derived / stated - 1) <= PEAK_TOLERANCE, f"{name} {key}: {derived:.4g} vs {stated:.4g}"
    chip = load_chip(name)
    for dtype, m in macs.items():
        assert chip.peak_flops(dtype) == pytest.approx(2 * cores["count"] * m * cores["clock_hz"])
    for dtype in set(DTYPES) - set(macs):
        assert chip.peak_flops(dtype) == 0 and not chip.supports(dtype)


@pytest.mark.parametrize("name", PRESETS)
def test_every_number_has_a_source_with_a_known_reference(name):
    chip, d = load_chip(name), raw(name)
    written = dict(numbers({k: v for k, v in d.items() if k not in ("references", "sources", "schema_version")}))
    assert written
    for key, val in [*written.items(), *chip.flat().items()]:
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            s = chip.source_of(key)
            assert s is not None, f"{name}: {key} has no source"
            assert s.ref in chip.references, f"{name}: {key} cites {s.ref}"
            assert s.confidence in CONFIDENCES
            if s.confidence in ("derived", "assumed"):
                assert len(s.note) > 10, f"{name}: {key} is {s.confidence} without saying how or why"


@pytest.mark.parametrize("name", PRESETS)
def test_every_reference_is_cited_and_locatable(name):
    chip = load_chip(name)
    cited = {s.ref for s in chip.sources.values()}
    notes = " ".join(s.note for s in chip.sources.values())
    for ref, text in chip.references.items():
        assert ref in cited or re.search(rf"\b{re.escape(ref)}\b", notes), f"{name}: reference {ref} is never cited"
        assert "http" in text or (REPO / text.split()[0]).exists(), f"{name}: reference {ref} is neither a URL nor a repo file"


@pytest.mark.parametrize("name", PRESETS)
def test_units_are_plausible(name):
    """Catches a value written in the wrong unit that still passes the loader's wide ranges."""
    c = load_chip(name)
    assert 0.5e9 <= c.cores.clock_hz <= 3e9
    assert 50 <= c.chip.tdp_w <= 1500         # the liquid-cooled MI355X module: 1,400 W
    assert 1 <= c.chip.process_node_nm <= 16
    if c.dram.type == "none":
        assert c.dram.bytes == 0 and c.dram.bandwidth_bytes_per_s == 0
        assert c.memory_bytes == c.total_sram_bytes >= 100 * 2**20
    else:
        assert 8 * 2**30 <= c.dram.bytes <= 512 * 2**30 and c.dram.bytes % 2**30 == 0  # whole GiB
        assert 0.3e12 <= c.dram.bandwidth_bytes_per_s <= 10e12
    assert 1e6 <= c.total_sram_bytes <= 2**30
    assert c.shared_buffer.bandwidth_bytes_per_s >= c.dram.bandwidth_bytes_per_s
    bw = c.dram.bandwidth_bytes_per_s or c.shared_buffer.bandwidth_bytes_per_s
    for d in c.cores.matrix.macs_per_cycle:
        assert c.machine_balance(d) == pytest.approx(c.peak_flops(d) / bw)
    assert 1e12 <= max(c.peak_flops(d) for d in c.cores.matrix.macs_per_cycle) <= 2e16   # MI355X MXFP4: 10.1 P


@pytest.mark.parametrize("name", PRESETS)
def test_family_and_kind(name):
    c = load_chip(name)
    assert c.chip.kind in ("gpu", "npu", "tpu", "lpu")
    if c.chip.vendor == "NVIDIA":
        assert c.chip.family in NVIDIA_FAMILIES and c.chip.kind == "gpu"
        assert c.chip.stack == "nvidia-trtllm"
    elif c.chip.vendor == "AMD":
        assert c.chip.family == "cdna" and c.chip.kind == "gpu"
    else:
        assert c.chip.family == "npu"
    assert c.chip.stack == VENDOR_STACKS.get(c.chip.vendor, c.chip.stack)


def test_cdna_family_inherits_the_hopper_fit():
    from tapeout.perf.params import load_params

    assert load_params("cdna") == dataclasses.replace(load_params("hopper"), family="cdna")


def test_ascend_910b_follows_the_cann_platform_config():
    """24 AI cores at a 1.8 GHz cube clock, two 64-lane vector cores per AI core: ~354 TF fp16."""
    c = load_chip("ascend-910b")
    assert (c.cores.count, c.cores.clock_hz, c.cores.vector.lanes) == (24, 1.8e9, 2 * 64)
    assert c.peak_flops("fp16") == pytest.approx(354e12, rel=0.002)
    assert c.shared_buffer.bytes == 201326592


def test_nvidia_peaks_are_dense_not_the_sparse_headline():
    """NVIDIA's sparse headline is 2x dense; the dense bf16 peak of each part is below these bounds."""
    dense_bf16_max = {"h100-sxm": 1000e12, "h200-sxm": 1000e12, "h100-pcie": 800e12, "a100-sxm-80gb": 320e12,
                      "l40s": 370e12, "l20": 125e12, "h20": 150e12, "b200": 2300e12, "b30a": 1150e12}
    for name, bound in dense_bf16_max.items():
        assert load_chip(name).peak_flops("bf16") <= bound


def test_derived_quantities_are_not_stored_in_the_files():
    for name in PRESETS:
        keys = {k for k, _ in numbers(raw(name))}
        assert not any(re.search(r"balance|total_sram|peak_", k) for k in keys)


def test_preset_round_trips_through_a_user_path(tmp_path):
    for name in ("tpu-v6e", "groq-lpu"):
        p = tmp_path / f"{name}.toml"
        p.write_text((resources.files("tapeout.chips") / f"{name}.toml").read_text(encoding="utf-8"))
        assert load_chip(str(p)) == load_chip(name)
        assert load_chip(p).path == str(p)
        assert parse_chip(p.read_bytes()) == load_chip(name)


def test_public_api_stays_compatible():
    c = load_chip("h100-sxm")
    assert c.peak_flops("bf16", clock_hz=1e9) == pytest.approx(2 * 132 * 2048 * 1e9)
    assert c.vector_flops() == pytest.approx(132 * 256 * 1.83e9)
    assert c.max_clock_hz == 1.98e9 and c.dram_bandwidth == c.dram.bandwidth_bytes_per_s
    assert c.memory_bytes == 80 * 2**30
    assert c.total_sram_bytes == 132 * c.cores.sram.bytes + c.shared_buffer.bytes
    assert c.source_of("cores.matrix.macs_per_cycle.bf16").confidence == "derived"
    assert c.flat()["cores.count"] == 132 and c.macs_per_cycle("fp8") == 4096


# ----------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_list_names_every_preset_and_json_agrees():
    out = runner.invoke(app, ["chips"])
    assert out.exit_code == 0, out.output
    for name in PRESETS:
        assert name in out.output
    data = json.loads(runner.invoke(app, ["chips", "--json"]).output)
    assert {d["name"] for d in data} == set(PRESETS)
    by = {d["name"]: d for d in data}
    assert by["h100-sxm"]["peak_flops"]["bf16"] == pytest.approx(load_chip("h100-sxm").peak_flops("bf16"))


@pytest.mark.parametrize("columns", [80, 120])
def test_cli_table_fits_the_terminal(columns):
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    out = subprocess.run([sys.executable, "-c", "from tapeout.cli import main; main(['chips'])"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    rows = [line for line in lines if line.split() and line.split()[0] in PRESETS]
    assert len(rows) == len(PRESETS)  # one line per chip, nothing wrapped
    for row in rows:
        assert "…" not in row.split()[0] and len(row.split()) >= 10


def test_cli_show_lists_values_sources_and_references(tmp_path):
    out = runner.invoke(app, ["chips", "show", "ascend-910c"])
    assert out.exit_code == 0, out.output
    c = load_chip("ascend-910c")
    for ref in c.references:
        assert f"{ref}:" in out.output
    assert "1.912 GHz" in out.output and "derived from the file" in out.output
    assert "6,688 prefill tok/s" in out.output  # a source note
    p = tmp_path / "mine.toml"
    p.write_text((resources.files("tapeout.chips") / "ascend-910c.toml").read_text(encoding="utf-8"))
    by_path = runner.invoke(app, ["chips", "show", str(p), "--json"])
    assert json.loads(by_path.output)["spec"]["cores.count"] == 48


def test_cli_diff_shows_changed_keys_with_ratios():
    out = runner.invoke(app, ["chips", "diff", "h100-sxm", "h200-sxm"])
    assert out.exit_code == 0, out.output
    assert "dram.bandwidth_bytes_per_s" in out.output and "1.43x" in out.output
    assert "cores.count" not in out.output
    same = runner.invoke(app, ["chips", "diff", "h100-sxm", "h100-sxm"])
    assert "same spec" in same.output
    rows = json.loads(runner.invoke(app, ["chips", "diff", "h100-sxm", "h20", "--json"]).output)
    assert {"key": "cores.count", "a": 132, "b": 78} in rows


def test_cli_check_accepts_presets_and_paths():
    out = runner.invoke(app, ["chips", "check"])
    assert out.exit_code == 0, out.output
    assert len(out.output.splitlines()) == len(PRESETS)
    path = str(resources.files("tapeout.chips") / "l20.toml")
    one = runner.invoke(app, ["chips", "check", path])
    assert one.exit_code == 0 and one.output.startswith(f"{path}: ok (l20:")


# ----------------------------------------------------------------------------- docs

DOC = (REPO / "docs" / "chips.md").read_text(encoding="utf-8")


def test_docs_describe_every_key():
    import dataclasses
    import typing

    from tapeout.chip import Chip

    def leaves(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            t = next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name])
            if dataclasses.is_dataclass(t):
                yield from leaves(t, f"{prefix}{f.name}.")
            elif f.name != "path":
                yield prefix, f.name

    for section, key in leaves(Chip):
        assert re.search(rf"\b{re.escape(key)}\b", DOC), f"docs/chips.md does not describe {section}{key}"


def test_docs_example_checks_and_its_broken_variant_fails_as_documented(tmp_path):
    example = re.findall(r"```toml\n(.*?)```", DOC, re.S)[-1]
    p = tmp_path / "my-npu.toml"
    p.write_text(example)
    ok = runner.invoke(app, ["chips", "check", str(p)])
    assert ok.exit_code == 0 and ok.output.strip() == f"{p}: ok (my-npu: 39.3 TFLOP/s bf16, 16 GiB LPDDR5, 6 sources)"
    p.write_text(example.replace("clock_hz = 1.2e9", "clock_hz = 1.5e9"))
    bad = runner.invoke(app, ["chips", "check", str(p)])
    documented = re.findall(r"my-npu\.toml: peaks\.bf16_flops_per_s: stated .*", DOC)[-1]
    assert bad.exit_code == 2 and bad.output.strip() == documented.replace("my-npu.toml", str(p))
