"""The sweep-level figures of the report; they draw the numbers they are given, nothing more.

No pyplot state is used (a ``Figure`` with an Agg canvas), so drawing is safe in any thread and
on machines without a display.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps.stoppers._base import finite_number
from trainers.plots import fixed_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
)
SEARCH_KINDS = ("grid", "optuna", "random")


def _finite(value: Any) -> bool:
    return finite_number(value) is not None


def plot_comparison(
    trials: Sequence[Any],
    finder_curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike[str],
) -> Path:
    """:func:`comparison_figure` saved as a PNG at ``path``."""
    comparison_figure(trials, finder_curves).savefig(os.fspath(path), dpi=100)
    return Path(path)


def comparison_figure(
    trials: Sequence[Any],
    finder_curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
) -> Figure:
    """Best validation loss against LR for every searched trial, finder picks marked.

    Args:
        trials: Trial rows (``kind``, ``group``, ``lr``, ``best_valid_loss``, ``seed``,
            ``stop_reason``). A diverged trial whose best loss lies far above the others' is
            drawn as ``^`` at the top of a clipped axis, which says how high it went.
        finder_curves: ``label -> (lrs, losses)`` of range tests, drawn on a second axis.
    """
    right = 0.75 if finder_curves else 0.2  # the twin axis' ticks and label
    fig = fixed_figure(8, 5, left=0.8, right=right, bottom=0.6, top=0.4)
    ax = fig.add_subplot()
    groups = sorted({t.group for t in trials})
    colour = {g: COLOURS[i % len(COLOURS)] for i, g in enumerate(groups)}
    drawn: list[float] = []
    shown = [t for t in trials if _finite(t.lr) and _finite(t.best_valid_loss)]
    # a diverged trial's best loss (1e5 and more) would flatten every other point on the axis
    clipped = clipped_limits([([t.best_valid_loss], t.stop_reason == "diverged") for t in shown])
    for group in groups:
        rows = [t for t in shown if t.group == group]
        if rows:
            drawn += _draw_group(ax, group, rows, colour[group], clipped)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("best validation loss")
    ax.set_title("Best validation loss per trial against its learning rate")
    if finder_curves:
        drawn += _draw_finder_curves(ax, finder_curves, clipped)
    lost = len(trials) - len(shown)
    if lost and not shown:  # else an empty axis, unexplained (its LR ticks 1 to 10, made up)
        ax.text(
            0.5, 0.5,
            f"{lost} trial(s) with no finite best validation loss (diverged, failed or unfinished)",
            transform=ax.transAxes, ha="center", va="center", fontsize="small",
        )  # fmt: skip
    _set_axes(fig, ax, drawn, clipped)
    return fig


def _draw_group(
    ax: Axes,
    group: str,
    rows: Sequence[Any],
    colour: str,
    clipped: tuple[float, float, float] | None,
) -> list[float]:
    """Draw one group's trials (dots, or picks as stars; ``^`` above the axis); return LRs."""
    xs, ys = [t.lr for t in rows], [t.best_valid_loss for t in rows]
    lrs = xs
    if clipped is not None:
        above = [(x, y) for x, y in zip(xs, ys, strict=True) if y > clipped[1]]
        pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y <= clipped[1]]
        if above:  # drawn at the top of the axis, pointing up, over any legend
            top = clipped[1] - 0.04 * (clipped[1] - clipped[0])
            ax.scatter(
                [x for x, _ in above], [top] * len(above), s=60, marker="^",
                color=colour, edgecolor="black", zorder=6, clip_on=False,
                label=f"{group} (above the axis)",
            )  # fmt: skip
        if not pairs:
            return lrs
        xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    if rows[0].kind in SEARCH_KINDS:
        ax.scatter(xs, ys, s=22, alpha=0.7, color=colour, label=group)
    else:
        ax.scatter(
            xs,
            ys,
            s=140,
            marker="*",
            edgecolor="black",
            color=colour,
            label=f"{group} pick",
            zorder=3,
        )
        for x in xs:
            ax.axvline(x, color=colour, linestyle=":", alpha=0.5)
    return lrs


def _draw_finder_curves(
    ax: Axes,
    finder_curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    clipped: tuple[float, float, float] | None,
) -> list[float]:
    """Draw the range tests on a twin axis of ``ax``, with its legend; return the LRs drawn."""
    twin = ax.twinx()
    drawn: list[float] = []
    for k, (label, (lrs, losses)) in enumerate(sorted(finder_curves.items())):
        pts = [(x, y) for x, y in zip(lrs, losses, strict=False) if _finite(y) and x > 0]
        drawn += [x for x, _ in pts]
        if pts:
            twin.plot(
                *zip(*pts, strict=True),
                color="black",
                alpha=0.35 - 0.1 * min(k, 2),
                linewidth=1,
                label=f"range test ({label})",
            )
    twin.set_ylabel("range-test loss (smoothed)")
    # a clipped axis draws its diverged trials at the top: the legend goes below them
    twin.legend(loc="upper right" if clipped is None else "lower right", fontsize="small")
    return drawn


def _set_axes(
    fig: Figure, ax: Axes, drawn: list[float], clipped: tuple[float, float, float] | None
) -> None:
    """Scale the LR axis (log), clip the loss axis with its note, add the trials' legend."""
    if drawn and min(drawn) == max(drawn) > 0:  # a single LR (a one-point sweep): a decade round it
        ax.set_xlim(drawn[0] / math.sqrt(10), drawn[0] * math.sqrt(10))
    ax.set_xscale("log")
    if clipped is not None:
        ax.set_ylim(clipped[0], clipped[1])
        fig.text(
            0.01, 0.01, f"axis clipped (^): a diverged trial's best loss reached {clipped[2]:.3g}",
            ha="left", va="bottom", fontsize="x-small",
        )  # fmt: skip
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize="small")


def clipped_limits(
    finite_curves: Sequence[tuple[Sequence[float], bool]], margin: float = 0.1
) -> tuple[float, float, float] | None:
    """A panel's y limits when a diverged trial would flatten the others, else None.

    ``finite_curves`` holds each trial's losses and whether it diverged. The axis spans the
    losses of the trials that did not diverge, ``margin`` of their range beyond each end, when a
    diverged one climbs past that; the third value is the highest loss left out, for the
    panel's note. None when no trial diverged above the others, or every trial diverged.

    Example:
        >>> low, top, peak = clipped_limits([([2.3, 0.9, 0.5], False), ([2.3, 40, 3.1e6], True)])
        >>> round(low, 2), round(top, 2), peak
        (0.32, 2.48, 3100000.0)
    """
    kept = [v for values, diverged in finite_curves if not diverged for v in values]
    peak = max((v for values, _ in finite_curves for v in values), default=None)
    if not kept or peak is None:
        return None
    low, high = min(kept), max(kept)
    span = (high - low) or abs(high) or 1.0
    top = high + margin * span
    return (low - margin * span, top, peak) if peak > top else None


def plot_sweep_curves(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    trials: Sequence[Any],
    path: str | os.PathLike[str],
) -> Path:
    """:func:`sweep_curves_figure` saved as a PNG at ``path``."""
    sweep_curves_figure(curves, trials).savefig(os.fspath(path), dpi=100)
    return Path(path)


def sweep_curves_figure(
    curves: Mapping[str, Sequence[tuple[int, float]]], trials: Sequence[Any]
) -> Figure:
    """Validation loss per epoch of every trial, one panel per group, early stops marked ``x``.

    A trial that diverged is drawn up to the top of the axis, which stops a little above the
    other trials' highest loss (:func:`clipped_limits`), and the panel says how high it went;
    otherwise its losses (up to ~1e6 before it is stopped) would flatten every other curve.

    Args:
        curves: ``run_id -> [(epoch, valid_loss), ...]``.
        trials: Trial rows (``run_id``, ``group``, ``stop_reason``).
        path: Where to save the PNG.
    """
    groups = sorted({t.group for t in trials}) or ["(none)"]
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig = fixed_figure(
        4.2 * cols, 3.2 * rows, left=0.75, right=0.15, bottom=0.55, top=0.7, wspace=0.3, hspace=0.5
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    for index, group in enumerate(groups):
        ax = axes[index // cols][index % cols]
        drawn: list[tuple[Sequence[float], bool]] = []
        lost = 0  # trials with no finite validation loss to draw
        for trial in (t for t in trials if t.group == group):
            points = [(e, v) for e, v in curves.get(trial.run_id, []) if _finite(v)]
            if not points:
                lost += trial.stop_reason == "diverged"
                continue
            epochs, values = zip(*points, strict=True)
            (line,) = ax.plot(epochs, values, linewidth=1, alpha=0.8)
            if trial.stop_reason in ("rising_val_loss", "diverged"):
                ax.plot(epochs[-1], values[-1], marker="x", markersize=9, color=line.get_color())
            drawn.append((values, trial.stop_reason == "diverged"))
        clipped = clipped_limits(drawn)
        if clipped is not None:
            ax.set_ylim(clipped[0], clipped[1])
            ax.text(
                0.98, 0.96, f"axis clipped: a diverged trial reached {clipped[2]:.3g}",
                transform=ax.transAxes, ha="right", va="top", fontsize="x-small",
            )  # fmt: skip
        if lost:  # else an empty panel, unexplained
            ax.text(
                0.5, 0.5 if not drawn else 0.04,
                f"{lost} trial(s) diverged with no finite validation loss",
                transform=ax.transAxes, ha="center", va="center" if not drawn else "bottom",
                fontsize="x-small",
            )  # fmt: skip
        ax.set_title(group, fontsize="medium")
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid_loss")
    for index in range(len(groups), rows * cols):
        axes[index // cols][index % cols].set_visible(False)
    fig.suptitle("Validation loss of every trial (x: stopped early)")
    return fig
