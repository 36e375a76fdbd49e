"""What :func:`sweeps.server.prepare_server` creates before ``mlflow server`` starts: the
PostgreSQL database (or the SQLite file's folder), the artifact and basic-auth folders, the
basic-auth ini and the CSRF key. :mod:`sweeps.server` re-exports ``ensure_backend_store``,
``write_auth_config`` and ``POSTGRES_CONNECT_TIMEOUT_S`` (read here, where the connection is
made: a test that shortens it patches this module).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from sweeps._pg_connect import connect as pg_connect
from sweeps._server_checks import ServerConfigError, StoreUnreachableError
from sweeps._uri import command_uri
from sweeps.tracking import sqlite_path, with_postgres_driver

__all__ = [
    "POSTGRES_CONNECT_TIMEOUT_S",
    "ensure_backend_store",
    "make_folder",
    "secret_key",
    "write_auth_config",
]

logger = logging.getLogger("sweeps.server")  # its messages, as before the split

POSTGRES_CONNECT_TIMEOUT_S = 10  # unless the URI sets connect_timeout

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
                    f"{option} {command_uri(uri)}: cannot create the folder {path.parent} "
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
            f"{option} {command_uri(uri)} cannot be read: {why}. Write it as "
            "postgresql://USER@HOST:PORT/DATABASE."
        ) from None
    name = url.database
    if not name:
        raise ServerConfigError(
            f"{option} {command_uri(uri)} names no database; "
            "add one, e.g. postgresql://user@host:5432/mlflow."
        )
    params = {"host": url.host, "port": url.port, "user": url.username, "password": url.password}
    params = {key: value for key, value in params.items() if value is not None}
    # A PostgreSQL that accepts the connection but never answers would hang the start for good.
    options = {"connect_timeout": str(POSTGRES_CONNECT_TIMEOUT_S), **dict(url.query)}
    try:
        conn = pg_connect(dbname="postgres", **params, **options)
    except psycopg2.Error as exc:
        raise _connect_error(exc, uri, url.host, option) from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                logger.info("Created PostgreSQL database %r for MLflow.", name)
    except psycopg2.Error as exc:
        raise ServerConfigError(
            f"Cannot create database {name!r} for {option} {command_uri(uri)}: "
            f"{str(exc).strip()}. Create it as a user allowed to (`createdb {name}`)."
        ) from None
    finally:
        conn.close()


def _connect_error(exc: Exception, uri: str, host: str | None, option: str) -> ServerConfigError:
    """What to say when PostgreSQL cannot be reached for ``option``, in one line: an unknown
    host is a setup to fix (:class:`ServerConfigError`), a PostgreSQL that is down, starting or
    silent one to retry (:class:`StoreUnreachableError`), a refused user a setup to fix."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    lowered = reason.lower()
    if "could not translate host name" in lowered and "temporary failure" not in lowered:
        # DNS answered that the name does not exist: no retry makes it exist
        return ServerConfigError(
            f"{option} {command_uri(uri)}: the host {host!r} is not known (no DNS name or "
            "/etc/hosts entry resolves it). Check the host name in the URI, or give the "
            "PostgreSQL server's address."
        )
    unreachable = any(words in lowered for words in _UNREACHABLE)
    return (StoreUnreachableError if unreachable else ServerConfigError)(
        f"Cannot connect to PostgreSQL for {option} {command_uri(uri)}: {reason}. Check that "
        "PostgreSQL runs there and the user may connect (a password goes in PGPASSWORD or "
        "~/.pgpass)."
    )


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


def secret_key(auth_dir: Path) -> str:
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


def make_folder(path: Path, option: str, *, private: bool = False) -> list[Path]:
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
