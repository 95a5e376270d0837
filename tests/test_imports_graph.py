"""The packages of tapeout import one way: no cycles, and nothing below frontends/cli imports them.

A node is a top-level module or subpackage of tapeout (`perf`, `serve`, `chip`, ...). Every import
counts, at module top or inside a function: a function-local import hides a cycle, it does not
remove it.
"""
import ast
from pathlib import Path

import tapeout

SRC = Path(tapeout.__file__).parent
# layers that must not import the ones above them
LOW = ("errors", "sourced", "chip", "ir", "perf")
HIGH = ("frontends", "cli")


def _node(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imported(module: str, package: str, n: ast.AST) -> list[str]:
    if isinstance(n, ast.Import):
        return [a.name for a in n.names]
    if not isinstance(n, ast.ImportFrom):
        return []
    base = package.split(".")[: len(package.split(".")) - max(n.level - 1, 0)] if n.level else []
    target = ".".join(base + ([n.module] if n.module else []))
    if target == "tapeout":   # `from tapeout import x` / `from .. import x`: x is a module or a name in __init__
        return [f"tapeout.{a.name}" if (SRC / a.name).exists() or (SRC / f"{a.name}.py").exists() else "tapeout"
                for a in n.names]
    return [target]


def import_graph() -> dict[str, dict[str, str]]:
    """{node: {imported node: 'file:line' of one such import}} over src/tapeout."""
    graph: dict[str, dict[str, str]] = {}
    for f in sorted(SRC.rglob("*.py")):
        rel = f.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rpartition(".")[0]
        for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            for target in _imported(module, package, n):
                if target.split(".")[0] == "tapeout" and _node(target) != _node(module):
                    graph.setdefault(_node(module), {}).setdefault(_node(target), f"{rel}.py:{n.lineno}")
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One path a -> ... -> a for every node on a cycle (depth-first search)."""
    found = []

    def walk(path: list[str]) -> None:
        for nxt in graph.get(path[-1], {}):
            if nxt == path[0]:
                found.append(path + [nxt])
            elif nxt not in path and nxt > path[0]:   # each cycle once, from its smallest node
                walk(path + [nxt])

    for start in sorted(graph):
        walk([start])
    return found


def test_no_import_cycles():
    g = import_graph()
    assert {"perf", "serve", "parallel", "ir", "frontends", "cli"} <= set(g) | {n for v in g.values() for n in v}
    bad = [c[0] + "".join(f" -({g[a][b]})-> {b}" for a, b in zip(c, c[1:])) for c in cycles(g)]
    assert not bad, "import cycles:\n" + "\n".join(bad[:10])


def test_low_layers_do_not_import_high_ones():
    g = import_graph()
    bad = [f"{lo} imports {hi} ({g[lo][hi]})" for lo in LOW for hi in HIGH if hi in g.get(lo, {})]
    assert not bad, "\n".join(bad)


def test_the_check_finds_a_cycle():
    assert cycles({"a": {"b": "x"}, "b": {"c": "y"}, "c": {"a": "z"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b": "x"}, "b": {}}) == []
