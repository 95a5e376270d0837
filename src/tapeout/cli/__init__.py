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
    from rich.console import Console

    from ..errors import TapeoutError

    err = Console(stderr=True)
    try:
        app(args=argv, standalone_mode=True)
    except TapeoutError as e:
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
