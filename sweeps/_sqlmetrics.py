"""A lean metric writer for MLflow's SQL stores (SQLite, PostgreSQL), used by ``Tracker``.

MLflow's ``SqlAlchemyStore.log_batch`` builds one ORM object per point and flushes them through
the session: about 60 microseconds a point on a 2-core machine, 4% of a small trial's time when
every step's loss and LR are logged (``scripts/bench/bench_logging_overhead.py``). This writes the
same rows into the same tables (``metrics`` and ``latest_metrics``, MLflow's own schema and
rules) with two bulk statements in one transaction:

- ``metrics``: one bulk ``INSERT ... ON CONFLICT DO NOTHING``; the table's primary key is
  the whole point (key, timestamp, step, value, is_nan, run), so a re-sent batch adds nothing,
  as MLflow's own path guarantees;
- ``latest_metrics``: per key the point with the largest ``(step, timestamp, value)``, inserted
  or updated when it is newer than the stored one (MLflow's ``_update_latest_metrics_if_necessary``
  rule).

Values are sanitised as MLflow does (NaN stored as 0 with ``is_nan``, +-inf as +-max float). The
run must exist and not be deleted, as ``log_batch`` requires. Any other store (``http(s)://``,
``databricks``) goes through MLflow's client. MLflow's schema is pinned with the ``mlflow``
version in ``pyproject.toml``; ``tests/sweeps/test_tracking.py`` checks this writer against
MLflow's own reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
)
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun
from mlflow.tracking.metric_value_conversion_utils import convert_metric_value_to_float_if_possible
from mlflow.utils.validation import _validate_metric
from sqlalchemy import and_, select, update
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["SqlMetricWriter", "sql_metric_writer"]

_MAX_FLOAT = 1.7976931348623157e308


def _sanitize(value: float) -> tuple[bool, float]:
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, _MAX_FLOAT if value > 0 else -_MAX_FLOAT
    return False, value


def _dialect_insert(dialect: str) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return sqlite.insert if dialect == "sqlite" else postgresql.insert


class SqlMetricWriter:
    """Writes metric points straight into an MLflow SQL store's tables (see the module doc).

    Args:
        engine: The store's SQLAlchemy engine (``SqlAlchemyStore.engine``).
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._insert = _dialect_insert(engine.dialect.name)
        self._checked_keys: set[str] = set()

    def log(self, run_id: str, metrics: Sequence[Metric]) -> int:
        """Insert ``metrics`` of run ``run_id`` and update its latest values; return the count.

        Raises:
            MlflowException: for an unknown or deleted run, an invalid metric name, or a
                database error (its text kept, so a locked store is retried as transient).
        """
        if not metrics:
            return 0
        rows = []
        latest: dict[str, dict[str, Any]] = {}
        for metric in metrics:
            value = metric.value
            if type(value) is not float:  # as MLflow's client: a bool, "0.5", a NumPy scalar
                value = convert_metric_value_to_float_if_possible(value)
            if metric.key not in self._checked_keys or not _plain(value, metric):
                # MLflow's store checks (name, its 250-character limit, a numeric value, a
                # non-negative timestamp, a numeric step); the plain points of a key already
                # checked skip the name's part, the costly one
                _validate_metric(metric.key, value, metric.timestamp, metric.step)
                self._checked_keys.add(metric.key)
            is_nan, value = _sanitize(float(value))
            row = {
                "run_uuid": run_id,
                "key": metric.key,
                "value": value,
                "timestamp": int(metric.timestamp),
                "step": int(metric.step),
                "is_nan": is_nan,
            }
            rows.append(row)
            best = latest.get(metric.key)
            if best is None or _order(row) > _order(best):
                latest[metric.key] = row
        try:
            with self.engine.begin() as conn:
                self._check_run(conn, run_id)
                conn.execute(self._insert(SqlMetric.__table__).on_conflict_do_nothing(), rows)
                self._update_latest(conn, run_id, latest)
        except SQLAlchemyError as error:  # as MLflow's store: "database is locked" stays visible
            raise MlflowException(str(error), INTERNAL_ERROR) from error
        return len(rows)

    @staticmethod
    def _check_run(conn: Any, run_id: str) -> None:
        stage = conn.execute(
            select(SqlRun.lifecycle_stage).where(SqlRun.run_uuid == run_id)
        ).scalar_one_or_none()
        if stage is None:
            raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
        if stage != "active":
            raise MlflowException(
                f"The run {run_id} must be in the 'active' state. Current state is {stage}.",
                INVALID_PARAMETER_VALUE,
            )

    def _update_latest(self, conn: Any, run_id: str, latest: dict[str, dict[str, Any]]) -> None:
        table = SqlLatestMetric.__table__
        stored = {
            row.key: _order(row._mapping)
            for row in conn.execute(
                select(table.c.key, table.c.step, table.c.timestamp, table.c.value).where(
                    and_(table.c.run_uuid == run_id, table.c.key.in_(sorted(latest)))
                )
            )
        }
        new = [row for key, row in latest.items() if key not in stored]
        if new:
            conn.execute(self._insert(table).on_conflict_do_nothing(), new)
        for key, row in latest.items():
            if key in stored and _order(row) > stored[key]:
                conn.execute(
                    update(table)
                    .where(and_(table.c.run_uuid == run_id, table.c.key == key))
                    .values(
                        value=row["value"],
                        timestamp=row["timestamp"],
                        step=row["step"],
                        is_nan=row["is_nan"],
                    )
                )


def _plain(value: Any, metric: Metric) -> bool:
    """A point whose value, timestamp and step need no check beyond their type."""
    timestamp = metric.timestamp
    return (
        type(value) is float
        and type(timestamp) is int
        and timestamp >= 0
        and type(metric.step) is int
    )


def _order(row: Any) -> tuple[int, int, float]:
    return (int(row["step"]), int(row["timestamp"]), float(row["value"]))


def sql_metric_writer(client: Any) -> SqlMetricWriter | None:
    """The writer for ``client``'s store when it is MLflow's SQL store on SQLite or PostgreSQL."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = client._tracking_client.store
    if not isinstance(store, SqlAlchemyStore):
        return None
    if store.engine.dialect.name not in ("sqlite", "postgresql"):
        return None
    return SqlMetricWriter(store.engine)
