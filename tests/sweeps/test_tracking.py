"""The MLflow tracking layer on a real embedded store: concurrency, batching, run lifecycle."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch

from sweeps._retry import RETRY_TIMEOUT_S
from sweeps.tracking import (
    MAX_METRICS_PER_BATCH,
    RunLogger,
    Tracker,
    default_tracking_uri,
    mlflow_tracking_uri,
    redact_uri,
    resolve_tracking_uri,
    sqlite_path,
)

REPO = Path(__file__).resolve().parents[2]

# One trial-like writer: its own process and client, 1,000 step metrics flushed 20 at a time
# (50 log_batch and 50 tag calls per process, all at once) plus params, then closes its run.
WRITER = """
import sys
from sweeps.tracking import RunLogger, Tracker
uri, experiment_id, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
tracker = Tracker(uri)
run_id = tracker.start_run(experiment_id, run_name=f"writer-{index}", tags={"writer": index})
tracker.log_params(run_id, {"index": index, "lr": 0.01})
log = RunLogger(tracker, run_id)
for step in range(1000):
    log.add("train_loss", 1.0 / (step + 1), step)
    if len(log) == 20:
        log.flush()
        tracker.set_tags(run_id, {"last_step": step})
log.flush()
tracker.end_run(run_id)
"""


def test_four_processes_log_4000_points_without_database_locked(tracking_uri: str) -> None:
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("concurrency")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, tracking_uri, experiment_id, str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outputs = [w.communicate(timeout=300) for w in writers]
    for writer, (_, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
        assert "database is locked" not in err
    runs = tracker.search_runs(experiment_id)
    assert len(runs) == 4
    for run in runs:
        steps = [step for step, _ in tracker.metric_history(run.info.run_id, "train_loss")]
        assert steps == list(range(1000))
        assert run.info.status == "FINISHED"
        assert run.data.tags["last_step"] == "999"


# A sweep's driver opening its store: it waits for a shared start time, as two `lrsweep run`
# started together do, then makes its experiment.
OPENER = """
import sys, time
from sweeps.tracking import Tracker
uri, start, name = sys.argv[1], float(sys.argv[2]), sys.argv[3]
time.sleep(max(0.0, start - time.time()))
Tracker(uri).ensure_experiment(name)
"""


def test_sweeps_started_together_on_a_new_store_both_open_it(tmp_path: Path) -> None:
    """Each made MLflow's tables at once: one died with "table experiment_tags already exists"
    or an alembic error (3 times in 3 for two `lrsweep run` in a new folder)."""
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for attempt in range(2):
        uri = f"sqlite:///{tmp_path}/store-{attempt}/mlflow.db"
        start = time.time() + 6  # every process has imported MLflow by then
        openers = [
            subprocess.Popen(
                [sys.executable, "-c", OPENER, uri, str(start), f"sweep-{i}"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]
        for opener in openers:
            _, err = opener.communicate(timeout=300)
            assert opener.returncode == 0, err[-3000:]
        names = Tracker(uri).experiment_names()
        assert {"sweep-0", "sweep-1", "sweep-2"} <= set(names)


def test_embedded_store_uses_write_ahead_logging(tracking_uri: str) -> None:
    import sqlite3

    Tracker(tracking_uri)
    db_file = sqlite_path(tracking_uri)
    assert db_file is not None and db_file.name == "mlflow.db"
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_store_lives_under_dot_lrsweep(tmp_path: Path) -> None:
    uri = default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/.lrsweep/mlflow.db"
    tracker = Tracker(uri)
    experiment_id = tracker.ensure_experiment("layout")
    run_id = tracker.start_run(experiment_id, run_name="r")
    tracker.log_text(run_id, "hello", "notes/hello.txt")
    assert list((tmp_path / ".lrsweep" / "artifacts").rglob("hello.txt"))


@pytest.mark.parametrize(
    ("candidates", "env", "expected"),
    [
        (("http://cli:5000", "http://spec:5000"), "http://env:5000", "http://cli:5000"),
        ((None, "http://spec:5000"), "http://env:5000", "http://spec:5000"),
        ((None, None), "http://env:5000", "http://env:5000"),
        ((None, None), None, "DEFAULT"),
    ],
)
def test_tracking_uri_precedence(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    candidates: tuple[str | None, ...],
    env: str | None,
    expected: str,
) -> None:
    if env is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    if expected == "DEFAULT":
        expected = default_tracking_uri(tmp_path)
    assert resolve_tracking_uri(*candidates, cwd=tmp_path) == expected


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://alice:s3cret@host:5000/x", "http://host:5000/x"),
        ("https://token@host/path", "https://host/path"),
        ("http://host:5000", "http://host:5000"),
        ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
    ],
)
def test_redact_uri_drops_credentials(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "API request to https://tok@host/api/2.0/runs failed",
            "API request to https://host/api/2.0/runs failed",
        ),
        ("('http://u:p@w@db:5000/x', 'http://h')", "('http://db:5000/x', 'http://h')"),
        ("GET http://host/x?run=1&token=abc failed", "GET http://host/x?run=1&token=*** failed"),
        ("no url, a@b and ://x", "no url, a@b and ://x"),
    ],
)
def test_redact_text_shows_every_url_in_a_message_as_redact_uri_does(text: str, shown: str) -> None:
    """MLflow's errors and the retry log quote request URLs: one parser, that of redact_url."""
    from sweeps._retry import redact_text

    assert redact_text(text) == shown


@pytest.mark.parametrize(
    ("uri", "has"),
    [
        ("https://tok@host", True),
        ("https://u:p@host", True),
        ("https://host/?access_token=t", True),
        ("https://host/?token", False),  # a name without a value holds nothing
        ("https://host:5000/x?run=1", False),
        ("not a url", False),
    ],
)
def test_uri_has_credentials(uri: str, has: bool) -> None:
    from sweeps.spec._redact import uri_has_credentials

    assert uri_has_credentials(uri) is has


def test_one_flush_larger_than_a_batch_is_chunked_and_complete(tracking_uri: str) -> None:
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("chunks"), run_name="r")
    log = RunLogger(tracker, run_id)
    n_points = 2 * MAX_METRICS_PER_BATCH + 500
    log.extend("train_loss", [float(i) for i in range(n_points)])
    log.add("valid_loss", float("nan"), 0)
    assert log.flush() == n_points + 1
    assert len(log) == 0
    assert len(tracker.metric_history(run_id, "train_loss")) == n_points
    ((step, value),) = tracker.metric_history(run_id, "valid_loss")
    assert step == 0 and math.isnan(value)  # NaN kept, not dropped nor turned into a number


@pytest.mark.parametrize("bulk", [True, False])
def test_metric_history_gives_back_an_infinite_value_as_infinite(
    tracking_uri: str, bulk: bool
) -> None:
    # SQL stores keep +-inf as +-1.797e308, a finite number: read back raw, an exploded epoch
    # drew the report's curves.png and range-test overlay on a 1e308 axis
    tracker = Tracker(tracking_uri, bulk_metrics=bulk)
    run_id = tracker.start_run(tracker.ensure_experiment("inf"), run_name="r")
    points = [("valid_loss", 0.5, 0), ("valid_loss", math.inf, 1), ("valid_loss", -math.inf, 2)]
    tracker.log_metrics(run_id, [*points, ("valid_loss", math.nan, 3)])
    history = tracker.metric_history(run_id, "valid_loss")
    assert history[:3] == [(0, 0.5), (1, math.inf), (2, -math.inf)]
    assert history[3][0] == 3 and math.isnan(history[3][1])


def test_held_steps_are_not_logged_again_buffered_or_new(tracking_uri: str) -> None:
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("held"), run_name="r")
    log = RunLogger(tracker, run_id, pending=[["train_loss", 9.0, 1, 0], ["train_loss", 8.0, 1, 3]])
    log.hold({"train_loss": 2, "lr": 1, "valid_loss": 0})
    assert log.pending() == [["train_loss", 8.0, 1, 3]]  # step 0 is held, step 3 is not
    log.extend("lr", [0.1, 0.2, 0.3, 0.4])  # steps 0..3
    log.extend("train_loss", [4.0, 5.0], first_step=4)
    log.add("train_loss", 7.0, 2)
    log.add_many({"valid_loss": 0.5, "error_rate": 0.1}, 0)
    log.add("valid_loss", 0.4, 1)
    log.flush()
    assert tracker.metric_history(run_id, "train_loss") == [(3, 8.0), (4, 4.0), (5, 5.0)]
    assert tracker.metric_history(run_id, "lr") == [(2, 0.3), (3, 0.4)]
    assert tracker.metric_history(run_id, "valid_loss") == [(1, 0.4)]
    assert tracker.metric_history(run_id, "error_rate") == [(0, 0.1)]


def test_last_steps_are_each_metrics_largest_step_from_one_run_read(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("steps"), run_name="r")
    assert tracker.last_steps(run_id) == {}
    tracker.log_metrics(run_id, [("train_loss", 1.0, 5), ("train_loss", 2.0, 2), ("lr", 0.1, 0)])
    log = RunLogger(tracker, run_id)  # the bulk SQL path, as trials send their steps
    log.extend("train_loss", [0.5, 0.4, 0.3], first_step=6)
    log.add("valid_loss", 0.7, 3)
    log.flush()
    tracker.log_metrics(run_id, [("lr", 0.2, 0)])  # a later point at a step already held
    expected = {"train_loss": 8, "lr": 0, "valid_loss": 3}
    assert tracker.last_steps(run_id) == expected

    # should MLflow stop handing the latest rows' steps over, the histories are read instead
    get_run = tracker.get_run

    def without_steps(run_id: str) -> Any:
        run = get_run(run_id)
        del run.data._metric_objs
        return run

    monkeypatch.setattr(tracker, "get_run", without_steps)
    assert tracker.last_steps(run_id) == expected


def test_a_run_closed_failed_for_a_dead_worker_carries_what_tune_knew_of_its_error(
    tracking_uri: str,
) -> None:
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("dead-worker")
    parent = tracker.start_run(experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    runs = {
        trial: tracker.start_run(
            experiment_id, run_name=trial, parent_run_id=parent, tags={"sweeps.trial_id": trial}
        )
        for trial in ("t1", "t2", "t3")
    }
    tracker.set_tags(runs["t3"], {"sweeps.error": "its own, from the worker"})
    errors = {
        "t1": "RayActorError: the actor died (postgresql://u:s3cret@db/x)",
        "t3": "overwrites nothing",
    }
    closed = tracker.close_unfinished(experiment_id, parent, status="FAILED", errors=errors)
    assert sorted(closed) == sorted(runs.values())
    tags = {t: tracker.get_run(run_id).data.tags for t, run_id in runs.items()}
    assert tags["t1"]["sweeps.error"].startswith("RayActorError: the actor died")
    assert "s3cret" not in tags["t1"]["sweeps.error"]  # redacted, as every logged error
    assert "sweeps.error" not in tags["t2"]  # Tune knew no error for it
    assert tags["t3"]["sweeps.error"] == "its own, from the worker"
    assert {t["sweeps.stop_reason"] for t in tags.values()} == {"failed"}


def test_runs_close_with_their_status_and_leftovers_are_swept(tracking_uri: str) -> None:
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("lifecycle")
    parent = tracker.start_run(experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    done = tracker.start_run(
        experiment_id, run_name="a", parent_run_id=parent, tags={"sweeps.trial_id": "t1"}
    )
    stuck = tracker.start_run(
        experiment_id, run_name="b", parent_run_id=parent, tags={"sweeps.trial_id": "t2"}
    )
    tracker.end_run(done, "FINISHED")
    assert tracker.find_trial_run(experiment_id, parent, "t2") == stuck
    assert tracker.find_trial_run(experiment_id, parent, "t3") is None
    assert tracker.close_unfinished(experiment_id, parent, status="KILLED") == [stuck]
    statuses = {r.info.run_id: r.info.status for r in tracker.child_runs(experiment_id, parent)}
    assert statuses == {done: "FINISHED", stuck: "KILLED"}
    tracker.reopen_run(stuck)
    assert tracker.get_run(stuck).info.status == "RUNNING"
    with pytest.raises(ValueError, match="status must be one of"):
        tracker.end_run(stuck, "DONE")


def test_missing_experiment_lists_those_that_exist(tracking_uri: str) -> None:
    tracker = Tracker(tracking_uri)
    tracker.ensure_experiment("present")
    with pytest.raises(LookupError, match=r"'absent' does not exist.*'present'"):
        tracker.experiment_id("absent")


def test_experiment_names_reads_every_page_and_the_prefix_literally(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One search call returned MLflow's first 1000 experiments and no more."""
    tracker = Tracker(tracking_uri)
    for name in ("a/x", "a/y", "a/z", "ab", "a_b/w", "b"):
        tracker.ensure_experiment(name)
    monkeypatch.setattr("sweeps._reads.SEARCH_PAGE", 2)  # pages of 2 rows instead of 1000
    assert tracker.experiment_names() == ["Default", "a/x", "a/y", "a/z", "a_b/w", "ab", "b"]
    assert tracker.experiment_names("a/") == ["a/x", "a/y", "a/z"]  # LIKE 'a/%' only
    assert tracker.experiment_names("a_") == ["a_b/w"]  # '_' is not LIKE's wildcard here
    with pytest.raises(LookupError, match=r"'c' does not exist.*'a_b/w', 'ab', 'b'\]"):
        tracker.experiment_id("c")
    experiment_id = tracker.experiment_id("b")
    started = {tracker.start_run(experiment_id, run_name=f"r{i}") for i in range(5)}
    assert {r.info.run_id for r in tracker.search_runs(experiment_id)} == started


def test_a_missing_experiment_among_many_lists_the_closest_names(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = Tracker(tracking_uri)
    for i in range(6):
        tracker.ensure_experiment(f"digits-{i}")
    tracker.ensure_experiment("mnist")
    monkeypatch.setattr("sweeps._reads.SHOWN_NAMES", 3)
    with pytest.raises(LookupError) as info:
        tracker.experiment_id("digits-9")
    message = str(info.value)
    assert "experiments there: 8 experiments, the closest to 'digits-9': ['digits-" in message
    assert "mnist" not in message
    with pytest.raises(LookupError, match=r"8 experiments, the first: \['Default', 'digits-0'"):
        tracker.experiment_id("zzz")


def test_unwritable_artifact_location_fails_up_front(tmp_path: Path) -> None:
    tracker = Tracker(default_tracking_uri(tmp_path))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    experiment_id = tracker.client.create_experiment(
        "blocked", artifact_location=(blocker / "sub").as_uri()
    )
    with pytest.raises(OSError, match="is not writable"):
        tracker.check_artifacts_writable(experiment_id)


def test_logged_pytorch_model_loads_back_counts_once_ready_and_keeps_run_status(
    tracking_uri: str,
) -> None:
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("model"), run_name="r")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    example = torch.randn(2, 3, 2, 2)
    experiment_id = tracker.get_run(run_id).info.experiment_id
    tracker.client.create_logged_model(experiment_id, name="model", source_run_id=run_id)
    assert not tracker.has_model(run_id)  # an upload cut off (PENDING) is no model
    uri = tracker.log_pytorch_model(run_id, model, example)
    assert uri == f"runs:/{run_id}/model"
    assert tracker.has_model(run_id) and not tracker.has_model(run_id, "other")
    assert tracker.get_run(run_id).info.status == "RUNNING"
    with mlflow_tracking_uri(tracking_uri):
        loaded = mlflow.pytorch.load_model(uri)
    assert torch.allclose(loaded(example), model(example))


def test_registered_model_lists_versions_and_aliases_whatever_quotes_its_name_holds(
    tracking_uri: str,
) -> None:
    # MLflow's filter strings have no escapes: a name with a quote found no versions at all
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("model"), run_name="r")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    uri = tracker.log_pytorch_model(run_id, model, torch.randn(2, 3, 2, 2))
    names = ["plain", "it's", 'say "hi"', 'it\'s "both"', "back\\slash"]
    with mlflow_tracking_uri(tracking_uri):
        for name in names:
            for _ in range(2):
                mlflow.register_model(uri, name)
    tracker.client.set_registered_model_alias("it's", "prod", "2")
    assert tracker.registered_model_names() == sorted(names)
    for name in names:
        aliases = {"prod": "2"} if name == "it's" else {}
        assert tracker.registered_model(name) == (["1", "2"], aliases), name
    assert tracker.registered_model("nowhere") is None


@pytest.mark.parametrize("variable", [None, "sqlite:////somewhere/else.db"])
def test_logging_a_model_leaves_mlflows_tracking_uri_and_its_variable_as_they_were(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str | None
) -> None:
    # mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI; setting back the URI MLflow resolved
    # before left its default there, and the next sweep of the process logged to it
    if variable is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", variable)
    monkeypatch.chdir(tmp_path)
    before = mlflow.get_tracking_uri()
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("model"), run_name="r")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    tracker.log_pytorch_model(run_id, model, torch.randn(2, 3, 2, 2))
    assert tracker.has_model(run_id)
    assert os.environ.get("MLFLOW_TRACKING_URI") == variable
    assert mlflow.get_tracking_uri() == before
    monkeypatch.chdir(tmp_path / "..")  # the default still follows the working directory
    if variable is None:
        assert mlflow.get_tracking_uri() != before


def _mlflow_view(client: mlflow.MlflowClient, run_id: str, keys: list[str]) -> dict[str, object]:
    """What MLflow reads back of a run's metrics: full histories and latest values."""
    histories = {
        key: sorted(
            (m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(run_id, key)
        )
        for key in keys
    }
    latest = {k: repr(v) for k, v in client.get_run(run_id).data.metrics.items()}
    return {"histories": histories, "latest": latest}


def test_bulk_metric_writer_stores_what_mlflow_log_batch_stores(tracking_uri: str) -> None:
    from mlflow.entities import Metric

    tracker = Tracker(tracking_uri)
    assert tracker.bulk_metrics  # SQLite: the bulk path is the one under test
    reference = Tracker(tracking_uri, bulk_metrics=False)  # MLflow's own log_batch
    assert not reference.bulk_metrics
    experiment_id = tracker.ensure_experiment("bulk")
    ours = tracker.start_run(experiment_id, run_name="bulk")
    theirs = tracker.start_run(experiment_id, run_name="log_batch")
    first = [Metric("loss", 1.0 / (s + 1), 1000 + s, s) for s in range(40)]
    first += [Metric("lr", 1e-3 * s, 1000, s) for s in range(40)]
    # an older step logged later must not become "latest"; NaN and +-inf are sanitised
    second = [
        Metric("loss", 9.0, 5000, 3),
        Metric("odd", float("nan"), 10, 0),
        Metric("odd", float("inf"), 11, 1),
        Metric("odd", float("-inf"), 12, 2),
        Metric("loss", 0.01, 6000, 40),
    ]
    for batch in (first, second):
        tracker.log_metric_points(ours, batch)
        reference.log_metric_points(theirs, batch)
    tracker.log_metric_points(ours, first)  # a re-sent batch adds nothing
    keys = ["loss", "lr", "odd"]
    mine = _mlflow_view(tracker.client, ours, keys)
    assert mine == _mlflow_view(tracker.client, theirs, keys)
    assert len(mine["histories"]["loss"]) == 42  # type: ignore[index]
    assert tracker.client.get_run(ours).data.metrics["loss"] == 0.01


def test_bulk_metric_writer_refuses_deleted_and_unknown_runs(tracking_uri: str) -> None:
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("gone"), run_name="r")
    tracker.client.delete_run(run_id)
    point = [Metric("loss", 1.0, 1, 0)]
    with pytest.raises(MlflowException, match="active"):
        tracker.log_metric_points(run_id, point, timeout_s=0)
    with pytest.raises(MlflowException, match="not found"):
        tracker.log_metric_points("0" * 32, point, timeout_s=0)
    active = tracker.start_run(tracker.ensure_experiment("gone"), run_name="active")
    with pytest.raises(MlflowException, match="must not resolve to other names"):
        tracker.log_metric_points(active, [Metric("../up", 1.0, 1, 0)], timeout_s=0)


_WARM_UP = r"""
import sys
from sweeps import trial
assert "torch._dynamo" not in sys.modules, "imported before the warm-up"
trial._tracker(sys.argv[1])
from mlflow.utils import requirements_utils
print("dynamo", "torch._dynamo" in sys.modules)
print("mlflow.pytorch", "mlflow.pytorch" in sys.modules)
print("packages", requirements_utils._MODULES_TO_PACKAGES is not None)
"""


def test_a_worker_first_tracker_pays_the_once_per_process_imports(tracking_uri: str) -> None:
    # what the first optimizer and the first log_model would import inside the first trial
    done = subprocess.run(
        [sys.executable, "-c", _WARM_UP, tracking_uri],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert done.stdout.split() == ["dynamo", "True", "mlflow.pytorch", "True", "packages", "True"]


def test_relative_sqlite_uri_gets_an_absolute_artifact_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tracker = Tracker("sqlite:///store/mlflow.db")  # README: sqlite:///relative.db is accepted
    experiment_id = tracker.ensure_experiment("relative")
    run_id = tracker.start_run(experiment_id, run_name="r")
    tracker.log_text(run_id, "hello", "hello.txt")
    assert list((tmp_path / "store" / "artifacts").rglob("hello.txt"))


@pytest.mark.parametrize(
    "point",
    [
        ("k" * 251, 1.0, 1, 0),  # longer than MLflow's 250-character key limit
        ("loss", "high", 1, 0),  # no number
        ("loss", 1.0, -5, 0),  # a negative timestamp
    ],
)
def test_bulk_metric_writer_refuses_what_log_batch_refuses(
    tracking_uri: str, point: tuple[Any, Any, Any, Any]
) -> None:
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    tracker = Tracker(tracking_uri)
    reference = Tracker(tracking_uri, bulk_metrics=False)
    run_id = tracker.start_run(tracker.ensure_experiment("refused"), run_name="r")
    tracker.log_metric_points(run_id, [Metric("loss", 2.0, 1, 0)], timeout_s=0)  # a known key
    metric = Metric(*point)
    with pytest.raises(MlflowException) as theirs:
        reference.log_metric_points(run_id, [metric], timeout_s=0)
    with pytest.raises(MlflowException) as ours:
        tracker.log_metric_points(run_id, [metric], timeout_s=0)
    assert ours.value.error_code == theirs.value.error_code == "INVALID_PARAMETER_VALUE"
    assert len(tracker.client.get_metric_history(run_id, point[0])) == int(point[0] == "loss")


def test_bulk_metric_writer_converts_values_as_mlflow_client_does(tracking_uri: str) -> None:
    import numpy as np
    from mlflow.entities import Metric

    tracker = Tracker(tracking_uri)
    reference = Tracker(tracking_uri, bulk_metrics=False)
    experiment_id = tracker.ensure_experiment("converted")
    ours = tracker.start_run(experiment_id, run_name="bulk")
    theirs = tracker.start_run(experiment_id, run_name="log_batch")
    points = [
        Metric("loss", 1.0, 1, 0),  # the key is known before the odd values come
        Metric("loss", True, 1, 1),
        Metric("loss", "0.5", 1, 2),
        Metric("loss", np.float32(0.25), 1, 3),
        Metric("loss", 7, 1, 4),
    ]
    for point in points:
        tracker.log_metric_points(ours, [point], timeout_s=0)
        reference.log_metric_points(theirs, [point], timeout_s=0)
    assert _mlflow_view(tracker.client, ours, ["loss"]) == _mlflow_view(
        tracker.client, theirs, ["loss"]
    )


def _fail_metric_inserts(db_file: Path, min_step: int) -> None:
    """A real store fault: inserting a point at ``min_step`` or later fails as a locked store."""
    import sqlite3

    with sqlite3.connect(db_file) as conn:
        conn.execute(
            f"CREATE TRIGGER fail_metrics BEFORE INSERT ON metrics WHEN NEW.step >= {min_step} "
            "BEGIN SELECT RAISE(ABORT, 'database is locked'); END"
        )


def test_failed_flush_counts_the_batches_sent_keeps_the_rest_and_resends_once(
    tracking_uri: str,
) -> None:
    import sqlite3

    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("partial"), run_name="r")
    db_file = sqlite_path(tracking_uri)
    assert db_file is not None
    log = RunLogger(tracker, run_id)
    n_points = 2 * MAX_METRICS_PER_BATCH + 500
    log.extend("train_loss", [float(i) for i in range(n_points)])
    _fail_metric_inserts(db_file, MAX_METRICS_PER_BATCH)
    assert log.flush(wait=False) == MAX_METRICS_PER_BATCH  # the first batch went
    assert len(log) == n_points - MAX_METRICS_PER_BATCH
    assert log.pending()[0][3] == MAX_METRICS_PER_BATCH  # the rest, in order
    with sqlite3.connect(db_file) as conn:
        conn.execute("DROP TRIGGER fail_metrics")
    assert log.flush(wait=False) == n_points - MAX_METRICS_PER_BATCH
    history = tracker.metric_history(run_id, "train_loss")
    assert history == [(i, float(i)) for i in range(n_points)]  # each point once


def test_a_waiting_flush_keeps_one_deadline_for_all_its_batches(tracking_uri: str) -> None:
    import sqlite3

    from mlflow.exceptions import MlflowException

    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("deadline"), run_name="r")
    db_file = sqlite_path(tracking_uri)
    assert db_file is not None
    log = RunLogger(tracker, run_id)
    log.extend("train_loss", [1.0] * (3 * MAX_METRICS_PER_BATCH))
    # the store refuses the 2nd batch for 0.3 s and the 3rd for 1.05 s, counted from the
    # flush's first insert (the time SQLite wrote when the 1st batch went, so a slow start
    # cannot shift the windows): each alone goes within a 1 s timeout (retried at +0.05,
    # +0.15, +0.35, +0.75 s), not both in one flush
    day_s = 86400.0
    with sqlite3.connect(db_file) as conn:
        conn.executescript(
            f"""
            CREATE TABLE flush_start (t REAL);
            CREATE TRIGGER first_insert BEFORE INSERT ON metrics
            WHEN NOT EXISTS (SELECT 1 FROM flush_start)
            BEGIN INSERT INTO flush_start VALUES (julianday('now')); END;
            CREATE TRIGGER slow_metrics BEFORE INSERT ON metrics WHEN
            (NEW.step >= {2 * MAX_METRICS_PER_BATCH}
             AND julianday('now') < (SELECT t FROM flush_start) + {1.05 / day_s!r}) OR
            (NEW.step >= {MAX_METRICS_PER_BATCH}
             AND julianday('now') < (SELECT t FROM flush_start) + {0.3 / day_s!r})
            BEGIN SELECT RAISE(ABORT, 'database is locked'); END;
            """
        )
    with pytest.raises(MlflowException, match="database is locked"):  # per batch: it went through
        log.flush(timeout_s=1.0)
    assert len(log) == MAX_METRICS_PER_BATCH  # the third batch, kept for the next flush


def test_a_token_in_the_tracking_uri_is_refused_without_being_shown() -> None:
    """``https://TOKEN@host`` and ``?token=`` are refused like a password (the environment holds
    credentials); MLflow's errors quote the request URL, so one that got through would reach
    logs and messages (``redact_text`` still scrubs those, above)."""
    from sweeps._uri import TrackingUriError

    for uri in ("http://sekrit-token@127.0.0.1:5000", "http://127.0.0.1:5000/?token=sekrit"):
        with pytest.raises(TrackingUriError, match="MLFLOW_TRACKING_TOKEN") as refused:
            Tracker(uri)
        assert "sekrit" not in str(refused.value) and "127.0.0.1:5000" in str(refused.value)


def test_add_many_logs_numpy_scalars_and_skips_what_is_no_number(tracking_uri: str) -> None:
    import numpy as np

    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("numbers"), run_name="r")
    log = RunLogger(tracker, run_id)
    values = {"acc": np.float32(0.5), "n": np.int64(3), "loss": 0.25, "flag": True, "tag": "x"}
    log.add_many(values, 0)  # type: ignore[arg-type]
    log.flush()
    assert tracker.get_run(run_id).data.metrics == {"acc": 0.5, "n": 3.0, "loss": 0.25}


def test_close_unfinished_closes_every_run_even_when_one_tag_cannot_be_written(
    tracking_uri: str,
) -> None:
    import sqlite3

    from mlflow.exceptions import MlflowException

    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("close")
    parent = tracker.start_run(experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    first, second = (
        tracker.start_run(experiment_id, run_name=name, parent_run_id=parent) for name in "ab"
    )
    db_file = sqlite_path(tracking_uri)
    assert db_file is not None
    with sqlite3.connect(db_file) as conn:  # a real store fault on one run's tags only
        conn.execute(
            f"CREATE TRIGGER no_tags BEFORE INSERT ON tags WHEN NEW.run_uuid = '{first}' "
            "BEGIN SELECT json('refused'); END"  # fails: malformed JSON
        )
    with pytest.raises(MlflowException, match="malformed JSON"):
        tracker.close_unfinished(experiment_id, parent, status="FAILED")
    assert tracker.get_run(first).info.status == "FAILED"  # not left RUNNING
    assert tracker.get_run(second).info.status == "FAILED"
    assert tracker.get_run(second).data.tags["sweeps.stop_reason"] == "failed"
    with pytest.raises(ValueError, match="status must be one of"):
        tracker.close_unfinished(experiment_id, parent, status="DONE")


def test_a_store_error_that_is_no_lock_is_not_retried_for_minutes(tracking_uri: str) -> None:
    import sqlite3
    import time

    from mlflow.exceptions import MlflowException

    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("broken"), run_name="r")
    db_file = sqlite_path(tracking_uri)
    assert db_file is not None
    with sqlite3.connect(db_file) as conn:  # MLflow codes it TEMPORARILY_UNAVAILABLE
        conn.execute("CREATE TRIGGER broken BEFORE INSERT ON tags BEGIN SELECT json('x'); END")
    start = time.monotonic()
    with pytest.raises(MlflowException, match="malformed JSON"):
        tracker.set_tags(run_id, {"a": "b"})  # retried for 5 minutes before
    assert time.monotonic() - start < 30


def test_a_tls_failure_is_refused_at_once_not_retried_for_minutes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``https://`` to a server that speaks plain HTTP: requests calls the TLS failure a
    connection error, and MLflow says "Max retries exceeded"; neither is a server that is down."""
    import http.server
    import threading
    import time

    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tracker = Tracker(f"https://127.0.0.1:{server.server_address[1]}")
        start = time.monotonic()
        with pytest.raises(MlflowException, match="SSLError"):
            tracker.set_tags("0" * 32, {"a": "b"})
        assert time.monotonic() - start < RETRY_TIMEOUT_S / 10  # not the 5 min of retries
    finally:
        server.shutdown()
        server.server_close()


def test_the_models_trainers_code_is_one_folder_per_version_and_its_own_when_loaded_from_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import zipfile
    import zipimport

    import trainers
    from sweeps import _model_code

    monkeypatch.setattr(_model_code, "_trainers_code_paths", [])
    first = _model_code._trainers_code()
    monkeypatch.setattr(_model_code, "_trainers_code_paths", [])
    assert _model_code._trainers_code() == first  # another process finds the folder made
    stub, archive = map(Path, first)
    assert stub.name == "trainers" and (stub / "__init__.py").is_file()
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
    assert {"trainers/__init__.py", "trainers/models/_base.py"} <= names
    # trainers imported from a logged model's code (lrsweep not installed): that code again;
    # reading the package's folder there found nothing and shipped an empty zip
    monkeypatch.setattr(_model_code, "_trainers_code_paths", [])
    copy = tmp_path / "code" / "trainers.zip"
    copy.parent.mkdir()
    copy.write_bytes(archive.read_bytes())
    zipped_spec = zipimport.zipimporter(str(copy)).find_spec("trainers")
    monkeypatch.setattr(trainers, "__spec__", zipped_spec)
    assert _model_code._trainers_code() == [str(copy.parent / "trainers"), str(copy)]


def test_a_deleted_experiment_is_restored_to_log_a_sweep_and_a_warning_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`lrsweep run` into an experiment the user had deleted brought it back, with its old runs,
    without a word."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri)
    exp_id = tracker.ensure_experiment("gone")
    mlflow.MlflowClient(uri).delete_experiment(exp_id)

    with caplog.at_level("WARNING", logger="sweeps.tracking"):
        again = tracker.ensure_experiment("gone")

    assert again == exp_id
    assert mlflow.MlflowClient(uri).get_experiment(exp_id).lifecycle_stage == "active"
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"experiment 'gone' (id {exp_id}) had been deleted: restored it" in said
    caplog.clear()
    with caplog.at_level("WARNING", logger="sweeps.tracking"):
        tracker.ensure_experiment("gone")  # live: nothing to say
    assert not caplog.records
