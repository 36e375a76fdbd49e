"""A logged model's weights-only export read back, and the pickled model in its place.

:func:`read_export` reads ``extra_files/export.pt`` with ``torch.load(weights_only=True)``
(through ``trainers.load_learner``), telling an export that cannot be read
(:class:`ExportUnreadable`: missing, cut short, damaged) from one that holds more than weights
(refused outright); :func:`unpickled` is the ``allow_pickle`` fallback. Used by
:func:`sweeps.predictor.load_predictor`, which re-exports ``EXPORT_FILE`` and ``EXPORT_PATH``
and reads the rest as ``_ExportUnreadable``, ``_lists_export``, ``_exported`` and ``_unpickled``.
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps.best import BestConfigError, artifact_error
from sweeps.spec._redact import redact_text
from sweeps.tracking import redact_uri

if TYPE_CHECKING:
    from trainers import Predictor

__all__ = [
    "EXPORT_FILE",
    "EXPORT_PATH",
    "ExportUnreadable",
    "lists_export",
    "read_export",
    "unpickled",
]

EXPORT_FILE = "export.pt"
"""The weights-only export (``trainers.export``) a trial logs in its model's ``extra_files/``."""
EXPORT_PATH = f"extra_files/{EXPORT_FILE}"
"""Where that export lies inside the logged model's folder."""
_LEGACY_PICKLE = "pickle protocol 0 or 1"
"""What ``trainers.load_learner`` says of a file ``torch.save`` wrote with those protocols."""


class ExportUnreadable(Exception):
    """The export a model lists cannot be read (missing, cut short, damaged): what
    :func:`~sweeps.predictor.load_predictor` refuses, or, with ``allow_pickle``, warns of and
    loads the pickled model in its place. Not raised for an export that holds more than
    weights."""


def lists_export(logged: Any) -> bool:
    """Whether the logged model's ``pytorch`` flavor lists the export among its extra files."""
    listed = (logged.flavors.get("pytorch") or {}).get("extra_files") or []
    return any(isinstance(entry, dict) and entry.get("path") == EXPORT_PATH for entry in listed)


def read_export(model_uri: str, device: str, shown: str) -> Predictor:
    """The model's export, downloaded and read with ``torch.load(weights_only=True)``;
    ``shown``: the model as the user named it (``model_uri`` is a local path for a ``file:``
    URI).

    Raises:
        ExportUnreadable: the export is missing or does not load.
        BestConfigError: it holds more than weights.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    from trainers.export import load_learner

    with tempfile.TemporaryDirectory(prefix="lrsweep-model-") as folder:
        if ":/" in model_uri:  # runs:/, models:/ or an artifact location
            location = model_uri  # a models:/ URI names no path inside: resolved, as MLflow does
            if ModelsArtifactRepository.is_models_uri(model_uri):
                location = ModelsArtifactRepository.get_underlying_uri(model_uri)
            uri = f"{location.rstrip('/')}/{EXPORT_PATH}"
            try:
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
            except (MlflowException, OSError) as error:  # not "no model": its MLmodel was read
                raise ExportUnreadable(
                    f"model {shown}: its MLmodel lists the weights-only export {EXPORT_PATH}, "
                    f"which cannot be read ({redact_text(artifact_error(error))}): its upload "
                    "was cut short or the file was removed"
                ) from None
        else:  # a folder: read in place
            local = str(Path(model_uri) / EXPORT_PATH)
        try:
            return load_learner(local, device=device)
        except (ValueError, OSError) as error:
            named = f"{shown.rstrip('/')}/{EXPORT_PATH}"
            said = f"model {shown}: its export {EXPORT_PATH} does not load: "
            if _holds_more_than_weights(error):
                raise BestConfigError(said + _tampered(named, str(error))) from None
            problem = " ".join(str(error).replace(str(Path(local)), named).split())
            raise ExportUnreadable(said + problem.rstrip(".")) from None


def _holds_more_than_weights(error: Exception) -> bool:
    """Whether ``load_learner`` failed because torch's weights-only unpickler refused what the
    file holds (a class, a function: what an unpickling load would run). Its refusal of a
    damaged pickle reads alike (``UnpicklingError`` either way), so that counts too: refused
    rather than taken for damage, as the file cannot be told from an altered one. So does a
    TorchScript archive, which ``torch.load(weights_only=True)`` refuses before any unpickling
    (a ``RuntimeError``, or the ``UserWarning`` before it where warnings are errors, each
    naming TorchScript): it holds code, which ``torch.jit.load`` would run, and
    ``trainers.export`` never writes one. A file ``torch.save`` wrote with pickle protocol 0
    or 1 (which ``trainers.export`` never writes either) is refused the same way: torch's
    weights-only unpickler cannot read it, so it cannot be told from one that runs code."""
    cause = error.__cause__
    if isinstance(cause, pickle.UnpicklingError):
        return True
    return isinstance(cause, RuntimeError | UserWarning) and "TorchScript" in str(cause)


def _tampered(named: str, error: str) -> str:
    """Why an export that holds more than weights (``error``: ``load_learner``'s) is refused,
    on one line, without torch's advice on loading it unsafely (``weights_only=False``,
    ``add_safe_globals``)."""
    what = "holds more than weights (objects only an unpickling load reads, which runs code)"
    if _LEGACY_PICKLE in error:
        what = f"was written with {_LEGACY_PICKLE}, which only an unpickling load reads"
    return (
        f"{named} {what}, so it was not written by trainers.export or was altered since: its "
        "pickled model is not loaded either, allow_pickle or not; trust no model of that "
        "store, give one from a store whose writers you trust."
    )


def unpickled(model_uri: str, logged: Any, device: str) -> Predictor:
    """The pickled model (``allow_pickle``), with the data's statistics from its metadata."""
    import mlflow.pytorch

    from trainers import Predictor

    fields = dict((logged.metadata or {}).get("predictor") or {})
    if not fields:
        raise BestConfigError(
            f"model {redact_uri(model_uri)} holds no data statistics (logged by an lrsweep "
            "before 2026-12-07, or its trial's data had none): load it with "
            "mlflow.pytorch.load_model and give "
            "trainers.Predictor(model, classes=..., image_size=..., in_channels=..., "
            "mean=..., std=...) the trial's data's values."
        )
    try:
        model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except (ImportError, AttributeError) as error:  # a class the pickle names is not here
        raise BestConfigError(
            f"model {redact_uri(model_uri)}: its pickled model names code this Python does not "
            f"have ({type(error).__name__}: {redact_text(str(error))}): it was logged by other "
            "code (an older lrsweep, or a model class of one's own). Run it where that code is "
            "installed, or re-run the trial with this lrsweep, which logs a weights-only "
            "export beside the model (lrsweep best EXPERIMENT --format spec writes a spec "
            "that re-runs the best trial)."
        ) from None
    for name in ("arch", "n_classes"):  # the network's own; Predictor takes the data's
        fields.pop(name, None)
    return Predictor(model, device=device, **fields)
