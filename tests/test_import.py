"""`import tapeout` and `tapeout --help` must not pull in heavy optional dependencies."""
import subprocess
import sys

HEAVY = ("torch", "transformers", "onnx", "ray", "matplotlib")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    import json

    mods = json.loads(out.strip().splitlines()[-1])
    return {m.split(".")[0] for m in mods} & set(HEAVY)


def test_import_is_light():
    assert _loaded_after("import tapeout; tapeout.load_chip('h100-sxm')") == set()


def test_cli_help_is_light():
    code = ("import sys\nfrom tapeout.cli import main\nsys.argv=['tapeout','--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass")
    assert _loaded_after(code) == set()
