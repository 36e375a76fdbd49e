"""Start MLflow's tracking server: for a team (PostgreSQL, served artifacts, basic auth) or
for browsing the embedded store.

``lrsweep server`` and ``lrsweep ui`` both come here. The server is MLflow's own
``mlflow server``, run as a child process; this module only decides its arguments, prepares
what it needs (the PostgreSQL database, the artifact folder, the basic-auth configuration) and
refuses unsafe setups before anything starts.

Credentials never travel on a command line or into a file written here:

* the backend store URI is handed to ``mlflow server`` through ``MLFLOW_BACKEND_STORE_URI``
  (a PostgreSQL password may also come from ``PGPASSWORD`` or ``~/.pgpass``);
* the basic-auth admin account comes from MLflow's own bootstrap variables
  ``MLFLOW_AUTH_ADMIN_USERNAME`` (default ``admin``) and ``MLFLOW_AUTH_ADMIN_PASSWORD``, which
  the server process inherits. MLflow reads them only when it creates the admin user in an
  empty auth database; afterwards change passwords through MLflow's API;
* the basic-auth app's CSRF key comes from ``MLFLOW_FLASK_SERVER_SECRET_KEY`` (set the same
  value on every replica), else it is generated once into ``auth/flask_secret_key`` (0600).

Example:
    >>> launch = prepare_server(ServerConfig(port=5001))  # doctest: +SKIP
    >>> serve(ServerConfig(port=5001), on_ready=lambda url: None)  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from sweeps._server_process import (
    ServerStartError,
    start_server,
    stop_server,
    wait_until_ready,
)
from sweeps.spec import uri_has_password
from sweeps.tracking import (
    TrackingUriError,
    check_tracking_uri,
    database_driver_problem,
    default_tracking_uri,
    redact_uri,
    sqlite_path,
    with_postgres_driver,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ServerConfig",
    "ServerConfigError",
    "ServerLaunch",
    "ServerStartError",
    "StoreUnreachableError",
    "check_port_free",
    "ensure_backend_store",
    "is_loopback",
    "prepare_server",
    "serve",
    "start_server",
    "stop_server",
    "wait_until_ready",
    "write_auth_config",
]

STATE_DIR = Path(".lrsweep")  # the embedded store's home, as in sweeps.tracking
EMBEDDED_ARTIFACTS = STATE_DIR / "artifacts"

ADMIN_USERNAME_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
DEFAULT_ADMIN_USERNAME = "admin"
# The admin password that MLflow's basic_auth.ini shipped until 2.x (GHSA-gq3w-7jj3-x7gr).
MLFLOW_STOCK_ADMIN_PASSWORD = "password1234"
MIN_ADMIN_PASSWORD_LENGTH = 12  # MLflow's own password policy
POSTGRES_CONNECT_TIMEOUT_S = 10  # unless the URI sets connect_timeout
# The basic-auth app's CSRF key; shared by every replica of one server when set.
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"
PLACEHOLDER_PREFIX = "CHANGE-ME"
"""How the example files' secrets begin: ``--auth`` refuses such a value left unedited."""
# Databases `mlflow server` serves (its DATABASE_ENGINES) that no tracking URI of a sweep names.
_SERVER_ONLY_SCHEMES = ("mssql",)


class ServerConfigError(ValueError):
    """The server cannot start as configured; the message names the option or variable."""


class StoreUnreachableError(ServerConfigError):
    """PostgreSQL is down, still starting or unreachable: worth a retry, unlike the rest of
    :class:`ServerConfigError` (``lrsweep server`` exits 1, not 2, so that systemd's
    ``Restart=on-failure`` tries again once the database is up)."""


# libpq's words for a database that is not there yet, as opposed to one that refuses the user.
_UNREACHABLE = (
    "connection refused",
    "timeout expired",
    "timed out",
    "could not translate host name",
    "the database system is",  # starting up, shutting down, in recovery mode
    "no route to host",
    "network is unreachable",
    "server closed the connection",
)


@dataclass(frozen=True)
class ServerConfig:
    """What ``lrsweep server`` / ``lrsweep ui`` start.

    Attributes:
        backend_store_uri: ``postgresql://...`` or ``sqlite:///...``; ``None`` means the embedded
            store ``.lrsweep/mlflow.db`` in the working directory.
        artifacts_destination: local folder or ``s3://...`` the server stores artifacts in and
            serves them from (clients see ``mlflow-artifacts:/`` URIs); ``None`` means
            ``.lrsweep/artifacts``.
        host: interface to bind; loopback unless a team server is meant.
        port: TCP port.
        auth: run MLflow's basic-auth app (admin account from the environment).
        auth_db_uri: where basic-auth keeps users; ``None`` means SQLite in an ``auth/`` folder
            beside a local artifacts folder (``.lrsweep/auth`` for remote artifacts), which also
            holds the generated auth ini and CSRF key. With a URI, those two go to a fresh
            private temporary folder instead (set ``MLFLOW_FLASK_SERVER_SECRET_KEY`` so the CSRF
            key survives restarts).
        workers: uvicorn worker processes.
        allowed_hosts: ``Host`` headers to accept besides localhost and private addresses
            (comma-separated), e.g. the DNS name a team reaches the server by.
        store_option: how messages name the backend store (``lrsweep ui`` has no
            ``--backend-store-uri``).
        artifacts_option: how messages name the artifacts folder.
    """

    backend_store_uri: str | None = None
    artifacts_destination: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    auth: bool = False
    auth_db_uri: str | None = None
    workers: int = 4
    allowed_hosts: str | None = None
    store_option: str = "--backend-store-uri"
    artifacts_option: str = "--artifacts-destination"


@dataclass(frozen=True)
class ServerLaunch:
    """A prepared ``mlflow server`` invocation; no credential is in it.

    Attributes:
        argv: the command line (no URI with a password, no key).
        env: variables added to the current environment for the child process (the backend URI
            and, with auth, the CSRF key: never log it).
        url: the address clients use (``http://host:port``).
        backend_display: the backend store URI with any password masked, for messages.
        artifacts_destination: resolved artifact location.
        auth_config_path: the generated basic-auth ini, or ``None`` without auth.
        scratch_dir: a temporary folder to delete once the server has stopped, or ``None``.
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(repr=False)
    url: str
    backend_display: str
    artifacts_destination: str
    auth_config_path: Path | None = None
    scratch_dir: Path | None = None


def ensure_backend_store(uri: str, *, option: str = "--backend-store-uri") -> None:
    """Make ``uri`` usable by ``mlflow server``, which migrates an empty schema on start.

    PostgreSQL: the database is created (connecting to the ``postgres`` maintenance database with
    the same credentials) when it does not exist. SQLite: the file's folder is created. Other
    SQLAlchemy URIs are left to MLflow.

    Raises:
        StoreUnreachableError: PostgreSQL refuses the connection, is starting up or does not
            answer within ``POSTGRES_CONNECT_TIMEOUT_S``; the message names ``option``.
        ServerConfigError: the URI cannot be read, the SQLite file's folder cannot be made,
            PostgreSQL refuses the user or the database cannot be created; the message names
            ``option``.
    """
    path = sqlite_path(uri)
    if path is not None:
        if str(path) not in ("", ":memory:"):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ServerConfigError(
                    f"{option} {redact_uri(uri)}: cannot create the folder {path.parent} "
                    f"({exc.strerror or exc}); give a path this user can write."
                ) from None
        return
    if uri.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
        _ensure_postgres_database(uri, option)


def _ensure_postgres_database(uri: str, option: str) -> None:
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(with_postgres_driver(uri))
    except (ArgumentError, ValueError) as exc:  # make_url: ValueError for int(port)
        why = "its port is not a number" if isinstance(exc, ValueError) else str(exc)
        raise ServerConfigError(
            f"{option} {redact_uri(uri)} cannot be read: {why}. Write it as "
            "postgresql://USER@HOST:PORT/DATABASE."
        ) from None
    name = url.database
    if not name:
        raise ServerConfigError(
            f"{option} {redact_uri(uri)} names no database; "
            "add one, e.g. postgresql://user@host:5432/mlflow."
        )
    params = {"host": url.host, "port": url.port, "user": url.username, "password": url.password}
    params = {key: value for key, value in params.items() if value is not None}
    # A PostgreSQL that accepts the connection but never answers would hang the start for good.
    options = {"connect_timeout": str(POSTGRES_CONNECT_TIMEOUT_S), **dict(url.query)}
    try:
        conn = psycopg2.connect(dbname="postgres", **params, **options)
    except psycopg2.Error as exc:
        unreachable = any(words in str(exc).lower() for words in _UNREACHABLE)
        raise (StoreUnreachableError if unreachable else ServerConfigError)(
            f"Cannot connect to PostgreSQL for {option} {redact_uri(uri)}: "
            f"{str(exc).strip()}. Check that PostgreSQL runs there and the user may connect "
            "(a password goes in PGPASSWORD or ~/.pgpass)."
        ) from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                logger.info("Created PostgreSQL database %r for MLflow.", name)
    except psycopg2.Error as exc:
        raise ServerConfigError(
            f"Cannot create database {name!r} for {option} {redact_uri(uri)}: "
            f"{str(exc).strip()}. Create it as a user allowed to (`createdb {name}`)."
        ) from None
    finally:
        conn.close()


def admin_username_from_env(environ: Mapping[str, str]) -> str:
    """Check the basic-auth admin account in ``environ`` and return its user name.

    Raises:
        ServerConfigError: the password is missing, MLflow's old stock default, or shorter than
            MLflow's minimum; the message names the variable (never the value).
    """
    username = environ.get(ADMIN_USERNAME_ENV) or DEFAULT_ADMIN_USERNAME
    password = environ.get(ADMIN_PASSWORD_ENV)
    if not password:
        raise ServerConfigError(
            f"--auth needs the admin password in the environment variable {ADMIN_PASSWORD_ENV} "
            f"(and optionally the user name in {ADMIN_USERNAME_ENV}, default "
            f"{DEFAULT_ADMIN_USERNAME!r}); it is not set."
        )
    if password == MLFLOW_STOCK_ADMIN_PASSWORD:
        raise ServerConfigError(
            f"{ADMIN_PASSWORD_ENV} is MLflow's publicly known stock default password; "
            "refusing to start. Choose another."
        )
    if len(password) < MIN_ADMIN_PASSWORD_LENGTH:
        raise ServerConfigError(
            f"{ADMIN_PASSWORD_ENV} must be at least {MIN_ADMIN_PASSWORD_LENGTH} characters "
            f"(MLflow's policy), but it has {len(password)}."
        )
    for name in (ADMIN_PASSWORD_ENV, SECRET_KEY_ENV):
        if environ.get(name, "").upper().startswith(PLACEHOLDER_PREFIX):
            raise ServerConfigError(
                f"{name} still holds the {PLACEHOLDER_PREFIX}... placeholder of an example file "
                "(infra/k8s/secrets.example.yaml, infra/mlflow/mlflow.env.example), which anyone "
                "can read; refusing to start. Set your own value."
            )
    return username


def write_auth_config(path: Path, *, database_uri: str, admin_username: str) -> Path:
    """Write MLflow's basic-auth ini (no password: MLflow reads that from the environment).

    Authenticated users may read every experiment (``default_permission = READ``) and manage
    the ones they create; unauthenticated requests are refused.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = (
        "# Written by `lrsweep server --auth`; regenerated on every start.\n"
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an ini left by an older start may have had a wider mode
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def _secret_key(auth_dir: Path) -> str:
    """The basic-auth app's CSRF key, generated once and kept (mode 0600) in ``auth_dir``."""
    path = auth_dir / "flask_secret_key"
    if not path.is_file():
        auth_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        logger.info("Generated the basic-auth CSRF key in %s.", path)
    elif path.stat().st_mode & 0o077:  # a copy or a restore left it readable by others
        logger.warning("The basic-auth CSRF key %s was readable by others; now mode 0600.", path)
        path.chmod(0o600)
    return path.read_text().strip()


def _local_artifacts(destination: str) -> Path | None:
    if destination.startswith("file://"):
        return Path(destination.removeprefix("file://"))
    return None if "://" in destination else Path(destination)


_ARTIFACT_SCHEMES_KNOWN = ("abfss", "b2", "dbfs", "ftp", "gs", "hdfs", "r2", "s3", "sftp", "viewfs")
"""Object stores and file systems MLflow 3 stores artifacts in (its registry's, less ``runs``,
``models`` and the ``mlflow-artifacts`` / ``http(s)`` proxies, which are servers, not stores)."""


def _artifact_schemes() -> tuple[str, ...]:
    try:
        from mlflow.store.artifact.artifact_repository_registry import (
            _artifact_repository_registry as registry,
        )

        known = set(registry._registry)  # private; an MLflow upgrade may move it
    except (ImportError, AttributeError):
        return _ARTIFACT_SCHEMES_KNOWN
    servers = {"", "file", "runs", "models", "mlflow-artifacts", "http", "https"}
    return tuple(sorted(known - servers)) or _ARTIFACT_SCHEMES_KNOWN


def _refuse_unusable_artifacts(option: str, destination: str | None) -> None:
    """Refuse an artifacts destination that is no folder and no store MLflow writes to: a
    database URL there was accepted, and every artifact upload then failed with HTTP 500."""
    if not destination or _local_artifacts(destination) is not None:
        return
    scheme = destination.partition("://")[0].lower()
    accepted = _artifact_schemes()
    if scheme.split("+")[0] in accepted:
        return
    shown = redact_uri(destination)
    if scheme.split("+")[0] in _DATABASE_SCHEMES:
        raise ServerConfigError(
            f"{option} {shown} is a database; MLflow keeps artifacts in a folder or an object "
            "store (s3://BUCKET/PATH, gs://...), and the runs' database goes in "
            "--backend-store-uri."
        )
    raise ServerConfigError(
        f"{option} {shown}: MLflow stores no artifacts at {scheme}://; give a folder or one "
        f"of {', '.join(s + '://' for s in accepted)}."
    )


_DATABASE_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite", "mssql")


def prepare_server(
    config: ServerConfig, *, environ: Mapping[str, str] | None = None
) -> ServerLaunch:
    """Check ``config``, create the store, artifact folder and auth config it needs.

    Args:
        config: what to start.
        environ: where credentials are read from; ``os.environ`` by default.

    Returns:
        The command to run; nothing has been started yet.

    Raises:
        ServerConfigError: a bad port, missing/unsafe admin password, a password in a store
            URI, an artifacts destination that is no folder or object store, an artifacts or
            auth folder that cannot be made or written, or an unreadable,
            unreachable or uncreatable store; the folders it made are removed again.
    """
    environ = os.environ if environ is None else environ
    if not 0 < config.port < 65536:
        raise ServerConfigError(f"--port must be between 1 and 65535, but got {config.port}.")
    if config.workers < 1:
        raise ServerConfigError(f"--workers must be at least 1, but got {config.workers}.")
    _refuse_password(config.store_option, config.backend_store_uri)
    _refuse_password("--auth-db-uri", config.auth_db_uri)
    _refuse_unusable_store(config.store_option, config.backend_store_uri)
    _refuse_unusable_store("--auth-db-uri", config.auth_db_uri)
    _refuse_unusable_artifacts(config.artifacts_option, config.artifacts_destination)
    admin_username = admin_username_from_env(environ) if config.auth else None

    backend = with_postgres_driver(config.backend_store_uri or default_tracking_uri())
    destination = config.artifacts_destination or str(EMBEDDED_ARTIFACTS)
    local = _local_artifacts(destination)
    env = {
        "MLFLOW_BACKEND_STORE_URI": backend,
        # Job execution serves GenAI scorers; sweeps need none of it, and it costs a process.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": environ.get(
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"
        ),
    }
    made: list[Path] = []  # folders this call created: removed again when it fails
    auth_path = scratch = None
    try:
        # Local folders first, then the databases: a refused folder leaves no database behind.
        if local is not None:
            local = local.resolve()
            made += _make_folder(local, config.artifacts_option)
            destination = str(local)
        if admin_username is not None:
            if config.auth_db_uri is None:
                auth_dir = (local.parent if local is not None else STATE_DIR.resolve()) / "auth"
                auth_db = f"sqlite:///{auth_dir / 'basic_auth.db'}"
                # basic_auth.db holds every user's password hash: this user's eyes only.
                made += _make_folder(auth_dir, "the basic-auth folder", private=True)
            else:
                # Users live in a database elsewhere: nothing to keep on this disk, which may
                # be read-only apart from the artifact volume (a container).
                auth_dir = scratch = Path(tempfile.mkdtemp(prefix="lrsweep-mlflow-auth-"))
                auth_db = with_postgres_driver(config.auth_db_uri)
            auth_path = write_auth_config(
                auth_dir / "basic_auth.ini", database_uri=auth_db, admin_username=admin_username
            )
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_path)
            env[SECRET_KEY_ENV] = environ.get(SECRET_KEY_ENV) or _secret_key(auth_dir)
        ensure_backend_store(backend, option=config.store_option)
        if admin_username is not None:
            ensure_backend_store(auth_db, option="--auth-db-uri")
    except BaseException:
        for folder in (*made, *([scratch] if scratch else [])):
            shutil.rmtree(folder, ignore_errors=True)
        raise

    argv = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts"]
    argv += ["--artifacts-destination", destination]
    argv += ["--host", config.host, "--port", str(config.port), "--workers", str(config.workers)]
    if config.allowed_hosts:
        argv += ["--allowed-hosts", _with_default_hosts(config.allowed_hosts)]
    if auth_path is not None:
        argv += ["--app-name", "basic-auth"]

    return ServerLaunch(
        argv=tuple(argv),
        env=env,
        url=f"http://{_client_host(config.host)}:{config.port}",
        backend_display=redact_uri(backend),
        artifacts_destination=destination,
        auth_config_path=auth_path,
        scratch_dir=scratch,
    )


def _make_folder(path: Path, option: str, *, private: bool = False) -> list[Path]:
    """Create ``path`` (``private``: mode 0700) and check that it takes a file.

    Returns:
        The folders created, outermost first (none when ``path`` existed).

    Raises:
        ServerConfigError: naming ``option``; whatever it created is removed again.
    """
    made = [folder for folder in (path, *path.parents) if not folder.exists()][::-1]
    try:
        path.mkdir(mode=0o700 if private else 0o777, parents=True, exist_ok=True)
        if private:
            path.chmod(0o700)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
        raise ServerConfigError(
            f"{option} {path} cannot be used ({exc.strerror or exc}): give a folder this user "
            "can create and write to."
        ) from None
    return made


def _with_default_hosts(allowed_hosts: str) -> str:
    """``allowed_hosts`` after MLflow's default ones (localhost, private addresses), which an
    ``--allowed-hosts`` of ``mlflow server`` replaces: without them the address printed
    (``http://127.0.0.1:PORT``) would answer 403."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    given = [host.strip() for host in allowed_hosts.split(",") if host.strip()]
    return ",".join(dict.fromkeys([*get_default_allowed_hosts(), *given]))


def _refuse_password(option: str, uri: str | None) -> None:
    """A password in a store URI would show in ``ps`` (our command line) and the auth ini."""
    if uri and uri_has_password(uri):
        raise ServerConfigError(
            f"{option} {redact_uri(uri)} must not contain a password: a command line is "
            "visible to every user in `ps`. Remove it and set PGPASSWORD (or use ~/.pgpass) in "
            "the server's environment."
        )


def _refuse_unusable_store(option: str, uri: str | None) -> None:
    """Refuse a store URI ``mlflow server`` cannot open, before anything is created.

    The rules of a tracking URI (:func:`sweeps.tracking.check_tracking_uri`): ``sqlite://x.db``
    (two slashes), a folder or ``file:`` URI (MLflow's file store), an unknown scheme, and here
    an MLflow server (``http://...``), each with the form that works; else ``mlflow server``
    printed a traceback and exited 1, which systemd's ``Restart=on-failure`` retries for good.
    A server's store may be what no sweep logs to directly, so these pass too: MLflow's other
    database engine (``mssql``) and an in-memory SQLite (``sqlite://``, ``sqlite:///:memory:``).
    """
    if not uri:
        return
    try:
        parts = urlsplit(uri)
    except ValueError:
        parts = None  # the check below says why
    if parts is not None:
        scheme = parts.scheme.lower().split("+")[0]
        in_memory = not parts.netloc and parts.path.strip("/") in ("", ":memory:")
        if scheme in _SERVER_ONLY_SCHEMES or (scheme == "sqlite" and in_memory):
            problem = database_driver_problem(uri)
            if problem:
                raise ServerConfigError(
                    f"{option} {redact_uri(uri)}: {problem}. Nothing was created."
                )
            return
    try:
        check_tracking_uri(uri, source=option, database_only=True)
    except TrackingUriError as error:
        raise ServerConfigError(f"{error} Nothing was created.") from None


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (``127.0.0.1``, ``::1``,
    ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """Refuse a ``host``/``port`` that ``mlflow server`` could not listen on.

    Binds a socket the way uvicorn does (``SO_REUSEADDR``, so a port in ``TIME_WAIT`` after a
    restart passes) and closes it at once. Without this check a busy port shows only in MLflow's
    output, and a second server on the port of a running one took that one's health answer for
    its own and announced itself.

    Raises:
        ServerConfigError: the port is out of range (1-65535), in use or needs privileges,
            or ``host`` is not an address of this machine; the message names the option and
            what to do.
    """
    if not 0 < port < 65536:  # before the host: getaddrinfo refuses -1 as an unknown host
        raise ServerConfigError(f"--port must be between 1 and 65535, but got {port}.")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ServerConfigError(
            f"--host {host!r} cannot be resolved ({exc.strerror}); give an address of this "
            "machine, 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)."
        ) from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                message = (
                    f"port {port} on {host} is already in use (another MLflow server or other "
                    f"program listens there; `ss -ltnp 'sport = :{port}'` shows which). Stop "
                    "it, or choose a free port with --port."
                )
            elif exc.errno == errno.EADDRNOTAVAIL:
                message = (
                    f"--host {host} is not an address of this machine; give one of its "
                    "addresses, 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)."
                )
            elif exc.errno == errno.EACCES:
                message = (
                    f"port {port} needs privileges this user lacks; choose --port 1024 or above."
                )
            else:
                message = f"cannot listen on {host}:{port}: {exc.strerror}."
            raise ServerConfigError(message) from None


def _client_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def serve(
    config: ServerConfig,
    *,
    on_ready: Callable[[ServerLaunch], None] | None = None,
    timeout_s: float = 120.0,
) -> int:
    """Run the server in the foreground until it exits, SIGTERM or Ctrl-C.

    Args:
        config: what to start.
        on_ready: called once the server answers (e.g. to print its address).
        timeout_s: how long to wait for it to answer.

    Returns:
        The server's exit code (0 after a clean stop on a signal).

    Raises:
        ServerConfigError: the port is taken or the host is not this machine's (nothing has been
            created), or :func:`prepare_server` refused the setup.
        ServerStartError: ``mlflow server`` exited or did not answer in time.
    """
    check_port_free(config.host, config.port)
    launch = prepare_server(config)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGHUP: a closed terminal or ssh session, which no longer reaches the server's own group.
    # SIGINT too, even when the command started with it ignored (a script's `&` job): Ctrl-C,
    # or `kill -INT`, stops the server whatever the shell handed down.
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in stops}
    for sig in stops:
        signal.signal(sig, _stop)
    process = None
    try:
        process = start_server(launch)
        wait_until_ready(launch.url, process, timeout_s=timeout_s)
        if on_ready is not None:
            on_ready(launch)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the stop short
            signal.signal(sig, signal.SIG_IGN)
        try:
            if process is not None:
                stop_server(process)
            if launch.scratch_dir is not None:
                shutil.rmtree(launch.scratch_dir, ignore_errors=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
