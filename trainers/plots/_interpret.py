"""Figures of a model's mistakes: the confusion matrix and the top-loss images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import TransformedPatchPath

from trainers.plots._figure import fixed_figure, save_figure

__all__ = ["MAX_CELL_COUNTS", "plot_confusion_matrix", "plot_top_losses"]

MAX_CELL_COUNTS = 30
"""Classes up to which ``plot_confusion_matrix`` writes each cell's count."""


def plot_confusion_matrix(
    cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """Save a confusion matrix (rows actual, columns predicted) with counts in the cells.

    Up to ``MAX_CELL_COUNTS`` (30) classes every cell shows its count and the figure grows with
    the classes; beyond, the cells show colour only (their numbers would be unreadable, and each
    is a text to lay out and draw: 100 classes took 8 s a figure) and the figure stays at the
    size of 30 classes, with smaller class labels. The counts themselves are ``cm`` (a sweep
    logs them beside the figure as ``confusion_matrix.json``).

    Raises:
        ValueError: unless ``cm`` is square with one row per class.
    """
    return save_figure(_confusion_figure(np.asarray(cm), classes), path)


def _confusion_figure(cm: np.ndarray, classes: Sequence[str]) -> Figure:
    if cm.ndim != 2 or cm.shape != (len(classes), len(classes)):
        raise ValueError(
            f"cm must be a {len(classes)}x{len(classes)} matrix for the classes, "
            f"but got shape {cm.shape}."
        )
    n = len(classes)
    counts_shown = n <= MAX_CELL_COUNTS
    size = max(4.0, 0.45 * min(n, MAX_CELL_COUNTS) + 2)
    fontsize = None if counts_shown else max(3.0, 10.0 * MAX_CELL_COUNTS / n)
    # Fixed margins sized to the longest class name (constrained layout doubles the drawing
    # time, and every trial of a sweep draws this figure).
    longest = max((len(str(c)) for c in classes), default=1)
    label_in = 0.45 + 0.09 * longest * (1.0 if fontsize is None else fontsize / 10.0)
    total = size + label_in
    fig = fixed_figure(total, total, left=label_in, bottom=label_in, right=0.2, top=0.45)
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    ticks = range(n)
    ax.set_xticks(ticks, labels=list(classes), rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, labels=list(classes), fontsize=fontsize)
    ax.set(xlabel="Predicted", ylabel="Actual", title="Confusion matrix")
    if counts_shown:
        threshold = cm.max() / 2 if cm.size else 0
        # One clip path for every cell (the texts are not clipped; Axes.text would otherwise
        # build a transform chain per text, ~12% of the figure's time at 10 classes).
        clip = TransformedPatchPath(ax.patch)
        for (row, col), count in np.ndenumerate(cm):
            ax.text(
                col,
                row,
                str(count),
                ha="center",
                va="center",
                color="white" if count > threshold else "black",
                clip_path=clip,
            )
    return fig


def plot_top_losses(
    images: torch.Tensor,
    titles: Sequence[str],
    path: str | os.PathLike[str],
    *,
    ncols: int = 4,
) -> Path:
    """Save a grid of images, each with its title (``predicted/actual/loss/prob`` by convention).

    Args:
        images: ``(K, C, H, W)`` float images already scaled to ``[0, 1]`` (1 or 3 channels).
        titles: One title per image.
        path: Where to write the figure.
        ncols: Images per row.

    Raises:
        ValueError: when ``images`` and ``titles`` differ in length or there are none.
    """
    if len(images) != len(titles) or len(images) == 0:
        raise ValueError(
            "images and titles must be non-empty and equal in length, "
            f"but got {len(images)} and {len(titles)}."
        )
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig = Figure(figsize=(2.6 * ncols, 2.8 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax, image, title in zip(axes, images, titles, strict=False):
        pixels = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        if pixels.shape[-1] == 1:
            ax.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(pixels)
        ax.set_title(title, fontsize=8)
    for ax in axes:
        ax.axis("off")
    return save_figure(fig, path)
