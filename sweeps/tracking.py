"""Every MLflow call lrsweep makes, behind one small client: the embedded store, batching, retries.

The embedded default (nothing installed or started) is a SQLite store at
``<cwd>/.lrsweep/mlflow.db`` with artifacts under ``<cwd>/.lrsweep/artifacts``. SQLite is made
safe for many trial processes writing at once by switching the database to write-ahead logging
(``PRAGMA journal_mode=WAL``, persistent in the file, so every later connection uses it), on
top of MLflow's own 20 s ``busy_timeout``; any "database is locked" that still escapes is retried
with backoff. Against a server (``http://...``), connection failures, timeouts, 5xx and 429 are
retried for up to 5 minutes (:mod:`sweeps._retry`), so a server restart costs a pause.

Credentials come only from ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (read by
MLflow's client); they are never logged, and :func:`redact_uri` strips any ``user:password@``
from a URI before it is shown or stored. Every URI goes through :func:`check_tracking_uri` (a
password, a file store or ``sqlite://x.db`` is refused) and, before a command starts work,
:func:`check_tracking_server` (a server that does not answer is refused, not retried).

Per-step metrics are buffered by :class:`RunLogger` (:mod:`sweeps._runlog`) and sent with one
``log_batch`` call per flush (chunked at MLflow's 1,000-metrics-per-batch limit), never one call
per point; while the server is away the points wait in memory (bounded) and are re-sent.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import logging
import math
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from sweeps._retry import RETRY_TIMEOUT_S, redact_text
from sweeps._retry import retrying as _retrying
from sweeps._runlog import MAX_BUFFERED_POINTS as MAX_BUFFERED_POINTS  # re-exported
from sweeps._runlog import RunLogger as RunLogger  # re-exported: the trial's metric buffer
from sweeps._uri import HOME_DIR as HOME_DIR  # re-exported, as every name below
from sweeps._uri import SERVER_PROBE_TIMEOUT_S as SERVER_PROBE_TIMEOUT_S
from sweeps._uri import TrackingUriError as TrackingUriError
from sweeps._uri import check_tracking_server as check_tracking_server
from sweeps._uri import check_tracking_uri as check_tracking_uri
from sweeps._uri import checked_tracking_uri as checked_tracking_uri
from sweeps._uri import database_driver_problem as database_driver_problem
from sweeps._uri import default_tracking_uri as default_tracking_uri
from sweeps._uri import existing_store_uri as existing_store_uri
from sweeps._uri import redact_uri as redact_uri
from sweeps._uri import resolve_tracking_uri as resolve_tracking_uri
from sweeps._uri import sqlite_path as sqlite_path
from sweeps._uri import with_postgres_driver as with_postgres_driver

logger = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000
SEARCH_PAGE = 1000  # rows per search call (MLflow's own default and its REST maximum)
SHOWN_NAMES = 20  # experiment names an error message lists at most
MAX_PARAMS_TAGS_PER_BATCH = 100
MIN_FREE_MB = 50
HTTP_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
MIN_FREE_MB_ENV = "LRSWEEP_MIN_FREE_MB"

PARENT_TAG = "mlflow.parentRunId"
TAG_KIND = "sweeps.kind"
TAG_CREATE_KEY = "sweeps.create_key"
"""A random key per ``start_run``: a create request sent twice (its reply lost) is seen."""
TAG_SWEEP_ID = "sweeps.sweep_id"
TAG_TRIAL_ID = "sweeps.trial_id"
TAG_FAILED_FOR_GOOD = "sweeps.failed_for_good"
"""Trial run tag: the error of an LR choice that fails the same way on every retry."""
TAG_RESUMABLE = "sweeps.resumable"
"""Sweep run tag, ``true`` / ``false``: whether ``lrsweep resume`` can retry its failed trials."""
TAG_CLEANED = "sweeps.cleaned"
"""Sweep run tag: when (UTC) ``lrsweep clean`` deleted the sweep's folder in Ray's storage, so
that nothing can resume it any more."""
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
LISTED_SWEEP_RUNS = 10
"""How many sweep runs an unknown ``--run-id`` error lists."""

_T = TypeVar("_T")


def min_free_mb() -> float:
    """Free disk space (MB) an artifact or checkpoint folder needs: ``$LRSWEEP_MIN_FREE_MB`` or 50.

    Raises:
        ValueError: when the variable is set to something other than a non-negative number.
    """
    text = os.environ.get(MIN_FREE_MB_ENV, "").strip()
    if not text:
        return float(MIN_FREE_MB)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{MIN_FREE_MB_ENV} must be a number of megabytes >= 0, but got {text!r}.")
    return value


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


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _writer(client: MlflowClient) -> Any:
    from sweeps._sqlmetrics import sql_metric_writer  # SQLAlchemy models: SQL stores only

    return sql_metric_writer(client)


class Tracker:
    """One tracking store (a URI), one reused :class:`mlflow.MlflowClient`.

    Args:
        uri: Tracking URI (``sqlite:///...``, ``http(s)://...``, ``postgresql://...``; a bare
            ``postgresql://`` or ``postgres://`` is opened with psycopg2, as the server does).
        bulk_metrics: On a SQL store (SQLite, PostgreSQL), write metric points in bulk with
            :class:`sweeps._sqlmetrics.SqlMetricWriter` (the default); False sends them through
            MLflow's ``log_batch`` as on a server. Ignored for ``http(s)://`` stores.

    Example:
        >>> tracker = Tracker(default_tracking_uri("/tmp/x"))  # doctest: +SKIP
        >>> exp_id = tracker.ensure_experiment("demo")  # doctest: +SKIP

    Raises:
        TrackingUriError: for a URI :func:`check_tracking_uri` refuses (password, file store ...).
    """

    def __init__(self, uri: str, *, bulk_metrics: bool = True) -> None:
        self.uri = check_tracking_uri(uri)
        self._store_uri = with_postgres_driver(uri)
        db_file = sqlite_path(uri)
        # absolute: a relative ``sqlite:///x.db`` has no file URI for its artifact location
        db_file = db_file.resolve() if db_file is not None else None
        self.artifact_root: Path | None = db_file.parent / "artifacts" if db_file else None
        self.remote = uri.startswith(("http://", "https://"))
        """An MLflow server (not a database this process opens itself)."""
        if self.remote:
            # lrsweep retries itself (above); MLflow's own backoff would block for minutes
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
            self.client = _retrying(
                lambda: MlflowClient(tracking_uri=self._store_uri), what="connect"
            )
            self._metric_writer = _writer(self.client) if bulk_metrics and not self.remote else None

    @property
    def bulk_metrics(self) -> bool:
        """Whether metric points go to the store in bulk, not through ``log_batch``."""
        return self._metric_writer is not None

    def __repr__(self) -> str:
        return f"Tracker({redact_uri(self.uri)!r})"

    # experiments and runs ------------------------------------------------------------------

    def ensure_experiment(self, name: str) -> str:
        """The id of experiment ``name``, created (with its artifacts beside the store) if new."""
        found = self._experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                _retrying(
                    partial(self.client.restore_experiment, found.experiment_id),
                    what="restore_experiment",
                )
            return found.experiment_id
        location = None
        if self.artifact_root is not None:
            slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
            location = (self.artifact_root / f"{slug}-{uuid.uuid4().hex[:8]}").as_uri()
        try:
            return _retrying(
                lambda: self.client.create_experiment(name, artifact_location=location),
                what="create_experiment",
            )
        except MlflowException:
            found = self._experiment_by_name(name)  # created meanwhile by another process
            if found is None:
                raise
            return found.experiment_id

    def experiment_id(self, name: str) -> str:
        """The id of an existing experiment; raises ``LookupError`` listing those that exist."""
        found = self._experiment_by_name(name)
        if found is None or found.lifecycle_stage == "deleted":
            raise LookupError(
                f"experiment {name!r} does not exist in {redact_uri(self.uri)}; "
                f"experiments there: {_shown(name, self.experiment_names())}."
            )
        return found.experiment_id

    def experiment_names(self, prefix: str = "") -> list[str]:
        """The names of every active experiment starting with ``prefix`` (all pages), sorted."""
        # LIKE's ``_`` and ``%`` match more than themselves: startswith() is the real test
        like = prefix.replace("'", "''")
        filter_string = f"name LIKE '{like}%'" if prefix else None
        experiments = _all_pages(
            partial(self.client.search_experiments, filter_string=filter_string),
            what="search_experiments",
        )
        return sorted(e.name for e in experiments if e.name.startswith(prefix))

    def find_experiment(self, name: str) -> Any:
        """The live experiment ``name`` (MLflow's ``Experiment``), or None when there is none."""
        found = self._experiment_by_name(name)
        return None if found is None or found.lifecycle_stage == "deleted" else found

    def experiment_name(self, experiment_id: str) -> str:
        """The name of experiment ``experiment_id`` (a run's ``info.experiment_id``)."""
        found = _retrying(partial(self.client.get_experiment, experiment_id), what="get_experiment")
        return str(found.name)

    def _experiment_by_name(self, name: str) -> Any:
        return _retrying(
            partial(self.client.get_experiment_by_name, name), what="get_experiment_by_name"
        )

    def start_run(
        self,
        experiment_id: str,
        *,
        run_name: str,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        """Create a RUNNING run and return its id (a child when ``parent_run_id`` is given)."""
        all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        key = uuid.uuid4().hex
        all_tags[TAG_CREATE_KEY] = key
        tries = 0

        def create() -> Run:
            nonlocal tries
            tries += 1
            if tries > 1:  # the last try may have created the run before its reply was lost
                made = self._runs_created_as(experiment_id, key)
                if made:
                    return made[0]
            return self.client.create_run(experiment_id, tags=all_tags, run_name=run_name)

        run_id = _retrying(create, what="create_run").info.run_id
        if self.remote:  # MLflow's HTTP client re-sends a POST whose reply it lost, itself
            twins = [r.info.run_id for r in self._runs_created_as(experiment_id, key)]
            for twin in twins:
                if twin != run_id:
                    _retrying(partial(self.client.delete_run, twin), what="delete_run")
                    logger.info("deleted run %s, a duplicate of run %s", twin, run_id)
        return run_id

    def _runs_created_as(self, experiment_id: str, key: str) -> list[Run]:
        return self.search_runs(experiment_id, f"tags.`{TAG_CREATE_KEY}` = '{key}'")

    def reopen_run(self, run_id: str) -> None:
        """Mark an existing run RUNNING again (a resumed trial or sweep)."""
        _retrying(lambda: self.client.update_run(run_id, status="RUNNING"), what="update_run")

    def delete_tags(self, run_id: str, keys: Iterable[str]) -> None:
        """Remove ``keys`` from the run's tags (each must be there)."""
        for key in keys:
            _retrying(partial(self.client.delete_tag, run_id, key), what="delete_tag")

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Close a run as FINISHED, FAILED or KILLED."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, but got {status!r}.")
        _retrying(lambda: self.client.set_terminated(run_id, status=status), what="end_run")

    def get_run(self, run_id: str) -> Run:
        """The run with its params, tags and latest metrics."""
        return _retrying(lambda: self.client.get_run(run_id), what="get_run")

    def search_runs(self, experiment_id: str, filter_string: str = "") -> list[Run]:
        """Every active run of the experiment matching ``filter_string`` (all pages)."""
        return _all_pages(
            partial(self.client.search_runs, [experiment_id], filter_string), what="search_runs"
        )

    def child_runs(self, experiment_id: str, parent_run_id: str) -> list[Run]:
        """The trial runs of one sweep execution."""
        return self.search_runs(experiment_id, f"tags.`{PARENT_TAG}` = '{parent_run_id}'")

    def sweep_runs(self, experiment_id: str) -> list[Run]:
        """The sweep (parent) runs of the experiment, most recently started first."""
        parents = self.search_runs(experiment_id, f"tags.`{TAG_KIND}` = 'sweep'")
        return sorted(parents, key=lambda r: r.info.start_time or 0, reverse=True)

    def check_sweep_run(
        self,
        experiment_id: str,
        experiment: str,
        run_id: str,
        *,
        without_run_id: str = "for the latest",
    ) -> None:
        """Raise ``LookupError`` unless ``run_id`` is a sweep run of the experiment; the message
        lists those that are (latest first, at most ``LISTED_SWEEP_RUNS``) and says what leaving
        ``--run-id`` out does (``without_run_id``)."""
        parents = self.sweep_runs(experiment_id)
        if any(p.info.run_id == run_id for p in parents):
            return
        listed = [f"{p.info.run_id} ({p.info.run_name})" for p in parents[:LISTED_SWEEP_RUNS]]
        extra = len(parents) - LISTED_SWEEP_RUNS
        more = f" and {extra} older" if extra > 0 else ""
        raise LookupError(
            f"run {run_id} is not a sweep run of experiment {experiment!r}; pass --run-id one of "
            f"its sweep runs (latest first): {', '.join(listed) or 'none'}{more}, "
            f"or leave --run-id out {without_run_id}."
        )

    def find_trial_run(self, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
        """The child run already created for a Ray Tune trial id, if any."""
        runs = self.search_runs(
            experiment_id,
            f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TAG_TRIAL_ID}` = '{trial_id}'",
        )
        return runs[0].info.run_id if runs else None

    def reopen_interrupted(
        self, experiment_id: str, parent_run_id: str, trial_ids: Iterable[str]
    ) -> list[str]:
        """Mark KILLED the child runs of trials Tune stopped on an interrupt; return their ids.

        A trial stopped by Ctrl-C / SIGTERM may close its own run as FINISHED on its way out;
        Tune knows it did not end (no ``done``), so its run is KILLED and its ``stop_reason``
        removed: ``lrsweep resume`` then trains it on from its checkpoint in the same run.
        """
        wanted, reopened = set(trial_ids), []
        for run in self.child_runs(experiment_id, parent_run_id):
            if run.info.status == "FINISHED" and run.data.tags.get(TAG_TRIAL_ID) in wanted:
                if "sweeps.stop_reason" in run.data.tags:
                    self.delete_tags(run.info.run_id, ["sweeps.stop_reason"])
                self.end_run(run.info.run_id, "KILLED")
                reopened.append(run.info.run_id)
        return reopened

    def delete_stray_trial_runs(
        self, experiment_id: str, parent_run_id: str, trial_ids: Iterable[str]
    ) -> list[str]:
        """Delete the child runs of trials the sweep's Tuner does not hold; return their ids.

        A driver killed between two of Ray Tune's experiment snapshots (taken at most every
        10 s) leaves runs of trials started after the last one: the restored Tuner never knew
        them, and its searcher hands their places out again to new trials (a grid or random config,
        or a seeded Optuna study's suggestion, runs again), so each would count twice in the
        report and in ``best_config``. Their runs are tagged
        ``sweeps.deleted_reason`` and deleted (MLflow's soft delete: ``mlflow runs restore``
        brings one back). Runs without a ``sweeps.trial_id`` tag are left alone.
        """
        known = set(trial_ids)
        stray = [
            run
            for run in self.child_runs(experiment_id, parent_run_id)
            if run.data.tags.get(TAG_TRIAL_ID) not in known | {None}
        ]
        reason = (
            "a trial the resumed sweep's Ray Tune state did not hold (the driver stopped before "
            "Tune saved it); the restored searcher gave its place to a new trial of this sweep"
        )
        for run in stray:
            run_id = run.info.run_id
            if run.info.status in ("RUNNING", "SCHEDULED"):
                self.end_run(run_id, "KILLED")
            self.set_tags(run_id, {"sweeps.deleted_reason": reason})
            _retrying(partial(self.client.delete_run, run_id), what="delete_run")
            logger.warning(
                "deleted run %s (%s, trial %s): %s",
                run_id,
                run.info.run_name,
                run.data.tags.get(TAG_TRIAL_ID),
                reason,
            )
        return [run.info.run_id for run in stray]

    def close_unfinished(
        self,
        experiment_id: str,
        parent_run_id: str,
        *,
        status: str,
        errors: Mapping[str, str] | None = None,
    ) -> list[str]:
        """End every child of ``parent_run_id`` still RUNNING with ``status``; return their ids.

        ``errors`` (trial id -> error, what Ray Tune knows of a trial whose worker died before
        it could close its run) becomes a FAILED run's ``sweeps.error`` tag. Every such run is
        closed even when one of them (its tag or its status) cannot be written; the first error
        is raised after the others were tried.
        """
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, but got {status!r}.")
        closed: list[str] = []
        first_error: Exception | None = None
        for run in self.child_runs(experiment_id, parent_run_id):
            if run.info.status not in ("RUNNING", "SCHEDULED"):
                continue
            run_id = run.info.run_id
            try:
                try:
                    tags = run.data.tags
                    if status == "FAILED":
                        error = (errors or {}).get(tags.get(TAG_TRIAL_ID, ""))
                        failed = (
                            {} if "sweeps.stop_reason" in tags else {"sweeps.stop_reason": "failed"}
                        )
                        if error and "sweeps.error" not in tags:
                            failed["sweeps.error"] = redact_text(error)[:500]
                        if failed:
                            self.set_tags(run_id, failed)
                finally:  # a run whose tag could not be written is closed all the same
                    self.end_run(run_id, status)
                closed.append(run_id)
            except Exception as error:
                shown = redact_text(str(error))
                logger.warning("could not close MLflow run %s as %s: %s", run_id, status, shown)
                first_error = first_error or error
        if first_error is not None:
            raise first_error
        return closed

    # params, tags, metrics -----------------------------------------------------------------

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params (values stringified), 100 per call."""
        items = [Param(str(k), str(v)) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            _retrying(
                partial(self.client.log_batch, run_id, params=chunk, synchronous=True),
                what="log_params",
            )

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags (values stringified), 100 per call."""
        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            _retrying(
                partial(self.client.log_batch, run_id, tags=chunk, synchronous=True),
                what="set_tags",
            )

    def log_metrics(self, run_id: str, points: Sequence[tuple[str, float, int]]) -> None:
        """Log ``(key, value, step)`` points, one ``log_batch`` per 1,000. NaN/inf are kept."""
        stamp = int(time.time() * 1000)
        self.log_metric_points(run_id, [Metric(k, float(v), stamp, int(s)) for k, v, s in points])

    def log_metric_points(
        self, run_id: str, metrics: Sequence[Metric], *, timeout_s: float = RETRY_TIMEOUT_S
    ) -> int:
        """Send timestamped points, 1,000 per ``log_batch``; return how many went.

        Sending the same points again is harmless (the store keeps one copy of a point with
        the same key, step, timestamp and value), so a batch whose answer was lost can be
        re-sent. SQL stores (SQLite, PostgreSQL) are written in bulk by
        :class:`sweeps._sqlmetrics.SqlMetricWriter`; others through ``log_batch``.

        Raises:
            MlflowException | requests.RequestException: when a batch could not be sent within
                ``timeout_s`` (``0``: one try); the points before it were sent.
        """
        sent = 0
        writer = self._metric_writer
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            send = (
                partial(writer.log, run_id, chunk)
                if writer is not None
                else partial(self.client.log_batch, run_id, metrics=list(chunk), synchronous=True)
            )
            _retrying(send, what="log_metrics", timeout_s=timeout_s)
            sent += len(chunk)
        return sent

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` pairs of one metric, ordered by step; +-inf as logged
        (:func:`as_logged`: SQL stores keep it as +-1.797e308), NaN as NaN."""
        history = _retrying(
            lambda: self.client.get_metric_history(run_id, key), what="get_metric_history"
        )
        return sorted((m.step, as_logged(m.value)) for m in history)

    def last_steps(self, run_id: str) -> dict[str, int]:
        """Per metric of the run, the largest step it holds (MLflow's latest-metric rows).

        One ``get_run`` on any store: the run's latest metrics carry their step, which MLflow
        keeps as the largest ``(step, timestamp, value)`` of each key. Should a future MLflow
        stop handing the steps over, each metric's history is read instead.
        """
        run = self.get_run(run_id)
        latest = getattr(run.data, "_metric_objs", None)  # the Metric rows behind .metrics
        if latest is not None:
            return {m.key: int(m.step) for m in latest}
        return {key: self.metric_history(run_id, key)[-1][0] for key in run.data.metrics}

    # artifacts -----------------------------------------------------------------------------

    def check_artifacts_writable(self, experiment_id: str) -> None:
        """Fail early (``OSError``) when a local artifact location is unwritable or full."""
        location = self.client.get_experiment(experiment_id).artifact_location
        if not location.startswith(("file:", "/")):
            return  # served or remote artifacts: checked by the server on first write
        path = Path(unquote(urlsplit(location).path)) if location.startswith("file:") else None
        path = path or Path(location)
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
                pass
        except OSError as error:
            raise OSError(f"artifact location {path} is not writable: {error}") from error
        free_mb, needed_mb = shutil.disk_usage(path).free / 2**20, min_free_mb()
        if free_mb < needed_mb:
            raise OSError(
                f"artifact location {path} has {free_mb:.0f} MB free; "
                f"at least {needed_mb:.0f} MB are needed for checkpoints and reports."
            )

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str = "") -> None:
        """Upload one file under ``artifact_path``."""
        _retrying(
            lambda: self.client.log_artifact(run_id, str(local_path), artifact_path or None),
            what="log_artifact",
        )

    def log_artifacts(self, run_id: str, local_dir: str | Path, artifact_path: str = "") -> None:
        """Upload a folder's files under ``artifact_path``."""
        _retrying(
            lambda: self.client.log_artifacts(run_id, str(local_dir), artifact_path or None),
            what="log_artifacts",
        )

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        """Upload a matplotlib figure as ``artifact_file`` (then close it)."""
        import matplotlib.pyplot as plt

        try:
            _retrying(
                lambda: self.client.log_figure(run_id, figure, artifact_file), what="log_figure"
            )
        finally:
            plt.close(figure)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Upload ``text`` as ``artifact_file``."""
        _retrying(lambda: self.client.log_text(run_id, text, artifact_file), what="log_text")

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """Paths of the artifacts directly under ``path``."""
        found = _retrying(partial(self.client.list_artifacts, run_id, path), what="list_artifacts")
        return [f.path for f in found]

    def download_artifact(self, run_id: str, path: str, dst_dir: str | Path) -> Path:
        """Download one artifact (file or folder) into ``dst_dir``; return its local path.

        Without MLflow's progress bar (unless ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` says
        otherwise): ``best_config`` reading a sweep's ``spec.yaml`` drew three lines of it in a
        notebook for one small file.
        """
        variable = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
        given = os.environ.get(variable)
        os.environ[variable] = "false" if given is None else given
        try:
            local = _retrying(
                partial(self.client.download_artifacts, run_id, path, str(dst_dir)),
                what="download_artifacts",
            )
        finally:
            if given is None:
                os.environ.pop(variable, None)
        return Path(local)

    def has_model(self, run_id: str, name: str = "model") -> bool:
        """Whether ``run_id`` holds a finished (READY) logged model called ``name``.

        A model whose upload was cut off stays PENDING in MLflow and does not count, so a try
        run again logs it afresh.
        """
        from mlflow.entities import LoggedModelStatus

        experiment_id = self.get_run(run_id).info.experiment_id
        found = _retrying(
            lambda: self.client.search_logged_models(
                [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'"
            ),
            what="search_logged_models",
        )
        return any(model.status == LoggedModelStatus.READY for model in found)

    def registered_model_names(self) -> list[str]:
        """The names of every model in the store's model registry, sorted."""
        found = _all_pages(self.client.search_registered_models, what="search_registered_models")
        return sorted(model.name for model in found)

    def registered_model(self, name: str) -> tuple[list[str], dict[str, str]] | None:
        """The versions of registered model ``name`` (oldest first) and its aliases (alias ->
        version); None when no model of that name is registered."""
        try:
            model = _retrying(
                partial(self.client.get_registered_model, name), what="get_registered_model"
            )
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        # MLflow's filter strings have no escapes: a name is quoted with the quote it lacks
        quote = next((q for q in ("'", '"') if q not in name), None)
        versions = _all_pages(
            partial(
                self.client.search_model_versions,
                f"name = {quote}{name}{quote}" if quote else None,  # both: every model's
            ),
            what="search_model_versions",
        )
        numbers = sorted(int(version.version) for version in versions if version.name == name)
        aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
        return [str(number) for number in numbers], aliases

    def log_pytorch_model(
        self,
        run_id: str,
        model: Any,
        input_example: Any,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Log ``model`` with ``mlflow.pytorch.log_model`` (signature + input example, and
        ``metadata`` in its MLmodel file: ``mlflow.models.get_model_info(uri).metadata``).

        Loadable afterwards with ``mlflow.pytorch.load_model("runs:/<run_id>/model")``. Returns
        that URI. The run's status is left as it was. The ``pickle`` serialization is used:
        MLflow 3's default (``pt2``, ``torch.export``) costs seconds per fresh trial process.
        The model carries what unpickling it needs (:func:`model_environment`): a model of
        lrsweep's ``trainers`` loads, and serves, where lrsweep is not installed.
        """
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        model.eval()
        with torch.no_grad():
            output = model(input_example)
        signature = infer_signature(input_example.numpy(), output.numpy())
        status = self.get_run(run_id).info.status
        pytorch_logger = logging.getLogger("mlflow.pytorch")
        level = pytorch_logger.level
        pytorch_logger.setLevel(logging.ERROR)  # the pickle-format warning: a deliberate choice

        def log_model() -> None:
            with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
                mlflow.pytorch.log_model(
                    model,
                    name="model",
                    signature=signature,
                    input_example=input_example.numpy(),
                    serialization_format="pickle",
                    metadata=dict(metadata) if metadata else None,
                    **model_environment(model),
                )

        try:
            with mlflow_tracking_uri(self._store_uri):
                _retrying(log_model, what="log_model")
        finally:
            pytorch_logger.setLevel(level)
            if status == "RUNNING":
                self.reopen_run(run_id)
            else:
                self.end_run(run_id, status)
        return f"runs:/{run_id}/model"


# What ``import trainers`` loads beyond the standard library and torch (matplotlib for the
# plots, rich for progress, pillow for image folders); torchvision holds the resnets' layers.
_TRAINERS_REQUIREMENTS = ("torch", "torchvision", "numpy", "matplotlib", "rich", "pillow")


def model_environment(model: Any) -> dict[str, list[str]]:
    """``code_paths`` and ``pip_requirements`` for ``mlflow.pytorch.log_model(model)``.

    A pickled model names the classes of its layers. When any comes from lrsweep's
    ``trainers``, the package's source goes with the model (MLflow puts it on ``sys.path`` when
    the model loads) and the requirements are those ``trainers`` imports, pinned to the versions
    installed here; otherwise torch alone (and torchvision for its layers).
    """
    modules = {type(layer).__module__.partition(".")[0] for layer in model.modules()}
    names: tuple[str, ...]
    if "trainers" in modules:
        names = _TRAINERS_REQUIREMENTS
        code_paths = _trainers_code()
    else:
        names = ("torch", "torchvision") if "torchvision" in modules else ("torch",)
        code_paths = []
    return {"code_paths": code_paths, "pip_requirements": list(_pinned(names))}


@cache  # importlib.metadata reads the installed packages: ~5 ms a model, per trial
def _pinned(names: tuple[str, ...]) -> tuple[str, ...]:
    """``name==version`` of each installed package (a local ``+cpu`` tag dropped)."""
    from importlib.metadata import version

    return tuple(f"{name}=={version(name).split('+')[0]}" for name in names)


_TRAINERS_STUB = '''"""lrsweep's ``trainers`` for this model: the installed package where
lrsweep is installed, else the copy the model was logged with, run from ``../trainers.zip``.

MLflow puts the model's ``code/`` folder first on ``sys.path`` when it loads the model. Where
lrsweep is installed, its own ``trainers`` is imported, so the rest of lrsweep runs with the
version it belongs to. One archive uploads to a tracking server in one request, where the
package's ~50 files took one each.
"""

import importlib.machinery as _machinery
import importlib.util as _util
import os as _os
import sys as _sys
import zipimport as _zipimport


def _installed():
    """The spec of a ``trainers`` found outside every model's ``code/`` folder, or None."""
    elsewhere = [
        entry
        for entry in _sys.path
        if not _os.path.isfile(_os.path.join(entry or _os.curdir, "trainers.zip"))
    ]
    for finder in _sys.meta_path:
        if finder is _machinery.PathFinder:
            spec = finder.find_spec("trainers", elsewhere)
        elif hasattr(finder, "find_spec"):
            spec = finder.find_spec("trainers", None)
        else:
            continue
        if spec is not None:
            return spec
    return None


_spec = _installed()
if _spec is None:  # lrsweep is not installed here: the copy logged with the model
    _archive = _os.path.join(
        _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "trainers.zip"
    )
    _spec = _zipimport.zipimporter(_archive).find_spec("trainers")
_module = _util.module_from_spec(_spec)
_sys.modules[__name__] = _module  # the import returns what sys.modules holds at its end
_spec.loader.exec_module(_module)
'''

_trainers_code_paths: list[str] = []


def _trainers_code() -> list[str]:
    """``code_paths`` holding the ``trainers`` source: its modules in one zip and the package
    stub above, in a folder of the temporary directory named by their digest (made once per
    version and shared by every process; a trial worker logs many models).

    Raises:
        RuntimeError: when ``trainers`` has no source to ship (not a package of .py files).
    """
    if _trainers_code_paths:
        return list(_trainers_code_paths)
    import hashlib
    import zipfile
    import zipimport

    import trainers

    loader = getattr(trainers.__spec__, "loader", None)
    if isinstance(loader, zipimport.zipimporter):  # from a logged model's code: that code again
        archive = Path(loader.archive)
        _trainers_code_paths[:] = [str(archive.parent / "trainers"), str(archive)]
        return list(_trainers_code_paths)
    package = Path(trainers.__file__).parent
    sources = sorted(package.rglob("*.py"))
    if package / "__init__.py" not in sources:
        raise RuntimeError(f"trainers at {package} has no source files to log with its model.")
    digest = hashlib.blake2b(digest_size=8)
    for source in sources:
        digest.update(f"{source.relative_to(package).as_posix()}\0".encode())
        digest.update(source.read_bytes())
    digest.update(_TRAINERS_STUB.encode())
    folder = Path(tempfile.gettempdir()) / f"lrsweep-model-code-{digest.hexdigest()}"
    if not (folder / "trainers" / "__init__.py").is_file():
        staging = Path(tempfile.mkdtemp(prefix=".lrsweep-model-code-", dir=folder.parent))
        with zipfile.ZipFile(staging / "trainers.zip", "w", zipfile.ZIP_DEFLATED) as zipped:
            for source in sources:
                zipped.write(source, f"trainers/{source.relative_to(package).as_posix()}")
        (staging / "trainers").mkdir()
        (staging / "trainers" / "__init__.py").write_text(_TRAINERS_STUB, encoding="utf-8")
        try:
            staging.rename(folder)  # whole, or not at all
        except OSError:  # another process made it first, or something else is in the way
            if (folder / "trainers" / "__init__.py").is_file():
                shutil.rmtree(staging, ignore_errors=True)
            else:
                folder = staging
    _trainers_code_paths[:] = [str(folder / "trainers"), str(folder / "trainers.zip")]
    return list(_trainers_code_paths)


@contextlib.contextmanager
def mlflow_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI is ``uri`` inside the block, and as it was after it.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the environment (for
    subprocesses). Setting back the URI ``mlflow.get_tracking_uri()`` returned before would
    leave MLflow's resolved default (``sqlite:///<cwd>/mlflow.db``) in that variable, which a
    later sweep of the same process, and every process it starts, takes for the user's choice.
    MLflow's own setting and the variable are both put back (unset when they were unset).

    Example:
        >>> with mlflow_tracking_uri(tracker.uri):  # doctest: +SKIP
        ...     model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils  # private: the URI set, if any

    explicit = getattr(utils, "_tracking_uri", None)
    variable = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(explicit)  # type: ignore[arg-type]  # None: unset, as before
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable


def as_logged(value: float) -> float:
    """A metric value as it was logged: MLflow's SQL stores keep +-inf as +-1.797e308 (a finite
    float that would count as a real loss or accuracy), read back here as +-inf again."""
    value = float(value)
    return math.copysign(math.inf, value) if abs(value) >= sys.float_info.max else value


def status_name(status: int | str) -> str:
    """MLflow's status string for a ``RunStatus`` value or string."""
    return status if isinstance(status, str) else RunStatus.to_string(status)


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` when finite, else None (for summaries that must stay JSON-clean)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _all_pages(search: Callable[..., Any], *, what: str) -> list[Any]:
    """Every row of an MLflow search, page by page (``max_results`` and ``page_token``)."""
    rows: list[Any] = []
    token = None
    while True:
        page = _retrying(partial(search, max_results=SEARCH_PAGE, page_token=token), what=what)
        rows.extend(page)
        token = page.token
        if not token:
            return rows


def _shown(name: str, names: list[str]) -> str:
    """``names`` in full when short, else the ones closest to ``name`` and how many there are."""
    if len(names) <= SHOWN_NAMES:
        return str(names)
    close = difflib.get_close_matches(name, names, n=SHOWN_NAMES, cutoff=0.5)
    near = f"the closest to {name!r}: {close}" if close else f"the first: {names[:SHOWN_NAMES]}"
    return f"{len(names)} experiments, {near}"
