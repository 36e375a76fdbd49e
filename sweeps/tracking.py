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

:class:`Tracker` is the one client; its larger parts live beside it, each re-exported here
where public: :mod:`sweeps._store` opens the store (WAL, creation lock, bulk metric writer),
:mod:`sweeps._sweep_runs` handles a sweep's trial runs as a whole (find, reopen, prune, close),
:mod:`sweeps._models` logs and reads models (:mod:`sweeps._model_code`: the code and
requirements a model carries), :mod:`sweeps._artifacts` checks a local artifact folder,
:mod:`sweeps._reads` pages searches and converts values read back, and :mod:`sweeps._tags`
names the run tags.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException

from sweeps import _models, _sweep_runs  # the bodies of some Tracker methods
from sweeps._artifacts import MIN_FREE_MB as MIN_FREE_MB  # re-exported, as each `X as X`
from sweeps._artifacts import MIN_FREE_MB_ENV as MIN_FREE_MB_ENV
from sweeps._artifacts import check_local_artifacts as _check_local_artifacts
from sweeps._artifacts import min_free_mb as min_free_mb
from sweeps._artifacts import without_progress_bar as _without_progress_bar
from sweeps._model_code import model_environment as model_environment  # re-exported
from sweeps._models import mlflow_tracking_uri as mlflow_tracking_uri  # re-exported
from sweeps._reads import SEARCH_PAGE as SEARCH_PAGE  # re-exported
from sweeps._reads import SHOWN_NAMES as SHOWN_NAMES
from sweeps._reads import all_pages as _all_pages
from sweeps._reads import as_logged as as_logged
from sweeps._reads import finite_or_none as finite_or_none
from sweeps._reads import shown_names as _shown
from sweeps._reads import status_name as status_name
from sweeps._retry import RETRY_TIMEOUT_S
from sweeps._retry import retrying as _retrying
from sweeps._runlog import MAX_BUFFERED_POINTS as MAX_BUFFERED_POINTS  # re-exported
from sweeps._runlog import RunLogger as RunLogger  # re-exported: the trial's metric buffer
from sweeps._store import HTTP_RETRIES_ENV as HTTP_RETRIES_ENV  # re-exported
from sweeps._store import open_client as _open_client
from sweeps._sweep_runs import LISTED_SWEEP_RUNS as LISTED_SWEEP_RUNS  # re-exported
from sweeps._tags import PARENT_TAG as PARENT_TAG  # re-exported, as every tag below
from sweeps._tags import TAG_ADDRESS as TAG_ADDRESS
from sweeps._tags import TAG_CLEANED as TAG_CLEANED
from sweeps._tags import TAG_CREATE_KEY as TAG_CREATE_KEY
from sweeps._tags import TAG_CURVE_CUT as TAG_CURVE_CUT
from sweeps._tags import TAG_FAILED_FOR_GOOD as TAG_FAILED_FOR_GOOD
from sweeps._tags import TAG_KIND as TAG_KIND
from sweeps._tags import TAG_RESUMABLE as TAG_RESUMABLE
from sweeps._tags import TAG_STORAGE_PATH as TAG_STORAGE_PATH
from sweeps._tags import TAG_SWEEP_ID as TAG_SWEEP_ID
from sweeps._tags import TAG_TRIAL_ID as TAG_TRIAL_ID
from sweeps._tags import TERMINAL_STATUSES as TERMINAL_STATUSES
from sweeps._uri import HOME_DIR as HOME_DIR  # re-exported, as every name below
from sweeps._uri import SERVER_PROBE_TIMEOUT_S as SERVER_PROBE_TIMEOUT_S
from sweeps._uri import TrackingUriError as TrackingUriError
from sweeps._uri import check_tracking_server as check_tracking_server
from sweeps._uri import check_tracking_uri as check_tracking_uri
from sweeps._uri import checked_tracking_uri as checked_tracking_uri
from sweeps._uri import command_uri
from sweeps._uri import database_driver_problem as database_driver_problem
from sweeps._uri import default_tracking_uri as default_tracking_uri
from sweeps._uri import existing_store_uri as existing_store_uri
from sweeps._uri import redact_uri as redact_uri
from sweeps._uri import resolve_tracking_uri as resolve_tracking_uri
from sweeps._uri import sqlite_path as sqlite_path
from sweeps._uri import with_postgres_driver as with_postgres_driver

logger = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100

_T = TypeVar("_T")


def restore_command(
    uri: str, *, experiment_id: str | None = None, run_id: str | None = None
) -> str:
    """The command that brings back a run (``run_id``) or an experiment (``experiment_id``)
    deleted from store ``uri`` (``mlflow ... delete``, the UI): MLflow keeps both until
    ``mlflow gc``. The store as a command may show it (a password masked)."""
    store = f"MLFLOW_TRACKING_URI={shlex.quote(command_uri(uri))}"
    if run_id is not None:
        return f"{store} mlflow runs restore --run-id {shlex.quote(run_id)}"
    return f"{store} mlflow experiments restore --experiment-id {shlex.quote(str(experiment_id))}"


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
        self.client, self._metric_writer = _open_client(
            self._store_uri, db_file, remote=self.remote, bulk_metrics=bulk_metrics
        )

    @property
    def bulk_metrics(self) -> bool:
        """Whether metric points go to the store in bulk, not through ``log_batch``."""
        return self._metric_writer is not None

    def __repr__(self) -> str:
        return f"Tracker({redact_uri(self.uri)!r})"

    # experiments and runs ------------------------------------------------------------------

    def ensure_experiment(self, name: str) -> str:
        """The id of experiment ``name``, created (with its artifacts beside the store) if new;
        one that was deleted (``mlflow experiments delete``, the UI) is restored, with its earlier
        runs, since MLflow keeps the name taken (a warning says so)."""
        found = self._experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                _retrying(
                    partial(self.client.restore_experiment, found.experiment_id),
                    what="restore_experiment",
                )
                logger.warning(
                    "experiment %r (id %s) had been deleted: restored it, with its earlier "
                    "runs, to log this sweep there (MLflow keeps a deleted experiment's name "
                    "taken); delete it again afterwards, or give the spec another "
                    "experiment/name, to keep them apart",
                    name,
                    found.experiment_id,
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
        """The id of an existing, live experiment (``lrsweep report``, ``best``, ``sweeps`` and
        ``predict`` find theirs here).

        Raises:
            LookupError: no such experiment (lists those that exist), or one that was deleted
                (``mlflow experiments delete``, the UI): the message says so and gives the
                command that restores it.
        """
        found = self._experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "deleted":
            restore = restore_command(self.uri, experiment_id=found.experiment_id)
            raise LookupError(
                f"experiment {name!r} in {redact_uri(self.uri)} was deleted (its id is "
                f"{found.experiment_id}); its runs are kept until `mlflow gc` removes them. "
                f"Restore it with: {restore}"
            )
        if found is None:
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

    def find_experiment(self, name: str, *, timeout_s: float = RETRY_TIMEOUT_S) -> Any:
        """The live experiment ``name`` (MLflow's ``Experiment``), or None when there is none;
        a store that is down or locked is retried for ``timeout_s`` (0: tried once)."""
        found = self._experiment_by_name(name, timeout_s=timeout_s)
        return None if found is None or found.lifecycle_stage == "deleted" else found

    def experiment_name(self, experiment_id: str) -> str:
        """The name of experiment ``experiment_id`` (a run's ``info.experiment_id``)."""
        found = _retrying(partial(self.client.get_experiment, experiment_id), what="get_experiment")
        return str(found.name)

    def _experiment_by_name(self, name: str, *, timeout_s: float = RETRY_TIMEOUT_S) -> Any:
        return _retrying(
            partial(self.client.get_experiment_by_name, name),
            what="get_experiment_by_name",
            timeout_s=timeout_s,
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

    # a sweep's runs (sweeps._sweep_runs) -----------------------------------------------------

    def check_sweep_run(
        self,
        experiment_id: str,
        experiment: str,
        run_id: str,
        *,
        without_run_id: str = "for the latest",
    ) -> None:
        """Raise ``LookupError`` unless ``run_id`` is a sweep run of the experiment; see
        :func:`sweeps._sweep_runs.check_sweep_run`."""
        _sweep_runs.check_sweep_run(
            self, experiment_id, experiment, run_id, without_run_id=without_run_id
        )

    def find_trial_run(self, experiment_id: str, parent_run_id: str, trial_id: str) -> str | None:
        """The child run already created for a Ray Tune trial id, if any."""
        return _sweep_runs.find_trial_run(self, experiment_id, parent_run_id, trial_id)

    def reopen_interrupted(
        self, experiment_id: str, parent_run_id: str, trial_ids: Iterable[str]
    ) -> list[str]:
        """Mark KILLED the child runs of trials Tune stopped on an interrupt; return their ids;
        see :func:`sweeps._sweep_runs.reopen_interrupted`."""
        return _sweep_runs.reopen_interrupted(self, experiment_id, parent_run_id, trial_ids)

    def delete_stray_trial_runs(
        self, experiment_id: str, parent_run_id: str, trial_ids: Iterable[str]
    ) -> list[str]:
        """Delete the child runs of trials the sweep's Tuner does not hold; return their ids;
        see :func:`sweeps._sweep_runs.delete_stray_trial_runs`."""
        return _sweep_runs.delete_stray_trial_runs(self, experiment_id, parent_run_id, trial_ids)

    def close_unfinished(
        self,
        experiment_id: str,
        parent_run_id: str,
        *,
        status: str,
        errors: Mapping[str, str] | None = None,
    ) -> list[str]:
        """End every child of ``parent_run_id`` still RUNNING with ``status``; return their ids;
        see :func:`sweeps._sweep_runs.close_unfinished`."""
        return _sweep_runs.close_unfinished(
            self, experiment_id, parent_run_id, status=status, errors=errors
        )

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
        _check_local_artifacts(location)  # served or remote artifacts: the server's to check

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
        with _without_progress_bar():
            local = _retrying(
                partial(self.client.download_artifacts, run_id, path, str(dst_dir)),
                what="download_artifacts",
            )
        return Path(local)

    # models (sweeps._models) ---------------------------------------------------------------

    def has_model(self, run_id: str, name: str = "model") -> bool:
        """Whether ``run_id`` holds a finished (READY) logged model called ``name``; see
        :func:`sweeps._models.has_model`."""
        return _models.has_model(self, run_id, name)

    def registered_model_names(self) -> list[str]:
        """The names of every model in the store's model registry, sorted."""
        return _models.registered_model_names(self)

    def registered_model(self, name: str) -> tuple[list[str], dict[str, str]] | None:
        """The versions of registered model ``name`` (oldest first) and its aliases (alias ->
        version); None when no model of that name is registered."""
        return _models.registered_model(self, name)

    def log_pytorch_model(
        self,
        run_id: str,
        model: Any,
        input_example: Any,
        metadata: Mapping[str, Any] | None = None,
        extra_files: Sequence[str | os.PathLike[str]] = (),
    ) -> str:
        """Log ``model`` with ``mlflow.pytorch.log_model`` (signature, input example,
        ``metadata``, the code it needs, ``extra_files``) and return its
        ``runs:/<run_id>/model`` URI; see :func:`sweeps._models.log_pytorch_model`."""
        return _models.log_pytorch_model(
            self, run_id, model, input_example, metadata, extra_files=extra_files
        )
