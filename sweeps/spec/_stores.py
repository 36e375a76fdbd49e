"""Where a sweep keeps its state: :class:`StorageSpec` (Ray Tune's ``storage_path``),
:class:`TrackingSpec` (MLflow) and the checks of a tracking URI (:func:`tracking_uri_problem`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, Field, field_validator, model_validator

from sweeps.spec._redact import uri_has_credentials, uri_has_password
from sweeps.spec._task import is_uri, local_path
from sweeps.spec._types import Number, SpecModel, field_error, not_an_option

__all__ = [
    "EXPERIMENT_MAX",
    "StorageSpec",
    "TrackingSpec",
    "absolute_sqlite_uri",
    "tracking_uri_problem",
]

EXPERIMENT_MAX = 200
"""The longest ``tracking.experiment`` a spec accepts."""
_STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "file")
_TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "postgres", "mysql", "databricks")
_PASSWORD_HINT = (
    "must not contain a password; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in "
    "the environment instead (for a PostgreSQL store: PGPASSWORD or ~/.pgpass)"
)
_CREDENTIALS_HINT = (
    "must not contain credentials (a user or a token in the URI); set MLFLOW_TRACKING_TOKEN, or "
    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, in the environment instead"
)


class StorageSpec(SpecModel):
    """Ray Tune's ``storage_path``: where trial checkpoints and the experiment state live.

    ``null`` is ``.lrsweep/ray_results`` in the working directory (one machine only). A
    multi-node run needs a URI (``s3://``, ``gs://`` ...) or a local path that every node mounts,
    marked ``shared``.
    Local paths are stored absolute.
    """

    path: str | None = None
    shared: Annotated[bool, Field(strict=True)] = False

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str | None) -> str | None:
        if path is None:
            return None
        if not path.strip():  # Path("") is ".": Ray's state went into the working folder itself
            raise ValueError(
                "must not be empty; leave it out (null) for ./.lrsweep/ray_results, or give a "
                "folder or a URI (s3://bucket/prefix)"
            )
        if is_uri(path):
            scheme = urlsplit(path).scheme.lower()
            if scheme not in _STORAGE_SCHEMES:
                raise ValueError(
                    f"unknown scheme {scheme!r} (accepted: {', '.join(_STORAGE_SCHEMES)} "
                    "or a local path)"
                )
            return path
        return str(local_path(path)[0].resolve())

    @model_validator(mode="after")
    def _shared_needs_path(self) -> StorageSpec:
        if self.shared and self.path is None:
            raise field_error("shared", "true needs storage.path: a folder every node mounts")
        return self

    @property
    def is_shared(self) -> bool:
        """True when every node of a cluster can reach the storage (a remote URI or ``shared``)."""
        if self.path is None:
            return False
        remote = is_uri(self.path) and urlsplit(self.path).scheme.lower() != "file"
        return self.shared or remote


class TrackingSpec(SpecModel):
    """Where MLflow logs; ``uri: null`` is the embedded store under ``./.lrsweep/``.

    Credentials never belong in the spec: a URI carrying a password is refused (use
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``).

    ``checkpoints``: which checkpoints are also logged to MLflow (``all``, the best model only,
    ``none``). ``checkpoint_every_s``: a trial writes its Tune checkpoint (what a restarted
    trial resumes from) at the end of an epoch once this many seconds (default 30) have passed
    since the last one, and always at its end: every epoch when epochs take 30 s or more, and
    no checkpoint per epoch of a sub-second epoch, where writing it would cost as much as the
    epoch; 0 checkpoints every epoch. ``flush_every_s``:
    per-step and per-epoch metric points are sent to MLflow at most this often (and at the
    trial's end; points not sent yet travel in the checkpoint); 0 sends them every epoch.
    """

    uri: str | None = None
    experiment: Annotated[str, AfterValidator(not_an_option)] | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_./-]+$", min_length=1, max_length=EXPERIMENT_MAX
    )
    checkpoints: Literal["all", "best", "none"] = "all"
    checkpoint_every_s: Number = Field(default=30.0, ge=0.0, le=86400.0)
    flush_every_s: Number = Field(default=5.0, ge=0.0, le=3600.0)

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, uri: str | None) -> str | None:
        problem = None if uri is None else tracking_uri_problem(uri)
        if problem:
            raise ValueError(problem)
        return None if uri is None else absolute_sqlite_uri(uri)


def absolute_sqlite_uri(uri: str, cwd: str | Path | None = None) -> str:
    """``uri`` with a relative SQLite database made absolute (relative to ``cwd``, by default
    the working directory); any other URI unchanged.

    Trials run in working directories of their own, where ``sqlite:///mlflow.db`` would open
    another, empty database (every trial then failed: "No Experiment with id=1 exists").

    Example:
        >>> absolute_sqlite_uri("sqlite:///runs/mlflow.db", "/home/me")
        'sqlite:////home/me/runs/mlflow.db'
        >>> absolute_sqlite_uri("sqlite:////abs/mlflow.db", "/home/me")
        'sqlite:////abs/mlflow.db'
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix) :].startswith("/"):
        return uri
    path, sep, query = uri[len(prefix) :].partition("?")
    if path in ("", ":memory:"):
        return uri
    folder = Path(cwd) if cwd is not None else Path.cwd()
    return f"{prefix}{os.path.normpath(folder.resolve() / path)}{sep}{query}"


def tracking_uri_problem(uri: str, *, database_only: bool = False) -> str | None:
    """What makes ``uri`` unusable as lrsweep's MLflow tracking store, or None when it is usable.

    The one check every tracking URI goes through (``tracking.uri``, ``--tracking-uri``,
    ``MLFLOW_TRACKING_URI``). Refused, each with the form that works:

    * a password, in ``user:password@`` or a ``password=`` query parameter (credentials come from
      the environment); the message never repeats it;
    * a folder or ``file:`` URI: MLflow's file store, which MLflow 3 no longer writes (the
      message suggests ``sqlite:///<folder>/mlflow.db``);
    * ``sqlite://name.db`` (two slashes: SQLite has no host) and a SQLite URI with no file;
    * an ``http(s)://`` URI with no host, or with a user or a token (``https://TOKEN@host``,
      ``?token=``): an HTTP server's credentials come from the environment too;
    * unknown schemes;
    * with ``database_only`` (the store of ``lrsweep server``), an MLflow server.

    Example:
        >>> tracking_uri_problem("sqlite:///mlflow.db") is None
        True
        >>> tracking_uri_problem("sqlite://mlflow.db")[:40]
        "'sqlite://mlflow.db' has two slashes, so"
    """
    if uri == "databricks":  # MLflow's name for the Databricks workspace of the default profile
        return None
    try:
        parts = urlsplit(uri)
    except ValueError as error:  # e.g. an unclosed IPv6 bracket
        return f"is not a valid URI ({error})"
    if uri_has_password(uri):
        return _PASSWORD_HINT
    if uri.lower().startswith("file:") or not is_uri(uri):
        path = parts.path if uri.lower().startswith("file:") else uri
        return _folder_problem(uri, path, server_ok=not database_only)
    scheme = parts.scheme.lower().split("+")[0]
    if database_only and scheme in ("http", "https"):
        return _NOT_A_DATABASE
    if scheme not in _TRACKING_SCHEMES:
        return f"unknown scheme {parts.scheme!r} (accepted: {', '.join(_TRACKING_SCHEMES)})"
    if scheme == "sqlite":
        return _sqlite_problem(uri, parts.netloc, parts.path)
    if scheme in ("http", "https") and not parts.hostname:
        return f"{uri!r} names no host; write {scheme}://HOST:PORT, e.g. {scheme}://mlflow:5000"
    if scheme in ("http", "https") and uri_has_credentials(uri):
        return _CREDENTIALS_HINT  # a token as the user (https://TOKEN@host) or as ?token=
    return None


_NOT_A_DATABASE = (
    "an MLflow server, not a database; an MLflow server keeps its runs in a "
    "database: postgresql://USER@HOST:5432/DB (the password in PGPASSWORD) or "
    "sqlite:////abs/path/mlflow.db"
)


_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+:[0-9]{1,5}(/.*)?")
"""``host:port`` or ``host:port/path``: an address written without its ``http://``."""


def _folder_problem(uri: str, path: str, *, server_ok: bool = True) -> str:
    folder = os.path.expanduser(unquote(path)).rstrip("/") or "."
    if folder.endswith((".db", ".sqlite", ".sqlite3")):
        return f"{uri!r} is not a database URI; for a SQLite file write sqlite:///{folder}"
    if server_ok and _HOST_PORT.fullmatch(uri):
        return (
            f"{uri!r} has no scheme: for an MLflow server write http://{uri} (or https://); a "
            f"folder of that name would be MLflow's file store, which MLflow 3 no longer writes"
        )
    server = " (or a server, http://HOST:5000)" if server_ok else ""
    return (
        f"{uri!r} is a folder, MLflow's file store, which MLflow 3 no longer writes; use a SQLite "
        f"database in it instead: sqlite:///{folder}/mlflow.db{server}"
    )


def _sqlite_problem(uri: str, netloc: str, path: str) -> str | None:
    forms = (
        "sqlite:///relative.db (three slashes: relative to the working directory) or "
        "sqlite:////abs/path/mlflow.db (four slashes: an absolute path)"
    )
    if netloc:
        return (
            f"{uri!r} has two slashes, so SQLite would read {netloc!r} as a host; write "
            f"sqlite:///{netloc}{path} instead. The forms are {forms}"
        )
    if path.strip("/") in ("", ":memory:"):
        return f"{uri!r} names no database file (trials could not share it); write {forms}"
    return None
