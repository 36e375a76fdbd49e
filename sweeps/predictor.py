"""A trial's logged model as a ``trainers.Predictor``, loaded with MLflow.

Kept apart from :mod:`sweeps.best` (which trial is best): this module loads a model someone has
already chosen, by its URI or the folder it was downloaded to.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from sweeps.best import BestConfigError
from sweeps.tracking import existing_store_uri

if TYPE_CHECKING:
    from trainers import Predictor


def load_predictor(
    model_uri: str, *, tracking_uri: str | None = None, device: str | None = None
) -> Predictor:
    """A trial's logged model as a ``trainers.Predictor``: it takes raw pixels (uint8), image
    files and PIL images, resized and normalised as the trial's data were, and names classes.

    ``mlflow.pytorch.load_model`` gives the bare network, which takes images normalised with
    the training data's statistics; each trial logs those (with the classes, image size and
    channels) in its model's metadata, read here. Like MLflow's loader, this unpickles the
    model: load only from a store you trust.

    Args:
        model_uri: ``BestConfig.model_uri`` (``runs:/<run_id>/model``), or any MLflow model URI:
            a ``models:/`` one, or a folder the model was downloaded to (which needs no store).
        tracking_uri: as :func:`best_config`'s; only ``runs:/`` and ``models:/`` URIs read it.
        device: where the model runs (default: CUDA when available, else the CPU).

    Raises:
        BestConfigError: for a store that does not exist, a model that does not, or one
            logged without the metadata (by an lrsweep before 2026-12-07, or from data without
            statistics).

    Example:
        >>> best = best_config("digits-lr", metric="error_rate")  # doctest: +SKIP
        >>> load_predictor(best.model_uri).predict_class("digit.png")  # doctest: +SKIP
    """
    import mlflow.pytorch
    import torch
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from sweeps.tracking import mlflow_tracking_uri
    from trainers import Predictor

    try:  # a model downloaded to a folder (or at an artifact URI) needs no tracking store
        uri = existing_store_uri(tracking_uri) if _names_a_run(model_uri) else tracking_uri
    except LookupError as exc:
        raise BestConfigError(str(exc)) from None
    try:
        with mlflow_tracking_uri(uri) if uri is not None else contextlib.nullcontext():
            fields = dict((Model.load(model_uri).metadata or {}).get("predictor") or {})
            if not fields:
                raise BestConfigError(
                    f"model {model_uri} holds no data statistics (logged by an lrsweep before "
                    "2026-12-07, or its trial's data had none): load it with "
                    "mlflow.pytorch.load_model and give "
                    "trainers.Predictor(model, classes=..., image_size=..., in_channels=..., "
                    "mean=..., std=...) the trial's data's values."
                )
            model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except MlflowException as exc:
        raise BestConfigError(f"model {model_uri}: {exc.message}") from None
    for name in ("arch", "n_classes"):  # the network's own; Predictor takes the data's
        fields.pop(name, None)
    chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Predictor(model, device=chosen, **fields)


def _names_a_run(model_uri: str) -> bool:
    """Whether ``model_uri`` is resolved through a tracking store (``runs:/``, ``models:/``),
    not a folder or an artifact location of its own."""
    return model_uri.split(":", 1)[0].lower() in ("runs", "models")
