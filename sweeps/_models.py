"""Models: ``log_pytorch_model``, whether a run holds one, the model registry read, and
MLflow's global tracking URI.

The bodies of the :class:`sweeps.tracking.Tracker` methods of the same names, which delegate
here (``tracker.has_model(...)`` is ``has_model(tracker, ...)``); what a logged model carries
to load without lrsweep is :mod:`sweeps._model_code`. MLflow's model functions
(``mlflow.pytorch.log_model``, ``load_model``) read the global tracking URI, set for their
block alone by :func:`mlflow_tracking_uri`. ``mlflow.pytorch`` and torch are imported when a
model is logged, not before.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException

from sweeps._artifacts import without_progress_bar
from sweeps._model_code import model_environment
from sweeps._reads import all_pages
from sweeps._retry import retrying as _retrying

if TYPE_CHECKING:
    from sweeps.tracking import Tracker

__all__ = [
    "has_model",
    "log_pytorch_model",
    "mlflow_tracking_uri",
    "registered_model",
    "registered_model_names",
]


def has_model(tracker: Tracker, run_id: str, name: str = "model") -> bool:
    """Whether ``run_id`` holds a finished (READY) logged model called ``name``.

    A model whose upload was cut off stays PENDING in MLflow and does not count, so a try
    run again logs it afresh.
    """
    from mlflow.entities import LoggedModelStatus

    experiment_id = tracker.get_run(run_id).info.experiment_id
    found = _retrying(
        lambda: tracker.client.search_logged_models(
            [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'"
        ),
        what="search_logged_models",
    )
    return any(model.status == LoggedModelStatus.READY for model in found)


def registered_model_names(tracker: Tracker) -> list[str]:
    """The names of every model in the store's model registry, sorted."""
    found = all_pages(tracker.client.search_registered_models, what="search_registered_models")
    return sorted(model.name for model in found)


def registered_model(tracker: Tracker, name: str) -> tuple[list[str], dict[str, str]] | None:
    """The versions of registered model ``name`` (oldest first) and its aliases (alias ->
    version); None when no model of that name is registered."""
    try:
        model = _retrying(
            partial(tracker.client.get_registered_model, name), what="get_registered_model"
        )
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    # MLflow's filter strings have no escapes: a name is quoted with the quote it lacks
    quote = next((q for q in ("'", '"') if q not in name), None)
    versions = all_pages(
        partial(
            tracker.client.search_model_versions,
            f"name = {quote}{name}{quote}" if quote else None,  # both: every model's
        ),
        what="search_model_versions",
    )
    numbers = sorted(int(version.version) for version in versions if version.name == name)
    aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    return [str(number) for number in numbers], aliases


def log_pytorch_model(
    tracker: Tracker,
    run_id: str,
    model: Any,
    input_example: Any,
    metadata: Mapping[str, Any] | None = None,
    *,
    extra_files: Sequence[str | os.PathLike[str]] = (),
) -> str:
    """Log ``model`` with ``mlflow.pytorch.log_model`` (signature + input example, and
    ``metadata`` in its MLmodel file: ``mlflow.models.get_model_info(uri).metadata``).
    ``extra_files`` are copied into the model's ``extra_files/`` folder (a trial's
    weights-only export, :data:`sweeps.predictor.EXPORT_FILE`) and listed in its ``pytorch``
    flavor.

    Loadable afterwards with ``mlflow.pytorch.load_model("runs:/<run_id>/model")``. Returns
    that URI. The run's status is left as it was. The ``pickle`` serialization is used:
    MLflow 3's default (``pt2``, ``torch.export``) costs seconds per fresh trial process.
    The model carries what unpickling it needs
    (:func:`sweeps._model_code.model_environment`): a model of lrsweep's ``trainers`` loads,
    and serves, where lrsweep is not installed.
    """
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    model.eval()
    with torch.no_grad():
        output = model(input_example)
    signature = infer_signature(input_example.numpy(), output.numpy())
    status = tracker.get_run(run_id).info.status
    pytorch_logger = logging.getLogger("mlflow.pytorch")
    level = pytorch_logger.level
    pytorch_logger.setLevel(logging.ERROR)  # the pickle-format warning: a deliberate choice

    def log_model() -> None:
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            mlflow.pytorch.log_model(
                model,
                name="model",
                signature=signature,
                input_example=input_example.numpy(),
                serialization_format="pickle",
                metadata=dict(metadata) if metadata else None,
                extra_files=[os.fspath(path) for path in extra_files] or None,
                **model_environment(model),
            )

    try:  # MLflow copies the extra files through its artifact download, progress bar and all
        with mlflow_tracking_uri(tracker._store_uri), without_progress_bar():
            _retrying(log_model, what="log_model")
    finally:
        pytorch_logger.setLevel(level)
        if status == "RUNNING":
            tracker.reopen_run(run_id)
        else:
            tracker.end_run(run_id, status)
    return f"runs:/{run_id}/model"


@contextlib.contextmanager
def mlflow_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI is ``uri`` inside the block, and as it was after it.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the environment (for
    subprocesses). Setting back the URI ``mlflow.get_tracking_uri()`` returned before would
    leave MLflow's resolved default (``sqlite:///<cwd>/mlflow.db``) in that variable, which a
    later sweep of the same process, and every process it starts, takes for the user's choice.
    MLflow's own setting and the variable are both put back (unset when they were unset).

    Example:
        >>> with mlflow_tracking_uri(tracker.uri):  # doctest: +SKIP
        ...     model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils  # private: the URI set, if any

    explicit = getattr(utils, "_tracking_uri", None)
    variable = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(explicit)  # type: ignore[arg-type]  # None: unset, as before
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable
