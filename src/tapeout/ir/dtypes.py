"""IR dtypes: short names (as printed in `Program.pretty()`) -> numpy / ml_dtypes dtypes.

Low-precision types are the ml_dtypes ones, which match PyTorch bit for bit:
f8e4m3 is the "fn" variant (no infinities, max 448; the IR's cast saturates to +-448 like
PyTorch), f8e5m2 is IEEE-like. f4e2m1 (float4_e2m1fn: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and negatives;
no inf or NaN, casts saturate to +-6) and f8e8m0 (float8_e8m0fnu: unsigned powers of two
2^-127 .. 2^127 and NaN, no zero) are the element and scale types of the block-scaled FP4
formats (`tapeout.ir.blockfp`).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

# name -> numpy dtype
DTYPES: dict[str, np.dtype] = {
    "f64": np.dtype(np.float64),
    "f32": np.dtype(np.float32),
    "f16": np.dtype(np.float16),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "f8e4m3": np.dtype(ml_dtypes.float8_e4m3fn),
    "f8e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "f8e8m0": np.dtype(ml_dtypes.float8_e8m0fnu),
    "f4e2m1": np.dtype(ml_dtypes.float4_e2m1fn),
    "i64": np.dtype(np.int64),
    "i32": np.dtype(np.int32),
    "i16": np.dtype(np.int16),
    "i8": np.dtype(np.int8),
    "i4": np.dtype(ml_dtypes.int4),
    "u8": np.dtype(np.uint8),
    "u4": np.dtype(ml_dtypes.uint4),
    "bool": np.dtype(np.bool_),
}
FLOATS = frozenset({"f64", "f32", "f16", "bf16", "f8e4m3", "f8e5m2", "f8e8m0", "f4e2m1"})
INTS = frozenset({"i64", "i32", "i16", "i8", "i4", "u8", "u4"})
# storage size in bits (i4/u4/f4e2m1 are 4 bits packed on a chip; numpy stores them in a byte)
BITS = {"f64": 64, "f32": 32, "f16": 16, "bf16": 16, "f8e4m3": 8, "f8e5m2": 8, "f8e8m0": 8, "f4e2m1": 4,
        "i64": 64,
        "i32": 32, "i16": 16, "i8": 8, "i4": 4, "u8": 8, "u4": 4, "bool": 8}
_BY_NUMPY = {v: k for k, v in DTYPES.items()}


def np_dtype(name: str) -> np.dtype:
    return DTYPES[name]


def dtype_name(dt) -> str:
    """IR name of a numpy dtype (KeyError if the IR has no such dtype)."""
    return _BY_NUMPY[np.dtype(dt)]


def compute_dtype(name: str) -> np.dtype:
    """The dtype float arithmetic on `name` is carried out in: f64 for f64, else f32."""
    return DTYPES["f64"] if name == "f64" else DTYPES["f32"]


def int_range(name: str) -> tuple[int, int]:
    info = ml_dtypes.iinfo(DTYPES[name]) if name in ("i4", "u4") else np.iinfo(DTYPES[name])
    return int(info.min), int(info.max)


def float_max(name: str) -> float:
    return float(ml_dtypes.finfo(DTYPES[name]).max)
