"""Opening a tracking store: SQLite in WAL mode under a creation lock, MLflow's client, the
bulk metric writer.

:class:`sweeps.tracking.Tracker` opens its store with :func:`open_client`. An embedded SQLite
store is switched to write-ahead logging (``PRAGMA journal_mode=WAL``, persistent in the file)
while a lock beside it keeps two processes from creating its tables at once. Against a server,
MLflow's own HTTP retries are lowered to one (lrsweep retries itself, :mod:`sweeps._retry`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from sweeps._retry import retrying as _retrying

__all__ = ["HTTP_RETRIES_ENV", "open_client"]

logger = logging.getLogger("sweeps.tracking")  # its messages, as before the split

HTTP_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"


def _enable_wal(db_file: Path) -> None:
    db_file.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(db_file, timeout=30)) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        logger.warning("SQLite store %s stayed in journal mode %r, not WAL", db_file, mode)


@contextlib.contextmanager
def _creating_store(db_file: Path | None) -> Iterator[None]:
    """Hold a lock beside a SQLite store while this process opens it (and MLflow creates or
    migrates its tables): two sweeps started at once on a new store both created the tables,
    and one died with "table experiment_tags already exists" or an alembic error. The lock is
    a file of its own (``.<db>.lock``), never the database: closing another descriptor of the
    database would drop SQLite's own locks in this process. Other stores: nothing to hold."""
    if db_file is None:
        yield
        return
    db_file.parent.mkdir(parents=True, exist_ok=True)
    with open(db_file.parent / f".{db_file.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _writer(client: MlflowClient) -> Any:
    from sweeps._sqlmetrics import sql_metric_writer  # SQLAlchemy models: SQL stores only

    return sql_metric_writer(client)


def open_client(
    store_uri: str, db_file: Path | None, *, remote: bool, bulk_metrics: bool
) -> tuple[MlflowClient, Any]:
    """MLflow's client of ``store_uri`` and, on a SQL store when ``bulk_metrics``, its bulk
    metric writer (else None).

    Args:
        store_uri: The URI MLflow opens (a bare ``postgresql://`` already given its driver).
        db_file: The SQLite store's file (absolute), or None for any other store.
        remote: An MLflow server (``http(s)://``): MLflow's HTTP retries are lowered to one
            (``$MLFLOW_HTTP_REQUEST_MAX_RETRIES``, unless set) and urllib3's retry warnings
            hidden, and metric points go through ``log_batch``.
        bulk_metrics: Write metric points in bulk on a SQL store
            (:class:`sweeps._sqlmetrics.SqlMetricWriter`).
    """
    if remote:
        # lrsweep retries itself (sweeps._retry); MLflow's own backoff would block for minutes
        # before a metric batch could be buffered. A value the user set is kept.
        os.environ.setdefault(HTTP_RETRIES_ENV, "1")
        # urllib3 warns at every failed request ("Retrying (Retry(total=0 ...))"), dozens
        # a minute in an outage; lrsweep's own retry says it once, and again when it ends
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    if db_file is not None:  # "Creating initial MLflow database tables..." on a new store
        quiet = logging.getLogger("mlflow.store.db.utils")
        if quiet.level == logging.NOTSET:  # a level the user set is kept
            quiet.setLevel(logging.WARNING)
    with _creating_store(db_file):
        if db_file is not None:
            _enable_wal(db_file)
        client = _retrying(lambda: MlflowClient(tracking_uri=store_uri), what="connect")
        metric_writer = _writer(client) if bulk_metrics and not remote else None
    return client, metric_writer
