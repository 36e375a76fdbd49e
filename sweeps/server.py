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

Here: the configuration, :func:`prepare_server` (the launch it decides) and :func:`serve`. The
refusals made before anything is created are in ``_server_checks.py``; what is created (the
PostgreSQL database, the folders, the basic-auth ini and CSRF key) is in ``_server_setup.py``;
the child process is started and stopped by ``_server_process.py``. This module re-exports the
names it always offered.

Example:
    >>> launch = prepare_server(ServerConfig(port=5001))  # doctest: +SKIP
    >>> serve(ServerConfig(port=5001), on_ready=lambda url: None)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from sweeps._server_checks import ADMIN_PASSWORD_ENV as ADMIN_PASSWORD_ENV  # re-exported
from sweeps._server_checks import ADMIN_USERNAME_ENV as ADMIN_USERNAME_ENV  # re-exported
from sweeps._server_checks import DEFAULT_ADMIN_USERNAME as DEFAULT_ADMIN_USERNAME  # re-exported
from sweeps._server_checks import MIN_ADMIN_PASSWORD_LENGTH as MIN_ADMIN_PASSWORD_LENGTH
from sweeps._server_checks import MLFLOW_STOCK_ADMIN_PASSWORD as MLFLOW_STOCK_ADMIN_PASSWORD
from sweeps._server_checks import PLACEHOLDER_PREFIX as PLACEHOLDER_PREFIX  # re-exported
from sweeps._server_checks import SECRET_KEY_ENV as SECRET_KEY_ENV  # re-exported
from sweeps._server_checks import (
    ServerConfigError,
    StoreUnreachableError,
    check_port_free,
    experiments_served_elsewhere,
    is_loopback,
    local_artifacts,
    refuse_password,
    refuse_unusable_artifacts,
    refuse_unusable_store,
)
from sweeps._server_checks import admin_username_from_env as admin_username_from_env
from sweeps._server_process import (
    ServerStartError,
    start_server,
    stop_server,
    wait_until_ready,
)
from sweeps._server_setup import POSTGRES_CONNECT_TIMEOUT_S as POSTGRES_CONNECT_TIMEOUT_S
from sweeps._server_setup import (
    ensure_backend_store,
    make_folder,
    secret_key,
    write_auth_config,
)
from sweeps._uri import command_uri
from sweeps.tracking import default_tracking_uri, with_postgres_driver

__all__ = [
    "ServerConfig",
    "ServerConfigError",
    "ServerLaunch",
    "ServerStartError",
    "StoreUnreachableError",
    "check_port_free",
    "ensure_backend_store",
    "experiments_served_elsewhere",
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
        serve_artifacts: False: the server stores and serves no artifacts (no folder is made;
            ``artifacts_destination`` is ignored) and shows each run's from the location it
            logged them to (``lrsweep ui`` of a database whose runs logged theirs themselves).
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
    serve_artifacts: bool = True


NOT_SERVED = "not served: each run's own artifact location"
"""How a launch without served artifacts shows its artifacts destination."""


@dataclass(frozen=True)
class ServerLaunch:
    """A prepared ``mlflow server`` invocation; no credential is in it.

    Attributes:
        argv: the command line (no URI with a password, no key).
        env: variables added to the current environment for the child process (the backend URI
            and, with auth, the CSRF key: never log it).
        url: the address clients use (``http://host:port``).
        backend_display: the backend store URI as given (its user kept: the one MLflow connects
            as), any password masked, for messages.
        artifacts_destination: resolved artifact location (:data:`NOT_SERVED` without one).
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
    _refuse_config(config)
    admin_username = admin_username_from_env(environ) if config.auth else None

    given = config.backend_store_uri or default_tracking_uri()
    backend = with_postgres_driver(given)
    destination = config.artifacts_destination or str(EMBEDDED_ARTIFACTS)
    local = local_artifacts(destination) if config.serve_artifacts else None
    env = _child_env(backend, environ)
    made: list[Path] = []  # folders this call created: removed again when it fails
    auth_path = scratch = None
    try:
        # Local folders first, then the databases: a refused folder leaves no database behind.
        if local is not None:
            local = local.resolve()
            made += make_folder(local, config.artifacts_option)
            destination = str(local)
        if admin_username is not None:
            auth_dir, auth_db, scratch = _auth_folder(config, local, made)
            auth_path = write_auth_config(
                auth_dir / "basic_auth.ini", database_uri=auth_db, admin_username=admin_username
            )
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_path)
            env[SECRET_KEY_ENV] = environ.get(SECRET_KEY_ENV) or secret_key(auth_dir)
        ensure_backend_store(given, option=config.store_option)
        if admin_username is not None:
            ensure_backend_store(config.auth_db_uri or auth_db, option="--auth-db-uri")
    except BaseException:
        for folder in made:  # the scratch folder, if any, is last in it
            shutil.rmtree(folder, ignore_errors=True)
        raise

    return ServerLaunch(
        argv=_server_argv(config, destination, auth=auth_path is not None),
        env=env,
        url=f"http://{_client_host(config.host)}:{config.port}",
        backend_display=command_uri(given),
        artifacts_destination=destination if config.serve_artifacts else NOT_SERVED,
        auth_config_path=auth_path,
        scratch_dir=scratch,
    )


def _child_env(backend: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables the child process gets besides the current environment: the backend store
    URI (kept off its command line) and whether MLflow runs jobs (``false`` unless set)."""
    return {
        "MLFLOW_BACKEND_STORE_URI": backend,
        # Job execution serves GenAI scorers; sweeps need none of it, and it costs a process.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": environ.get(
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"
        ),
    }


def _refuse_config(config: ServerConfig) -> None:
    """Refuse what ``config`` gets wrong before anything is created: the port, the workers,
    a password in a store URI, a store or artifacts destination that cannot be used.

    Raises:
        ServerConfigError: naming the option at fault.
    """
    if not 0 < config.port < 65536:
        raise ServerConfigError(f"--port must be between 1 and 65535, but got {config.port}.")
    if config.workers < 1:
        raise ServerConfigError(f"--workers must be at least 1, but got {config.workers}.")
    refuse_password(config.store_option, config.backend_store_uri)
    refuse_password("--auth-db-uri", config.auth_db_uri)
    refuse_unusable_store(config.store_option, config.backend_store_uri)
    refuse_unusable_store("--auth-db-uri", config.auth_db_uri)
    refuse_unusable_artifacts(config.artifacts_option, config.artifacts_destination)


def _auth_folder(
    config: ServerConfig, local: Path | None, made: list[Path]
) -> tuple[Path, str, Path | None]:
    """The folder for basic-auth's ini and CSRF key, the URI of its user database, and the
    scratch folder to delete once the server stops (None when the folder is kept).

    Without ``--auth-db-uri`` the folder is ``auth/`` beside the local artifacts folder ``local``
    (``.lrsweep/auth`` for remote artifacts) and holds the SQLite user database; with one it is
    a fresh private temporary folder. Every folder made here is appended to ``made`` at once, so
    the caller removes it when a later step fails.

    Raises:
        ServerConfigError: the ``auth/`` folder cannot be made or written.
    """
    if config.auth_db_uri is None:
        auth_dir = (local.parent if local is not None else STATE_DIR.resolve()) / "auth"
        auth_db = f"sqlite:///{auth_dir / 'basic_auth.db'}"
        # basic_auth.db holds every user's password hash: this user's eyes only.
        made += make_folder(auth_dir, "the basic-auth folder", private=True)
        return auth_dir, auth_db, None
    # Users live in a database elsewhere: nothing to keep on this disk, which may be read-only
    # apart from the artifact volume (a container).
    scratch = Path(tempfile.mkdtemp(prefix="lrsweep-mlflow-auth-"))
    made.append(scratch)
    return scratch, with_postgres_driver(config.auth_db_uri), scratch


def _server_argv(config: ServerConfig, destination: str, *, auth: bool) -> tuple[str, ...]:
    """The ``mlflow server`` command line: served artifacts in ``destination`` (none unless
    ``config.serve_artifacts``), ``config``'s host, port, workers and allowed hosts, and the
    basic-auth app when ``auth``."""
    argv = [sys.executable, "-m", "mlflow", "server"]
    if config.serve_artifacts:
        argv += ["--serve-artifacts", "--artifacts-destination", destination]
    else:
        argv += ["--no-serve-artifacts"]
    argv += ["--host", config.host, "--port", str(config.port), "--workers", str(config.workers)]
    if config.allowed_hosts:
        argv += ["--allowed-hosts", _with_default_hosts(config.allowed_hosts)]
    if auth:
        argv += ["--app-name", "basic-auth"]
    return tuple(argv)


def _with_default_hosts(allowed_hosts: str) -> str:
    """``allowed_hosts`` after MLflow's default ones (localhost, private addresses), which an
    ``--allowed-hosts`` of ``mlflow server`` replaces: without them the address printed
    (``http://127.0.0.1:PORT``) would answer 403."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    given = [host.strip() for host in allowed_hosts.split(",") if host.strip()]
    return ",".join(dict.fromkeys([*get_default_allowed_hosts(), *given]))


def _client_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def serve(
    config: ServerConfig,
    *,
    on_starting: Callable[[], None] | None = None,
    on_ready: Callable[[ServerLaunch], None] | None = None,
    timeout_s: float = 120.0,
) -> int:
    """Run the server in the foreground until it exits, SIGTERM or Ctrl-C.

    Args:
        config: what to start.
        on_starting: called once every check has passed, just before ``mlflow server``
            starts (e.g. to warn about the host it will listen on).
        on_ready: called once the server answers (e.g. to print its address).
        timeout_s: how long to wait for it to answer.

    Returns:
        The server's exit code (0 after a clean stop on a signal, also one that comes before
        the server has started: nothing is left of it then).

    Raises:
        ServerConfigError: the port is taken or the host is not this machine's (nothing has been
            created), or :func:`prepare_server` refused the setup.
        ServerStartError: ``mlflow server`` exited or did not answer in time.
    """

    def _stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGHUP: a closed terminal or ssh session, which no longer reaches the server's own group.
    # SIGINT too, even when the command started with it ignored (a script's `&` job): Ctrl-C,
    # or `kill -INT`, stops the server whatever the shell handed down. From the start: a stop
    # while PostgreSQL is being reached ends that wait too, and what was made is removed.
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in stops}
    for sig in stops:
        signal.signal(sig, _stop)
    launch = process = None
    try:
        check_port_free(config.host, config.port)
        launch = prepare_server(config)
        if on_starting is not None:
            on_starting()
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
            if launch is not None and launch.scratch_dir is not None:
                shutil.rmtree(launch.scratch_dir, ignore_errors=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
