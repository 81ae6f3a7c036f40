"""Figures drawn by the collectors' end-of-run summaries: matplotlib without a display, written atomically."""
from __future__ import annotations

from pathlib import Path

from ..utils import atomic_path


def pyplot():
    """`matplotlib.pyplot` on the file-only Agg backend (training machines have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> str:
    """Write `fig` as a PNG at `path` atomically, close it, and return the file name for the summary."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    pyplot().close(fig)
    return Path(path).name
