"""docs/ir.md: every op is documented, and its Python examples run."""
import re
from pathlib import Path

import pytest

from tapeout.ir import OPS

DOC = Path(__file__).resolve().parents[1] / "docs" / "ir.md"


def test_every_op_is_documented():
    text = DOC.read_text()
    missing = sorted(op for op in OPS if f"`{op}`" not in text)
    assert not missing, f"ops missing from docs/ir.md: {missing}"


@pytest.mark.parametrize("i", range(4))
def test_examples_run(i):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 4
    if "torch" in blocks[i]:
        pytest.importorskip("torch")
        pytest.importorskip("transformers")
    exec(compile(blocks[i], f"docs/ir.md example {i}", "exec"), {})
