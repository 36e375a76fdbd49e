"""Which model a name refers to and the store it is read through: a runs:/ or models:/ URI,
a folder holding ``MLmodel`` (as a path or a ``file:`` URI), each checked before MLflow reads
it, and what MLflow or another artifact client raises while it does, as one line.

Used by :mod:`sweeps.predictor`, which re-exports ``MODEL_FILE``, ``TRIAL_MODEL``,
``SHOWN_NAMES``, ``is_model_reference`` and ``model_folder_problem``, and reads a model through
``open_tracker`` (as ``_tracker``), ``store_for`` (as ``_store``), ``local_path`` (as
``_local``), ``reading`` (as ``_reading``) and ``no_run`` (as ``_no_run``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from sweeps.best import BestConfigError, artifact_error
from sweeps.spec._redact import redact_text, uri_has_password
from sweeps.tracking import Tracker, existing_store_uri, redact_uri

__all__ = [
    "MODEL_FILE",
    "SHOWN_NAMES",
    "TRIAL_MODEL",
    "is_model_reference",
    "local_path",
    "model_folder_problem",
    "no_run",
    "open_tracker",
    "reading",
    "store_for",
]

MODEL_FILE = "MLmodel"
TRIAL_MODEL = "model"
"""The artifact name a trial logs its best model under: ``runs:/<run id>/model``."""
SHOWN_NAMES = 20
"""How many registered model names an error lists at most."""
_DOWNLOAD = "mlflow artifacts download -u runs:/<run id>/model -d DIR writes the model to DIR/model"
_RUN_IDS = "lrsweep best, lrsweep sweeps and the MLflow UI show trials' run ids"


def is_model_reference(text: str) -> bool:
    """Whether ``lrsweep predict``'s argument names a model rather than a sweep's experiment: a
    URI (``scheme:/...``, or ``file:`` without the slash: no experiment name holds a colon) or
    a folder holding an ``MLmodel`` file.

    Example:
        >>> is_model_reference("runs:/0a1b2c/model"), is_model_reference("digits-lr")
        (True, False)
    """
    return ":/" in text or _is_file_uri(text) or (Path(text) / MODEL_FILE).is_file()


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


def open_tracker(tracking_uri: str | None, what: str) -> Tracker:
    """The existing store a look-up reads (a missing SQLite store is refused, not created)."""
    try:
        return Tracker(existing_store_uri(tracking_uri))
    except LookupError as exc:
        raise BestConfigError(f"{what}: {exc}") from None


def store_for(model_uri: str, tracking_uri: str | None) -> str | None:
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
        return open_tracker(tracking_uri, f"model {redact_uri(model_uri)}").uri
    problem = model_folder_problem(local_path(model_uri))
    if problem is not None:
        raise BestConfigError(f"model {model_uri}: {problem}")
    return None


def _is_file_uri(text: str) -> bool:
    """Whether ``text`` is a ``file:`` URI (``file:///abs``, ``file:/abs``, ``file:rel``)."""
    return urlsplit(text).scheme.lower() == "file"


def local_path(model_uri: str) -> str:
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
def reading(model_uri: str, store: str | None) -> Iterator[None]:
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
        hint = _http_hint(model_uri)
        raise BestConfigError(f"model {shown}: cannot be read ({why}){hint}.") from None


def _http_hint(model_uri: str) -> str:
    """For an ``http(s)://`` model URI (a page's address, or an MLflow server's) the way to
    name a model an MLflow server holds: MLflow's http client only reads artifact servers'
    folders, and failed with a ValueError of its own parsing."""
    if urlsplit(model_uri).scheme.lower() not in ("http", "https"):
        return ""
    return (
        "; for a model logged to an MLflow server give runs:/<run id>/model or "
        "models:/<name>/<version> and the server as --tracking-uri http(s)://HOST:PORT"
    )


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
        return no_run(run_id, redact_uri(store), exc)
    return (
        f"run {run_id} has no MLflow model at {path!r} ({text}); a trial logs its best model as "
        f"{TRIAL_MODEL!r} when it ends (none when it failed first, or its sweep ran with "
        "tracking.checkpoints: none)."
    )


def no_run(run_id: str, where: str, error: Exception) -> str:
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
