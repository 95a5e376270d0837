"""The `tapeout` command line: a thin layer over the Python API.

Each feature area lives in its own module here with a `register(app)` function, so the
CLI's `--help` imports only typer and rich; the work (and numpy, torch, ...) is imported
inside each command.
"""
from __future__ import annotations

import sys
from importlib import import_module

import typer

app = typer.Typer(
    name="tapeout",
    help="Build an AI inference chip in software and measure it against NVIDIA.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# optional dependency -> the pyproject extra that installs it
EXTRAS = {"torch": "torch", "onnx": "onnx", "onnxscript": "onnx", "transformers": "hf", "ray": "ray", "matplotlib": "plot"}

# feature modules, each with register(app); order is the order in --help

_COMMAND_MODULES = ("chips", "stacks", "perf", "npu", "serve", "design", "validate")


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            mod = import_module(f"tapeout.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"tapeout.cli.{name}":
                continue
            raise
        mod.register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    from typer import Abort

    try:
        from typer._click import exceptions as click_errors   # typer >= 0.2x carries its own click
    except ImportError:
        from click import exceptions as click_errors

    from ..errors import TapeoutError

    no_args = getattr(click_errors, "NoArgsIsHelpError", ())   # click >= 8.2

    try:
        code = app(args=argv, standalone_mode=False)
    except no_args:   # `tapeout` alone: typer has printed the help
        code = 0
    except click_errors.UsageError as e:
        _fail(f"{e.format_message()} (see `{_command(e.ctx)} --help`)")
    except (click_errors.ClickException, TapeoutError) as e:
        _fail(e.format_message() if isinstance(e, click_errors.ClickException) else str(e))
    except Abort:
        _fail("interrupted", 130)
    except ModuleNotFoundError as e:   # an optional dependency (pyproject extras) that is not installed
        extra = EXTRAS.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        _fail(f"this needs {e.name}, which is not installed: pip install 'tapeout[{extra}]'")
    sys.exit(code if isinstance(code, int) else 0)


def _command(ctx) -> str:
    """'tapeout chips show' for the context of `chips show`, whatever the program was called."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["tapeout", *reversed(names)])


def _fail(message: str, code: int = 2) -> None:
    """Print `error: message` on one line of stderr, as plain text (no rich markup or emoji codes), and exit."""
    from rich.console import Console
    from rich.text import Text

    line = " ".join(str(message).split())
    Console(stderr=True, highlight=False, soft_wrap=True).print(Text("error: ", style="bold red") + Text(line))
    sys.exit(code)
