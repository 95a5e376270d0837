"""Every CLI command, fed a malformed value for one option or file at a time, as a new user would.

Commands and options are discovered from the typer app, so a new command is covered as soon as it
is registered. Each case holds the other parameters valid (VALID: one good value per required
parameter) and asserts: exit code 2, one line of output, no traceback, no output file left behind.
"""
from __future__ import annotations

import io
import json
import string
from contextlib import redirect_stderr, redirect_stdout
from importlib import resources
from pathlib import Path

import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tapeout.cli import app, main

CALIBRATION = str(resources.files("tapeout") / "data" / "calibration" / "h100-sxm.json")
SPACE = str(Path(__file__).parents[1] / "examples" / "sweep-space.toml")
# one valid value per required parameter name (a new command with a new required parameter adds one)
VALID = {"model": "llama-3.1-8b", "chip": "h100-sxm", "a": "h100-sxm", "b": "h20", "file": CALIBRATION,
         "space": SPACE, "out": "{tmp}/out/result.json"}
# options set for some commands so that the valid rest is a small, quick run (unless fuzzed themselves)
SMALL = {("serve",): {"rate": "1", "requests": "3"}, ("compile",): {"layers": "1", "length": "16"},
         ("run",): {"layers": "1", "length": "16"}, ("study",): {"requests": "3"}}
OUTPUTS = ("--out", "--trace", "--csv", "-o")   # options naming a file the command writes
NOT_FUZZED = {"ray": "a Ray cluster address: what is malformed is decided by Ray when it connects"}

_NAME = st.text(string.ascii_letters + string.digits + "-_.:[]/", max_size=8).map(lambda s: "no-such-" + s)
_INT = st.one_of(st.sampled_from(["abc", "1.5", "", "1e3", "nan"]), st.integers(max_value=-1).map(str))
_FLOAT = st.one_of(st.sampled_from(["abc", "nan", "", "-inf", "1,5"]),
                   st.floats(max_value=-1e-6, allow_infinity=False).map(repr))
_TEXT = st.one_of(st.sampled_from(["", ":abc:", "[red]x[/red]", " ", "\t", "x" * 300, ":", ","]), _NAME)
# files: missing, a folder, empty, binary, JSON/TOML of the wrong shape, a chip with a zero it must not have
_FILES = {"missing.json": None, "folder": "dir", "empty.toml": "", "binary.json": b"\x00\xff\xfe garbage",
          "list.json": "[1, 2]", "object.json": '{"x": 1}', "table.toml": "[x]\ny = 1\n",
          "broken.toml": "[chip\nname = ", "zero-sfu.toml": "zero-sfu"}


def _commands(group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


COMMANDS = list(_commands(typer.main.get_command(app)))


def _annotation(p):
    """The Python type of a parameter (typer >= 0.2x keeps it; with plain click, from the click type)."""
    if hasattr(p, "type_descriptor"):
        return p.type_descriptor.annotation
    return {"integer": int, "float": float, "path": Path}.get(p.type.name, str)


def _kind(p) -> str:
    ann = _annotation(p)
    if getattr(p, "is_flag", False):
        return "flag"
    if set(p.opts) & set(OUTPUTS):
        return "output"
    if ann is int:
        return "int"
    if ann is float:
        return "float"
    if p.name in VALID or getattr(ann, "__name__", "") in ("Path", "list"):
        return "input"
    return "text"


CASES = [(path, p.name) for path, cmd in COMMANDS for p in cmd.params
         if _kind(p) != "flag" and p.name not in NOT_FUZZED]


def _zero_sfu_chip() -> str:
    text = (resources.files("tapeout.chips") / "h100-sxm.toml").read_text(encoding="utf-8")
    return text.replace("special_functions_per_cycle = 16", "special_functions_per_cycle = 0")


def _file(tmp: Path, name: str) -> str:
    path, content = tmp / "bad" / name, _FILES[name]
    path.parent.mkdir(exist_ok=True)
    if content == "dir":
        path.mkdir(exist_ok=True)
    elif content == "zero-sfu":
        path.write_text(_zero_sfu_chip())
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    return str(path)


def _malformed(kind: str, tmp: Path):
    if kind == "int":
        return _INT
    if kind == "float":
        return _FLOAT
    if kind == "output":   # a path below a regular file cannot be written
        (tmp / "afile").write_text("x")
        return st.sampled_from([f"{tmp}/afile/x.json", ""])
    if kind == "input":
        return st.one_of(st.sampled_from(sorted(_FILES)).map(lambda n: _file(tmp, n)), _NAME, st.just(""))
    return _TEXT


def _argv(path, cmd, target: str, value: str, tmp: Path) -> list[str]:
    argv = list(path)
    for p in cmd.params:
        if p.name == target:
            v = value
        elif p.name in SMALL.get(path, {}):
            v = SMALL[path][p.name]
        elif p.required:
            assert p.name in VALID, f"tapeout {' '.join(path)}: add a valid value for {p.name!r} to VALID"
            v = VALID[p.name].format(tmp=tmp)
        else:
            continue
        flag = next((o for o in p.opts if o.startswith("--")), p.opts[0])
        if p.param_type_name == "argument":
            argv.append(v)
        else:
            argv += [f"{flag}={v}"] if flag.startswith("--") else [flag, v]
    return argv


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue() + err.getvalue()


@pytest.mark.parametrize("path,target", CASES, ids=[f"{' '.join(p)}:{t}" for p, t in CASES])
def test_malformed_value_is_one_line_exit_2(path, target, tmp_path, monkeypatch):
    cmd = dict(COMMANDS)[path]
    p = next(p for p in cmd.params if p.name == target)
    tmp = tmp_path
    monkeypatch.chdir(tmp)   # a file written under a name taken from a malformed value lands here, and is seen

    @settings(max_examples=4, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_malformed(_kind(p), tmp))
    def check(value):
        argv = _argv(path, cmd, target, value, tmp)
        before = {f for f in tmp.rglob("*")}
        code, text = _run(argv)
        lines = text.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in text, (argv, code, text[-2000:])
        said = lines[0].lower().replace("-", "_")
        names = {target, *(o.lstrip("-").replace("-", "_") for o in p.opts)}
        named = any(n in said for n in names) or value.strip() and value.lower().replace("-", "_") in said
        assert named or (p.param_type_name == "argument" and not value.strip()), \
            (argv, "the error names neither the option nor the value", lines[0])
        new = {f for f in tmp.rglob("*")} - before
        assert not new, (argv, f"left {sorted(map(str, new))}")

    check()


# ----------------------------------------------------------------------------- cases found by hand

def test_missing_extra_names_the_install(tmp_path):
    import subprocess
    import sys

    model = tmp_path / "x.onnx"
    model.write_bytes(b"not onnx")
    code = ("import sys; sys.modules['onnx'] = None\n"   # as if the onnx extra were not installed
            "from tapeout.cli import main; main(sys.argv[1:])")
    out = subprocess.run([sys.executable, "-c", code, "compile", str(model), "-o", str(tmp_path / "p.asm")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == ["error: this needs onnx, which is not installed: pip install 'tapeout[onnx]'"]


def test_tp_must_split_the_kv_heads():
    code, text = _run(["estimate", "-m", "llama-3.1-8b", "--tp", "3"])
    assert code == 2 and "tp=3" in text and len(text.strip().splitlines()) == 1


def test_rich_markup_and_emoji_codes_print_as_typed():
    code, text = _run(["serve", "-m", "llama-3.1-8b", "--rate", "1", "--workload", "fixed:abc:1"])
    assert code == 2 and "'fixed:abc:1'" in text


def test_predict_leaves_a_malformed_gemm_unpredicted(tmp_path):
    f = tmp_path / "m.json"
    f.write_text(json.dumps({"gemm": [{"M": -1, "N": 0, "K": 64, "dtype": "bf16"}, {"M": 64, "N": 64, "K": 64}]}))
    code, _ = _run(["predict", str(f), "--chip", "h100-sxm", "--out", str(tmp_path / "p.json")])
    bad, good = json.loads((tmp_path / "p.json").read_text())["gemm"]
    assert code == 0 and bad["predicted_ms"] is None and "M: must be a whole number >= 1" in bad["reason"]
    assert good["predicted_ms"] > 0


def test_no_arguments_prints_the_help_once():
    code, text = _run([])
    assert code == 0 and text.count("Usage") == 1 and "estimate" in text
