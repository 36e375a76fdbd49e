"""Which logged model to predict with, and that model as a ``trainers.Predictor``.

Kept apart from :mod:`sweeps.best` (which trial is best): this module loads a model already
chosen: a trial run's (:func:`trial_model`, ``lrsweep predict --trial``), or one named by an
MLflow model URI (``runs:/<run id>/model``, ``models:/<name>/<version>``,
``models:/<name>@<alias>``) or by the folder it was downloaded to (one holding an ``MLmodel``
file), as a path or a ``file:`` URI. :func:`is_model_reference` tells such a name from a
sweep's experiment: no experiment name holds ``:/`` (spec names are letters, digits and
``_ . - /``), and a folder counts only when it holds ``MLmodel``, so an experiment named like a
folder of the working directory stays an experiment (:func:`experiment_store` tells when a
name is both).

Every failure is a :class:`~sweeps.best.BestConfigError` of one line that names the run, URI or
folder and says what to do, in place of MLflow's own text (``Run with id=... not found``), or of
the traceback of a foreign artifact client (boto's, MLflow's http one). A URI is shown without
its user (``https://token@host``); one holding a password is refused before any client reads it,
as a tracking URI is: those clients quote it in their errors (boto: ``Invalid bucket name
"KEY:SECRET@bucket"``) and take credentials from the environment.

This module keeps what ``lrsweep predict`` and a trial call; its parts live beside it, each
name other code reads re-exported here: :mod:`sweeps._model_ref` (which model a name refers to,
the store it is read through, MLflow's failures as one line) and :mod:`sweeps._export_read`
(the weights-only export read back, the pickled model in its place with ``allow_pickle``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps._export_read import EXPORT_FILE as EXPORT_FILE  # re-exported
from sweeps._export_read import EXPORT_PATH as EXPORT_PATH
from sweeps._export_read import ExportUnreadable as _ExportUnreadable
from sweeps._export_read import lists_export as _lists_export
from sweeps._export_read import read_export as _exported
from sweeps._export_read import unpickled as _unpickled
from sweeps._model_ref import MODEL_FILE as MODEL_FILE  # re-exported
from sweeps._model_ref import SHOWN_NAMES as SHOWN_NAMES
from sweeps._model_ref import TRIAL_MODEL as TRIAL_MODEL
from sweeps._model_ref import is_model_reference as is_model_reference
from sweeps._model_ref import local_path as _local
from sweeps._model_ref import model_folder_problem as model_folder_problem
from sweeps._model_ref import no_run as _no_run
from sweeps._model_ref import open_tracker as _tracker
from sweeps._model_ref import reading as _reading
from sweeps._model_ref import store_for as _store
from sweeps.best import (
    ARM_TAG,
    BEST_PREFIX,
    STOP_REASON_TAG,
    STRATEGY_TAG,
    TIE_BREAK_METRIC,
    BestConfigError,
)
from sweeps.tracking import (
    TAG_KIND,
    Tracker,
    as_logged,
    existing_store_uri,
    finite_or_none,
    redact_uri,
    restore_command,
)

if TYPE_CHECKING:
    from trainers import Predictor

logger = logging.getLogger(__name__)

_UNREADABLE_EXPORT_ADVICE = (
    "give another trial's model (lrsweep best names the best trial with a model), or pass "
    "allow_pickle=True (lrsweep predict --allow-pickle) to unpickle its pickled model instead, "
    "only for a store whose writers you trust."
)


def experiment_store(name: str, *, tracking_uri: str | None = None) -> str | None:
    """The store (shown without credentials) that holds a live experiment ``name``, or None:
    no such experiment, no store there (none is created), or a store that cannot be read at
    the first try (not waited for: a model folder needs no store).

    ``lrsweep predict NAME`` asks it when ``NAME`` is also a model folder, to refuse guessing
    which of the two is meant.
    """
    import requests
    from mlflow.exceptions import MlflowException

    try:
        tracker = Tracker(existing_store_uri(tracking_uri))
        found = tracker.find_experiment(name, timeout_s=0)
    except (LookupError, ValueError, OSError, MlflowException, requests.RequestException):
        return None
    return None if found is None else redact_uri(tracker.uri)


@dataclass(frozen=True)
class TrialModel:
    """A trial run's logged model, checked to be there.

    Attributes:
        run_id: the trial's run.
        experiment: its sweep's experiment.
        model_uri: ``runs:/<run_id>/model``.
        arm: its arm's name in the spec (tag ``sweeps.arm``, else its kind).
        valid_loss: its ``best/valid_loss``; None when it logged none, or none finite.
    """

    run_id: str
    experiment: str
    model_uri: str
    arm: str
    valid_loss: float | None


def trial_model(
    run_id: str, *, tracking_uri: str | None = None, experiment: str | None = None
) -> TrialModel:
    """The model trial run ``run_id`` logged at its best epoch.

    Args:
        run_id: a trial's MLflow run id, as ``lrsweep best``, ``lrsweep sweeps`` or the MLflow
            UI show it.
        tracking_uri: as :func:`~sweeps.best.best_config`'s.
        experiment: when given, the trial must be one of this sweep experiment's.

    Raises:
        BestConfigError: no such run in the store (or a deleted one), a run that is no trial of
            lrsweep (a sweep's parent run is named as such), a trial of another experiment, or
            a trial that logged no model (it failed first or still runs, or its sweep ran
            with ``tracking.checkpoints: none``).
    """
    from mlflow.exceptions import MlflowException

    tracker = _tracker(tracking_uri, f"run {run_id}")
    where = redact_uri(tracker.uri)
    try:
        run = tracker.get_run(run_id)
    except MlflowException as exc:
        raise BestConfigError(_no_run(run_id, where, exc)) from None
    if run.info.lifecycle_stage == "deleted":
        raise BestConfigError(
            f"run {run_id} was deleted from {where}: restore it "
            f"({restore_command(tracker.uri, run_id=run_id)}) or give another trial's run id."
        )
    tags = run.data.tags
    if STRATEGY_TAG not in tags:
        if tags.get(TAG_KIND) == "sweep":
            raise BestConfigError(
                f"run {run_id} is a sweep run (the parent of its trials), not a trial: give one "
                f"of its trials' run ids (lrsweep best EXPERIMENT --run-id {run_id} names its "
                "best)."
            )
        raise BestConfigError(
            f"run {run_id} is no trial run of lrsweep (it has no {STRATEGY_TAG} tag): give a "
            f"trial's run id, or, for a model that run logged, its URI runs:/{run_id}/<path>."
        )
    name = tracker.experiment_name(run.info.experiment_id)
    if experiment is not None and name != experiment:
        raise BestConfigError(
            f"run {run_id} is a trial of experiment {name!r}, not of {experiment!r}."
        )
    if not _logged_model(tracker, run_id):
        reason = tags.get(STOP_REASON_TAG)
        state = run.info.status + (f", stop reason {reason}" if reason else "")
        raise BestConfigError(
            f"trial {run_id} logged no model ({state}): a trial logs its best model when it "
            "ends, so one that failed first or still runs has none, nor has a trial of a sweep "
            "with tracking.checkpoints: none; give another trial's run id (lrsweep best names "
            "the best trial with a model)."
        )
    loss = run.data.metrics.get(BEST_PREFIX + TIE_BREAK_METRIC)
    return TrialModel(
        run_id=run_id,
        experiment=name,
        model_uri=f"runs:/{run_id}/{TRIAL_MODEL}",
        arm=tags.get(ARM_TAG) or tags[STRATEGY_TAG],
        valid_loss=None if loss is None else finite_or_none(as_logged(loss)),
    )


def model_run_id(model_uri: str, *, tracking_uri: str | None = None) -> str | None:
    """The run that logged the model at ``model_uri`` (for ``models:/`` its version's source
    run, for a downloaded folder the run its ``MLmodel`` names); None when ``MLmodel`` names
    none.

    Raises:
        BestConfigError: as :func:`load_predictor`, for a model that is not there.
    """
    from mlflow.models import Model

    with _reading(model_uri, _store(model_uri, tracking_uri)):
        return Model.load(_local(model_uri)).run_id


def load_predictor(
    model_uri: str,
    *,
    tracking_uri: str | None = None,
    device: str | None = None,
    allow_pickle: bool = False,
) -> Predictor:
    """A trial's logged model as a ``trainers.Predictor``: it takes raw pixels (uint8), image
    files and PIL images, resized and normalised as the trial's data were, and names classes.

    Nothing is unpickled: a trial logs, beside MLflow's pickled model, a weights-only export of
    it (``extra_files/export.pt``: the architecture's name, the weights, the classes and the
    data's statistics), read here with ``torch.load(weights_only=True)`` and rebuilt with
    ``trainers.build_model`` (:func:`trainers.load_learner`). A model logged without that
    file (by an lrsweep before 2026-12-07, or a model ``build_model`` did not build) is refused
    unless ``allow_pickle``: ``mlflow.pytorch.load_model`` then unpickles it, which runs
    whatever code the file names, so allow it only for a store whose writers you trust. So is
    a model whose MLmodel lists the export but whose export cannot be read (missing, cut
    short, damaged, weights that do not fit): with ``allow_pickle`` the pickled model is
    loaded instead, with a warning naming the export and why. An export that holds more than
    weights (objects only an unpickling load reads; anything torch's weights-only unpickler
    refuses counts, and a TorchScript archive, which holds code) is refused even with
    ``allow_pickle``: it was altered, so nothing of that model is loaded.

    Args:
        model_uri: ``BestConfig.model_uri`` or :attr:`TrialModel.model_uri`
            (``runs:/<run_id>/model``), or any MLflow model URI: a ``models:/`` one (the
            registry of the tracking store, or ``MLFLOW_REGISTRY_URI``'s when set), or a folder
            the model was downloaded to (which needs no store), as a path or a ``file:`` URI
            (``file:///abs/model``, the ``artifact_location`` of a model in a local store).
        tracking_uri: as :func:`~sweeps.best.best_config`'s; only ``runs:/`` and ``models:/``
            URIs read it.
        device: where the model runs (default: CUDA when available, else the CPU).
        allow_pickle: load a model without the export, or whose export cannot be read, by
            unpickling it, with the data's statistics from its metadata.

    Raises:
        BestConfigError: for a store that does not exist; a run, registered model, version,
            alias or folder that does not (each named, with what to give instead); a URI with
            a password, or one its artifact client cannot read (whatever that client raises);
            a ``file:`` URI of another host; an export that holds more than weights; an
            export that does not load or that the store lacks (naming the model and why, on
            one line), or a model without the export, when ``allow_pickle`` is false; or, with
            ``allow_pickle``, a model logged without the metadata.

    Example:
        >>> best = best_config("digits-lr", metric="error_rate")  # doctest: +SKIP
        >>> load_predictor(best.model_uri).predict_class("digit.png")  # doctest: +SKIP
    """
    import torch
    from mlflow.models import Model

    chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with _reading(model_uri, _store(model_uri, tracking_uri)):
        location = _local(model_uri)
        logged = Model.load(location)
        if _lists_export(logged):
            try:
                return _exported(location, chosen, redact_uri(model_uri))
            except _ExportUnreadable as unreadable:
                if not allow_pickle:
                    raise BestConfigError(f"{unreadable}; {_UNREADABLE_EXPORT_ADVICE}") from None
                logger.warning(
                    "%s; unpickling its pickled model instead (allow_pickle)", unreadable
                )
        elif not allow_pickle:
            raise BestConfigError(
                f"model {redact_uri(model_uri)} holds no weights-only export ({EXPORT_PATH}: "
                "logged by an lrsweep before 2026-12-07, or its model was not built by "
                "trainers.build_model), so loading it means unpickling it, which runs any code "
                "the file names: re-run the trial with this lrsweep, which logs the export "
                "(lrsweep best EXPERIMENT --format spec writes a spec that re-runs the best "
                "trial), or pass allow_pickle=True (lrsweep predict --allow-pickle) only for a "
                "store whose writers you trust."
            )
        return _unpickled(location, logged, chosen)


def predictor_files(
    learn: Any, folder: Path, *, log: logging.Logger = logger
) -> tuple[dict[str, Any] | None, list[Path]]:
    """What a trial logs beside its pickled model, for :func:`load_predictor`: the metadata
    (``{"predictor": trainers.export.export_metadata(learn)}``) and the export file, written
    into ``folder`` (for ``Tracker.log_pytorch_model(..., metadata, extra_files=...)``).

    ``(None, [])`` for a model ``trainers.build_model`` did not build, or data without class
    names or statistics: the export needs both (the reason is logged as a warning, on ``log``:
    a trial's on ``sweeps.trial``, where it always said its model lacked the statistics).
    """
    from trainers.export import export, export_metadata

    try:
        metadata = {"predictor": export_metadata(learn)}
    except ValueError as error:  # the model logs all the same; load_predictor says what lacks
        log.warning("the logged model holds no weights-only export: %s", error)
        return None, []
    return metadata, [export(learn, folder / EXPORT_FILE)]


def _logged_model(tracker: Tracker, run_id: str) -> bool:
    """Whether the trial logged its model (a store that cannot say is taken at its word: the
    loading that follows says what is wrong)."""
    from mlflow.exceptions import MlflowException

    try:
        return tracker.has_model(run_id, TRIAL_MODEL)
    except MlflowException:
        return True
