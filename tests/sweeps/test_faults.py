"""Issue 8's faults, each caused for real: real ``lrsweep`` processes, a real local Ray, real
MLflow stores and a real ``mlflow server``. Only the moment of each fault is chosen by the test.

- Ctrl-C (SIGINT) on ``lrsweep run``, then SIGKILL of the driver during ``lrsweep resume``, then
  a second ``lrsweep resume``: runs closed KILLED (exit 130), nothing re-run or logged twice,
  the parent run reused, the Optuna arm keeps its number of distinct trials, and the arm with a
  huge learning rate ends ``diverged`` while the sweep carries on (one chain: ~2 min on 2 CPUs).
- The MLflow server stopped for ~20 s mid-sweep and restarted on the same port: training goes
  on, metric points are buffered and re-sent, and every point is on the server at the end.
- An unwritable artifact location or too little free disk: refused before anything is created.

A worker SIGKILLed mid-trial (fault 1) is ``test_run_sweep.py``'s
``test_killed_worker_resumes_in_the_same_run_with_every_epoch_once``; SIGTERM is
``test_sigterm_killed.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from _server_helpers import CLI, clean_env, free_port, stop
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.progress import SweepProgress
from sweeps.run import run_sweep
from sweeps.tracking import HTTP_RETRIES_ENV, MIN_FREE_MB_ENV, Tracker, default_tracking_uri

pytestmark = pytest.mark.slow

EPOCHS = 5  # enough that a trial is mid-training when the signal lands
RESUME_SPEC: dict[str, Any] = {
    "name": "faults-resume",
    "task": {
        "dataset": {"name": "digits"},
        "image_size": 8,
        "batch_size": 16,
        "epochs": 20,  # lowered to EPOCHS with --set, as a person would
        "schedule": {"kind": "constant"},
    },
    "seeds": [0],
    "strategies": [
        {"kind": "fixed", "name": "blowup", "lr": 1.0e4},
        {"kind": "grid", "lr": {"min": 1.0e-3, "max": 3.0e-3, "points": 2}},
        {"kind": "optuna", "lr": {"min": 1.0e-4, "max": 1.0e-2}, "trials": 2, "sampler": "tpe"},
    ],
    "early_stop": None,
    "resources": {"cpu": 1},
    "failure": {"max_failures": 1},
    # the tests watch a trial's first epoch land in MLflow and resume from epoch checkpoints
    "tracking": {"checkpoints": "best", "flush_every_s": 0, "checkpoint_every_s": 0},
}
ARMS = {"blowup": 1, "grid": 2, "optuna": 2}


# --- helpers -------------------------------------------------------------------------------


def _start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """``lrsweep ARGS`` in its own process group (so the test can clean up all of it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", CLI, *args],
            cwd=cwd,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _children(tracker: Tracker, name: str) -> list[Any]:
    found = tracker.client.get_experiment_by_name(name)
    runs = tracker.search_runs(found.experiment_id) if found else []
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def _wait(
    proc: subprocess.Popen, log: Path, what: str, ready: Callable[[], bool], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"ended before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} in {timeout_s}s:\n{log.read_text()[-4000:]}"
        time.sleep(0.3)


def _steps(tracker: Tracker, run_id: str, key: str) -> list[int]:
    return [step for step, _ in tracker.metric_history(run_id, key)]


def _has_checkpoint(storage: Path, trial_id: str) -> bool:
    return any(storage.glob(f"**/*{trial_id}*/checkpoint_*"))


# --- Ctrl-C, driver SIGKILL, resume, divergence ---------------------------------------------


def _interrupt_with_ctrl_c(tmp_path: Path, tracker: Tracker, log: Path) -> str:
    """``lrsweep run``, SIGINT once a running trial has finished an epoch; returns the parent id.

    A trial that is still RUNNING must be the one logging (the ``blowup`` arm diverges and
    finishes in its first epoch), so the signal lands mid-trial and that trial ends KILLED.
    """
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(RESUME_SPEC), encoding="utf-8")
    proc = _start(["run", str(spec), "--set", f"task.epochs={EPOCHS}"], tmp_path, log)
    try:
        epoch_logged = lambda: any(  # noqa: E731
            "valid_loss" in r.data.metrics and r.info.status == "RUNNING"
            for r in _children(tracker, "faults-resume")
        )
        _wait(proc, log, "first epoch", epoch_logged, timeout_s=240)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=180) == 130, log.read_text()[-4000:]
    finally:
        _kill_group(proc)
    assert "lrsweep resume faults-resume" in log.read_text()
    assert "Tuner.restore" not in log.read_text()  # Tune's advice: it reopens no MLflow run
    runs = tracker.search_runs(tracker.experiment_id("faults-resume"))
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
    assert "RUNNING" not in {r.info.status for r in runs}
    assert "KILLED" in {r.info.status for r in _children(tracker, "faults-resume")}
    return parent.info.run_id


def _kill_driver_mid_resume(tmp_path: Path, tracker: Tracker, log: Path) -> dict[str, int]:
    """``lrsweep resume``; SIGKILL it once a trial finished in it and another checkpointed.

    Returns the end times of the trials finished before the kill.
    """
    runs = _children(tracker, "faults-resume")
    before = {r.info.run_id for r in runs}
    done_before = {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    storage = tmp_path / ".lrsweep" / "ray_results"
    proc = _start(["resume", "faults-resume"], tmp_path, log)

    def finished_and_checkpointed() -> bool:
        runs = _children(tracker, "faults-resume")
        finished = [r for r in runs if r.info.status == "FINISHED"]
        running = [
            r
            for r in runs
            if r.info.status == "RUNNING"
            and "valid_loss" in r.data.metrics
            and _has_checkpoint(storage, r.data.tags["sweeps.trial_id"])
        ]
        return bool({r.info.run_id for r in finished} - done_before) and bool(running)

    try:
        _wait(proc, log, "a finished and a checkpointed trial", finished_and_checkpointed, 240)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _kill_group(proc)  # the local Ray that driver started goes with it
    runs = _children(tracker, "faults-resume")
    assert before <= {r.info.run_id for r in runs}
    return {r.info.run_id: r.info.end_time for r in runs if r.info.status == "FINISHED"}


def _report_text(tmp_path: Path) -> str:
    """What ``lrsweep report faults-resume`` prints, its lines joined (rich wraps them)."""
    uri = default_tracking_uri(tmp_path)
    result = CliRunner().invoke(app, ["report", "faults-resume", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_ctrl_c_then_driver_kill_then_resume_repeats_and_loses_nothing(tmp_path: Path) -> None:
    tracker = Tracker(default_tracking_uri(tmp_path))
    log = tmp_path / "sweep.log"
    parent_id = _interrupt_with_ctrl_c(tmp_path, tracker, log)
    assert "Incomplete: this sweep was interrupted" in _report_text(tmp_path)
    # the exact command: the sweep ran in tmp_path's default storage, the report is read here
    storage = (tmp_path / ".lrsweep" / "ray_results").resolve()
    resume = f"`lrsweep resume faults-resume --storage-path {shlex.quote(str(storage))} "
    assert resume in _report_text(tmp_path)
    finished_before = _kill_driver_mid_resume(tmp_path, tracker, log)
    assert finished_before

    proc = _start(["resume", "faults-resume"], tmp_path, log)
    try:
        assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        _kill_group(proc)

    runs = tracker.search_runs(tracker.experiment_id("faults-resume"))
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert (parent.info.run_id, parent.info.status) == (parent_id, "FINISHED")
    assert "Incomplete" not in _report_text(tmp_path)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(children) == len(runs) - 1  # every trial under the one parent
    assert {r.info.status for r in children} == {"FINISHED"}
    per_arm = {arm: [r for r in children if r.data.tags["sweeps.arm"] == arm] for arm in ARMS}
    assert {arm: len(found) for arm, found in per_arm.items()} == ARMS
    assert len({r.data.tags["sweeps.trial_id"] for r in children}) == len(children)
    optuna_lrs = {float(r.data.params["lr"]) for r in per_arm["optuna"]}
    assert len(optuna_lrs) == ARMS["optuna"]  # the restored study did not suggest again
    for run in children:
        assert finished_before.get(run.info.run_id, run.info.end_time) == run.info.end_time
        epochs_run = int(run.data.metrics["epochs_run"])
        assert _steps(tracker, run.info.run_id, "valid_loss") == list(range(epochs_run))
        steps = _steps(tracker, run.info.run_id, "train_loss")
        assert steps == list(range(len(steps))), run.info.run_name
    (blowup,) = per_arm["blowup"]
    assert blowup.data.tags["sweeps.stop_reason"] == "diverged"
    for run in per_arm["grid"] + per_arm["optuna"]:
        assert run.data.tags["sweeps.stop_reason"] == "completed"
        assert int(run.data.metrics["epochs_run"]) == EPOCHS
    report = tracker.download_artifact(parent_id, "report.md", tmp_path / "report")
    assert "diverged" in report.read_text(encoding="utf-8")


# --- the MLflow server goes away --------------------------------------------------------------

OUTAGE_S = 20.0
RESTART_S = 12.0  # how long `lrsweep server` takes to answer again on 2 busy CPUs


def _server(root: Path, port: int, log: Path) -> subprocess.Popen:
    """``lrsweep server`` on a SQLite store under ``root``, answering on ``port``."""
    args = ["server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}"]
    args += ["--artifacts-destination", str(root / "artifacts"), "--port", str(port)]
    before = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
    proc = _start([*args, "--workers", "1"], root, log)
    serving = f"MLflow is serving at http://127.0.0.1:{port}".encode()
    _wait(proc, log, "server", lambda: serving in log.read_bytes()[before:], 120)
    return proc


class _Outage(threading.Thread):
    """Stops the server once the trial has logged an epoch, restarts it ``OUTAGE_S`` later."""

    def __init__(self, root: Path, port: int, tracker: Tracker) -> None:
        super().__init__(daemon=True)
        self.root, self.port, self.tracker = root, port, tracker
        self.log = root / "server.log"
        self.server = _server(root, port, self.log)
        self.down_ms = self.up_ms = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not any(
                "valid_loss" in r.data.metrics for r in _children(self.tracker, "outage")
            ):
                time.sleep(0.2)
            # the server stops answering when it gets the signal; stopping it may take seconds
            self.down_ms = int(time.time() * 1000)
            stop(self.server)
            time.sleep(OUTAGE_S - RESTART_S)
            self.server = _server(self.root, self.port, self.log)
            self.up_ms = int(time.time() * 1000)
        except BaseException as error:  # reported by the test
            self.error = error


def test_mlflow_server_outage_mid_sweep_loses_no_metric_point(
    tmp_path: Path, ray_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HTTP_RETRIES_ENV, "1")  # what lrsweep sets; restored after the test
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    tracker = Tracker(uri)
    outage = _Outage(tmp_path, port, Tracker(uri))
    spec = {
        **RESUME_SPEC,
        "name": "outage",
        # 0.5-1.5 s epochs: the first ends before the outage, many during it; the last ones
        # may end before the server is back, and their points wait in the buffer for it
        "task": {**RESUME_SPEC["task"], "epochs": 30, "batch_size": 8},
        "strategies": [{"kind": "fixed", "lr": 1.0e-3}],
    }
    try:
        outage.start()
        result = run_sweep(
            spec, tracking_uri=uri, storage_path=tmp_path / "ray", progress=SweepProgress()
        )
        outage.join(timeout=120)
        assert outage.error is None and outage.up_ms > outage.down_ms > 0, outage.error
        assert result.report is not None and not result.all_failed
        (run,) = tracker.child_runs(result.experiment_id, result.parent_run_id)
        history = {
            key: tracker.client.get_metric_history(run.info.run_id, key)
            for key in ("valid_loss", "train_loss", "lr")
        }
    finally:
        stop(outage.server)
    assert (run.info.status, run.data.tags["sweeps.stop_reason"]) == ("FINISHED", "completed")
    assert sorted(m.step for m in history["valid_loss"]) == list(range(30))
    for key in ("train_loss", "lr"):
        steps = sorted(m.step for m in history[key])
        assert steps == list(range(len(steps))) and len(steps) % 30 == 0, key
    during = [m for m in history["valid_loss"] if outage.down_ms < m.timestamp < outage.up_ms]
    ends = sorted((m.step, m.timestamp - outage.down_ms) for m in history["valid_loss"])
    window = f"0 to {outage.up_ms - outage.down_ms} ms"
    assert during, f"no epoch ended in the outage ({window}); (epoch, end in ms): {ends}"


# --- unwritable or full artifact location ----------------------------------------------------


def _refused(tmp_path: Path, *args: str) -> Any:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(RESUME_SPEC), encoding="utf-8")
    return CliRunner().invoke(app, ["run", str(spec), *args])


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            "tracking",
            "The SQLite store's folder {blocker}/mlflow cannot be created: {blocker} is a file, "
            "not a folder. Move that file away",
        ),
        (
            "storage",
            "Ray's checkpoint folder (storage.path) {blocker}/ray cannot be created: {blocker} "
            "is a file",
        ),
        ("disk-full", "MB are needed for checkpoints and reports"),
    ],
)
def test_unwritable_or_full_artifact_location_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "a-file"  # a folder below a file: unwritable even for root
    blocker.write_text("not a folder", encoding="utf-8")
    args = ["--tracking-uri", default_tracking_uri(tmp_path)]
    if where == "tracking":
        args = ["--tracking-uri", f"sqlite:///{blocker}/mlflow/mlflow.db"]
    elif where == "storage":
        args += ["--set", f"storage.path={blocker}/ray"]
    else:
        monkeypatch.setenv(MIN_FREE_MB_ENV, str(10**12))  # more than any disk has free
    result = _refused(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert message.format(blocker=blocker) in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / ".lrsweep" / "ray_results").exists()
    assert not (tmp_path / ".lrsweep" / "mlflow.db").exists()  # no store, so no run


# --- every trial fails ------------------------------------------------------------------------


class _Payload:
    """Unpickling this would run code: weights that must never load."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').write('pwned')"

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


def test_weights_that_would_run_code_are_refused_before_any_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preflight loads task.model.pretrained as the trials would: before, every trial
    refused it and was retried max_failures times after the runs were created."""
    import torch

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "marker"
    torch.save(_Payload(marker), tmp_path / "evil.pt")
    spec = tmp_path / "spec.yaml"
    data = {**RESUME_SPEC, "name": "evil-weights"}
    data["task"] = {**RESUME_SPEC["task"], "model": {"pretrained": str(tmp_path / "evil.pt")}}
    spec.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(spec), "--set", "task.epochs=1"])
    assert result.exit_code == 2, result.output
    stderr = " ".join(result.stderr.split())
    assert "task.model.pretrained: the trials could not load" in stderr, stderr
    assert "evil.pt" in stderr and "weights_only=True" in stderr, stderr
    assert "Traceback" not in result.output
    assert not marker.exists()
    assert not (tmp_path / ".lrsweep" / "mlflow.db").exists()  # no store, so no run
    checked = CliRunner().invoke(app, ["validate", str(spec)])  # it passed them, exit 0
    assert checked.exit_code == 2 and "evil.pt" in checked.stderr, checked.output
    assert not marker.exists()


def test_a_sweep_whose_every_trial_fails_exits_1_naming_the_error(
    tmp_path: Path, ray_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range test that diverges at once (it starts at lr 1): no rule can read its two points,
    which no check before the sweep can know, so every trial of the finder arm fails."""
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    finder = {"kind": "lr_finder", "suggest": ["valley", "steep"], "start_lr": 1.0}
    finder |= {"end_lr": 1000.0, "num_it": 30}
    data = {**RESUME_SPEC, "name": "all-fail", "strategies": [finder]}
    data["failure"] = {"max_failures": 0}
    data["early_stop"] = {"patience": 2}  # and 1 epoch: valid, but it can never stop a trial
    spec.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(spec), "--set", "task.epochs=1"])
    assert result.exit_code == 1, result.output
    stderr = " ".join(result.stderr.split())
    inert = "early_stop can never stop a trial: it needs more than 3 epochs"
    assert f"Note: {inert}" in stderr  # a note, as validate prints it
    assert "every trial of sweep" in stderr and "failed" in stderr, stderr
    for rule in ("valley", "steep"):
        assert f"CurveTooShort: Suggestion rule '{rule}' needs at least" in stderr, stderr
    assert "the loss diverged after 2 of num_it=30 iterations" in stderr, stderr
    assert "lrsweep resume all-fail" in stderr
    assert f"lrsweep run {spec} --set task.epochs=1" in stderr, stderr  # a cause in the spec
    tracker = Tracker(default_tracking_uri(tmp_path))
    runs = tracker.search_runs(tracker.experiment_id("all-fail"))
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED" and "CurveTooShort" in parent.data.tags["sweeps.error"]
    assert {r.info.status for r in runs if r is not parent} <= {"FAILED"}
    # its run holds a report that says why (the MLflow UI showed only spec.yaml)
    assert {"report.md", "report.html"} <= set(tracker.list_artifacts(parent.info.run_id))
    report = tracker.download_artifact(parent.info.run_id, "report.md", tmp_path / "dl")
    text = report.read_text(encoding="utf-8")
    assert "Failed: this sweep's run is FAILED (" in text and "): CurveTooShort: " in text, text

    # the failed sweep waits in Ray's storage for a resume; `lrsweep clean` lists it, keeps it
    # while it is recent, and deletes it only with --yes
    (sweep_dir,) = (tmp_path / ".lrsweep" / "ray_results" / "all-fail").iterdir()
    listed = CliRunner().invoke(app, ["clean"])
    assert listed.exit_code == 0, listed.output
    assert f"all-fail  {sweep_dir.name}  resumable" in listed.output, listed.output
    assert "Nothing to delete: every sweep is running or changed within 7 days." in listed.output
    dry = CliRunner().invoke(app, ["clean", "all-fail", "--older-than", "0"])
    assert dry.exit_code == 0 and "lrsweep clean all-fail --older-than 0 --yes" in dry.output
    assert sweep_dir.is_dir()
    gone = CliRunner().invoke(app, ["clean", "all-fail", "--older-than", "0", "--yes"])
    assert gone.exit_code == 0, gone.output
    assert "Deleted 1 sweep folder" in gone.output and "1 of them can no longer be resumed" in (
        gone.output
    )
    assert "(tagged on 1 of their sweep runs: sweeps.resumable=false)" in gone.output
    assert not (tmp_path / ".lrsweep" / "ray_results" / "all-fail").exists()
    again = CliRunner().invoke(app, ["resume", "all-fail"])
    assert again.exit_code == 2 and "has no sweep to resume" in again.stderr
    assert len(tracker.search_runs(tracker.experiment_id("all-fail"))) == len(runs)  # MLflow kept
    # its run says so, and the report stops offering the resume that answered "no sweep"
    tags = tracker.get_run(parent.info.run_id).data.tags
    assert tags["sweeps.resumable"] == "false" and tags["sweeps.cleaned"].endswith(" UTC")
    shown = CliRunner().invoke(app, ["report", "all-fail"])
    assert shown.exit_code == 0, shown.output
    said = " ".join(shown.output.split())
    assert "was deleted by `lrsweep clean` (" in said and "so it cannot be resumed" in said, said
    assert "lrsweep resume" not in said, said


def test_a_range_test_too_short_for_its_rule_is_not_run_again_on_retry(
    tmp_path: Path, ray_cluster: None
) -> None:
    """A range test from LR 1e3 blows up on its second step: ``valley`` has too few points.
    The same seed fails the same way, so the max_failures retries raise the first attempt's
    error at once instead of running the range test again; the other arm is unharmed."""
    data = {
        **RESUME_SPEC,
        "name": "too-short",
        "task": {**RESUME_SPEC["task"], "epochs": 1},
        "strategies": [
            {
                "kind": "lr_finder",
                "suggest": ["valley"],
                "num_it": 10,
                "start_lr": 1e3,
                "end_lr": 1e6,
            },
            {"kind": "fixed", "name": "steady", "lr": 1e-3},
        ],
        "failure": {"max_failures": 2},
    }
    result = _failed_for_good_once(data, tmp_path, arm="lr_finder")
    assert [o.status for o in result.trials["steady"]] == ["TERMINATED"]
    # the test ran: its curve, its seconds and its figure are on the run (were missing)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = [r for r in _children(tracker, "too-short") if r.data.params.get("arm") == "lr_finder"]
    assert run.data.metrics["lr_find_s"] > 0
    assert 2 <= len(tracker.metric_history(run.info.run_id, "lr_find/lr")) < 10
    assert "lr_find.png" in tracker.list_artifacts(run.info.run_id)
    assert result.report is not None and result.report.group("steady").n_seeds == 1
    # a resume would fail that trial again: the sweep is closed finished, its checkpoints gone,
    # and the report says to run it again, not to resume it
    assert not result.resumable
    assert json.loads((result.sweep_dir / "sweep.json").read_text())["finished"] is True
    assert list(result.sweep_dir.rglob("checkpoint_*")) == []
    parent = tracker.get_run(result.parent_run_id)
    assert parent.data.tags["sweeps.resumable"] == "false"
    note = result.report.status_note
    assert note.startswith("Partly failed: 1 of 2 trial runs failed (the first error: ")
    assert "lrsweep resume" not in note and "run the sweep again" in note, note


def _failed_for_good_once(data: dict[str, Any], tmp_path: Path, *, arm: str) -> Any:
    """Run the sweep; ``arm``'s one trial errors with ``CurveTooShort``, its retries say "not
    retried", and they reuse the first attempt's run, left FAILED and tagged."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_sweep(
        data, tracking_uri=uri, storage_path=tmp_path / "ray", progress=SweepProgress(live=False)
    )
    (trial,) = result.trials[arm]
    assert trial.status == "ERROR"
    assert "CurveTooShort" in (trial.error or "") and "not retried" in (trial.error or "")
    runs = _children(Tracker(uri), data["name"])
    (run,) = [r for r in runs if r.data.params.get("arm") == arm]
    assert run.info.status == "FAILED"
    assert run.data.tags["sweeps.failed_for_good"].startswith("CurveTooShort: ")
    return result


def test_a_recipe_whose_range_test_is_too_short_is_not_run_again_on_retry(
    tmp_path: Path, ray_cluster: None
) -> None:
    """``fit_recipe``'s own range test: weights that saturate the logits (a head at 3e38, as a
    damaged pretrained file can hold) make its first loss non-finite, so ``valley`` has no
    points. The retry raises that error at once instead of running the recipe again."""
    import torch

    from trainers import build_model

    weights = build_model("simple_cnn", 10, in_channels=1).state_dict()
    weights["head.4.weight"].fill_(3e38)
    torch.save(weights, tmp_path / "saturated.pt")
    data = {
        **RESUME_SPEC,
        "name": "recipe-too-short",
        "task": {
            **RESUME_SPEC["task"],
            "epochs": 4,
            "model": {"arch": "simple_cnn", "pretrained": str(tmp_path / "saturated.pt")},
        },
        "strategies": [{"kind": "recipe", "max_epochs": 4}],
        "failure": {"max_failures": 2},
    }
    _failed_for_good_once(data, tmp_path, arm="recipe")


# --- Ctrl-C on a night ------------------------------------------------------------------------

NIGHT_SPEC: dict[str, Any] = {
    **RESUME_SPEC,
    "name": "faults-night",
    "task": {**RESUME_SPEC["task"], "epochs": 30},  # still training when the signal lands
    "strategies": [{"kind": "fixed", "lr": 1.0e-3}],
    "tracking": {"checkpoints": "none", "flush_every_s": 0},
}


def test_ctrl_c_to_a_night_mid_sweep_closes_the_night_killed_with_the_signal_and_exits_3(
    tmp_path: Path,
) -> None:
    """SIGINT to the process group of ``lrsweep nightly`` (a terminal's Ctrl-C, ``timeout
    -s INT``) while a sweep trains: the sweep closes its runs KILLED and returns, and the night
    ends as interrupted (run KILLED, the signal and the entries not run in its reason), not as a
    night that ran and found its figures missing (it was closed FINISHED, its report listing
    every figure of the interrupted entry as a regression)."""
    suite = tmp_path / "suite.yaml"
    entries = [{"name": name, "spec": dict(NIGHT_SPEC)} for name in ("first", "second")]
    suite.write_text(json.dumps({"name": "faults", "entries": entries}), encoding="utf-8")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    log = tmp_path / "night.log"
    report_dir = tmp_path / "report"
    args = ["nightly", str(suite), "--tracking-uri", uri, "--report-dir", str(report_dir)]
    proc = _start(args, tmp_path, log)
    try:
        epoch_logged = lambda: any(  # noqa: E731
            "valid_loss" in r.data.metrics and r.info.status == "RUNNING"
            for r in _children(tracker, "nightly/faults/first")
        )
        _wait(proc, log, "first epoch", epoch_logged, timeout_s=240)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=180) == 3, log.read_text()[-4000:]
    finally:
        _kill_group(proc)
    (night,) = tracker.search_runs(tracker.experiment_id("nightly/faults"))
    assert night.info.status == "KILLED", log.read_text()[-4000:]
    assert night.data.tags["nightly.status"] == "failed"
    reason = night.data.tags["nightly.failure_reason"]
    assert "interrupted (SIGINT) during the sweep of entry first" in reason, reason
    assert "entries not run: second" in reason, reason
    assert {r.info.status for r in _children(tracker, "nightly/faults/first")} == {"KILLED"}
    assert _children(tracker, "nightly/faults/second") == []
    report = (report_dir / "nightly-report.md").read_text(encoding="utf-8")
    assert "interrupted (SIGINT)" in report and "missing tonight" not in report
    # the night never reached its comparison; "no earlier completed night" would be untrue
    assert "Baseline: not compared: the night ended before its figures were compared" in report
