"""The trial lifecycle against a real MLflow store (SQLite), store faults made with triggers.

A trial killed, or failed by its store, between two metric batches leaves its run holding part
of what it sent; the try that follows must complete it, each point once, and a trial that fails
must close its run even when its last points cannot be sent.
"""

from __future__ import annotations

import math
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import run_script
from mlflow.exceptions import MlflowException

from sweeps import _ray, _runlog
from sweeps._reporter import EpochReporter, TrialRecord, training_rows
from sweeps.spec import validate_spec
from sweeps.stoppers import from_spec
from sweeps.tracking import Tracker, sqlite_path
from trainers import Callback, Learner, build_model, make_dataloaders, seed_everything

SPEC = {
    "name": "trial",
    "task": {"dataset": {"name": "digits"}, "image_size": 8, "batch_size": 64, "epochs": 1},
    "strategies": [{"kind": "fixed", "name": "steady", "lr": 1.0e-3}],
    "early_stop": None,
    "tracking": {"checkpoints": "best", "flush_every_s": 0, "checkpoint_every_s": 0},
}
EPOCH_KEYS = ("valid_loss", "error_rate", "accuracy", "epoch_time_s", "epoch_train_loss")

# These tests drive a trial's reporter in this process, outside Tune: its last report goes to a
# Ray Train session that is not there, which Ray answers with this warning (and no report).
pytestmark = pytest.mark.filterwarnings(
    "ignore:`report` is meant to only be called inside a function:UserWarning"
)


def _learner(opt: str = "sgd") -> Learner:
    dls = make_dataloaders("digits", image_size=8, batch_size=64, seed=0)
    seed_everything(0)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    return Learner(model, dls, opt=opt, progress=False)


@pytest.fixture(autouse=True)
def _own_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoint folders of tries that were "killed" land in the test's folder."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))


def _reporter(
    tracker: Tracker,
    run_id: str,
    spec: dict[str, Any],
    record: TrialRecord | None = None,
    *,
    recipe_budget: int | None = None,
) -> EpochReporter:
    """A trial's reporter as ``sweeps.trial.train_trial`` builds it (``record``: a restored
    checkpoint's; ``recipe_budget``: a recipe arm's ``max_epochs``, no epoch cap then)."""
    from sweeps.trial import _checkpointer

    validated = validate_spec(spec)
    record = record or TrialRecord(run_id=run_id, lr=1.0e-3)
    return EpochReporter(
        tracker,
        record,
        spec=validated,
        stopper=from_spec(validated),
        checkpoint=_checkpointer(record),
        max_epochs=validated.task.epochs if recipe_budget is None else None,
        epoch_budget=recipe_budget,
    )


def _checkpoint_folders() -> list[str]:
    """The checkpoint folders left in the temporary folder (this test's own)."""
    return sorted(path.name for path in Path(tempfile.gettempdir()).glob("lrsweep-ckpt-*"))


def _refuse_metrics(db_file: Path, when: str, error: str) -> None:
    """A real store fault: inserting a metric point ``when`` fails with ``error``."""
    with sqlite3.connect(db_file) as conn:
        conn.execute(
            f"CREATE TRIGGER refuse_metrics BEFORE INSERT ON metrics WHEN {when} "
            f"BEGIN SELECT {error}; END"
        )


def _accept_metrics(db_file: Path) -> None:
    with sqlite3.connect(db_file) as conn:
        conn.execute("DROP TRIGGER refuse_metrics")


def test_a_trial_killed_between_two_batches_of_an_epoch_logs_the_whole_epoch_when_run_again(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The epoch's first batch (its steps and ``valid_loss``) reached the store, the second
    (its other epoch metrics) did not before the worker died: the restarted trial sends them."""
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("trial"), run_name="cut")
    db_file = sqlite_path(tracking_uri)
    assert db_file is not None
    n_iter = len(_learner().dls.train)
    # one batch ends right after the epoch's valid_loss (as the 1,000-point batches may)
    monkeypatch.setattr(_runlog, "MAX_BATCH_POINTS", 2 * n_iter + 1)
    _refuse_metrics(db_file, "NEW.key = 'error_rate'", "RAISE(ABORT, 'database is locked')")
    first = _learner()
    _reporter(tracker, run_id, SPEC).attach(first, reopened=False)
    first.fit(1, 1.0e-3)  # its epoch's end sends the first batch; the second waits: killed
    assert tracker.metric_history(run_id, "error_rate") == []
    assert len(tracker.metric_history(run_id, "valid_loss")) == 1
    _accept_metrics(db_file)

    again = _learner()  # Tune starts the trial again (no checkpoint reached Tune)
    reporter = _reporter(tracker, run_id, SPEC)
    reporter.attach(again, reopened=True)
    again.fit(1, 1.0e-3)
    reporter.finish(again, lambda learn, record: None)

    for key in EPOCH_KEYS:  # error_rate, accuracy, epoch_time_s, epoch_train_loss were lost
        assert [step for step, _ in tracker.metric_history(run_id, key)] == [0], key
    steps = [step for step, _ in tracker.metric_history(run_id, "train_loss")]
    assert steps == list(range(n_iter))
    assert tracker.get_run(run_id).info.status == "FINISHED"


def test_epochs_a_killed_try_trained_count_in_compute_s_once(tracking_uri: str) -> None:
    """A try killed after sending two epochs, none checkpointed: the next try trains both again,
    and ``compute_s`` counts both tries' epochs (it counted only the last try's). A later try
    restored from a checkpoint of the second counts none of them a second time."""
    spec = {**SPEC, "task": {**SPEC["task"], "epochs": 2}}
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("trial"), run_name="killed")
    first = _learner()
    _reporter(tracker, run_id, spec).attach(first, reopened=False)
    first.fit(2, 1.0e-3)  # its points sent every epoch; killed before its checkpoint reached Tune
    first_s = [v for _, v in tracker.metric_history(run_id, "epoch_time_s")]
    assert len(first_s) == 2

    again = _learner()
    reporter = _reporter(tracker, run_id, spec)
    reporter.attach(again, reopened=True)
    again.fit(2, 1.0e-3)
    computed: list[float] = []
    reporter.finish(
        again, lambda learn, record: computed.append(record.compute_s(training_rows(learn.history)))
    )
    again_s = [row["epoch_time_s"] for row in training_rows(again.history)]
    assert computed == [pytest.approx(math.fsum(first_s) + math.fsum(again_s))]
    assert [v for _, v in tracker.metric_history(run_id, "epoch_time_s")] == first_s  # once each

    # a third try restored from the second's checkpoint of its first epoch: epoch 1, which the
    # second try counted before that checkpoint, is not counted again
    restored = TrialRecord.from_meta(reporter.record.to_meta(), run_id=run_id)
    assert restored.extra_compute_s == pytest.approx(math.fsum(first_s))
    third = _learner()
    third.fit(1, 1.0e-3)  # the checkpoint's history: one epoch
    _reporter(tracker, run_id, spec, restored).attach(third, reopened=True)
    assert restored.extra_compute_s == pytest.approx(math.fsum(first_s))


def test_a_failing_trial_whose_last_points_cannot_be_sent_still_closes_its_run_failed(
    tracking_uri: str,
) -> None:
    """The store refuses the trial's last metric batch (not a lock: at once); the run is closed
    FAILED with its stop reason all the same, not left RUNNING."""
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("trial"), run_name="refused")
    db_file = sqlite_path(tracking_uri)
    assert db_file is not None
    spec = {**SPEC, "tracking": {**SPEC["tracking"], "flush_every_s": 3600}}
    learn = _learner()
    reporter = _reporter(tracker, run_id, spec)
    reporter.attach(learn, reopened=False)
    learn.fit(1, 1.0e-3)  # its points wait for the trial's end
    _refuse_metrics(db_file, "1", "json('refused')")  # fails: malformed JSON
    with pytest.raises(MlflowException, match="malformed JSON") as info:
        reporter.finish(learn, lambda learn, record: None)  # as sweeps.trial.train_trial:
    reporter.abort(info.value)  # every error of the trial body goes to abort, then up

    run = tracker.get_run(run_id)
    assert run.info.status == "FAILED"  # was RUNNING: the failed flush skipped the closing
    assert run.data.tags["sweeps.stop_reason"] == "failed"
    assert "malformed JSON" in run.data.tags["sweeps.error"]
    assert _checkpoint_folders() == []  # the last epoch's, never reported, was left behind


def test_a_range_test_curve_cut_short_by_a_store_fault_is_completed_by_the_retry(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The curve's loss and raw loss reached the store, its LRs did not (a store fault between
    two batches fails the trial); the retry logs the missing LRs and ``lr_find.png``, each once."""
    from sweeps.trial import _log_lr_find

    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("trial"), run_name="curve")
    db_file = sqlite_path(tracking_uri)
    assert db_file is not None
    result = _learner().lr_find(1e-5, 1.0, 20, suggest=("valley",))
    n_points = len(result.losses)
    monkeypatch.setattr(_runlog, "MAX_BATCH_POINTS", n_points)  # one batch per series
    _refuse_metrics(db_file, "NEW.key = 'lr_find/lr'", "json('refused')")
    with pytest.raises(MlflowException, match="malformed JSON"):
        _log_lr_find(tracker, run_id, result, 1.5)
    assert len(tracker.metric_history(run_id, "lr_find/loss")) == n_points
    _accept_metrics(db_file)

    _log_lr_find(tracker, run_id, result, 1.5)  # the retry (Tune's max_failures) runs it again

    for key in ("lr_find/loss", "lr_find/raw_loss", "lr_find/lr"):
        steps = [step for step, _ in tracker.metric_history(run_id, key)]
        assert steps == list(range(n_points)), key  # lr_find/lr was empty
    assert tracker.metric_history(run_id, "lr_find_s") == [(0, 1.5)]  # once, not once per try
    assert "lr_find.png" in tracker.list_artifacts(run_id)  # was missing


def test_a_checkpoint_whose_upload_failed_is_logged_whole_when_its_epoch_is_trained_again(
    tracking_uri: str, tmp_path: Path
) -> None:
    """The artifact store could not write epoch 0's ``trial.json`` (the trial failed); the try
    that follows trains epoch 0 again and logs its checkpoint whole, not only its metrics."""
    from trainers import CallbackError

    spec = {**SPEC, "task": {**SPEC["task"], "epochs": 2}}
    spec["tracking"] = {**SPEC["tracking"], "checkpoints": "all"}
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("trial"), run_name="upload")
    artifacts = Path(tracker.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    broken = artifacts / "checkpoints" / "epoch-000" / "trial.json"
    broken.parent.mkdir(parents=True)
    broken.symlink_to(tmp_path / "gone" / "trial.json")  # a file the store cannot write
    first = _learner()
    _reporter(tracker, run_id, spec).attach(first, reopened=False)
    with pytest.raises(CallbackError, match="FileNotFoundError"):
        first.fit(2, 1.0e-3)  # epoch 0's metrics went; its checkpoint only in part
    broken.unlink()

    again = _learner()  # Tune starts the trial again: no checkpoint reached it
    reporter = _reporter(tracker, run_id, spec)
    reporter.attach(again, reopened=True)
    again.fit(2, 1.0e-3)
    reporter.finish(again, lambda learn, record: None)

    for epoch in (0, 1):
        folder = f"checkpoints/epoch-{epoch:03d}"
        names = sorted(path.rsplit("/", 1)[-1] for path in tracker.list_artifacts(run_id, folder))
        assert names == ["best_model.pt", "learner.pt", "trial.json"], folder  # 0: no trial.json
    assert [step for step, _ in tracker.metric_history(run_id, "valid_loss")] == [0, 1]
    assert _checkpoint_folders() == []  # the one whose upload failed was left behind


# A small sweep in its own driver process, so that its workers' TMPDIR is the test's own folder.
CHECKPOINT_FOLDERS_SWEEP = """
import json, sys
from sweeps import _ray
from sweeps.run import run_sweep
root, tmp = sys.argv[1], sys.argv[2]
_ray.init_ray(num_cpus=2, env_vars={"TMPDIR": tmp})
spec = {"name": "checkpoint-folders", "seeds": [0, 1],
        "task": {"dataset": {"name": "shapes", "valid_pct": 0.25, "seed": 3,
                             "options": {"n_per_class": 16}},
                 "image_size": 12, "batch_size": 12, "epochs": 4,
                 "schedule": {"kind": "constant"}},
        "strategies": [{"kind": "fixed", "name": "calm", "lr": 0.003},
                       {"kind": "fixed", "name": "overfits", "lr": 0.03}],
        "early_stop": {"metric": "valid_loss", "patience": 1, "grace_epochs": 1},
        "resources": {"cpu": 1}, "failure": {"max_failures": 0},
        "tracking": {"checkpoint_every_s": 0}}
result = run_sweep(spec, tracking_uri=f"sqlite:///{root}/mlflow.db", storage_path=f"{root}/ray")
print(json.dumps(sorted(o.status for outcomes in result.trials.values() for o in outcomes)))
_ray.shutdown_ray()
"""


@pytest.mark.slow
def test_a_sweep_leaves_no_checkpoint_folder_behind_in_the_workers_temp_dir(
    tmp_path: Path,
) -> None:
    """Each epoch's checkpoint is written to a temporary folder that Tune copies; Tune ends a
    trial inside the report of its last one (``SystemExit``), which left that folder (the
    weights, the optimizer state and the best weights: 1.6 MB here, hundreds for a resnet)."""
    tmp = tmp_path / "workers-tmp"
    tmp.mkdir()
    # the workers get TMPDIR=tmp (Ray itself keeps /tmp/ray, outside it)
    assert run_script(CHECKPOINT_FOLDERS_SWEEP, str(tmp_path), str(tmp)) == ["TERMINATED"] * 4
    assert sorted(p.name for p in tmp.glob("lrsweep-ckpt-*")) == []


def test_a_retry_of_a_trial_that_failed_for_good_says_what_to_change(tracking_uri: str) -> None:
    """The retry raises the first attempt's error at once and names what to change: the arm in
    the spec (``lrsweep resume`` keeps the spec, so only a new ``lrsweep run`` helps)."""
    from sweeps.trial import TAG_FAILED_FOR_GOOD, TrialFailedForGood, _raise_if_failed_for_good

    tracker = Tracker(tracking_uri)
    tags = {"sweeps.arm": "finder", TAG_FAILED_FOR_GOOD: "CurveTooShort: too few points."}
    run_id = tracker.start_run(tracker.ensure_experiment("trial"), run_name="short", tags=tags)
    tracker.end_run(run_id, "FAILED")

    with pytest.raises(TrialFailedForGood) as info:
        _raise_if_failed_for_good(tracker, run_id)

    message = str(info.value)
    assert message.endswith("CurveTooShort: too few points.") and "not retried" in message
    assert "change the arm in the spec and start a new sweep with `lrsweep run`" in message
    assert len(message) - len("CurveTooShort: too few points.") < 200  # Tune keeps 500


def test_a_retry_drops_the_failed_tries_error_tags_and_keeps_a_stoppers_reason(
    tracking_uri: str,
) -> None:
    """A retry that then finishes (or is interrupted) must not show the last try's error."""
    from sweeps.trial import _open_run

    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("trial")
    failed = tracker.start_run(experiment_id, run_name="failed")
    tracker.set_tags(failed, {"sweeps.stop_reason": "failed", "sweeps.error": "OSError()"})
    tracker.end_run(failed, "FAILED")
    stopped = tracker.start_run(experiment_id, run_name="stopped")
    tracker.set_tags(stopped, {"sweeps.stop_reason": "rising_val_loss"})
    tracker.end_run(stopped, "KILLED")

    for run_id in (failed, stopped):
        assert _open_run(tracker, None, {}, run_id) == (run_id, True)  # type: ignore[arg-type]

    tags = {run_id: tracker.get_run(run_id).data.tags for run_id in (failed, stopped)}
    assert "sweeps.error" not in tags[failed] and "sweeps.stop_reason" not in tags[failed]
    assert tags[stopped]["sweeps.stop_reason"] == "rising_val_loss"
    assert {tracker.get_run(r).info.status for r in (failed, stopped)} == {"RUNNING"}


def test_a_history_of_cancelled_epochs_only_is_diagnosed_as_no_epochs() -> None:
    """``diagnose`` refuses a history without a measured epoch; the trial must still finish
    its run (it failed while logging its tags before)."""
    from sweeps.trial import _diagnose

    history = [{"epoch": 0, "train_loss": math.nan, "valid_loss": math.nan, "cancelled": True}]
    label, reason = _diagnose(history, TrialRecord(run_id="r"), validate_spec(SPEC))
    assert label == "no_epochs" and "cancelled" in reason


def _history(train: list[float], valid: list[float]) -> list[dict[str, Any]]:
    return [
        {"epoch": i, "train_loss": t, "valid_loss": v}
        for i, (t, v) in enumerate(zip(train, valid, strict=True))
    ]


def test_a_trial_whose_first_epoch_blew_up_is_diagnosed_lr_too_high() -> None:
    """A user's lr=10 trial (Adam, digits): the first epoch's mean training loss is already
    9459, so it is no reference for an explosion; the loss before the first step (2.3) is."""
    from sweeps.trial import _diagnose

    blown = _history([9459.3, 3944.0, 3417.6, 2962.0], [24158.4, 10453.8, 4133.8, 3824.2])
    spec = validate_spec(SPEC)
    label, reason = _diagnose(blown, TrialRecord(run_id="r", start_loss=2.31), spec)
    assert label == "lr_too_high" and "before the first step" in reason
    assert _diagnose(blown, TrialRecord(run_id="r"), spec)[0] == "ok"  # what it said before
    stopped = TrialRecord(run_id="r", stop_reason="diverged")  # by the stopper, or NaN
    label, reason = _diagnose(blown[:1], stopped, spec)
    assert label == "lr_too_high" and "diverged" in reason
    healthy = _history([0.9, 0.4, 0.3], [0.5, 0.35, 0.3])  # its first epoch below the start
    assert _diagnose(healthy, TrialRecord(run_id="r", start_loss=2.31), spec)[0] != "lr_too_high"


def test_a_trial_early_stop_ended_on_a_rising_loss_is_diagnosed_overfitting() -> None:
    """A user's trial stopped after 2 rising epochs (patience 2): the rule's own 3 epochs since
    the best would have called it "ok" beside stop_reason rising_val_loss."""
    from sweeps.trial import _diagnose

    rising = _history([2.2, 1.1, 0.55, 0.31, 0.18], [2.0384, 0.9704, 0.5716, 0.872, 0.7869])
    spec = validate_spec({**SPEC, "early_stop": {"patience": 2}})
    stopped = TrialRecord(run_id="r", start_loss=2.31, stop_reason="rising_val_loss")
    label, reason = _diagnose(rising, stopped, spec)
    assert label == "overfitting" and "2 epochs ago" in reason
    completed = TrialRecord(run_id="r", start_loss=2.31, stop_reason="completed")
    assert _diagnose(rising, completed, spec)[0] == "ok"  # no stop: the rule keeps its 3


def test_a_curve_is_diagnosed_within_one_image_size() -> None:
    """A helper's trial: 2 epochs at 8 px then 1 at 16 px (valid 0.3725, 0.2566, 0.344): the
    rise is the size switch, yet it was called ``lr_too_low`` (slow over the mixed curve)."""
    from sweeps.trial import _diagnose, _one_size

    spec = validate_spec(
        {
            **SPEC,
            "task": {
                **SPEC["task"],
                "epochs": 5,
                "progressive_resizing": [{"size": 4, "epochs": 2}],
            },
        }
    )
    mixed = _history([1.9, 0.5, 0.45], [0.3725, 0.2566, 0.344])
    assert _one_size(mixed, spec) == mixed[:2]  # the full size held one epoch only
    longer = _history([1.9, 0.5, 0.45, 0.3, 0.2], [0.37, 0.26, 0.34, 0.25, 0.2])
    assert _one_size(longer, spec) == longer[2:]
    assert _one_size(mixed, validate_spec(SPEC)) == mixed  # no stages: the whole curve
    record = TrialRecord(run_id="r", start_loss=2.3, stop_reason="completed")
    assert _diagnose(mixed, record, spec)[0] != "lr_too_low"
    assert _diagnose(mixed, record, validate_spec(SPEC))[0] == "lr_too_low"  # as it said


class _ValidLossRisesAtEpoch(Callback):
    """The second epoch's validation loss comes out 10x the first's (a trial that overfits)."""

    def after_validate(self) -> None:
        if self.learn.epoch == 1:
            self.learn.metrics_values["valid_loss"] *= 10


@pytest.mark.parametrize(
    ("epochs", "reason", "epochs_run"), [(2, "completed", 2), (3, "rising_val_loss", 2)]
)
def test_a_loss_rising_at_the_last_epoch_is_no_early_stop(
    tracking_uri: str, epochs: int, reason: str, epochs_run: int
) -> None:
    """The stop rule fires after epoch 2 in both: with 2 epochs the trial ran them all."""
    spec = {
        **SPEC,
        "task": {**SPEC["task"], "epochs": epochs},
        "early_stop": {"metric": "valid_loss", "patience": 1, "grace_epochs": 0},
    }
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("trial"), run_name="rising")
    learn = _learner()
    learn.add_cb(_ValidLossRisesAtEpoch())
    reporter = _reporter(tracker, run_id, spec)
    reporter.attach(learn, reopened=False)
    learn.fit(epochs, 1.0e-3)
    reporter.finish(learn, lambda learn, record: None)
    assert len(learn.history) == epochs_run
    assert reporter.record.stop_reason == reason


def test_a_loss_blown_up_within_the_first_epoch_stops_the_trial_as_diverged(
    tracking_uri: str,
) -> None:
    """Adam at a constant 1.0: the first batch's loss is 2.58, epoch 1's mean ~80, and the later
    epochs fall back (22, 10), so no epoch was 4x a best before and the trial ran every epoch as
    ``completed``. The first batch's loss travels in the checkpoint: a restored trial replaying
    its history stops at the same epoch."""
    spec = {**SPEC, "task": {**SPEC["task"], "epochs": 3}}
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("trial"), run_name="blown")
    learn = _learner(opt="adam")
    reporter = _reporter(tracker, run_id, spec)
    reporter.attach(learn, reopened=False)
    learn.fit(3, 1.0)
    reporter.finish(learn, lambda learn, record: None)
    assert len(training_rows(learn.history)) == 1
    assert reporter.record.stop_reason == "diverged"
    start = reporter.record.start_loss
    assert start == learn.recorder.losses[0] and 2.0 < start < 3.0
    assert learn.history[0]["train_loss"] > 4 * start

    # a trial restored from that epoch's checkpoint replays it into a fresh stopper: stopped
    restored = TrialRecord.from_meta(reporter.record.to_meta(), run_id=run_id)
    assert restored.start_loss == start
    again = _learner()
    again.history = [dict(row) for row in learn.history]
    replayed = _reporter(tracker, run_id, spec, record=restored)
    replayed.attach(again, reopened=False)
    assert replayed.record.stop_reason == "diverged"


def test_a_recipe_that_stops_itself_before_its_budget_reports_its_end(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe's SGDR step stops itself (``patience``) before the arm's ``max_epochs``: no
    epoch's report was held back for the end, so the trial's last report named no end. A sweep
    restored from a Tune state that had not caught up with ``done`` (``lrsweep resume``) would
    take it for interrupted, close its FINISHED run KILLED and run it again. Its end is now a
    report of its own, with its ``stop_reason`` and the last epoch's checkpoint."""
    from sweeps.trial import BEST_MODEL_FILE, LEARNER_FILE, META_FILE

    reports: list[tuple[dict[str, Any], list[str]]] = []

    def report(metrics: dict[str, Any], *, checkpoint_dir: Path | None = None) -> None:
        files = sorted(p.name for p in Path(checkpoint_dir).iterdir()) if checkpoint_dir else []
        reports.append((dict(metrics), files))

    monkeypatch.setattr(_ray, "report", report)
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("trial"), run_name="recipe")
    spec = {**SPEC, "tracking": {**SPEC["tracking"], "checkpoint_every_s": 60}}
    reporter = _reporter(tracker, run_id, spec, recipe_budget=5)  # as train_trial builds it
    learn = _learner()
    reporter.attach(learn, reopened=False)
    learn.fit(2, 1.0e-3)  # the recipe's own stop: 2 epochs of its 5
    reporter.finish(learn, lambda learn, record: None)

    assert [r["epoch"] for r, _ in reports] == [1, 2, 2]  # each epoch's, then the end's
    assert [r["stop_reason"] for r, _ in reports] == ["", "", "completed"]
    assert all(r["own_stop_rule"] for r, _ in reports)  # the sweep's early_stop leaves it alone
    assert [files for _, files in reports] == [
        [],
        [],
        sorted([BEST_MODEL_FILE, LEARNER_FILE, META_FILE]),
    ]
    assert _checkpoint_folders() == []  # the end's checkpoint went to Tune, then was removed
    assert tracker.get_run(run_id).info.status == "FINISHED"


def test_a_finder_trial_that_fails_after_its_range_test_counts_it_in_its_compute(
    tracking_uri: str,
) -> None:
    """``lr_find_s`` is logged with the curve, so the report counts the test of a trial that
    failed before its end (it used to be logged only by a trial that finished)."""
    from sweeps.report import trial_row, with_epochs_held
    from sweeps.trial import TrialContext, _start

    spec = validate_spec(
        {**SPEC, "strategies": [{"kind": "lr_finder", "name": "finder", "num_it": 20}]}
    )
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("trial")
    parent = tracker.start_run(experiment_id, run_name="sweep")
    run_id = tracker.start_run(
        experiment_id,
        run_name="finder",
        tags={"sweeps.strategy": "lr_finder"},
        parent_run_id=parent,
    )
    context = TrialContext(spec, tracking_uri, experiment_id, parent, f"fails-{run_id}")
    config = {"strategy": "lr_finder", "arm": "finder", "seed": 0, "rule": "valley"}
    record = TrialRecord(run_id=run_id)
    _start(_learner(), tracker, context, config, spec.strategies[0], record)
    # a retry with no checkpoint yet starts again in the same run: each point is logged once
    _start(_learner(), tracker, context, config, spec.strategies[0], TrialRecord(run_id=run_id))
    assert len(tracker.metric_history(run_id, "lr_find_s")) == 1
    assert len(tracker.metric_history(run_id, "lr_find/loss")) == record.lr_find.num_it_run
    tracker.end_run(run_id, "FAILED")  # its first epoch failed, say

    run = tracker.get_run(run_id)
    assert run.data.metrics["lr_find_s"] == pytest.approx(record.lr_find_s) and record.lr_find_s > 0
    assert "compute_s" not in run.data.metrics
    row = with_epochs_held(tracker, run, trial_row(run))
    assert row.compute_s == pytest.approx(record.lr_find_s)


WARM_UP_THEN_LOG_MODEL = r"""
import json, sys
import torch
from sweeps.trial import _tracker
from trainers import build_model

tracker = _tracker(sys.argv[1])  # a worker's first trial: the client, then the warm-up
run_id = tracker.start_run(tracker.ensure_experiment("warm"), run_name="first")
model = build_model("simple_cnn", 10, in_channels=1)
before = set(sys.modules)
tracker.log_pytorch_model(run_id, model, torch.zeros(2, 1, 8, 8))
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_a_workers_warm_up_imports_what_its_first_logged_model_needs(tmp_path: Path) -> None:
    """The first ``log_model`` in a fresh worker imports nothing heavy of its own (MLflow's
    pyfunc and scoring server, GitPython, the tracing processors, torch's dynamo): the warm-up
    paid for them before the first trial's run opened, so no trial's run carries them."""
    imported = run_script(WARM_UP_THEN_LOG_MODEL, f"sqlite:///{tmp_path / 'mlflow.db'}")
    heavy = ("mlflow.pyfunc", "mlflow.pytorch", "mlflow.tracing.processor", "git", "torch._dynamo")
    late = [m for m in imported if any(m == h or m.startswith(f"{h}.") for h in heavy)]
    assert late == []


WARNING_AFTER_WARM_UP = """
import logging, sys
from sweeps import _ray, trial
if sys.argv[1] == "warm-up-first":  # a worker whose first trial imported mlflow.pytorch already
    trial._warm_up()
_ray.quiet_trial_logs()  # what every trial does first
trial._warm_up()
logging.getLogger("sweeps._retry").warning("MLflow log_artifacts failed; retrying")
"""


@pytest.mark.parametrize("order", ["trial-first", "warm-up-first"])
def test_a_trials_warnings_survive_mlflow_pytorchs_logging_setup(order: str) -> None:
    """``import mlflow.pytorch`` runs ``logging.basicConfig(level=ERROR)``: a trial worker's
    every warning was dropped, so an MLflow server gone for minutes was retried in silence."""
    import os
    import subprocess
    import sys

    from _cli_helpers import REPO

    done = subprocess.run(
        [sys.executable, "-c", WARNING_AFTER_WARM_UP, order],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # MLflow's own basicConfig format where it ran first: WARNING:sweeps._retry:...
    assert re.search(r"WARNING.sweeps\._retry.( )?MLflow log_artifacts failed", done.stderr)


def test_the_logged_models_files_are_the_datas_and_a_gap_in_them_fails_no_trial(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    import torch

    from sweeps.predictor import EXPORT_FILE, predictor_files
    from trainers import load_learner

    dls = make_dataloaders("shapes", image_size=8, batch_size=8, seed=0, n_per_class=4)
    learn = Learner(build_model("simple_cnn", 3), dls)
    metadata, files = predictor_files(learn, tmp_path)
    fields = metadata["predictor"]  # type: ignore[index]
    assert fields["classes"] == list(dls.classes) and fields["image_size"] == 8
    assert fields["mean"] == pytest.approx(list(dls.mean)) and fields["in_channels"] == 3
    assert files == [tmp_path / EXPORT_FILE]
    exported = load_learner(files[0], device="cpu")  # weights only
    assert exported.classes == list(dls.classes)
    for name, weights in learn.model.state_dict().items():
        assert torch.equal(exported.model.state_dict()[name], weights), name
    dls.mean = None  # data no statistics describe: the model is logged without either
    with caplog.at_level("WARNING", logger="sweeps.predictor"):
        assert predictor_files(learn, tmp_path / "none") == (None, [])
    assert "the logged model holds no weights-only export: export needs the data's ['mean']" in (
        caplog.text
    )


@pytest.mark.parametrize(
    ("damaged", "named"),
    [
        ("trial.json", "trial checkpoint file '.*trial.json' cannot be read"),
        ("best_model.pt", "trial checkpoint's best model file '.*best_model.pt' cannot be read"),
        ("learner.pt", "checkpoint file '.*learner.pt' cannot be read"),
    ],
)
def test_a_damaged_tune_checkpoint_names_its_file(damaged: str, named: str) -> None:
    """A retried trial restores its Tune checkpoint; a file of it cut short (a full disk)
    failed the trial with json's or torch's own error, which named no file."""
    from sweeps.trial import _checkpointer, _restore

    learn = _learner()
    folder = _checkpointer(TrialRecord(run_id="r"))(learn, learn.model.state_dict())
    file = folder / damaged
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(ValueError, match=named):
        _restore(_learner(), folder, validate_spec(SPEC).task)
