"""Trend plots of the nightly figures: one PNG per entry and figure, one line per strategy.

Drawing only: the values come in computed. Figures are built with matplotlib's object API (no
pyplot state), so drawing is safe in any thread and leaves no figure open.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

__all__ = ["plot_trend"]

_YLABELS = {
    "error_rate_pct": "best error rate (%)",
    "regret_pp": "LR-finder regret (error points)",
    "compute_s": "compute (s)",
    "wall_time_s": "sweep wall time (s)",
    "stopped_early": "trials stopped early",
}


def plot_trend(
    nights: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    figure: str,
    path: str | Path,
    regressed: Sequence[str] = (),
) -> Path:
    """Draw one trend plot and save it as a PNG.

    Args:
        nights: X labels, oldest first; the last is tonight.
        series: Strategy (or the figure's name for figures without strategies) -> one value
            per night, None or NaN where that night has none.
        title: The plot's title.
        figure: The figure's name (picks the y label).
        path: Where to write the PNG.
        regressed: Series whose tonight's value regressed; marked with a red cross.

    Returns:
        ``path``.
    """
    fig = MplFigure(figsize=(6.4, 3.2), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = list(range(len(nights)))
    for name, values in sorted(series.items()):
        points = [(x, float(v)) for x, v in zip(xs, values, strict=True) if v is not None]
        points = [(x, v) for x, v in points if math.isfinite(v)]
        if not points:
            continue
        px, py = [x for x, _ in points], [v for _, v in points]
        line = ax.plot(px, py, marker="o", markersize=3, label=name)[0]
        if points[-1][0] == xs[-1]:
            colour = "red" if name in regressed else line.get_color()
            marker = "X" if name in regressed else "o"
            ax.plot([points[-1][0]], [points[-1][1]], marker=marker, markersize=9, color=colour)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(_YLABELS.get(figure, figure), fontsize=8)
    step = max(1, len(nights) // 8)
    ax.set_xticks(xs[::step], [nights[i] for i in xs[::step]], fontsize=7, rotation=30)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:  # whole or not at all: an interrupted night leaves no truncated PNG
        fig.savefig(partial, format="png")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out
