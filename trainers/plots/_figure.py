"""``fixed_figure``: a pyplot-free figure with margins fixed in inches."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def fixed_figure(
    width: float,
    height: float,
    *,
    left: float,
    right: float,
    bottom: float,
    top: float,
    wspace: float = 0.2,
    hspace: float = 0.2,
) -> Figure:
    """A ``width`` x ``height`` inch figure on the Agg canvas, margins given in inches.

    Fixed margins instead of constrained layout, which doubles the drawing time: every trial of
    a sweep draws its figures, and the report draws its own while the cores wait.
    ``wspace`` and ``hspace`` are matplotlib's (fractions of the mean axes width and height).
    """
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wspace,
        hspace=hspace,
    )
    return fig
