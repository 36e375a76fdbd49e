"""Can every node reach the tracking store and Ray's storage, and can this one write artifacts?

No Ray here: these checks take the number of alive nodes and the spec, so they are pure apart
from :func:`check_artifact_location`, which writes a probe file.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sweeps.preflight._report import PreflightError
from sweeps.spec import StorageSpec
from sweeps.tracking import MIN_FREE_MB, redact_uri, sqlite_path

__all__ = [
    "check_artifact_location",
    "check_artifacts_shared",
    "check_storage_shared",
    "check_tracking_reachable",
]

logger = logging.getLogger(__name__)

_SERVER_HINT = (
    "Start an MLflow server the workers can reach (`lrsweep server --host 0.0.0.0 "
    "--backend-store-uri postgresql://...`, or infra/k8s/ in this repository) and pass "
    "--tracking-uri http://HOST:5000 (or set tracking.uri / MLFLOW_TRACKING_URI)."
)


def _is_local_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def check_tracking_reachable(tracking_uri: str, *, alive_nodes: int) -> list[str]:
    """Refuse a tracking store the workers of a multi-node cluster cannot reach.

    On one node everything is reachable. On more, trials log from their own nodes, so a SQLite
    file or a local folder on the driver's disk cannot work; a server URI naming ``localhost`` or
    ``127.0.0.1`` works only where the server runs on every node, so it is a warning.

    Args:
        tracking_uri: The resolved tracking URI (``sqlite:///``, a path, ``http(s)://`` ...).
        alive_nodes: The number of alive Ray nodes.

    Returns:
        Warnings (also logged).

    Raises:
        PreflightError: for a SQLite store or a local path with more than one node alive.
    """
    if alive_nodes <= 1:
        return []
    shown = redact_uri(tracking_uri)
    parts = urlsplit(tracking_uri)
    scheme = parts.scheme.lower().split("+")[0] if "://" in tracking_uri else ""
    if scheme == "sqlite":
        raise PreflightError(
            f"The tracking store {shown} is a SQLite file on this machine, which the "
            f"{alive_nodes} nodes of the cluster cannot write to. {_SERVER_HINT}"
        )
    if scheme in ("", "file"):
        raise PreflightError(
            f"The tracking store {shown} is a folder on this machine, which the {alive_nodes} "
            f"nodes of the cluster cannot write to. {_SERVER_HINT}"
        )
    if _is_local_host(parts.hostname):
        warning = (
            f"The tracking URI {shown} names {parts.hostname}, but {alive_nodes} nodes are alive: "
            "a trial on another node would look for the store on its own machine. Use an address "
            "every node can reach (the server's host name or Kubernetes Service name)."
        )
        logger.warning(warning)
        return [warning]
    return []


def check_storage_shared(storage: StorageSpec, *, alive_nodes: int) -> None:
    """Refuse a Ray ``storage_path`` that is not shared when more than one node is alive.

    Trials checkpoint to ``storage.path`` from their own nodes and are restored on any node, so
    on a multi-node cluster it must be a remote URI (``s3://``, ``gs://`` ...) or a folder every
    node mounts, marked ``storage.shared: true`` (which :func:`check_cluster` then verifies).

    Raises:
        PreflightError: naming the path and the settings that would work.
    """
    if alive_nodes <= 1 or storage.is_shared:
        return
    where = (
        f"storage.path {storage.path!r} is not marked shared"
        if storage.path
        else "storage.path is not set (Ray's default is a folder on each node)"
    )
    raise PreflightError(
        f"{where}, but {alive_nodes} nodes are alive: a trial's checkpoints written on one node "
        "could not be restored on another. Set storage.path to s3://BUCKET/PREFIX or "
        "gs://BUCKET/PREFIX, or to a folder every node mounts together with storage.shared: true."
    )


DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
"""Stores MLflow writes straight into a database; artifacts go where the experiment says."""


def check_artifacts_shared(tracking_uri: str, experiment: str, *, alive_nodes: int) -> None:
    """Refuse a database store whose experiment keeps its artifacts on this machine's disk.

    A ``postgresql://`` (or MySQL, MSSQL) tracking URI holds runs and metrics, but every run's
    artifacts (checkpoints, figures, the model) go to its experiment's artifact location, and
    MLflow gives a new experiment ``./mlruns`` of the process that creates it. With more than
    one node alive, the trials on other nodes would write them to their own disks.

    Args:
        tracking_uri: The resolved tracking URI (other schemes are left to
            :func:`check_tracking_reachable`).
        experiment: The sweep's experiment name (it may not exist yet).
        alive_nodes: The number of alive Ray nodes.

    Raises:
        PreflightError: naming the experiment, where its artifacts would go, and what to do.
    """
    if alive_nodes <= 1 or "://" not in tracking_uri:
        return
    if urlsplit(tracking_uri).scheme.lower().split("+")[0] not in DATABASE_SCHEMES:
        return
    from sweeps.tracking import Tracker

    found = Tracker(tracking_uri).find_experiment(experiment)
    location = None if found is None else str(found.artifact_location)
    if location is not None and local_artifact_folder(location) is None:
        return  # s3://, gs://, mlflow-artifacts:/ ...: every node writes to the same place
    where = (
        f"keeps its artifacts in {location}"
        if location is not None
        else "does not exist yet, and MLflow would keep its artifacts in ./mlruns"
    )
    raise PreflightError(
        f"The experiment {experiment!r} of the tracking store {redact_uri(tracking_uri)} {where} "
        f"on this machine's disk, but {alive_nodes} nodes are alive: trials on the other nodes "
        "would write their checkpoints, figures and models to their own disks. Run an MLflow "
        "server with served artifacts (`lrsweep server --host 0.0.0.0 --backend-store-uri "
        "postgresql://...`) and pass --tracking-uri http://HOST:5000, or give the experiment a "
        "shared artifact location first (`mlflow experiments create -n NAME -l "
        "s3://BUCKET/PREFIX` against the same store, or set tracking.experiment to one that has)."
    )


def local_artifact_folder(uri_or_path: str | os.PathLike[str]) -> Path | None:
    """The local folder behind a tracking URI or artifact location; None when it is remote.

    ``sqlite:///x/mlflow.db`` gives ``x`` (the embedded store keeps its artifacts beside the
    database), ``file:///x`` and a plain path give ``x``; ``http(s)://``, ``s3://``,
    ``postgresql://``... give None.
    """
    text = os.fspath(uri_or_path)
    db_file = sqlite_path(text)
    if db_file is not None:
        return db_file.parent
    if text.startswith("file:"):
        return Path(unquote(urlsplit(text).path))
    if "://" in text:
        return None
    return Path(text).expanduser().resolve()


def check_artifact_location(
    uri_or_path: str | os.PathLike[str],
    *,
    min_free_mb: float = MIN_FREE_MB,
    what: str | None = None,
) -> Path | None:
    """Fail before training when a local artifact folder is unwritable or nearly full.

    The folder is created if missing and a probe file is written and removed. Remote locations
    (a server, object storage) are left to their first write.

    Args:
        uri_or_path: A tracking URI (``sqlite:///.../mlflow.db`` checks its folder), a
            ``file://`` URI or a path (an artifact root, Ray's storage path).
        min_free_mb: Free space required, in MB.
        what: What the folder is, for the message (default: the SQLite store's folder for a
            ``sqlite:`` URI, else the artifact folder).

    Returns:
        The folder checked, or None for a remote location.

    Raises:
        PreflightError: naming the folder and the reason (not creatable, not writable, or how
            much space is free against how much is needed).
    """
    folder = local_artifact_folder(uri_or_path)
    if folder is None:
        logger.debug("artifact location %s is remote; not checked", redact_uri(str(uri_or_path)))
        return None
    if what is None:
        sqlite = str(uri_or_path).startswith("sqlite:")
        what = "the SQLite store's folder" if sqlite else "the artifact folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lrsweep-probe-"):
            pass
    except OSError as error:
        raise PreflightError(f"{_capital(what)} {folder} {_why_unusable(folder, error)}") from None
    free_mb = shutil.disk_usage(folder).free / 2**20
    if free_mb < min_free_mb:
        raise PreflightError(
            f"{_capital(what)} {folder} has {free_mb:.0f} MB free, but at least "
            f"{min_free_mb:.0f} MB are needed for checkpoints and reports. Free some space, or "
            "point the tracking URI / storage.path at a larger disk."
        )
    return folder


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _why_unusable(folder: Path, error: OSError) -> str:
    """Why ``folder`` cannot be created or written, and what to do: a file where a folder
    of its path should be, a path that cannot be made (a read-only or virtual file system),
    or permissions."""
    elsewhere = "or point the tracking URI / storage.path elsewhere."
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return (
            f"cannot be created: {blocker} is a file, not a folder. Move that file away, "
            f"{elsewhere}"
        )
    if isinstance(error, PermissionError):
        return f"is not writable ({error.strerror}). Fix its permissions, {elsewhere}"
    reason = error.strerror or error
    return f"cannot be created or written ({reason}). Pick a folder that can, {elsewhere}"


def check_storage_uri(root: str) -> None:
    """Fail before any run exists when Ray's storage at a URI (``s3://``, ``gs://``, with
    ``?endpoint_override=`` and the like) cannot be written: a probe object is written into
    ``root`` and removed, as the sweep's ``sweep.json`` and Tune's checkpoints will be.

    Raises:
        PreflightError: naming ``storage.path`` (its credentials masked) and why.
    """
    import uuid

    from sweeps import _location as location

    probe = f".lrsweep-probe-{uuid.uuid4().hex[:8]}"
    try:
        location.write_text(root, probe, "")
        location.remove_file(root, probe)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        shown = redact_uri(root)
        why = str(error).replace(root, shown)
        raise PreflightError(
            f"storage.path {shown}: cannot be written ({why}). Check the bucket, its endpoint "
            "(?endpoint_override=HOST:PORT&scheme=http for MinIO) and the credentials "
            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS), or "
            "give a local folder."
        ) from None
