"""Every number in the energy, area and cost tables names its source and a confidence."""
import pytest

from tapeout.sourced import CONFIDENCES, data_files, load_table, quantities


@pytest.mark.parametrize("kind,at_least", [("energy", 40), ("area", 30), ("cost", 30)])
def test_every_number_has_a_source(kind, at_least):
    n = 0
    for rel in data_files(kind):
        t = load_table(rel)
        for key, q in quantities(t):
            assert q.confidence in CONFIDENCES, (rel, key)
            assert q.ref in t["references"] or q.ref.startswith(("http", "src/", "benchmarks/")), (rel, key)
            assert q.confidence in ("datasheet", "reported") or q.note, (rel, key)
            n += 1
    assert n > at_least
