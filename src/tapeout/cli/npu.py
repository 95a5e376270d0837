"""`tapeout compile` and `tapeout run`: models on the virtual NPU.

MODEL is an .onnx file, a `file.py:factory` spec (factory() returns (nn.Module, example_inputs)),
or a shipped LLM name (e.g. llama-3.1-8b: one decode/prefill step with shape-only weights,
timed in count-only mode).
"""
from __future__ import annotations

from typing import Optional

import typer

from .common import console, output_path, print_json, si


def _load(model: str, chip: str, dtype: str, phase: str, length: int, layers: Optional[int]):
    import tapeout
    from ..errors import TapeoutError

    if model.endswith(".onnx"):
        return tapeout.compile(model, None, chip=chip, dtype=dtype), False
    if ":" in model and model.split(":")[0].endswith(".py"):
        import importlib.util

        path, fn = model.rsplit(":", 1)
        spec = importlib.util.spec_from_file_location("tapeout_user_model", path)
        if spec is None:
            raise TapeoutError(f"{path}: cannot import")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        if not hasattr(mod, fn):
            raise TapeoutError(f"{path}: no function {fn!r}")
        net, example = getattr(mod, fn)()
        return tapeout.compile(net, example, chip=chip, dtype=dtype), False
    from ..npu.api import NpuProgram
    from ..npu.compiler import compile_ir
    from ..npu.llm import llama_step
    from ..chip import load_chip

    c = load_chip(chip)
    ir = llama_step(model, phase, 1, length, layers)
    from ..npu.api import DTYPE_ALIASES
    mode = DTYPE_ALIASES.get(dtype, dtype)
    return NpuProgram(ir, compile_ir(ir, c, mode), c, mode), True


_MODEL = typer.Argument(..., help="model.onnx, file.py:factory, or a shipped LLM name (llama-3.1-8b)")
_CHIP = typer.Option("tapeout-n7", "--chip", help="preset name or chip .toml")
_DTYPE = typer.Option("bf16", "--dtype", help="bf16, fp16, fp8, int8, int4-weights, nvfp4 or mxfp4 (FP4 weights)")
_PHASE = typer.Option("decode", "--phase", help="LLM names only: decode or prefill")
_LEN = typer.Option(1024, "--length", help="LLM names only: context (decode) or prompt (prefill) tokens")
_LAYERS = typer.Option(None, "--layers", help="LLM names only: number of layers (default: all)")


def register(app: typer.Typer) -> None:
    @app.command("compile")
    def compile_cmd(model: str = _MODEL, chip: str = _CHIP, dtype: str = _DTYPE,
                    out: str = typer.Option("prog.asm", "-o", "--out", help=".asm text, or binary for any other suffix"),
                    phase: str = _PHASE, length: int = _LEN, layers: Optional[int] = _LAYERS):
        """Compile MODEL to NPU instruction streams (assembly text or binary)."""
        output_path(out, "--out")
        prog, _ = _load(model, chip, dtype, phase, length, layers)
        prog.save(out)
        console.print(f"{prog!r} -> {out}")

    @app.command("run")
    def run_cmd(model: str = _MODEL, chip: str = _CHIP, dtype: str = _DTYPE,
                trace: Optional[str] = typer.Option(None, "--trace", help="write a Perfetto/Chrome trace JSON"),
                count_only: bool = typer.Option(False, "--count-only", help="timing only, skip the arithmetic"),
                phase: str = _PHASE, length: int = _LEN, layers: Optional[int] = _LAYERS,
                json_out: bool = typer.Option(False, "--json")):
        """Simulate MODEL on the NPU (random inputs) and print cycles, utilisation and traffic."""
        import numpy as np

        output_path(trace, "--trace")
        prog, abstract = _load(model, chip, dtype, phase, length, layers)
        if count_only or abstract:
            stats = prog.run(count_only=True)
        else:
            rng = np.random.default_rng(0)
            ins = [rng.standard_normal(v.shape).astype(np.float32) if v.dtype.startswith(("f", "b"))
                   else np.zeros(v.shape, np.int64) for v in prog.ir.inputs]
            stats = prog.run(*ins)
        if trace:
            prog.trace(trace)
        if json_out:
            print_json(stats)
            return
        console.print(f"{prog!r}")
        console.print(f"cycles {stats['cycles']:,}  time {si(stats['seconds'], 's')}  instructions {stats['instructions']:,}")
        for q in stats["engine_busy_cycles"]:
            console.print(f"  {q:4s} busy {stats['engine_busy_cycles'][q]:>14,} cycles (all cores)  "
                          f"utilisation {100 * stats['utilization'][q]:5.1f} %  stalls {stats['stall_cycles'][q]:,}")
        console.print("  bytes: " + "  ".join(f"{k} {si(v, 'B')}" for k, v in stats["bytes"].items()))
        if trace:
            console.print(f"trace -> {trace}")
