"""User-facing errors: one line, naming the file, field or op and the reason.

The CLI catches `TapeoutError` and prints its message without a traceback; anything else
is a bug in tapeout and keeps its traceback.
"""
from __future__ import annotations


class TapeoutError(Exception):
    """A problem with the user's input (a file, an option, a model), not a bug."""


class ChipFileError(TapeoutError):
    """A chip description file that cannot be loaded: `FILE: KEY: REASON`."""

    def __init__(self, path: str, key: str, reason: str):
        self.path, self.key, self.reason = str(path), key, reason
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + reason)


class UnsupportedOpError(TapeoutError):
    """An operator that a frontend, the compiler or the simulator does not handle."""


class DoesNotFitError(TapeoutError):
    """A model (weights + KV cache + activations) that does not fit in the chip's memory."""
