"""Training curves: loss and error rate per epoch, from a Learner's history."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainers.plots._figure import fixed_figure, save_figure

__all__ = ["plot_curves"]


def _series(history: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r.get(key, math.nan)) for r in history]


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Save train / valid loss and error rate per epoch as one figure (e.g. ``curves.png``).

    Epochs are numbered 1.. in record order (``fit_recipe``'s step markers, whose ``epoch`` is
    None, are skipped), so several fits (``fine_tune``'s frozen and
    unfrozen phases, a recipe) run on along one axis; a change of ``phase`` is marked with a
    dotted vertical line. Missing or non-finite values leave gaps. Uses no pyplot state.

    Args:
        history: ``learn.history``: records with ``train_loss``, ``valid_loss`` and, when
            present, ``error_rate``.
        path: Where to write the figure (format from the suffix).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: for a history without epoch records.
    """
    if not history:
        raise ValueError("history is empty: there is no epoch to plot.")
    history = [r for r in history if not ("epoch" in r and r["epoch"] is None)]
    if not history:
        raise ValueError(
            "history has no epoch record, only fit_recipe step markers: there is no epoch to plot."
        )
    epochs = list(range(1, len(history) + 1))
    fig = fixed_figure(9, 3.5, left=0.72, right=0.18, bottom=0.49, top=0.35, wspace=0.28)
    loss_ax, err_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, _series(history, "train_loss"), marker="o", label="train_loss")
    loss_ax.plot(epochs, _series(history, "valid_loss"), marker="o", label="valid_loss")
    loss_ax.set(xlabel="epoch", ylabel="loss")
    # titles at a fixed height: nothing is drawn above these axes, and placing a title by
    # measuring what is (matplotlib's default) took a tenth of the figure's drawing time
    loss_ax.set_title("Loss", y=1.0)
    loss_ax.legend()
    err_ax.plot(epochs, _series(history, "error_rate"), marker="o", color="tab:red")
    err_ax.set(xlabel="epoch", ylabel="error rate")
    err_ax.set_title("Validation error rate", y=1.0)
    phases = [r.get("phase") for r in history]
    for i in range(1, len(phases)):
        if phases[i] != phases[i - 1]:
            for ax in (loss_ax, err_ax):
                ax.axvline(i + 0.5, color="grey", linestyle=":", linewidth=1)
    return save_figure(fig, path)
