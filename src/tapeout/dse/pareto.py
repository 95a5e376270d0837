"""Pareto front and ranking of sweep records.

A point is on the front when no other feasible point is at least as good in every objective and
better in one. Objectives are (metric, sign): +1 to maximize, -1 to minimize.
"""
from __future__ import annotations

import numpy as np


def objective_matrix(records: list[dict], objectives) -> np.ndarray:
    """Rows = records, columns = objectives, signed so that larger is better (missing -> -inf)."""
    out = np.full((len(records), len(objectives)), -np.inf)
    for i, r in enumerate(records):
        for j, (m, sign) in enumerate(objectives):
            v = r["metrics"].get(m)
            if isinstance(v, (int, float)) and np.isfinite(v):
                out[i, j] = sign * v
    return out


def front_mask(x: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `x` (maximize every column).

    Rows are visited best-first in the first column (ties by the others), so a row can only be
    dominated by one visited before it or equal to it; each is compared with the front so far."""
    n = len(x)
    if n == 0:
        return np.zeros(0, bool)
    order = np.lexsort(tuple(-x[:, j] for j in reversed(range(x.shape[1]))))
    keep = np.zeros(n, bool)
    front: list[int] = []
    for i in order:
        if front:
            f = x[front]
            dom = np.all(f >= x[i], axis=1) & np.any(f > x[i], axis=1)
            if dom.any():
                continue
        front.append(i)
        keep[i] = True
    return keep


def pareto_front(records: list[dict], objectives) -> list[dict]:
    """The feasible records on the Pareto front, sorted by the first objective (best first), then id."""
    feas = [r for r in records if r.get("feasible")]
    mask = front_mask(objective_matrix(feas, objectives))
    front = [r for r, k in zip(feas, mask) if k]
    m, sign = objectives[0]
    return sorted(front, key=lambda r: (-sign * r["metrics"][m], r["id"]))


def ranked(records: list[dict], metric: str, sign: int = 1) -> list[dict]:
    """Feasible records best-first by one metric (ties by id, so the order is deterministic)."""
    feas = [r for r in records if r.get("feasible") and metric in r["metrics"]]
    return sorted(feas, key=lambda r: (-sign * r["metrics"][metric], r["id"]))


def knee(front: list[dict], objectives) -> dict | None:
    """The front point with the best geometric mean of its objectives normalized to the front's best
    (a balanced design: no objective far below what the front reaches)."""
    if not front:
        return None
    x = objective_matrix(front, objectives)
    # work on positive "goodness": maximize columns as is, minimized ones as 1/value
    good = np.where(x > 0, x, np.where(x < 0, -1.0 / np.minimum(x, -1e-300), 1e-300))
    score = np.exp(np.mean(np.log(good / good.max(axis=0)), axis=1))
    best = max(range(len(front)), key=lambda i: (score[i], front[i]["id"]))
    return front[best]
