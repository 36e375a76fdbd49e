"""Tracking URIs: the embedded default, resolution order, checks, redaction, drivers.

Every URI lrsweep logs to goes through :func:`check_tracking_uri` (a password, a file store or
``sqlite://x.db`` is refused, with the rules of :func:`sweeps.spec._stores.tracking_uri_problem`)
and, before a command starts work, :func:`check_tracking_server` (a server that does not answer
is refused, not retried). :func:`redact_uri` strips ``user:password@`` before a URI is shown.
:mod:`sweeps.tracking` re-exports every public name here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from sweeps._location import HOME
from sweeps._pg_connect import connect as pg_connect
from sweeps.spec._redact import redact_url
from sweeps.spec._stores import absolute_sqlite_uri, tracking_uri_problem

__all__ = [
    "HOME_DIR",
    "SERVER_PROBE_TIMEOUT_S",
    "TrackingUriError",
    "check_tracking_server",
    "check_tracking_uri",
    "checked_tracking_uri",
    "database_driver_problem",
    "default_tracking_uri",
    "existing_store_uri",
    "redact_uri",
    "resolve_tracking_uri",
    "sqlite_path",
    "with_postgres_driver",
]

HOME_DIR = HOME  # the one definition is _location's (`lrsweep clean` imports it alone)
SERVER_PROBE_TIMEOUT_S = 5.0


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """The embedded store: ``sqlite:///<cwd>/.lrsweep/mlflow.db`` (an absolute path)."""
    root = Path(cwd or Path.cwd()).resolve() / HOME_DIR
    return f"sqlite:///{root / 'mlflow.db'}"


def resolve_tracking_uri(*candidates: str | None, cwd: str | Path | None = None) -> str:
    """The first non-empty of ``candidates``, else ``$MLFLOW_TRACKING_URI``, else the default.

    A relative ``sqlite:///x.db`` is made absolute (against ``cwd``, by default the working
    directory): trials run in folders of their own, where it would name another database.
    """
    for uri in (*candidates, os.environ.get("MLFLOW_TRACKING_URI")):
        if uri:
            return absolute_sqlite_uri(str(uri), cwd)
    return default_tracking_uri(cwd)


def redact_uri(uri: str) -> str:
    """``uri`` without any ``user:password@`` part (and with ``password=``-like query values
    masked), safe to print or log; :func:`sweeps.spec.redact_url` parses it."""
    return redact_url(uri, keep_user=False)


def command_uri(uri: str) -> str:
    """``uri`` as a command printed for the user carries it: secrets masked, a database's user
    kept (no secret, and the one the command must connect as: dropped, ``lrsweep ui`` would
    connect as the user running it), an ``http(s)`` user dropped (it may be a token).

    Example:
        >>> command_uri("postgresql://mlflow@db:5432/mlflow")
        'postgresql://mlflow@db:5432/mlflow'
        >>> command_uri("https://tok3n@mlflow.example.com")
        'https://mlflow.example.com'
    """
    if uri.lower().startswith(("http://", "https://")):
        return redact_uri(uri)
    return redact_url(uri, keep_user=True)


class TrackingUriError(ValueError):
    """A tracking URI lrsweep cannot use, or a server that does not answer.

    The message names where the URI came from (``--tracking-uri``, ``tracking.uri``,
    ``MLFLOW_TRACKING_URI``), shows it without credentials and says what to do.
    """


def check_tracking_uri(
    uri: str, *, source: str = "The tracking URI", database_only: bool = False
) -> str:
    """Return ``uri`` if lrsweep can log to it; else raise :class:`TrackingUriError`.

    The rules are those of :func:`sweeps.spec._stores.tracking_uri_problem`, which validates the
    spec's ``tracking.uri`` too: no password, no file store, ``sqlite:///`` with three or four
    slashes, a known scheme; with ``database_only`` (``lrsweep server``'s stores), a database.

    Example:
        >>> uri = "http://alice:s3cret@host:5000"
        >>> check_tracking_uri(uri, source="--tracking-uri")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        sweeps._uri.TrackingUriError: --tracking-uri http://host:5000: must not contain a ...
    """
    problem = tracking_uri_problem(uri, database_only=database_only) or database_driver_problem(uri)
    if problem:
        named = source if repr(uri) in problem else f"{source} {redact_uri(uri)}"
        raise TrackingUriError(f"{named}: {problem}.")
    return uri


_DRIVER_PACKAGES = {
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}
"""The pip package of each Python database driver SQLAlchemy imports for a store URI."""
_OTHER_DRIVER = {
    "mysql": "mysql+pymysql://",
    "mssql": "mssql+pymssql://",
}


def database_driver_problem(uri: str) -> str | None:
    """Why a database store URI (``mysql://``, ``mssql+pyodbc://``) cannot be opened here, or
    None: SQLAlchemy knows no such driver, or the driver's Python package is not installed
    (MLflow printed a ``ModuleNotFoundError`` traceback instead)."""
    scheme = uri.partition(":")[0].lower()
    # PostgreSQL opens with psycopg2, which lrsweep installs (``with_postgres_driver``)
    skipped = ("", "sqlite", "http", "https", "databricks", "file", "postgresql", "postgres")
    if scheme.split("+")[0] in skipped:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        dialect = make_url(uri).get_dialect()
    except ArgumentError as error:  # NoSuchModuleError: mysql+nosuchdriver://
        return f"SQLAlchemy has no database driver {scheme!r} ({error})"
    except ValueError:
        return None  # not a URL SQLAlchemy parses; the store itself says why
    try:
        dialect.import_dbapi()
    except ImportError as error:
        module = error.name or str(error)
        package = _DRIVER_PACKAGES.get(module.split(".")[0], module)
        other = _OTHER_DRIVER.get(scheme.split("+")[0])
        return (
            f"it needs the Python database driver {module!r}, which is not installed here: "
            f"`pip install {package}` in lrsweep's environment"
            + (f", or name an installed driver in the scheme (e.g. {other})" if other else "")
        )
    return None


def checked_tracking_uri(
    option: str | None = None, spec_uri: str | None = None, *, cwd: str | Path | None = None
) -> str:
    """:func:`resolve_tracking_uri` (``--tracking-uri``, then ``tracking.uri``, then
    ``$MLFLOW_TRACKING_URI``, else the embedded store), checked by :func:`check_tracking_uri`
    with a message naming the one chosen; an existing ``sqlite:///`` file must also be an MLflow
    store (or empty), read without writing."""
    sources = (
        ("--tracking-uri", option),
        ("tracking.uri", spec_uri),
        ("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI")),
    )
    for source, uri in sources:
        if uri:
            checked = check_tracking_uri(str(uri), source=source)
            _check_no_other_file(checked, source, cwd)
            return checked
    return default_tracking_uri(cwd)


def _check_no_other_file(uri: str, source: str, cwd: str | Path | None) -> None:
    """Refuse a ``sqlite:///`` URI naming an existing file that is no MLflow store (a YAML
    file, another program's database): MLflow crashed on it ("file is not a database": a
    traceback, and for ``lrsweep nightly`` a crashed night) or wrote its tables into the other
    program's database. Read-only, under the lock a store's creation holds (``sweeps._store``),
    so a store another process is creating at this moment is seen once it has its tables."""
    import contextlib
    import fcntl

    path = sqlite_path(absolute_sqlite_uri(uri, cwd))
    if path is None or not path.is_file():
        return
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(OSError):  # no lock file: no store was ever created there
            lock = stack.enter_context(open(path.parent / f".{path.name}.lock"))
            fcntl.flock(lock, fcntl.LOCK_SH)
        if _holds_experiments(path):
            return
    raise TrackingUriError(
        f"{source} {redact_uri(uri)}: {path} is not an MLflow store (not an SQLite database, "
        "or another program's database without MLflow's tables), and it is left as it is; give "
        "the store's file (`lrsweep run` and `nightly` create a new store at a path where no "
        "file is yet)."
    )


def check_tracking_server(
    uri: str, *, source: str = "the sweep's tracking URI", timeout_s: float = SERVER_PROBE_TIMEOUT_S
) -> None:
    """Refuse a tracking server that does not answer or will not let this client in.

    ``http(s)://``: one ``GET <uri>/health`` without retries (any HTTP answer or a TLS handshake
    counts as reachable), then one request with MLflow's own client credentials, refused on a
    401 / 403 (a basic-auth server and no or wrong ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD``). ``postgresql://``: one connection, refused when the database
    does not exist or PostgreSQL does not answer. Other URIs pass. Meant for the start of a
    command (MLflow would retry for minutes, then print a traceback); during a sweep,
    :class:`Tracker` retries an absent server instead.

    Raises:
        TrackingUriError: naming the URI (without credentials), ``source`` and what to do.
    """
    if uri.startswith(("postgresql", "postgres:")):
        problem = _postgres_problem(uri, source, timeout_s)
        if problem:
            raise TrackingUriError(problem)
        return
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
        if _not_http(error):
            raise TrackingUriError(
                f"{shown}, given by {source}, is no HTTP server: something listens on that "
                "port but closed the connection without an HTTP answer (a database? a "
                "PostgreSQL store is written postgresql://USER@HOST:PORT/DATABASE). Check the "
                "port; nothing was started."
            ) from None
        raise TrackingUriError(
            f"Cannot reach the MLflow server {shown} ({_why_unreachable(error, timeout_s)}), "
            f"given by {source}. Start it (`lrsweep server --port {parts.port or 'PORT'}`, "
            "or see README 'MLflow for a team') or check the host and port; nothing was started."
        ) from None
    problem = _server_access_problem(uri, source, timeout_s)
    if problem:
        raise TrackingUriError(problem)


def _server_access_problem(uri: str, source: str, timeout_s: float) -> str | None:
    """Why an ``http(s)://`` address that answers is no MLflow server this client can use, or
    None.

    One request to MLflow's API with MLflow's own client credentials
    (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, a token,
    ``~/.mlflow/credentials``): a server running basic auth answers 401 to a client without them
    or with wrong ones; a wrong port or path, or a proxy in front of the server, answers 404 or a
    page that is not JSON; a server whose own store fails answers 5xx. MLflow would report each
    as a traceback from the first call that needs the store (after five minutes of retries for
    a 5xx). A JSON answer passes, and so does a request that fails outright (reachability was
    checked just before).
    """
    if not uri.startswith(("http://", "https://")):
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(
            get_default_host_creds(uri),
            "/api/2.0/mlflow/experiments/search",
            "POST",
            max_retries=0,
            timeout=timeout_s,
            raise_on_status=False,
            json={"max_results": 1},
        )
    except (requests.RequestException, MlflowException):
        return None  # reachability was checked just before; MLflow reports the rest itself
    if response.status_code not in (401, 403):
        return _not_mlflow(uri, source, response)
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    given = all(os.environ.get(name) for name in names)
    why = (
        "refused the credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
        if given
        else "needs a user name and password (it runs basic auth) and none was given"
    )
    return (
        f"The MLflow server {redact_uri(uri)}, given by {source}, {why} "
        f"(HTTP {response.status_code}). Set MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD in the environment to a user of that server; nothing was "
        "started."
    )


def _not_mlflow(uri: str, source: str, response: requests.Response) -> str | None:
    """Why the answer to MLflow's ``experiments/search`` says no MLflow server is there, or
    None (a JSON object with status 200: one is)."""
    code = response.status_code
    if code == 200:
        try:
            if isinstance(response.json(), dict):
                return None
        except ValueError:
            pass
        what = "answers MLflow's API with a page that is not MLflow's JSON"
    else:
        what = f"answers MLflow's API with HTTP {code}"
    if code >= 500:
        why = (
            "the server failed: if it is MLflow, its own database or artifact store is failing "
            "(see the server's log)"
        )
    else:
        why = (
            "no MLflow tracking server is at that address: a wrong port or path, or a proxy in "
            "front of it (give the URL the MLflow UI is served at)"
        )
    return (
        f"{redact_uri(uri)}, given by {source}, {what} (POST /api/2.0/mlflow/experiments/search): "
        f"{why}; nothing was started."
    )


def _not_http(error: BaseException) -> bool:
    """True when the request reached a listener that closed it without an HTTP answer (a
    database's port, say)."""
    import http.client

    bad_answer = http.client.RemoteDisconnected | http.client.BadStatusLine
    return any(isinstance(cause, bad_answer) for cause in _causes(error))


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception linked to it (cause, context, ``reason``, arguments: how
    requests and urllib3 wrap a socket's error), each once, outermost first."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        cause = stack.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        yield cause
        linked = (cause.__cause__, cause.__context__, getattr(cause, "reason", None), *cause.args)
        stack.extend(c for c in linked if isinstance(c, BaseException))


def _postgres_problem(uri: str, source: str, timeout_s: float) -> str | None:
    """Why a ``postgresql://`` tracking store cannot be opened, or None.

    One connection (``connect_timeout`` of ``timeout_s``, unless the URI's query sets its own):
    a database that does not exist or a PostgreSQL that does not answer is refused at once
    instead of after MLflow's minutes of retries.
    """
    if not uri.startswith(("postgresql", "postgres:")):
        return None
    import psycopg2
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = redact_url(uri)  # its user kept (the command below needs it); no password is left
    try:
        url = make_url(with_postgres_driver(uri))
    except (ArgumentError, ValueError) as error:  # make_url: ValueError for int(port)
        why = "its port is not a number" if isinstance(error, ValueError) else str(error)
        return (
            f"The PostgreSQL tracking store {shown}, given by {source}, cannot be read: {why}. "
            "Write it as postgresql://USER@HOST:PORT/DATABASE; nothing was started."
        )
    params = {"host": url.host, "port": url.port, "user": url.username, "dbname": url.database}
    params = {key: value for key, value in params.items() if value is not None}
    # The URI's own parameters win, connect_timeout among them (one keyword, never two).
    options = {"connect_timeout": int(timeout_s), **params, **dict(url.query)}
    try:
        pg_connect(**options).close()
    except ValueError as error:  # libpq refuses the value itself, e.g. a NUL in a parameter
        return (
            f"The PostgreSQL tracking store {shown}, given by {source}, cannot be read: "
            f"{error}. Write it as postgresql://USER@HOST:PORT/DATABASE; nothing was started."
        )
    except psycopg2.Error as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if "role" in reason and "does not exist" in reason:  # the user, not the database
            who = "" if url.username else " (the URI names no user: PGUSER, else your login)"
            what = (
                f"the user PostgreSQL was asked to connect as is unknown to it{who}: name an "
                "existing one in the URI (postgresql://USER@HOST:PORT/DATABASE), or create it "
                "(`createuser NAME` as a PostgreSQL superuser)"
            )
        elif "does not exist" in reason:
            what = (
                f"create it (`createdb {url.database}` as a user allowed to), or start "
                f"`lrsweep server --backend-store-uri {shown}`, which creates it, and "
                "point sweeps at that server"
            )
        else:
            what = (
                "check that PostgreSQL runs there and the user may connect (a password goes in "
                "PGPASSWORD or ~/.pgpass)"
            )
        return (
            f"Cannot open the PostgreSQL tracking store {shown}, given by {source}: "
            f"{reason}. {what[0].upper()}{what[1:]}; nothing was started."
        )
    return None


def _why_unreachable(error: BaseException, timeout_s: float) -> str:
    """A few words for the innermost cause of a failed request."""
    for cause in _causes(error):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused: no server listens on that port"
        if isinstance(cause, socket.gaierror):
            return "unknown host name"
        if isinstance(cause, requests.Timeout | TimeoutError | socket.timeout):
            return f"no answer within {timeout_s:g} s"
    return type(error).__name__


def with_postgres_driver(uri: str) -> str:
    """``postgresql://`` / ``postgres://`` as ``postgresql+psycopg2://``; other URIs unchanged.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, but lrsweep ships psycopg2.
    """
    for prefix in ("postgresql://", "postgres://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg2://" + uri.removeprefix(prefix)
    return uri


def existing_store_uri(tracking_uri: str | None) -> str:
    """The resolved tracking URI, for a command that only reads: an embedded SQLite store that
    does not exist is refused (``LookupError``) instead of created empty."""
    uri = resolve_tracking_uri(tracking_uri)
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise LookupError(
            f"No MLflow store at {path} (no experiments there); pass --tracking-uri (or set "
            "MLFLOW_TRACKING_URI) to the store the sweep logged to, or run lrsweep from the "
            "folder the sweep ran in."
        )
    if path is not None and not _holds_experiments(path):
        raise LookupError(
            f"{path} is not an MLflow store (not an SQLite database, or one without MLflow's "
            "tables); pass --tracking-uri (or set MLFLOW_TRACKING_URI) to the store the sweep "
            "logged to."
        )
    if uri.startswith(("postgresql", "postgres:")) and not _postgres_holds_experiments(uri):
        raise LookupError(
            f"{redact_url(uri)} is not an MLflow store: that database holds another program's "
            "tables and not MLflow's, and it is left as it is; pass --tracking-uri (or set "
            "MLFLOW_TRACKING_URI) to the store the sweep logged to."
        )
    return uri


def _postgres_holds_experiments(uri: str) -> bool:
    """Whether the PostgreSQL database of ``uri`` has MLflow's ``experiments`` table, read
    without writing: MLflow creates its ~40 tables in any database that lacks them, another
    program's included. An empty database (nothing in it to harm; MLflow makes it a store, as
    ``lrsweep server`` does) or one that cannot be read here (:func:`check_tracking_server`
    says why) is taken at its word."""
    import psycopg2
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(with_postgres_driver(uri))
    except (ArgumentError, ValueError):
        return True
    params = {"host": url.host, "port": url.port, "user": url.username, "dbname": url.database}
    params = {key: value for key, value in params.items() if value is not None}
    options = {"connect_timeout": int(SERVER_PROBE_TIMEOUT_S), **params, **dict(url.query)}
    try:
        conn = pg_connect(**options)
    except (psycopg2.Error, ValueError):
        return True
    try:
        with conn.cursor() as cur:
            # The tables MLflow would see: those of the schemas on the search path.
            cur.execute(
                "SELECT count(*), count(*) FILTER (WHERE tablename = 'experiments') "
                "FROM pg_catalog.pg_tables WHERE schemaname = ANY(current_schemas(false))"
            )
            tables, experiments = cur.fetchone() or (0, 0)
    except psycopg2.Error:
        return True
    finally:
        conn.close()
    return tables == 0 or experiments > 0


def _holds_experiments(path: Path) -> bool:
    """Whether the SQLite file ``path`` has MLflow's ``experiments`` table, read without
    writing: opening another file (a YAML file, a database of something else) as the store
    crashed on it or created MLflow's tables in it. A file that cannot be read here (locked,
    a folder without write access for WAL), or empty (nothing in it to harm; MLflow makes it a
    store), is taken at its word."""
    import contextlib
    import sqlite3
    from urllib.parse import quote

    try:
        if path.stat().st_size == 0:
            return True
        with contextlib.closing(
            sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=5)
        ) as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'experiments'"
            ).fetchone()
    except (OSError, sqlite3.OperationalError):  # locked, unreadable: MLflow says what it says
        return True
    except sqlite3.DatabaseError:  # "file is not a database"
        return False
    return found is not None


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///") :].split("?", 1)[0]))
