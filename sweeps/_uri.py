"""Tracking URIs: the embedded default, resolution order, checks, redaction, drivers.

Every URI lrsweep logs to goes through :func:`check_tracking_uri` (a password, a file store or
``sqlite://x.db`` is refused, with the rules of :func:`sweeps.spec._sweep.tracking_uri_problem`)
and, before a command starts work, :func:`check_tracking_server` (a server that does not answer
is refused, not retried). :func:`redact_uri` strips ``user:password@`` before a URI is shown.
:mod:`sweeps.tracking` re-exports every public name here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from sweeps.spec._redact import redact_url
from sweeps.spec._sweep import tracking_uri_problem

__all__ = [
    "HOME_DIR",
    "SERVER_PROBE_TIMEOUT_S",
    "TrackingUriError",
    "check_tracking_server",
    "check_tracking_uri",
    "checked_tracking_uri",
    "default_tracking_uri",
    "redact_uri",
    "resolve_tracking_uri",
    "sqlite_path",
    "with_postgres_driver",
]

HOME_DIR = ".lrsweep"
SERVER_PROBE_TIMEOUT_S = 5.0


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """The embedded store: ``sqlite:///<cwd>/.lrsweep/mlflow.db`` (an absolute path)."""
    root = Path(cwd or Path.cwd()).resolve() / HOME_DIR
    return f"sqlite:///{root / 'mlflow.db'}"


def resolve_tracking_uri(*candidates: str | None, cwd: str | Path | None = None) -> str:
    """The first non-empty of ``candidates``, else ``$MLFLOW_TRACKING_URI``, else the default."""
    for uri in (*candidates, os.environ.get("MLFLOW_TRACKING_URI")):
        if uri:
            return str(uri)
    return default_tracking_uri(cwd)


def redact_uri(uri: str) -> str:
    """``uri`` without any ``user:password@`` part (and with ``password=``-like query values
    masked), safe to print or log; :func:`sweeps.spec.redact_url` parses it."""
    return redact_url(uri, keep_user=False)


class TrackingUriError(ValueError):
    """A tracking URI lrsweep cannot use, or a server that does not answer.

    The message names where the URI came from (``--tracking-uri``, ``tracking.uri``,
    ``MLFLOW_TRACKING_URI``), shows it without credentials and says what to do.
    """


def check_tracking_uri(uri: str, *, source: str = "The tracking URI") -> str:
    """Return ``uri`` if lrsweep can log to it; else raise :class:`TrackingUriError`.

    The rules are those of :func:`sweeps.spec._sweep.tracking_uri_problem`, which validates the
    spec's ``tracking.uri`` too: no password, no file store, ``sqlite:///`` with three or four
    slashes, a known scheme.

    Example:
        >>> uri = "http://alice:s3cret@host:5000"
        >>> check_tracking_uri(uri, source="--tracking-uri")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        sweeps._uri.TrackingUriError: --tracking-uri http://host:5000: must not contain a ...
    """
    problem = tracking_uri_problem(uri)
    if problem:
        named = source if repr(uri) in problem else f"{source} {redact_uri(uri)}"
        raise TrackingUriError(f"{named}: {problem}.")
    return uri


def checked_tracking_uri(
    option: str | None = None, spec_uri: str | None = None, *, cwd: str | Path | None = None
) -> str:
    """:func:`resolve_tracking_uri` (``--tracking-uri``, then ``tracking.uri``, then
    ``$MLFLOW_TRACKING_URI``, else the embedded store), checked by :func:`check_tracking_uri`
    with a message naming the one chosen."""
    sources = (
        ("--tracking-uri", option),
        ("tracking.uri", spec_uri),
        ("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI")),
    )
    for source, uri in sources:
        if uri:
            return check_tracking_uri(str(uri), source=source)
    return default_tracking_uri(cwd)


def check_tracking_server(
    uri: str, *, source: str = "The tracking URI", timeout_s: float = SERVER_PROBE_TIMEOUT_S
) -> None:
    """Refuse an ``http(s)://`` tracking server that does not answer; other URIs pass.

    One ``GET <uri>/health`` without retries: any HTTP answer (also 401 or 404) or a TLS
    handshake counts as reachable, since the server is there. Meant for the start of a command;
    during a sweep, :class:`Tracker` retries an absent server for minutes instead.

    Raises:
        TrackingUriError: on a refused connection, an unknown host or no answer within
            ``timeout_s``, naming the URI (without credentials), ``source`` and what to do.
    """
    if not uri.startswith(("http://", "https://")):
        return
    parts = urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2]
    probe = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        requests.get(probe, timeout=timeout_s, allow_redirects=False)
    except requests.exceptions.SSLError:
        return  # something speaks TLS there; certificate trouble is MLflow's to report
    except requests.RequestException as error:
        shown = redact_uri(uri)
        raise TrackingUriError(
            f"Cannot reach the MLflow server {shown} ({_why_unreachable(error, timeout_s)}), "
            f"given by {source}. Start it (`lrsweep server --port {parts.port or 'PORT'}`, "
            "or see README 'MLflow for a team') or check the host and port; nothing was started."
        ) from None


def _why_unreachable(error: BaseException, timeout_s: float) -> str:
    """A few words for the innermost cause of a failed request."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        cause = stack.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused: no server listens on that port"
        if isinstance(cause, socket.gaierror):
            return "unknown host name"
        if isinstance(cause, requests.Timeout | TimeoutError | socket.timeout):
            return f"no answer within {timeout_s:g} s"
        linked = (cause.__cause__, cause.__context__, getattr(cause, "reason", None), *cause.args)
        stack.extend(c for c in linked if isinstance(c, BaseException))
    return type(error).__name__


def with_postgres_driver(uri: str) -> str:
    """``postgresql://`` / ``postgres://`` as ``postgresql+psycopg2://``; other URIs unchanged.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, but lrsweep ships psycopg2.
    """
    for prefix in ("postgresql://", "postgres://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg2://" + uri.removeprefix(prefix)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///") :].split("?", 1)[0]))
