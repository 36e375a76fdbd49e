"""A run's artifacts in a local folder: the folder checked before a sweep starts, and the
free disk space an artifact or checkpoint folder needs; downloads without a progress bar.

:class:`sweeps.tracking.Tracker`'s ``check_artifacts_writable`` and ``download_artifact`` use
these; every upload and download itself is an MLflow call of the tracker's, retried.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = [
    "MIN_FREE_MB",
    "MIN_FREE_MB_ENV",
    "check_local_artifacts",
    "min_free_mb",
    "without_progress_bar",
]

MIN_FREE_MB = 50
MIN_FREE_MB_ENV = "LRSWEEP_MIN_FREE_MB"


def min_free_mb() -> float:
    """Free disk space (MB) an artifact or checkpoint folder needs: ``$LRSWEEP_MIN_FREE_MB`` or 50.

    Raises:
        ValueError: when the variable is set to something other than a non-negative number.
    """
    text = os.environ.get(MIN_FREE_MB_ENV, "").strip()
    if not text:
        return float(MIN_FREE_MB)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{MIN_FREE_MB_ENV} must be a number of megabytes >= 0, but got {text!r}.")
    return value


def check_local_artifacts(location: str) -> None:
    """Raise ``OSError`` when ``location``, a local artifact location (``file:`` URI or path),
    is unwritable or has less than :func:`min_free_mb` free; any other location (served or
    remote artifacts, checked by the server on first write) passes."""
    if not location.startswith(("file:", "/")):
        return
    path = Path(unquote(urlsplit(location).path)) if location.startswith("file:") else None
    path = path or Path(location)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as error:
        raise OSError(f"artifact location {path} is not writable: {error}") from error
    free_mb, needed_mb = shutil.disk_usage(path).free / 2**20, min_free_mb()
    if free_mb < needed_mb:
        raise OSError(
            f"artifact location {path} has {free_mb:.0f} MB free; "
            f"at least {needed_mb:.0f} MB are needed for checkpoints and reports."
        )


@contextlib.contextmanager
def without_progress_bar() -> Iterator[None]:
    """No MLflow artifact progress bar inside the block, unless
    ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` says otherwise (a value set is kept)."""
    variable = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    given = os.environ.get(variable)
    os.environ[variable] = "false" if given is None else given
    try:
        yield
    finally:
        if given is None:
            os.environ.pop(variable, None)
