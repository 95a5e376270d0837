"""Test helpers for differential tests of the IR: run one op through the reference interpreter, move arrays
between numpy and torch bit-exactly, compare within a number of units in the last place."""
from __future__ import annotations

import numpy as np

from tapeout.frontends.torch_export import to_numpy, torch_dtype
from tapeout.ir.builder import Builder
from tapeout.ir.dtypes import DTYPES, FLOATS, dtype_name
from tapeout.ir.interp import evaluate


def run_op(op: str, *operands, **params):
    """Evaluate `op` on numpy operands (Python scalars become Literals); tuple for split."""
    b = Builder(op)
    arrays = [a for a in operands if isinstance(a, np.ndarray)]
    vs = [b.input(a.shape, dtype_name(a.dtype), name="x") if isinstance(a, np.ndarray) else a for a in operands]
    out = b.op(op, *vs, **params)
    res = evaluate(b.build(out), *arrays)
    return tuple(res) if isinstance(out, tuple) else res[0]


def to_torch(a: np.ndarray):
    import torch

    name = dtype_name(a.dtype)
    a = np.array(a, order="C", copy=True)  # (ascontiguousarray would make 0-d arrays 1-d)
    if name == "bf16":
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    if name in ("f8e4m3", "f8e5m2"):
        return torch.from_numpy(a.view(np.uint8).copy()).view(torch_dtype(name))
    return torch.from_numpy(a)


def from_torch(t) -> np.ndarray:
    return to_numpy(t)


def ulp_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| in units of the last place of `a`'s dtype (at the magnitude of b); NaN==NaN is 0."""
    name = dtype_name(a.dtype)
    a64, b64 = a.astype(np.float64), np.asarray(b).astype(np.float64)
    if name not in FLOATS:
        return np.abs(a64 - b64)
    import ml_dtypes
    info = ml_dtypes.finfo(DTYPES[name])
    mag = np.maximum(np.abs(b64), float(info.smallest_normal))
    ulp = 2.0 ** (np.floor(np.log2(mag)) - int(info.nmant))
    both_nan = np.isnan(a64) & np.isnan(b64)
    same = (a64 == b64) | both_nan
    return np.where(same, 0.0, np.abs(a64 - b64) / ulp)
