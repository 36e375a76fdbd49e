"""Figures of a model's mistakes: the confusion matrix and the top-loss images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path as MplPath
from matplotlib.textpath import TextPath
from matplotlib.transforms import Affine2D

from trainers.plots._figure import fixed_figure, save_figure

__all__ = ["MAX_CELL_COUNTS", "plot_confusion_matrix", "plot_top_losses"]

MAX_CELL_COUNTS = 30
"""Classes up to which ``plot_confusion_matrix`` writes each cell's count."""


def plot_confusion_matrix(
    cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """Save a confusion matrix (rows actual, columns predicted) with counts in the cells.

    Up to ``MAX_CELL_COUNTS`` (30) classes every cell shows its count and the figure grows with
    the classes; beyond, the cells show colour only (their numbers would be unreadable; drawn as
    texts, 100 classes' took 8 s a figure) and the figure stays at the size of 30 classes, with
    smaller class labels. The counts themselves are ``cm`` (a sweep logs them beside the figure
    as ``confusion_matrix.json``).

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
    ax.set(xlabel="Predicted", ylabel="Actual")
    ax.set_title("Confusion matrix", y=1.0)  # fixed: nothing above the axes to measure first
    if counts_shown:
        ax.add_collection(_CellCounts(cm, ax), autolim=False)
    return fig


class _CellCounts(PathCollection):
    """Each cell's count, centred in its cell, white on dark cells, as one collection of glyph
    outlines in the default text font.

    One ``Text`` per cell took half the figure's drawing time (each is laid out and rasterised
    on its own: 0.12 s of 0.25 s at 10 classes); the outlines of each distinct number are made
    once and the collection is drawn in one call. ``labels`` holds the numbers shown.
    """

    def __init__(self, cm: np.ndarray, ax: Axes) -> None:
        threshold = cm.max() / 2 if cm.size else 0
        prop = FontProperties()  # what Text uses by default (rcParams' family and size)
        outlines: dict[str, MplPath] = {}
        self.labels = [str(count) for count in cm.flat]
        for label in self.labels:
            if label not in outlines:
                outline = TextPath((0, 0), label, prop=prop)
                # the control points' box: the glyphs' own to a fraction of a pixel, and
                # ``get_extents`` (the curves' exact extrema) took as long as the drawing
                low, high = outline.vertices.min(axis=0), outline.vertices.max(axis=0)
                outlines[label] = outline.transformed(Affine2D().translate(*-(low + high) / 2))
        rows, cols = np.indices(cm.shape)
        super().__init__(
            [outlines[label] for label in self.labels],
            offsets=np.column_stack([cols.ravel(), rows.ravel()]),
            offset_transform=ax.transData,
            # the outlines are in points: to inches, then to pixels at whatever dpi is saved
            transform=Affine2D().scale(1 / 72) + ax.figure.dpi_scale_trans,
            facecolors=["white" if count > threshold else "black" for count in cm.flat],
            edgecolors="none",
        )


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
