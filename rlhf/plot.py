"""Line charts for reports and benchmarks (matplotlib, headless)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402


def line_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *, title: str,
               xlabel: str, ylabel: str, size: tuple[float, float] = (6, 3.5), integer_x: bool = False) -> Path:
    """One line per name, each given as (x, y); saved as a PNG at ``path`` (``size`` in inches at 100 dpi)."""
    fig, ax = plt.subplots(figsize=size, dpi=100)
    for name, (x, y) in series.items():
        ax.plot(list(x), list(y), marker="o" if len(x) <= 12 else None, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if integer_x:  # rounds and epochs
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
