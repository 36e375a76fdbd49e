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
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from sweeps.spec import uri_has_password
from sweeps.tracking import default_tracking_uri, redact_uri, sqlite_path, with_postgres_driver

logger = logging.getLogger(__name__)

STATE_DIR = Path(".lrsweep")  # the embedded store's home, as in sweeps.tracking
EMBEDDED_ARTIFACTS = STATE_DIR / "artifacts"

ADMIN_USERNAME_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
DEFAULT_ADMIN_USERNAME = "admin"
# The admin password that MLflow's basic_auth.ini shipped until 2.x (GHSA-gq3w-7jj3-x7gr).
MLFLOW_STOCK_ADMIN_PASSWORD = "password1234"
MIN_ADMIN_PASSWORD_LENGTH = 12  # MLflow's own password policy
# The basic-auth app's CSRF key; shared by every replica of one server when set.
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"


class ServerConfigError(ValueError):
    """The server cannot start as configured; the message names the option or variable."""


class ServerStartError(RuntimeError):
    """``mlflow server`` exited or did not answer before it became ready."""


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
    """

    backend_store_uri: str | None = None
    artifacts_destination: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    auth: bool = False
    auth_db_uri: str | None = None
    workers: int = 4
    allowed_hosts: str | None = None


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


def ensure_backend_store(uri: str) -> None:
    """Make ``uri`` usable by ``mlflow server``, which migrates an empty schema on start.

    PostgreSQL: the database is created (connecting to the ``postgres`` maintenance database with
    the same credentials) when it does not exist. SQLite: the file's folder is created. Other
    SQLAlchemy URIs are left to MLflow.

    Raises:
        ServerConfigError: PostgreSQL cannot be reached or the database cannot be created.
    """
    path = sqlite_path(uri)
    if path is not None:
        if str(path) not in ("", ":memory:"):
            path.parent.mkdir(parents=True, exist_ok=True)
        return
    if uri.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
        _ensure_postgres_database(uri)


def _ensure_postgres_database(uri: str) -> None:
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url

    url = make_url(with_postgres_driver(uri))
    name = url.database
    if not name:
        raise ServerConfigError(
            f"--backend-store-uri {redact_uri(uri)} names no database; "
            "add one, e.g. postgresql://user@host:5432/mlflow."
        )
    params = {"host": url.host, "port": url.port, "user": url.username, "password": url.password}
    params = {key: value for key, value in params.items() if value is not None}
    try:
        conn = psycopg2.connect(dbname="postgres", **params, **dict(url.query))
    except psycopg2.Error as exc:
        raise ServerConfigError(
            f"Cannot connect to PostgreSQL for --backend-store-uri {redact_uri(uri)}: "
            f"{str(exc).strip()}"
        ) from exc
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                logger.info("Created PostgreSQL database %r for MLflow.", name)
    except psycopg2.Error as exc:
        raise ServerConfigError(
            f"Cannot create database {name!r} for --backend-store-uri {redact_uri(uri)}: "
            f"{str(exc).strip()}"
        ) from exc
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
    return username


def write_auth_config(path: Path, *, database_uri: str, admin_username: str) -> Path:
    """Write MLflow's basic-auth ini (no password: MLflow reads that from the environment).

    Authenticated users may read every experiment (``default_permission = READ``) and manage
    the ones they create; unauthenticated requests are refused.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# Written by `lrsweep server --auth`; regenerated on every start.\n"
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    path.write_text(text)
    path.chmod(0o600)
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
    return path.read_text().strip()


def _local_artifacts(destination: str) -> Path | None:
    if destination.startswith("file://"):
        return Path(destination.removeprefix("file://"))
    return None if "://" in destination else Path(destination)


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
            URI, or an unreachable or uncreatable backend database.
    """
    environ = os.environ if environ is None else environ
    if not 0 < config.port < 65536:
        raise ServerConfigError(f"--port must be between 1 and 65535, but got {config.port}.")
    if config.workers < 1:
        raise ServerConfigError(f"--workers must be at least 1, but got {config.workers}.")
    _refuse_password("--backend-store-uri", config.backend_store_uri)
    _refuse_password("--auth-db-uri", config.auth_db_uri)
    admin_username = admin_username_from_env(environ) if config.auth else None

    backend = with_postgres_driver(config.backend_store_uri or default_tracking_uri())
    ensure_backend_store(backend)
    destination = config.artifacts_destination or str(EMBEDDED_ARTIFACTS)
    local = _local_artifacts(destination)
    if local is not None:
        local = local.resolve()
        local.mkdir(parents=True, exist_ok=True)
        destination = str(local)

    env = {
        "MLFLOW_BACKEND_STORE_URI": backend,
        # Job execution serves GenAI scorers; sweeps need none of it, and it costs a process.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": environ.get(
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"
        ),
    }
    argv = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts"]
    argv += ["--artifacts-destination", destination]
    argv += ["--host", config.host, "--port", str(config.port), "--workers", str(config.workers)]
    if config.allowed_hosts:
        argv += ["--allowed-hosts", config.allowed_hosts]

    auth_path = scratch = None
    if admin_username is not None:
        if config.auth_db_uri is None:
            auth_dir = (local.parent if local is not None else STATE_DIR.resolve()) / "auth"
            auth_db = f"sqlite:///{auth_dir / 'basic_auth.db'}"
        else:
            # Users live in a database elsewhere: nothing to keep on this disk, which may be
            # read-only apart from the artifact volume (a container).
            auth_dir = scratch = Path(tempfile.mkdtemp(prefix="lrsweep-mlflow-auth-"))
            auth_db = with_postgres_driver(config.auth_db_uri)
        ensure_backend_store(auth_db)
        auth_path = write_auth_config(
            auth_dir / "basic_auth.ini", database_uri=auth_db, admin_username=admin_username
        )
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_path)
        env[SECRET_KEY_ENV] = environ.get(SECRET_KEY_ENV) or _secret_key(auth_dir)
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


def _refuse_password(option: str, uri: str | None) -> None:
    """A password in a store URI would show in ``ps`` (our command line) and the auth ini."""
    if uri and uri_has_password(uri):
        raise ServerConfigError(
            f"{option} {redact_uri(uri)} must not contain a password: a command line is "
            "visible to every user in `ps`. Remove it and set PGPASSWORD (or use ~/.pgpass) in "
            "the server's environment."
        )


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
        ServerConfigError: the port is in use or needs privileges, or ``host`` is not an
            address of this machine; the message names the option and what to do.
    """
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


def start_server(launch: ServerLaunch, *, output: IO[bytes] | None = None) -> subprocess.Popen:
    """Start ``launch`` as a child process (its output goes to ``output`` or ours)."""
    logger.info(
        "Starting MLflow at %s (backend %s, artifacts %s%s).",
        launch.url,
        launch.backend_display,
        launch.artifacts_destination,
        ", basic auth" if launch.auth_config_path else "",
    )
    env = {**os.environ, **launch.env}
    return subprocess.Popen(
        launch.argv, env=env, stdout=output, stderr=subprocess.STDOUT if output else None
    )


def wait_until_ready(url: str, process: subprocess.Popen, *, timeout_s: float = 120.0) -> None:
    """Poll ``url``/health until it answers 200.

    Raises:
        ServerStartError: the process exited first, or ``timeout_s`` passed.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ServerStartError(f"mlflow server exited with code {code} before {url} was up.")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise ServerStartError(f"mlflow server did not answer at {url}/health within {timeout_s}s.")


def stop_server(process: subprocess.Popen, *, timeout_s: float = 20.0) -> int:
    """SIGTERM ``process`` (MLflow forwards it to its workers), SIGKILL after ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("mlflow server ignored SIGTERM for %ss; killing it.", timeout_s)
            process.kill()
            process.wait()
    return process.returncode


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
    process = start_server(launch)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        wait_until_ready(launch.url, process, timeout_s=timeout_s)
        if on_ready is not None:
            on_ready(launch)
        return process.wait()
    except KeyboardInterrupt:
        stop_server(process)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_server(process)
        if launch.scratch_dir is not None:
            shutil.rmtree(launch.scratch_dir, ignore_errors=True)
