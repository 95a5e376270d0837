"""Chip description files (`chips/*.toml`) loaded into frozen, validated dataclasses.

The TOML file is the single source of truth for a chip. Every key carries its unit in its
name (`clock_hz`, `sram_bytes`, `bandwidth_bytes_per_s`); everything else (peak FLOP/s per
dtype, machine balance, SRAM totals) is derived here from the file and never stored twice.

Every number in a file is covered by a `[sources]` entry for its key or one of its parent
sections, naming a reference and a confidence (datasheet, reported, derived, assumed).

    >>> chip = load_chip("h100-sxm")
    >>> round(chip.peak_flops("bf16") / 1e12)
    989
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ChipFileError
from .sourced import CONFIDENCES, REF_PREFIXES, SOURCE_KEYS, shipped_names, source_problem

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")
KINDS = ("gpu", "npu", "tpu", "lpu")
DRAM_TYPES = ("HBM3e", "HBM3", "HBM2e", "HBM2", "LPDDR5", "LPDDR5X", "GDDR6", "GDDR6X", "GDDR7", "none")
DATAFLOWS = ("ws", "os", "is", "simt", "unknown")
CONV_DATAFLOWS = ("sliding-window",)
TOPOLOGIES = ("switch", "ring", "mesh", "torus", "fully-connected", "none")
# what a matrix unit's output stage can apply to results as they leave the accumulators
EPILOGUE_OPS = ("scale", "bias", "residual", "multiply", "relu", "requantize", "silu", "gelu", "gelu_tanh",
                "sigmoid", "tanh")
PEAK_TOLERANCE = 0.02  # a stated peak may differ from cores x clock x MACs by at most this


def _f(lo: float | None = None, hi: float | None = None, *, zero_ok: bool = False,
       choices: tuple[str, ...] | None = None, doc: str = "", default: Any = dataclasses.MISSING):
    """A schema field: plausible range (catches wrong units), allowed values and a doc line."""
    meta = {"lo": lo, "hi": hi, "zero_ok": zero_ok, "choices": choices, "doc": doc}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ChipInfo:
    name: str = _f(doc="short identifier, e.g. h100-sxm")
    vendor: str = _f()
    kind: str = _f(choices=KINDS)
    process: str = _f(doc="process as the vendor names it, e.g. 'TSMC 4N'")
    process_node_nm: float = _f(1, 100, doc="node class used for energy/area scaling")
    foundry: str = _f()
    family: str = _f(doc="calibration family of the performance model, e.g. hopper, npu")
    launch_year: int = _f(1990, 2100)
    tdp_w: float = _f(1, 5000)
    full_name: str = _f(default="")
    stack: str = _f(default="ideal", doc="the vendor's software stack as deployed (data/stacks/<name>.toml)")
    die_area_mm2: float | None = _f(1, 5000, default=None, doc="total silicon area of the compute dies")
    dies: int = _f(1, 64, default=1)
    transistors: float | None = _f(1e6, 1e13, default=None)
    price_usd: float | None = _f(1, 1e7, default=None)
    idle_w: float | None = _f(0, 5000, zero_ok=True, default=None, doc="board power when idle")


@dataclass(frozen=True)
class Epilogue:
    """The matrix unit's output stage: elementwise ops applied to results on their way out of the
    accumulators, pipelined with the array (TPU's activation pipeline, Ascend's FixPipe)."""
    ops: tuple[str, ...] = _f(choices=EPILOGUE_OPS, doc="op kinds it fuses: scale and bias (per channel, per row "
                              "or scalar), residual / multiply (a second tensor of the output's shape), relu, "
                              "requantize (round, clamp, narrow store), activations silu gelu gelu_tanh sigmoid tanh")
    elements_per_cycle: float | None = _f(1, 1e6, default=None,
                                          doc="results per cycle per core (absent: the array's columns, so it keeps up)")


@dataclass(frozen=True)
class ConvEngine:
    """How the matrix unit runs convolutions when it does not run them as an im2col GEMM on its
    array: a sliding-window engine that computes `pixels` neighbouring output pixels at once (the
    window slides, so they share their input), each over `channels_in` input channels (of the
    contraction, Cin x taps) for `channels_out` output channels per cycle."""
    dataflow: str = _f(choices=CONV_DATAFLOWS, doc="sliding-window: output pixels x input channels x output "
                       "channels per cycle, weights held while the window slides")
    channels_in: int = _f(1, 65536, doc="contraction elements (input channels x taps) per cycle")
    channels_out: int = _f(1, 65536, doc="output channels per cycle")
    pixels: int = _f(1, 65536, doc="output pixels per cycle (sharing the weights)")


@dataclass(frozen=True)
class Pooling:
    """A pooling engine beside the matrix and vector units (max / average over windows)."""
    elements_per_cycle: float = _f(1, 1e6, doc="window elements read per cycle per core")


@dataclass(frozen=True)
class MatrixUnit:
    macs_per_cycle: dict[str, float] = _f(0, 1e7, doc="dense MACs per cycle per core, by dtype")
    units: int = _f(1, 1024, default=1, doc="matrix units per core")
    array_rows: int | None = _f(1, 4096, default=None)
    array_cols: int | None = _f(1, 4096, default=None)
    dataflow: str = _f(choices=DATAFLOWS, default="unknown")
    accumulator_dtype: str = _f(choices=("fp32", "fp16", "int32"), default="fp32")
    epilogue: Epilogue | None = _f(default=None, doc="output stage (absent: the vector unit post-processes)")
    conv: ConvEngine | None = _f(default=None, doc="convolution engine organisation (absent: convs are im2col "
                                 "GEMMs on the array)")


@dataclass(frozen=True)
class VectorUnit:
    lanes: int = _f(1, 1e6)
    flops_per_cycle: float = _f(1, 1e7, doc="fp32 FLOPs per cycle per core (an FMA counts 2)")
    special_functions_per_cycle: float | None = _f(1, 1e6, default=None,
                                                   doc="exp/rsqrt/... results per cycle per core (absent: not stated)")


@dataclass(frozen=True)
class Sram:
    bytes: float = _f(1024, 1e10, doc="scratchpad / shared memory per core")
    bandwidth_bytes_per_cycle: float = _f(1, 1e6, doc="per core")


@dataclass(frozen=True)
class Cores:
    count: int = _f(1, 1e6)
    clock_hz: float = _f(1e7, 1e10, doc="clock at which the vendor's peaks are quoted")
    matrix: MatrixUnit = _f()
    vector: VectorUnit = _f()
    sram: Sram = _f()
    max_clock_hz: float | None = _f(1e7, 1e10, default=None, doc="highest (boost) clock, if above clock_hz")
    pooling: Pooling | None = _f(default=None, doc="pooling engine (absent: pools run on the vector unit)")
    registers: int | None = _f(1024, 1e7, default=None,
                               doc="32-bit registers per core (a GPU's register file; absent: not stated)")
    max_threads: int | None = _f(32, 1e6, default=None,
                                 doc="threads resident on one core at a time (a GPU's SM; absent: not stated)")


@dataclass(frozen=True)
class SharedBuffer:
    bytes: float = _f(0, 1e11, zero_ok=True, doc="L2 / global buffer shared by all cores")
    bandwidth_bytes_per_s: float = _f(1e9, 1e16)


@dataclass(frozen=True)
class Dram:
    type: str = _f(choices=DRAM_TYPES)
    bytes: float = _f(2**20, 1e13, zero_ok=True, doc="capacity (0 when type is 'none')")
    bandwidth_bytes_per_s: float = _f(1e9, 1e15, zero_ok=True, doc="0 when type is 'none'")
    stacks: int = _f(0, 64, zero_ok=True, default=0, doc="HBM stacks or DRAM channels")


@dataclass(frozen=True)
class ChipToChip:
    count: int = _f(0, 1024, zero_ok=True)
    bandwidth_bytes_per_s: float = _f(1e8, 1e14, zero_ok=True, doc="all links together, per direction")
    latency_s: float = _f(0, 1e-3, zero_ok=True, default=2e-6)
    topology: str = _f(choices=TOPOLOGIES, default="switch")


@dataclass(frozen=True)
class Host:
    pcie_gen: int = _f(1, 8)
    pcie_lanes: int = _f(1, 64)


@dataclass(frozen=True)
class Links:
    chip_to_chip: ChipToChip = _f()
    host: Host = _f()


@dataclass(frozen=True)
class Peaks:
    """Vendor-quoted dense peaks, checked against cores x clock x MACs x 2."""
    fp32_flops_per_s: float | None = _f(1e9, 1e17, default=None)
    tf32_flops_per_s: float | None = _f(1e9, 1e17, default=None)
    bf16_flops_per_s: float | None = _f(1e9, 1e17, default=None)
    fp16_flops_per_s: float | None = _f(1e9, 1e17, default=None)
    fp8_flops_per_s: float | None = _f(1e9, 1e17, default=None)
    int8_ops_per_s: float | None = _f(1e9, 1e17, default=None)
    int4_ops_per_s: float | None = _f(1e9, 1e17, default=None)
    fp4_flops_per_s: float | None = _f(1e9, 1e17, default=None)
    vector_fp32_flops_per_s: float | None = _f(1e9, 1e17, default=None,
                                               doc="vector (non-matrix) FP32 peak, quoted at max_clock_hz")

    def stated(self) -> dict[str, float]:
        """Stated matrix peaks by dtype (the vector peak is checked separately)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None and f.name.split("_")[0] in DTYPES:
                out[f.name.split("_")[0]] = v
        return out


@dataclass(frozen=True)
class Source:
    ref: str
    confidence: str
    note: str = ""


@dataclass(frozen=True)
class Chip:
    chip: ChipInfo = _f()
    cores: Cores = _f()
    shared_buffer: SharedBuffer = _f()
    dram: Dram = _f()
    links: Links = _f()
    peaks: Peaks = _f(default=Peaks())
    references: dict[str, str] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    path: str = field(default="", compare=False)

    # ---- identity
    @property
    def name(self) -> str:
        return self.chip.name

    # ---- derived quantities (never stored in the file)
    def macs_per_cycle(self, dtype: str) -> float:
        """Dense MACs per cycle per core for `dtype` (0 if the matrix unit lacks it)."""
        return float(self.cores.matrix.macs_per_cycle.get(dtype, 0.0))

    def supports(self, dtype: str) -> bool:
        return self.macs_per_cycle(dtype) > 0

    def peak_flops(self, dtype: str, clock_hz: float | None = None) -> float:
        """Dense peak FLOP/s (or OP/s for integers) of all matrix units at `clock_hz`."""
        clk = self.cores.clock_hz if clock_hz is None else clock_hz
        return 2.0 * self.cores.count * self.macs_per_cycle(dtype) * clk

    def vector_flops(self, clock_hz: float | None = None) -> float:
        clk = self.cores.clock_hz if clock_hz is None else clock_hz
        return self.cores.count * self.cores.vector.flops_per_cycle * clk

    @property
    def max_clock_hz(self) -> float:
        return self.cores.max_clock_hz or self.cores.clock_hz

    @property
    def dram_bandwidth(self) -> float:
        return self.dram.bandwidth_bytes_per_s

    @property
    def memory_bytes(self) -> float:
        return self.dram.bytes if self.dram.type != "none" else self.total_sram_bytes

    @property
    def total_sram_bytes(self) -> float:
        """Core-local SRAM of all cores plus the shared buffer."""
        return self.cores.count * self.cores.sram.bytes + self.shared_buffer.bytes

    def machine_balance(self, dtype: str = "bf16") -> float:
        """Peak FLOP per byte of main-memory traffic (DRAM, or SRAM where there is no DRAM)."""
        bw = self.dram.bandwidth_bytes_per_s if self.dram.type != "none" else self.shared_buffer.bandwidth_bytes_per_s
        return self.peak_flops(dtype) / bw if bw else math.inf

    def source_of(self, key: str) -> Source | None:
        """The source covering `key`: its own entry or the nearest parent section's."""
        parts = key.split(".")
        for i in range(len(parts), 0, -1):
            s = self.sources.get(".".join(parts[:i]))
            if s is not None:
                return s
        return None

    def flat(self) -> dict[str, Any]:
        """All spec values as a flat {dotted.key: value} dict (for tables and diffs)."""
        return {k: v for k, v in _flatten(self) if k.split(".")[0] not in ("references", "sources", "path")}


# ----------------------------------------------------------------------------- loading

def _flatten(obj: Any, prefix: str = ""):
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _flatten(getattr(obj, f.name), f"{prefix}{f.name}.")
    elif isinstance(obj, dict) and obj and not isinstance(next(iter(obj.values())), Source):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], obj


def _type_name(t: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(t, "a table")


def _did_you_mean(key: str, options) -> str:
    m = difflib.get_close_matches(str(key), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{m[0]}'?)" if m else ""


def _one_line(s: str) -> str:
    """Escape newlines and other control characters so that an error stays on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(s))


def _unwrap_optional(t: Any) -> tuple[Any, bool]:
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return args[0], True
    return t, False


# unit suffix of a key -> the scales a user may have written the value in by mistake
_UNIT_SCALES = (
    ("_bytes_per_s", ((1e9, "GB/s"), (1e12, "TB/s"), (1e6, "MB/s"))),
    ("_flops_per_s", ((1e12, "TFLOP/s"), (1e15, "PFLOP/s"), (1e9, "GFLOP/s"))),
    ("_ops_per_s", ((1e12, "TOP/s"), (1e15, "POP/s"), (1e9, "GOP/s"))),
    ("_bytes", ((2**20, "MiB"), (2**30, "GiB"), (2**10, "KiB"))),
    ("_hz", ((1e9, "GHz"), (1e6, "MHz"))),
    ("_s", ((1e-6, "microseconds"), (1e-9, "nanoseconds"), (1e-3, "milliseconds"))),
)


def _unit_hint(key: str, v: float, lo: float | None, hi: float | None) -> str:
    """'; 1.98 looks like GHz: write 1.98e+09' when a scale brings v into [lo, hi]."""
    for suffix, scales in _UNIT_SCALES:
        if key.endswith(suffix):
            for scale, unit in scales:
                w = v * scale
                if (lo is None or w >= lo) and (hi is None or w <= hi):
                    return f"; {v:g} looks like {unit}: write {w:.6g}"
            return ""
    return ""


class _Loader:
    def __init__(self, path: str):
        self.path = path

    def err(self, key: str, reason: str) -> ChipFileError:
        return ChipFileError(self.path, _one_line(key), _one_line(reason))

    def build(self, cls: type, data: Any, prefix: str):
        if not isinstance(data, dict):
            raise self.err(prefix, f"must be a table (a section of keys), got {type(data).__name__} {data!r:.40}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
        for k in data:
            if k not in fields:
                raise self.err(f"{prefix}.{k}".lstrip("."), "unknown key" + _did_you_mean(k, fields))
        kw = {}
        for name, f in fields.items():
            key = f"{prefix}.{name}".lstrip(".")
            if name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise self.err(key, "missing required key" + (f" ({f.metadata['doc']})" if f.metadata.get("doc") else ""))
                continue
            kw[name] = self.value(hints[name], data[name], key, f.metadata)
        return cls(**kw)

    def value(self, t: Any, v: Any, key: str, meta: dict):
        t, _ = _unwrap_optional(t)
        if dataclasses.is_dataclass(t):
            return self.build(t, v, key)
        if typing.get_origin(t) is dict:
            return self.mapping(typing.get_args(t)[1], v, key, meta)
        if typing.get_origin(t) is tuple:
            return self.sequence(typing.get_args(t)[0], v, key, meta)
        return self.scalar(t, v, key, meta)

    def mapping(self, vt: Any, v: Any, key: str, meta: dict):
        if not isinstance(v, dict):
            raise self.err(key, f"must be a table, got {type(v).__name__} {v!r:.40}")
        if key == "sources":
            return {k: self.source(k, s) for k, s in v.items()}
        if key.endswith("macs_per_cycle"):
            if not v:
                raise self.err(key, f"needs at least one dtype ({', '.join(DTYPES)})")
            for k in v:
                if k not in DTYPES:
                    raise self.err(f"{key}.{k}", "unknown dtype" + _did_you_mean(k, DTYPES) + f"; known: {', '.join(DTYPES)}")
        return {k: self.scalar(vt, x, f"{key}.{k}", meta) for k, x in v.items()}

    def sequence(self, vt: Any, v: Any, key: str, meta: dict) -> tuple:
        """A list of scalars: non-empty, no repeats, each checked like a scalar (choices, ranges)."""
        if not isinstance(v, list) or not v:
            raise self.err(key, f"must be a non-empty list, got {type(v).__name__} {v!r:.40}")
        items = tuple(self.scalar(vt, x, f"{key}[{k}]", meta) for k, x in enumerate(v))
        dup = next((x for k, x in enumerate(items) if x in items[:k]), None)
        if dup is not None:
            raise self.err(key, f"lists {dup!r} twice")
        return items

    def source(self, k: str, s: Any) -> Source:
        key = f"sources.{k}"
        if not isinstance(s, dict):
            raise self.err(key, "must be a table {ref = ..., confidence = ..., note = ...}")
        for extra in set(s) - set(SOURCE_KEYS):
            raise self.err(f"{key}.{extra}", "unknown key" + _did_you_mean(extra, SOURCE_KEYS))
        problem = source_problem(s, None)
        if problem:
            sub, reason = problem
            hint = _did_you_mean(s["confidence"], CONFIDENCES) if sub == "confidence" else ""
            raise self.err(f"{key}.{sub}" if sub else key, reason + hint)
        return Source(s["ref"], s["confidence"], s.get("note", ""))

    def scalar(self, t: Any, v: Any, key: str, meta: dict):
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 1e300:
            raise self.err(key, "is implausibly large (check the unit in the key name)")
        if t is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if t is int and isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
            v = int(v)
        if not isinstance(v, t) or isinstance(v, bool) != (t is bool):
            raise self.err(key, f"must be {_type_name(t)}, got {type(v).__name__} {v!r:.40}")
        if meta.get("choices") and v not in meta["choices"]:
            raise self.err(key, f"must be one of {', '.join(meta['choices'])}, got {v!r}" + _did_you_mean(v, meta["choices"]))
        if t in (int, float):
            self.check_range(v, key, meta)
        return v

    def check_range(self, v: float, key: str, meta: dict):
        lo, hi = meta.get("lo"), meta.get("hi")
        if not math.isfinite(v):
            raise self.err(key, f"must be finite, got {v}")
        if v < 0 or (v == 0 and not meta.get("zero_ok")):
            raise self.err(key, f"must be positive, got {v:g}")
        if lo is not None and v < lo and v != 0:
            raise self.err(key, f"{v:g} is implausibly small (expected >= {lo:g}; check the unit in the key name)"
                           + _unit_hint(key, v, lo, hi))
        if hi is not None and v > hi:
            raise self.err(key, f"{v:g} is implausibly large (expected <= {hi:g}; check the unit in the key name)"
                           + _unit_hint(key, v, lo, hi))


def _peak_key(dtype: str) -> str:
    return f"peaks.{dtype}_{'ops' if dtype.startswith('int') else 'flops'}_per_s"


def _check_peaks(chip: Chip, path: str) -> None:
    """Every stated peak agrees with cores x clock x MACs x 2 (vector: x flops_per_cycle at max clock)."""
    stated = {_peak_key(d): (v, chip.peak_flops(d), d) for d, v in chip.peaks.stated().items()}
    if chip.peaks.vector_fp32_flops_per_s is not None:
        stated["peaks.vector_fp32_flops_per_s"] = (chip.peaks.vector_fp32_flops_per_s,
                                                   chip.vector_flops(chip.max_clock_hz), "vector")
    for key, (v, derived, dtype) in stated.items():
        if derived == 0:
            raise ChipFileError(path, key, f"states a {dtype} peak but cores.matrix.macs_per_cycle has no {dtype}")
        if abs(derived - v) / v > PEAK_TOLERANCE:
            how = ("cores x max clock x vector flops_per_cycle" if dtype == "vector" else "cores x clock x MACs x 2")
            raise ChipFileError(path, key, f"stated {v / 1e12:.1f} T disagrees with {how} = "
                                f"{derived / 1e12:.1f} T by {100 * (derived / v - 1):+.1f}% (limit {100 * PEAK_TOLERANCE:.0f}%)")


def _check_sources(chip: Chip, path: str) -> None:
    """Every number has a source; every source names a key of the file and a known reference."""
    flat = chip.flat()
    for key, val in flat.items():
        if isinstance(val, (int, float)) and not isinstance(val, bool) and chip.source_of(key) is None:
            raise ChipFileError(path, key, "has no source: add a sources entry for it or a parent section")
    keys = {".".join(k.split(".")[:i]) for k in flat for i in range(1, k.count(".") + 2)}
    for key, src in chip.sources.items():
        if key not in keys:
            raise ChipFileError(path, _one_line(f"sources.{key}"), "names no key of the file" + _did_you_mean(key, keys))
        if src.ref not in chip.references and not src.ref.startswith(REF_PREFIXES):
            hint = _did_you_mean(src.ref, chip.references) or f" (it has {', '.join(list(chip.references)[:8]) or 'none'})"
            raise ChipFileError(path, _one_line(f"sources.{key}.ref"),
                                _one_line(f"names reference {src.ref!r}, which the references table lacks{hint}"))


def _check_consistency(chip: Chip, path: str) -> None:
    """Cross-field checks: stated peaks vs derived, sources cover every number, memory, links."""
    _check_peaks(chip, path)
    _check_sources(chip, path)
    if chip.dram.type == "none" and (chip.dram.bytes or chip.dram.bandwidth_bytes_per_s):
        raise ChipFileError(path, "dram.bytes", "must be 0 (and bandwidth_bytes_per_s 0) when dram.type is 'none'")
    if chip.dram.type != "none" and (chip.dram.bytes <= 0 or chip.dram.bandwidth_bytes_per_s <= 0):
        raise ChipFileError(path, "dram", f"a {chip.dram.type} memory needs positive bytes and bandwidth_bytes_per_s")
    if chip.dram.type == "none" and chip.total_sram_bytes <= 0:
        raise ChipFileError(path, "shared_buffer.bytes", "a chip without DRAM needs on-chip SRAM to hold its model")
    c2c = chip.links.chip_to_chip
    if (c2c.count == 0) != (c2c.topology == "none") or (c2c.count == 0) != (c2c.bandwidth_bytes_per_s == 0):
        raise ChipFileError(path, "links.chip_to_chip", "count, bandwidth_bytes_per_s and topology must all say "
                            "'no links' (0, 0, 'none') or all describe links")
    if chip.cores.max_clock_hz and chip.cores.max_clock_hz < chip.cores.clock_hz:
        raise ChipFileError(path, "cores.max_clock_hz", "is below cores.clock_hz")
    conv, int8 = chip.cores.matrix.conv, chip.cores.matrix.macs_per_cycle.get("int8", 0)
    if conv and conv.channels_in * conv.channels_out * conv.pixels > 1.01 * int8:
        raise ChipFileError(path, "cores.matrix.conv", f"channels_in x channels_out x pixels = "
                            f"{conv.channels_in * conv.channels_out * conv.pixels} exceeds the {int8:g} int8 MACs "
                            "per cycle of cores.matrix.macs_per_cycle")
    if chip.chip.idle_w is not None and chip.chip.idle_w >= chip.chip.tdp_w:
        raise ChipFileError(path, "chip.idle_w", "must be below chip.tdp_w")
    stacks = resources.files("tapeout") / "data" / "stacks"
    if not (stacks / f"{chip.chip.stack}.toml").is_file():
        names = [p.name[:-5] for p in stacks.iterdir() if p.name.endswith(".toml")]
        raise ChipFileError(path, "chip.stack", f"names no software stack {chip.chip.stack!r}" + _did_you_mean(chip.chip.stack, names)
                            + f" (known: {', '.join(sorted(names))})")


_TOML_AT = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)\s*$")


def _toml_error(path: str, e: Exception) -> ChipFileError:
    msg = str(e)
    m = _TOML_AT.search(msg)
    if not m:
        return ChipFileError(path, "", _one_line(f"not valid TOML: {msg}"))
    key = f"line {m.group(1)}" if m.group(1) else "end of file"
    col = f" (column {m.group(2)})" if m.group(2) else ""
    return ChipFileError(path, key, _one_line(f"not valid TOML: {msg[:m.start()]}{col}"))


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ChipFileError(path, "", f"not UTF-8 text ({e.reason} at byte {e.start}); "
                            "a chip file is TOML text") from None


def parse_chip(text: str | bytes, path: str = "<string>") -> Chip:
    """Parse and validate chip TOML (text or UTF-8 bytes); raises ChipFileError naming the key and reason."""
    if isinstance(text, (bytes, bytearray)):
        text = _decode(bytes(text), path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _toml_error(path, e) from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits, absurd nesting
        raise ChipFileError(path, "", _one_line(f"cannot be read as TOML: {e}")) from None
    version = data.pop("schema_version", 1)
    if version != 1:
        raise ChipFileError(path, "schema_version", _one_line(f"must be 1 (the only version this tapeout reads), got {version!r:.20}"))
    chip = _Loader(path).build(Chip, data, "")
    chip = dataclasses.replace(chip, path=path)
    _check_consistency(chip, path)
    return chip


def preset_names() -> list[str]:
    """Names of the chip presets shipped with tapeout."""
    return list(shipped_names("tapeout.chips", ".toml"))


@lru_cache(maxsize=None)
def _load_preset(name: str) -> Chip:
    res = resources.files("tapeout.chips") / f"{name}.toml"
    return parse_chip(res.read_text(encoding="utf-8"), path=f"chips/{name}.toml")


def _read(p: Path, s: str) -> bytes:
    if p.is_dir():
        raise ChipFileError(s, "", "is a directory, not a chip .toml file")
    if not p.is_file():
        raise ChipFileError(s, "", "no such file")
    try:
        return p.read_bytes()
    except OSError as e:
        raise ChipFileError(s, "", f"cannot be read: {e.strerror or e}") from None


def load_chip(spec: "str | Path | Chip") -> Chip:
    """A chip from a preset name (`h100-sxm`), a path to a TOML file, or a Chip (returned as is)."""
    if isinstance(spec, Chip):
        return spec
    s = str(spec)
    if not s.strip():
        raise ChipFileError(repr(s), "", "empty chip name: give a preset name (`tapeout chips` lists them) or a .toml path")
    if s in preset_names():
        return _load_preset(s)
    p = Path(s)
    if p.suffix == ".toml" or p.exists() or "/" in s or "\\" in s:
        return parse_chip(_read(p, s), path=s)
    raise ChipFileError(s, "", "is neither a chip preset nor a file" + _did_you_mean(s, preset_names())
                        + "; `tapeout chips` lists the presets")
