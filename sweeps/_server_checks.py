"""The refusals of ``lrsweep server`` / ``lrsweep ui`` before anything is created or started: an
unsafe or missing admin password, a password in a store URI, a store or artifacts destination
``mlflow server`` cannot use, a host or port it could not listen on. Each raises
:class:`ServerConfigError` naming the option or variable and what to give instead.

:func:`sweeps.server.prepare_server` and :func:`sweeps.server.serve` call them;
:mod:`sweeps.server` re-exports the public names (the errors, the admin variables,
``admin_username_from_env``, ``is_loopback``, ``check_port_free``).
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from sweeps.spec import uri_has_password
from sweeps.tracking import (
    TrackingUriError,
    check_tracking_uri,
    database_driver_problem,
    redact_uri,
)

__all__ = [
    "ADMIN_PASSWORD_ENV",
    "ADMIN_USERNAME_ENV",
    "DEFAULT_ADMIN_USERNAME",
    "MIN_ADMIN_PASSWORD_LENGTH",
    "MLFLOW_STOCK_ADMIN_PASSWORD",
    "PLACEHOLDER_PREFIX",
    "SECRET_KEY_ENV",
    "ServerConfigError",
    "StoreUnreachableError",
    "admin_username_from_env",
    "check_port_free",
    "experiments_served_elsewhere",
    "is_loopback",
    "local_artifacts",
    "refuse_password",
    "refuse_unusable_artifacts",
    "refuse_unusable_store",
]

ADMIN_USERNAME_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
DEFAULT_ADMIN_USERNAME = "admin"
# The admin password that MLflow's basic_auth.ini shipped until 2.x (GHSA-gq3w-7jj3-x7gr).
MLFLOW_STOCK_ADMIN_PASSWORD = "password1234"
MIN_ADMIN_PASSWORD_LENGTH = 12  # MLflow's own password policy
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


def refuse_password(option: str, uri: str | None) -> None:
    """A password in a store URI would show in ``ps`` (our command line) and the auth ini."""
    if uri and uri_has_password(uri):
        raise ServerConfigError(
            f"{option} {redact_uri(uri)} must not contain a password: a command line is "
            "visible to every user in `ps`. Remove it and set PGPASSWORD (or use ~/.pgpass) in "
            "the server's environment."
        )


def refuse_unusable_store(option: str, uri: str | None) -> None:
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


# A URI's scheme, two characters at least (``C:`` is a drive); what has none is a folder.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def local_artifacts(destination: str) -> Path | None:
    """The folder ``destination`` names (a path, ``file:///path`` or ``file:/path``), or None
    for a URI of any other scheme, however many slashes follow it (``mlflow-artifacts:/x`` and
    ``s3:/bucket`` were taken for the folders ``./mlflow-artifacts:/x`` and ``./s3:/bucket``)."""
    match = _SCHEME.match(destination)
    if match is None:
        return Path(destination)
    if match.group(1).lower() != "file":
        return None
    rest = destination[len("file:") :]
    return Path(rest.removeprefix("//"))


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


def refuse_unusable_artifacts(option: str, destination: str | None) -> None:
    """Refuse an artifacts destination that is no folder and no store MLflow writes to: a
    database URL there was accepted, and every artifact upload then failed with HTTP 500."""
    if not destination or local_artifacts(destination) is not None:
        return
    scheme, _, rest = destination.partition(":")
    scheme = scheme.lower()
    accepted = _artifact_schemes()
    if scheme.split("+")[0] in accepted:
        if not rest.startswith("//"):  # s3:/bucket: MLflow reads no bucket, and every upload fails
            raise ServerConfigError(
                f"{option} {redact_uri(destination)}: write it as {scheme}://BUCKET/PATH "
                "(two slashes after the scheme)."
            )
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

SERVED_ARTIFACTS_SCHEME = "mlflow-artifacts:"


def experiments_served_elsewhere(uri: str) -> list[str]:
    """The experiments of the store ``uri`` (deleted ones too) that hold runs logged through a
    tracking server with served artifacts (``mlflow-artifacts:/`` locations): another server on
    the store finds their artifacts only in that server's artifacts destination, which the store
    does not record. An experiment without a run (MLflow's "Default" of a store a server made) is
    left out.
    """
    from functools import partial

    from mlflow.entities import ViewType

    from sweeps._reads import all_pages
    from sweeps.tracking import Tracker

    client = Tracker(uri, bulk_metrics=False).client
    experiments = all_pages(
        partial(client.search_experiments, view_type=ViewType.ALL), what="search_experiments"
    )
    served = [e for e in experiments if e.artifact_location.startswith(SERVED_ARTIFACTS_SCHEME)]
    return sorted(
        e.name
        for e in served
        if client.search_runs([e.experiment_id], run_view_type=ViewType.ALL, max_results=1)
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
