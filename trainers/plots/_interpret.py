"""Figures of a model's mistakes: the confusion matrix and the top-loss images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trainers.plots._figure import fixed_figure, save_figure

__all__ = ["plot_confusion_matrix", "plot_top_losses"]


def plot_confusion_matrix(
    cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """Save a confusion matrix (rows actual, columns predicted) with counts in the cells.

    Raises:
        ValueError: unless ``cm`` is square with one row per class.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape != (len(classes), len(classes)):
        raise ValueError(
            f"cm must be a {len(classes)}x{len(classes)} matrix for the classes, "
            f"but got shape {cm.shape}."
        )
    size = max(4.0, 0.45 * len(classes) + 2)
    # Fixed margins sized to the longest class name (constrained layout doubles the drawing
    # time, and every trial of a sweep draws this figure).
    label_in = 0.45 + 0.09 * max((len(str(c)) for c in classes), default=1)
    total = size + label_in
    fig = fixed_figure(total, total, left=label_in, bottom=label_in, right=0.2, top=0.45)
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    ticks = range(len(classes))
    ax.set_xticks(ticks, labels=list(classes), rotation=90)
    ax.set_yticks(ticks, labels=list(classes))
    ax.set(xlabel="Predicted", ylabel="Actual", title="Confusion matrix")
    threshold = cm.max() / 2 if cm.size else 0
    for (row, col), count in np.ndenumerate(cm):
        ax.text(
            col,
            row,
            str(count),
            ha="center",
            va="center",
            color="white" if count > threshold else "black",
        )
    return save_figure(fig, path)


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
