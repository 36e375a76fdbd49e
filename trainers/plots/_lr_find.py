"""The range-test figure: loss against learning rate on a log axis, suggestions marked."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from trainers.plots._figure import fixed_figure, save_figure

if TYPE_CHECKING:
    from trainers.lr_finder import LRFindResult


def plot_lr_find(
    result: LRFindResult,
    path: str | os.PathLike[str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Draw a range test's curve: raw loss faint, smoothed loss solid, one line per suggestion.

    Draws what ``result`` holds and computes nothing: the suggestions are the ones the test
    made. NaN/inf losses are left out of the lines (the divergence shows as the curve ending).
    Uses no pyplot state, so it is safe in threads and on machines without a display.

    Args:
        result: An :class:`~trainers.lr_finder.LRFindResult`.
        path: When given, save the figure there (format from the suffix, e.g. ``.png``),
            whole or not at all.
        ax: Axes to draw into; by default a new 6x4 inch figure.

    Returns:
        The figure drawn on.
    """
    if ax is None:
        fig = fixed_figure(6, 4, left=0.72, right=0.18, bottom=0.52, top=0.32)
        ax = fig.add_subplot()
    else:
        fig = ax.get_figure()  # type: ignore[assignment]
    raw = [v if math.isfinite(v) else math.nan for v in result.raw_losses]
    smooth = [v if math.isfinite(v) else math.nan for v in result.losses]
    ax.plot(result.lrs, raw, color="tab:blue", alpha=0.3, linewidth=1, label="loss")
    ax.plot(result.lrs, smooth, color="tab:blue", linewidth=2, label="smoothed loss")
    colours = ["tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for k, (name, lr) in enumerate(result.suggestions.items()):
        ax.axvline(lr, color=colours[k % len(colours)], linestyle="--", label=f"{name}: {lr:.2e}")
    ax.set_xscale("log")
    finite = [v for v in smooth if math.isfinite(v)]
    if finite:  # as fastai: the smoothed curve sets the scale; raw spikes at the end are clipped
        low, first = min(finite), finite[0]
        high = min(max(finite), first + 2 * max(first - low, 1e-3 * abs(first)))
        pad = 0.05 * max(high - low, 1e-6)
        ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("learning rate (top layer group)")
    ax.set_ylabel("loss")
    title = f"LR range test, {result.num_it_run} iterations"
    ax.set_title(title + (" (stopped early: loss diverged)" if result.stopped_early else ""))
    ax.legend(loc="best", fontsize="small")
    if path is not None:
        save_figure(fig, path, dpi=100)
    return fig
