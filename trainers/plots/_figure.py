"""``fixed_figure``: a pyplot-free figure with margins fixed in inches; ``save_figure``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

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


def save_figure(fig: Figure, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write ``fig`` to ``path`` whole or not at all: a temporary file in the same folder, then
    ``os.replace``, so an interrupted or failed save leaves any earlier file untouched.

    The format comes from the suffix (``.png`` when there is none), as with ``savefig``. The
    folder is created when missing (as :meth:`trainers.Learner.save` does).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        IsADirectoryError: ``path`` is a folder.
        OSError: the file cannot be written; it names ``path``, not the temporary file.
    """
    out = Path(path).expanduser()
    if out.is_dir():
        raise IsADirectoryError(
            f"figure path {str(out)!r} is a folder; give a file name (e.g. "
            f"{str(out / 'figure.png')!r})."
        )
    fmt = out.suffix[1:].lower() or "png"
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(partial, format=fmt, **kwargs)
        os.replace(partial, out)
    except OSError as error:  # the user's path, not the temporary file's name
        if error.errno is None:
            raise
        raise type(error)(error.errno, error.strerror, str(out)) from error
    finally:
        with contextlib.suppress(OSError):  # no folder to hold it: nothing to remove
            partial.unlink(missing_ok=True)
    return out
