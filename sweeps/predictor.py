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
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from sweeps.best import (
    ARM_TAG,
    BEST_PREFIX,
    STOP_REASON_TAG,
    STRATEGY_TAG,
    TIE_BREAK_METRIC,
    BestConfigError,
    artifact_error,
)
from sweeps.spec._redact import redact_text, uri_has_password
from sweeps.tracking import (
    TAG_KIND,
    Tracker,
    as_logged,
    existing_store_uri,
    finite_or_none,
    redact_uri,
)

if TYPE_CHECKING:
    from trainers import Predictor

logger = logging.getLogger(__name__)

MODEL_FILE = "MLmodel"
TRIAL_MODEL = "model"
"""The artifact name a trial logs its best model under: ``runs:/<run id>/model``."""
EXPORT_FILE = "export.pt"
"""The weights-only export (``trainers.export``) a trial logs in its model's ``extra_files/``."""
EXPORT_PATH = f"extra_files/{EXPORT_FILE}"
"""Where that export lies inside the logged model's folder."""
SHOWN_NAMES = 20
"""How many registered model names an error lists at most."""
_DOWNLOAD = "mlflow artifacts download -u runs:/<run id>/model -d DIR writes the model to DIR/model"
_RUN_IDS = "lrsweep best, lrsweep sweeps and the MLflow UI show trials' run ids"
_UNREADABLE_EXPORT_ADVICE = (
    "give another trial's model (lrsweep best names the best trial with a model), or pass "
    "allow_pickle=True (lrsweep predict --allow-pickle) to unpickle its pickled model instead, "
    "only for a store whose writers you trust."
)


class _ExportUnreadable(Exception):
    """The export a model lists cannot be read (missing, cut short, damaged): what
    :func:`load_predictor` refuses, or, with ``allow_pickle``, warns of and loads the pickled
    model in its place. Not raised for an export that holds more than weights."""


def is_model_reference(text: str) -> bool:
    """Whether ``lrsweep predict``'s argument names a model rather than a sweep's experiment: a
    URI (``scheme:/...``, or ``file:`` without the slash: no experiment name holds a colon) or
    a folder holding an ``MLmodel`` file.

    Example:
        >>> is_model_reference("runs:/0a1b2c/model"), is_model_reference("digits-lr")
        (True, False)
    """
    return ":/" in text or _is_file_uri(text) or (Path(text) / MODEL_FILE).is_file()


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
            f"run {run_id} was deleted from {where}: restore it (mlflow runs restore --run-id "
            f"{run_id}) or give another trial's run id."
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
                "the file names: pass allow_pickle=True (lrsweep predict --allow-pickle) only "
                "for a store whose writers you trust."
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


def _lists_export(logged: Any) -> bool:
    """Whether the logged model's ``pytorch`` flavor lists the export among its extra files."""
    listed = (logged.flavors.get("pytorch") or {}).get("extra_files") or []
    return any(isinstance(entry, dict) and entry.get("path") == EXPORT_PATH for entry in listed)


def _exported(model_uri: str, device: str, shown: str) -> Predictor:
    """The model's export, downloaded and read with ``torch.load(weights_only=True)``;
    ``shown``: the model as the user named it (``model_uri`` is a local path for a ``file:``
    URI).

    Raises:
        _ExportUnreadable: the export is missing or does not load.
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
                raise _ExportUnreadable(
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
                raise BestConfigError(said + _tampered(named)) from None
            problem = " ".join(str(error).replace(str(Path(local)), named).split())
            raise _ExportUnreadable(said + problem.rstrip(".")) from None


def _holds_more_than_weights(error: Exception) -> bool:
    """Whether ``load_learner`` failed because torch's weights-only unpickler refused what the
    file holds (a class, a function: what an unpickling load would run). Its refusal of a
    damaged pickle reads alike (``UnpicklingError`` either way), so that counts too: refused
    rather than taken for damage, as the file cannot be told from an altered one. So does a
    TorchScript archive, which ``torch.load(weights_only=True)`` refuses before any unpickling
    (a ``RuntimeError``, or the ``UserWarning`` before it where warnings are errors, each
    naming TorchScript): it holds code, which ``torch.jit.load`` would run, and
    ``trainers.export`` never writes one."""
    cause = error.__cause__
    if isinstance(cause, pickle.UnpicklingError):
        return True
    return isinstance(cause, RuntimeError | UserWarning) and "TorchScript" in str(cause)


def _tampered(named: str) -> str:
    """Why an export that holds more than weights is refused, on one line, without torch's
    advice on loading it unsafely (``weights_only=False``, ``add_safe_globals``)."""
    return (
        f"{named} holds more than weights (objects only an unpickling load reads, which runs "
        "code), so it was not written by trainers.export or was altered since: its pickled "
        "model is not loaded either, allow_pickle or not; trust no model of that store, give "
        "one from a store whose writers you trust."
    )


def _unpickled(model_uri: str, logged: Any, device: str) -> Predictor:
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
    model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
    for name in ("arch", "n_classes"):  # the network's own; Predictor takes the data's
        fields.pop(name, None)
    return Predictor(model, device=device, **fields)


def model_folder_problem(path: str) -> str | None:
    """Why the local ``path`` is no model folder (one holding an ``MLmodel`` file), with what to
    give instead; None when it is one, or when ``path`` is a URI (``scheme:/...``)."""
    if is_model_reference(path):
        return None
    folder = Path(path)
    if not folder.exists():
        return (
            "no such folder, nor a model URI (runs:/<run id>/model, models:/<name>/<version>); "
            f"{_DOWNLOAD}."
        )
    if not folder.is_dir():
        return f"a file, not a folder holding an {MODEL_FILE} file; {_DOWNLOAD}."
    inside = sorted(str(found.parent) for found in folder.glob(f"*/{MODEL_FILE}"))
    if inside:
        return f"the folder holds no {MODEL_FILE} file, but {inside[0]} does: give that folder."
    return f"the folder holds no {MODEL_FILE} file: give a downloaded model's folder ({_DOWNLOAD})."


def _names_a_run(model_uri: str) -> bool:
    """Whether ``model_uri`` is resolved through a tracking store (``runs:/``, ``models:/``),
    not a folder or an artifact location of its own."""
    return model_uri.split(":", 1)[0].lower() in ("runs", "models")


def _tracker(tracking_uri: str | None, what: str) -> Tracker:
    """The existing store a look-up reads (a missing SQLite store is refused, not created)."""
    try:
        return Tracker(existing_store_uri(tracking_uri))
    except LookupError as exc:
        raise BestConfigError(f"{what}: {exc}") from None


def _store(model_uri: str, tracking_uri: str | None) -> str | None:
    """The tracking store ``model_uri`` is read through: None for a folder or an artifact
    location of its own (they need none), checked to be a model folder first; a URI with a
    password is refused."""
    if uri_has_password(model_uri):
        raise BestConfigError(
            f"model {redact_uri(model_uri)}: the URI holds a password; give it without one "
            "(MLflow's artifact clients take credentials from the environment: "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for s3://, MLFLOW_TRACKING_USERNAME / "
            "MLFLOW_TRACKING_PASSWORD for an MLflow server)."
        )
    if _names_a_run(model_uri):
        return _tracker(tracking_uri, f"model {redact_uri(model_uri)}").uri
    problem = model_folder_problem(_local(model_uri))
    if problem is not None:
        raise BestConfigError(f"model {model_uri}: {problem}")
    return None


def _is_file_uri(text: str) -> bool:
    """Whether ``text`` is a ``file:`` URI (``file:///abs``, ``file:/abs``, ``file:rel``)."""
    return urlsplit(text).scheme.lower() == "file"


def _local(model_uri: str) -> str:
    """The local path a ``file:`` URI names (``%20`` and the like decoded), which MLflow's
    ``Model.load`` takes where it refuses the URI; any other URI or path as given.

    Raises:
        BestConfigError: a ``file:`` URI that names another host (``file://server/path``).
    """
    if not _is_file_uri(model_uri):
        return model_uri
    parts = urlsplit(model_uri)
    if parts.netloc not in ("", "localhost"):
        host = parts.netloc.rpartition("@")[2]  # without its user, as redact_uri shows it
        raise BestConfigError(
            f"model {redact_uri(model_uri)}: a file: URI of host {host!r}, which this "
            "machine cannot read; give a local folder (file:///abs/path/model or the path)."
        )
    return url2pathname(parts.path)


@contextlib.contextmanager
def _reading(model_uri: str, store: str | None) -> Iterator[None]:
    """MLflow reads ``model_uri`` through ``store`` inside the block; what MLflow raises comes out
    as a one-line :class:`BestConfigError` that says what is missing, and so does what any
    other artifact client raises (its own classes: botocore's, google-cloud's, a ValueError of
    MLflow's http one), with its class named."""
    from mlflow.exceptions import MlflowException

    from sweeps.tracking import mlflow_tracking_uri

    shown = redact_uri(model_uri)
    try:
        with mlflow_tracking_uri(store) if store is not None else contextlib.nullcontext():
            yield
    except BestConfigError:
        raise
    except (MlflowException, OSError) as exc:
        raise BestConfigError(f"model {shown}: {_not_found(model_uri, exc, store)}") from None
    except Exception as exc:  # see above: no list of the clients' classes can be complete
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        why = redact_text(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
        raise BestConfigError(f"model {shown}: cannot be read ({why}).") from None


def _not_found(model_uri: str, error: Exception, store: str | None) -> str:
    """What of ``model_uri`` the store lacks (its run, the model at its path, its registered
    model, version or alias), looked up after MLflow failed; else MLflow's own first line."""
    from mlflow.exceptions import MlflowException

    text = redact_text(artifact_error(error))
    scheme, _, rest = model_uri.partition(":/")
    if store is None or not _names_a_run(model_uri):
        return text
    run_id, _, path = rest.strip("/").partition("/")
    try:
        tracker = Tracker(store)
        if scheme.lower() == "models":
            return _registry_problem(tracker, rest.strip("/")) or text
    except MlflowException:  # the look-up failed too: MLflow's first words are the best said
        return text
    try:
        tracker.get_run(run_id)
    except MlflowException as exc:
        return _no_run(run_id, redact_uri(store), exc)
    return (
        f"run {run_id} has no MLflow model at {path!r} ({text}); a trial logs its best model as "
        f"{TRIAL_MODEL!r} when it ends (none when it failed first, or its sweep ran with "
        "tracking.checkpoints: none)."
    )


def _no_run(run_id: str, where: str, error: Exception) -> str:
    """No run ``run_id`` in the store ``where``: what to check, and MLflow's words when they
    say something else (a server that refused the request)."""
    if getattr(error, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
        found = "no such run"
    else:
        found = f"cannot be read ({artifact_error(error)})"
    return (
        f"run {run_id}: {found} in {where}; check the run id ({_RUN_IDS}) and --tracking-uri "
        "(the store its sweep logged to)."
    )


def _registry_problem(tracker: Tracker, reference: str) -> str | None:
    """What the registry lacks of ``models:/<reference>`` (``name/version``, ``name@alias``):
    the model itself (the registered names are listed), the version or the alias; None for a
    reference of another form (``models:/<logged model id>``, a stage) or one that is there."""
    name, at, label = reference.partition("@")
    if not at:
        name, slash, label = reference.partition("/")
        if not slash:
            return None
    found = tracker.registered_model(name)
    if found is None:
        names = tracker.registered_model_names()
        more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
        return (
            f"no registered model {name!r} in {redact_uri(tracker.uri)} (registered there: "
            f"{names[:SHOWN_NAMES]}{more}); register a trial's model first "
            f"(mlflow.register_model('runs:/<run id>/model', {name!r})), or give the "
            "--tracking-uri it is registered in."
        )
    versions, aliases = found
    if at and label not in aliases:
        return f"registered model {name!r} has no alias {label!r} (aliases: {sorted(aliases)})."
    if label.isdigit() and label not in versions:
        return f"registered model {name!r} has no version {label} (versions: {versions})."
    return None


def _logged_model(tracker: Tracker, run_id: str) -> bool:
    """Whether the trial logged its model (a store that cannot say is taken at its word: the
    loading that follows says what is wrong)."""
    from mlflow.exceptions import MlflowException

    try:
        return tracker.has_model(run_id, TRIAL_MODEL)
    except MlflowException:
        return True
