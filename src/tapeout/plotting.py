"""matplotlib, imported only when a plot is asked for (it is an optional extra)."""
from __future__ import annotations

from .errors import TapeoutError


def pyplot(hint: str = ""):
    """matplotlib.pyplot on the non-interactive Agg backend, or one clear error if it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TapeoutError("plotting needs matplotlib: pip install 'tapeout[plot]'" + (f" ({hint})" if hint else "")) from None
    return plt
