"""A trial worker's once-per-process state: its MLflow client per store and the warm-up; and
the data's warnings the driver said already, kept out of a worker's console.

Ray reuses a worker process for several trials of a sweep: :func:`tracker` keeps one
``Tracker`` per store in it, and making the first also runs :func:`warm_up` (the process's
one-off imports) before that trial's run opens. Called by :func:`sweeps.trial.train_trial`,
which re-exports both as ``_tracker`` and ``_warm_up``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
from collections.abc import Iterator

import torch

from sweeps.tracking import Tracker

_TRACKERS: dict[str, Tracker] = {}


def tracker(uri: str) -> Tracker:
    """One client per store per worker process (Ray reuses a worker for several trials).

    A worker's first trial also pays the once-per-process costs of what every trial needs
    (:func:`warm_up`) at its start, before the trial's run opens, not inside its first trial.
    """
    if uri not in _TRACKERS:
        _TRACKERS[uri] = Tracker(uri)
        warm_up()
    return _TRACKERS[uri]


_FIRST_LOG_MODEL_IMPORTS = (
    "git",
    "mlflow.pyfunc.scoring_server",
    "mlflow.pyfunc.utils.environment",
    "mlflow.tracing.processor.base_mlflow",
    "mlflow.tracing.processor.otel",
)
"""Modules MLflow's first ``log_model`` imports on its way (GitPython is optional to MLflow,
and a release may move its own modules: a missing one is skipped)."""


@functools.cache  # once per process, whatever number of stores its trials log to
def warm_up() -> None:
    """Import what a trial needs beyond the trainers, once per worker process (~3 CPU-s).

    ``torch._dynamo`` (imported by the first optimizer built; ~1.2 s), matplotlib for the
    figures, ``mlflow.pytorch`` for the model and MLflow's map of installed packages (scanned
    by the first ``log_model``; ~0.6 s), and what the first ``log_model`` imports on its way
    (~0.25 s): ``mlflow.pyfunc`` and its scoring server (it loads the model back to check the
    input example), GitPython (the source's commit), MLflow's tracing processors (which
    ``mlflow.set_tracking_uri`` retires).
    """
    import mlflow.pytorch  # noqa: F401  (imports mlflow.pyfunc too)

    import trainers.plots  # noqa: F401

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # imports torch._dynamo
    for module in _FIRST_LOG_MODEL_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    try:  # private to MLflow: without it the first log_model scans the packages instead
        from mlflow.utils.requirements_utils import _init_packages_to_modules_map

        _init_packages_to_modules_map()
    except (ImportError, AttributeError):
        pass


DATA_LOGGER = "trainers.data"
"""The logger of the data's warnings (its modules' loggers are its children)."""


@contextlib.contextmanager
def data_warnings_said(said: bool) -> Iterator[None]:
    """Keep the data's warnings (a class folder of a single image, a class with no validation
    image) out of this block's log when ``said``: the driver opened the same data before the
    sweep and said them once; every trial's worker opening it said them again.

    Errors still show; without ``said`` (a cluster's driver reads no image folder) nothing
    changes.
    """
    if not said:
        yield
        return
    data_logger = logging.getLogger(DATA_LOGGER)
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        data_logger.setLevel(level)
