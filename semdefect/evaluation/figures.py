"""Figures as PNG files: matplotlib without a display, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from semdefect.board.files import atomic_path


def pyplot() -> Any:  # matplotlib.pyplot; imported where used, as it takes a while
    """matplotlib's pyplot on the Agg backend: no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path) -> None:
    """Lay out `fig`, write it to `path` atomically and free it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    pyplot().close(fig)
