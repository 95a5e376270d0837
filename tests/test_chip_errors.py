"""Broken chip files give one line, `FILE: KEY: REASON`, and a non-zero exit; never a traceback.

Hand-written cases check the message for each kind of mistake, through `tapeout.chip.parse_chip`
/ `load_chip` and through `tapeout chips check`. Hypothesis then mutates a valid file (delete a
key, change a value's type, negate or zero a number, rename a key, truncate the text, inject
bytes): the loader either loads it or raises ChipFileError, never anything else.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tomllib
from importlib import resources

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tapeout.chip import Chip, load_chip, parse_chip
from tapeout.cli import app
from tapeout.errors import ChipFileError

VALID = (resources.files("tapeout.chips") / "h100-sxm.toml").read_text(encoding="utf-8")
VALID_NPU = (resources.files("tapeout.chips") / "groq-lpu.toml").read_text(encoding="utf-8")
VALID_EPI = (resources.files("tapeout.chips") / "hanguang-800.toml").read_text(encoding="utf-8")   # output stage, pooling


def sub(old: str, new: str, text: str = VALID) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# name -> (broken text, expected key, regex the reason must match)
CASES = {
    "unknown key, did-you-mean": (sub("clock_hz = 1.83e9", "clok_hz = 1.83e9"), "cores.clok_hz",
                                  r"unknown key \(did you mean 'clock_hz'\?\)"),
    "unknown section": (VALID + "\n[dramm]\ntype = 'HBM3'\n", "dramm", r"unknown key \(did you mean 'dram'\?\)"),
    "missing key": (sub("count = 132\n", ""), "cores.count", r"missing required key"),
    "missing section": (VALID_NPU.split("[links.host]")[0] + VALID_NPU.split("pcie_lanes = 16\n")[1],
                        "links.host", r"missing required key"),
    "wrong type": (sub("tdp_w = 700", 'tdp_w = "700"'), "chip.tdp_w", r"must be a number, got str '700'"),
    "float for an integer": (sub("count = 132", "count = 132.5"), "cores.count", r"must be an integer"),
    "scalar for a table": (sub("schema_version = 1", "schema_version = 1\ndram = 5", VALID.split("[dram]")[0]
                               + "[links" + VALID.split("[dram]")[1].split("[links", 1)[1]),
                           "dram", r"must be a table \(a section of keys\), got int 5"),
    "clock in GHz": (sub("clock_hz = 1.83e9", "clock_hz = 1.83"), "cores.clock_hz",
                     r"implausibly small .*looks like GHz: write 1\.83e\+09"),
    "bandwidth in GB/s": (sub("bandwidth_bytes_per_s = 3.35e12", "bandwidth_bytes_per_s = 3350"),
                          "dram.bandwidth_bytes_per_s", r"implausibly small .*looks like GB/s"),
    "latency in microseconds": (sub("latency_s = 2e-6", "latency_s = 2"), "links.chip_to_chip.latency_s",
                                r"implausibly large .*looks like microseconds"),
    "zero": (sub("count = 132", "count = 0"), "cores.count", r"must be positive, got 0"),
    "negative": (sub("tdp_w = 700", "tdp_w = -700"), "chip.tdp_w", r"must be positive, got -700"),
    "not finite": (sub("tdp_w = 700", "tdp_w = inf"), "chip.tdp_w", r"must be finite"),
    "peak off by more than 2%": (sub("bf16_flops_per_s = 989.4e12", "bf16_flops_per_s = 1100e12"),
                                 "peaks.bf16_flops_per_s", r"disagrees with cores x clock x MACs x 2 .* by -10\.\d%"),
    "vector peak off": (sub("vector_fp32_flops_per_s = 66.9e12", "vector_fp32_flops_per_s = 80e12"),
                        "peaks.vector_fp32_flops_per_s", r"disagrees with cores x max clock"),
    "peak for a missing dtype": (sub("[peaks]\n", "[peaks]\nfp4_flops_per_s = 4000e12\n"), "peaks.fp4_flops_per_s",
                                 r"has no fp4"),
    "unknown dtype": (sub("bf16 = 2048", "bf61 = 2048"), "cores.matrix.macs_per_cycle.bf61",
                      r"unknown dtype \(did you mean 'bf16'\?\)"),
    "bad choice": (sub('kind = "gpu"', 'kind = "GPU"'), "chip.kind", r"must be one of gpu, npu, tpu, lpu"),
    "unparsable TOML": (sub("[cores]", "[cores"), f"line {VALID[:VALID.index('[cores]')].count(chr(10)) + 1}",
                        r"not valid TOML: .*\(column \d+\)"),
    "unknown stack": (sub('stack = "nvidia-trtllm"', 'stack = "nvidia-trtlm"'), "chip.stack",
                      r"names no software stack 'nvidia-trtlm' \(did you mean 'nvidia-trtllm'\?\)"),
    "truncated TOML": (VALID[:VALID.index("count = 132") + 7], "end of file", r"not valid TOML"),
    "source with unknown reference": (sub('"chip" = { ref = "N1"', '"chip" = { ref = "N9"'), "sources.chip.ref",
                                      r"names reference 'N9', which the references table lacks \(it has N1, N2, N3, WP, CNC, CAL, CUDA_CC\)"),
    "source naming no key": (VALID + '"cores.clok_hz" = { ref = "N1", confidence = "datasheet" }\n',
                             "sources.cores.clok_hz", r"names no key of the file \(did you mean 'cores.clock_hz'\?\)"),
    "number without source": (sub('"links.host" = { ref = "N1", confidence = "datasheet" }\n', ""),
                              "links.host.pcie_gen", r"has no source"),
    "derived without note": (sub('"chip.process_node_nm" = { ref = "WP", confidence = "derived", note = '
                                 '"TSMC 4N is a 5 nm-class process" }',
                                 '"chip.process_node_nm" = { ref = "WP", confidence = "derived" }'),
                             "sources.chip.process_node_nm", r"derived value needs a 'note' saying how"),
    "zero special-function rate": (sub("special_functions_per_cycle = 16", "special_functions_per_cycle = 0"),
                                   "cores.vector.special_functions_per_cycle", r"must be positive"),
    "bad confidence": (sub('"cores.vector" = { ref = "WP", confidence = "datasheet" }',
                           '"cores.vector" = { ref = "WP", confidence = "datasheeet" }'),
                       "sources.cores.vector.confidence", r"must be one of .*did you mean 'datasheet'"),
    "no DRAM but bytes": (sub('type = "HBM3"', 'type = "none"'), "dram.bytes", r"must be 0"),
    "links inconsistent": (sub("count = 18", "count = 0"), "links.chip_to_chip", r"must all say 'no links'"),
    "idle above TDP": (sub("idle_w = 130", "idle_w = 800"), "chip.idle_w", r"must be below chip.tdp_w"),
    "schema version": (sub("schema_version = 1", "schema_version = 2"), "schema_version", r"must be 1"),
    "empty file": ("", "chip", r"missing required key"),
    "newline in a key": (VALID + '"a\\nb" = 1\n', "sources.a\\nb", r"must be a table"),
}


def assert_one_line(msg: str, path: str, key: str, reason: str) -> None:
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.startswith(f"{path}: {key}: "), msg
    assert re.search(reason, msg[len(path) + len(key) + 4:]), msg


@pytest.mark.parametrize("case", CASES)
def test_parse_chip_names_file_key_and_reason(case):
    text, key, reason = CASES[case]
    with pytest.raises(ChipFileError) as e:
        parse_chip(text, path="my.toml")
    assert (e.value.path, e.value.key) == ("my.toml", key)
    assert_one_line(str(e.value), "my.toml", key, reason)


runner = CliRunner()


@pytest.mark.parametrize("case", CASES)
def test_cli_check_prints_one_line_and_fails(case, tmp_path):
    text, key, reason = CASES[case]
    p = tmp_path / "broken.toml"
    p.write_text(text, encoding="utf-8")
    out = runner.invoke(app, ["chips", "check", str(p)])
    assert out.exit_code == 2
    assert out.exception is None or isinstance(out.exception, SystemExit)
    lines = out.output.splitlines()
    assert len(lines) == 1, out.output
    assert_one_line(lines[0], str(p), key, reason)


def test_file_level_problems(tmp_path):
    garbage = tmp_path / "garbage.toml"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    nul = tmp_path / "nul.toml"
    nul.write_bytes(VALID.encode()[:200] + b"\x00" + VALID.encode()[200:])
    cases = {garbage: r"^garbage\.toml: not UTF-8 text", tmp_path / "missing.toml": r"^missing\.toml: no such file",
             tmp_path: r": is a directory", nul: r"^nul\.toml: line \d+: not valid TOML"}
    for p, reason in cases.items():
        with pytest.raises(ChipFileError) as e:
            load_chip(p)
        assert "\n" not in str(e.value) and re.search(reason, str(e.value).replace(str(tmp_path) + "/", ""))
    with pytest.raises(ChipFileError, match=r"is neither a chip preset nor a file \(did you mean 'h100-sxm'\?\)"):
        load_chip("h100-sx")


def test_real_command_line_several_files_no_traceback(tmp_path):
    """The installed entry point: one line per file, exit 1; `show` of a broken file exits 2 with one line."""
    paths = []
    for i, case in enumerate(("clock in GHz", "unparsable TOML", "source with unknown reference")):
        p = tmp_path / f"b{i}.toml"
        p.write_text(CASES[case][0])
        paths.append(str(p))
    (tmp_path / "bin.toml").write_bytes(os.urandom(64) + b"\xff")
    paths += [str(tmp_path / "bin.toml"), str(tmp_path / "nope.toml"), "h100-sxm"]
    cmd = [sys.executable, "-c", "import sys; from tapeout.cli import main; main(sys.argv[1:])"]
    out = subprocess.run([*cmd, "chips", "check", *paths], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    lines = out.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == paths
    assert lines[-1].startswith("h100-sxm: ok")
    show = subprocess.run([*cmd, "chips", "show", paths[0]], capture_output=True, text=True)
    assert show.returncode == 2 and "Traceback" not in show.stderr
    assert show.stderr.strip().splitlines() == [f"error: {paths[0]}: cores.clock_hz: " + show.stderr.split("clock_hz: ")[1].strip()]


# ----------------------------------------------------------------------------- hypothesis mutations

def dump(d: dict) -> str:
    """A minimal TOML writer (tables as [a."b"] headers) for mutated dicts."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v) if not (isinstance(v, float) and not math.isfinite(v)) else ("nan" if v != v else
                                                                                       ("inf" if v > 0 else "-inf"))
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return "{" + ", ".join(f"{json.dumps(k)} = {val(x)}" for k, x in v.items()) + "}"

    out = []

    def table(t: dict, header: list[str]):
        scalars = {k: v for k, v in t.items() if not (isinstance(v, dict) and v and header[:1] != ["sources"])}
        if header:
            out.append("[" + ".".join(json.dumps(h) for h in header) + "]")
        out.extend(f"{json.dumps(k)} = {val(v)}" for k, v in scalars.items())
        for k, v in t.items():
            if k not in scalars:
                table(v, [*header, k])
    table(d, [])
    return "\n".join(out) + "\n"


def test_dump_round_trips():
    for text in (VALID, VALID_NPU, VALID_EPI):
        assert tomllib.loads(dump(tomllib.loads(text))) == tomllib.loads(text)
        assert parse_chip(dump(tomllib.loads(text))) == parse_chip(text)


def paths(d: dict, prefix=()):
    for k, v in d.items():
        yield (*prefix, k)
        if isinstance(v, dict):
            yield from paths(v, (*prefix, k))


def load_or_chip_error(text: str | bytes) -> None:
    try:
        chip = parse_chip(text, path="m.toml")
    except ChipFileError as e:
        msg = str(e)
        assert msg.startswith("m.toml: ") and "\n" not in msg and "\r" not in msg, msg
        return
    assert isinstance(chip, Chip)


ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                      st.text(max_size=8), st.lists(st.integers(), max_size=3),
                      st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))

MUTATE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@MUTATE
@given(base=st.sampled_from([VALID, VALID_NPU, VALID_EPI]), data=st.data(),
       op=st.sampled_from(["delete", "retype", "negate", "zero", "rename"]))
def test_mutated_tables_load_or_raise_chip_file_error(base, data, op):
    d = tomllib.loads(base)
    path = data.draw(st.sampled_from(list(paths(d))))
    parent = d
    for k in path[:-1]:
        parent = parent[k]
    key, old = path[-1], parent[path[-1]]
    if op == "delete":
        del parent[key]
    elif op == "retype":
        new = data.draw(ANY_VALUE)
        if new is None:
            return
        parent[key] = new
    elif op in ("negate", "zero"):
        if not isinstance(old, (int, float)) or isinstance(old, bool):
            return
        parent[key] = -old if op == "negate" else 0 * old
    else:
        new = data.draw(st.one_of(st.text(min_size=1, max_size=12), st.just(key + "s"), st.just(key[:-1] or "x")))
        parent[new] = parent.pop(key)
    load_or_chip_error(dump(d))


@MUTATE
@given(base=st.sampled_from([VALID, VALID_NPU, VALID_EPI]), cut=st.floats(0, 1))
def test_truncated_text_loads_or_raises(base, cut):
    load_or_chip_error(base[:int(cut * len(base))])


@MUTATE
@given(base=st.sampled_from([VALID, VALID_NPU, VALID_EPI]), at=st.floats(0, 1), junk=st.binary(min_size=1, max_size=16))
def test_injected_bytes_load_or_raise(base, at, junk):
    raw = base.encode()
    i = int(at * len(raw))
    load_or_chip_error(raw[:i] + junk + raw[i:])


@MUTATE
@given(text=st.text(max_size=200))
def test_arbitrary_text_loads_or_raises(text):
    load_or_chip_error(text)
