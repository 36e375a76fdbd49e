"""Every matplotlib figure of trainers; each takes results and never computes them."""

from __future__ import annotations

from trainers.plots._curves import plot_curves
from trainers.plots._figure import fixed_figure, save_figure
from trainers.plots._interpret import plot_confusion_matrix, plot_top_losses
from trainers.plots._lr_find import plot_lr_find

__all__ = [
    "fixed_figure",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_lr_find",
    "plot_top_losses",
    "save_figure",
]
