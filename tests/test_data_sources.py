"""Every number in the data tables names its source and a confidence, through one validator."""
from importlib import resources
from pathlib import Path

import pytest

from tapeout.sourced import CONFIDENCES, REF_PREFIXES, load_table, quantities, source_problem

DATA = Path(str(resources.files("tapeout") / "data"))
# inputs rather than sourced tables: a study's constraints
NOT_TABLES = ("studies/inference-7nm.toml",)
TABLES = sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*.toml") if str(p.relative_to(DATA)) not in NOT_TABLES)


def test_every_table_is_found():
    kinds = {t.split("/")[0] for t in TABLES}
    assert {"energy", "area", "cost", "serve", "perf", "stacks", "network.toml", "npu_timing.toml"} <= kinds


@pytest.mark.parametrize("rel", TABLES)
def test_every_number_has_a_source(rel):
    t = load_table(rel)
    qs = list(quantities(t))
    assert qs or t["meta"].get("inherit"), rel   # a stack may only inherit another
    for key, q in qs:
        assert q.confidence in CONFIDENCES, (rel, key)
        assert q.ref in t["references"] or q.ref.startswith(REF_PREFIXES), (rel, key)
        assert q.confidence in ("datasheet", "reported") or q.note, (rel, key)


@pytest.mark.parametrize("source,problem", [
    ({"confidence": "datasheet"}, ("", "missing 'ref'")),
    ({"ref": "A", "confidence": "guessed"}, ("confidence", "must be one of")),
    ({"ref": "A", "confidence": "derived"}, ("", "needs a 'note'")),
    ({"ref": "A", "confidence": "assumed", "note": "  "}, ("", "needs a 'note'")),
    ({"ref": 3, "confidence": "datasheet"}, ("ref", "must be a string")),
    ({"ref": "B", "confidence": "datasheet"}, ("ref", "not in [references]")),
])
def test_source_problems_are_named(source, problem):
    sub, reason = source_problem(source, {"A": "a paper"})
    assert sub == problem[0] and problem[1] in reason


def test_good_sources_pass():
    assert source_problem({"ref": "A", "confidence": "datasheet"}, {"A": "x"}) is None
    assert source_problem({"ref": "https://x", "confidence": "fitted", "note": "fit"}, {}) is None
    assert source_problem({"ref": "free text", "confidence": "reported"}, None) is None
