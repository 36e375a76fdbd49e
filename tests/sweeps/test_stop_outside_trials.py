"""Ctrl-C or SIGTERM while ``lrsweep run`` makes the report of a sweep whose trials all
finished: the parent run ends KILLED, the command says how to continue (exit 130, or 143 for
SIGTERM), and that command makes the report. Ctrl-C ended it KILLED with exit 130 and no word of
what to do; SIGTERM met Ray's own handler (``sys.exit(15)``, the trials' ``catching`` over) and
ended the sweep as a failed report, exit 15. The same for a stop while Ray starts and between
the stretches that guard themselves (the parent run left RUNNING there)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _server_helpers import CLI, clean_env, endless_sweep_spec

from sweeps.tracking import Tracker, default_tracking_uri

pytestmark = pytest.mark.slow

NAME = "ctrl-c-report"
SPEC = endless_sweep_spec(NAME, [{"kind": "fixed", "lr": 0.001}])
SPEC["task"]["epochs"] = 1
# The real signal, sent by the process to itself right before the named function of
# ``module`` runs, the first time only (the only moment the test chooses): ``sweeps.run``, or
# ``sweeps._closing`` for what closes the sweep (its report among it).
SIGNAL_BEFORE = """
import importlib, os, signal
module = importlib.import_module({module!r})
real = getattr(module, {where!r})
fired = []
def signal_first(*args, **kwargs):
    if not fired:
        fired.append(True)
        os.kill(os.getpid(), signal.{sent})
    return real(*args, **kwargs)
setattr(module, {where!r}, signal_first)
"""


def _lrsweep(
    tmp_path: Path, *args: str, code: str = "", sigint_ignored: bool = False
) -> subprocess.CompletedProcess:
    """``sigint_ignored``: started as a script's ``&`` job is, with SIGINT ignored."""
    return subprocess.run(
        [sys.executable, "-c", code + CLI, *args],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        if sigint_ignored
        else None,
    )


@pytest.mark.parametrize(("sent", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_during_the_report_says_how_to_resume_and_resume_makes_the_report(
    tmp_path: Path, sent: str, status: int
) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    code = SIGNAL_BEFORE.format(module="sweeps._closing", where="build_report", sent=sent)
    stopped = _lrsweep(tmp_path, "run", str(spec_file), code=code)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == status, output[-3000:]
    assert f"lrsweep resume {NAME}" in output and "Traceback" not in output, output[-3000:]
    tracker = Tracker(default_tracking_uri(tmp_path))
    runs = tracker.search_runs(tracker.experiment_id(NAME))
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert parent.info.status == "KILLED", output[-3000:]
    assert "sweeps.error" not in parent.data.tags, parent.data.tags["sweeps.error"]
    assert {run.info.status for run in runs if run is not parent} == {"FINISHED"}

    resumed = _lrsweep(tmp_path, "resume", NAME)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    parent = tracker.client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    assert "report.md" in {item.path for item in tracker.client.list_artifacts(parent.info.run_id)}
    assert "LR finder vs search" in resumed.stdout


# SIGTERM while Ray starts (seconds, the parent run already made): before Ray's own handler is
# installed (the sweep's), and after (``ray.init`` installs ``sys.exit(15)`` at its start).
SIGTERM_IN_RAY_START = """
import os, signal
from sweeps import _ray
start_ray = _ray.init_ray
def start_ray_with_sigterm(*args, **kwargs):
    if {after}:
        start_ray(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    start_ray(*args, **kwargs)
_ray.init_ray = start_ray_with_sigterm
"""


@pytest.mark.parametrize("after", [False, True], ids=["before-ray-handler", "after-ray-handler"])
def test_sigterm_while_ray_starts_closes_the_parent_killed_and_exits_143(
    tmp_path: Path, after: bool
) -> None:
    """Python's default SIGTERM ended the driver at once (the parent run left RUNNING), or Ray's
    ended it with status 15 and the parent run FAILED."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    code = SIGTERM_IN_RAY_START.format(after=after)
    stopped = _lrsweep(tmp_path, "run", str(spec_file), code=code)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 143, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    tracker = Tracker(default_tracking_uri(tmp_path))
    (parent,) = tracker.search_runs(tracker.experiment_id(NAME))
    assert parent.info.status == "KILLED", output[-3000:]


SIGINT_IN_RAY_START = """
import os, signal
from sweeps import _ray
start_ray = _ray.init_ray
def start_ray_with_sigint(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    start_ray(*args, **kwargs)
_ray.init_ray = start_ray_with_sigint
"""


@pytest.mark.parametrize("command", ["run", "nightly"])
def test_ctrl_c_while_ray_starts_stops_a_command_started_with_sigint_ignored(
    tmp_path: Path, command: str
) -> None:
    """A script's ``&`` job starts with SIGINT ignored: the signal did nothing while Ray
    started (the sweep, or the night, ran on and passed, exit 0), yet stopped it a few seconds
    later once Ray Tune had set its own handler."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    args = ["run", str(spec_file)]
    if command == "nightly":
        suite = {"name": "ignored-sigint", "entries": [{"name": "e", "spec_path": str(spec_file)}]}
        (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
        args = ["nightly", str(tmp_path / "suite.yaml"), "--report-dir", str(tmp_path / "rep")]
    stopped = _lrsweep(tmp_path, *args, code=SIGINT_IN_RAY_START, sigint_ignored=True)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == (130 if command == "run" else 3), output[-3000:]
    tracker = Tracker(default_tracking_uri(tmp_path))
    experiments = (
        [NAME] if command == "run" else ["nightly/ignored-sigint/e", "nightly/ignored-sigint"]
    )
    for experiment in experiments:  # the sweep's runs, and the night's
        runs = tracker.search_runs(tracker.experiment_id(experiment))
        assert {run.info.status for run in runs} == {"KILLED"}, (experiment, output[-3000:])
    if command == "nightly":
        assert "FAILED" in (tmp_path / "rep" / "nightly-report.md").read_text()


# A stop between the stretches that guard themselves (Ray's start, the trials, the closing).
def _stopped_sweep_runs(tmp_path: Path, output: str) -> list:
    """The sweep's runs, asserting that none is RUNNING and that the parent is KILLED."""
    tracker = Tracker(default_tracking_uri(tmp_path))
    runs = tracker.search_runs(tracker.experiment_id(NAME))
    assert "RUNNING" not in {run.info.status for run in runs}, output[-3000:]
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert parent.info.status == "KILLED", output[-3000:]
    return runs


@pytest.mark.parametrize(
    ("where", "sent", "status"),
    [
        ("_write_state", "SIGTERM", 143),  # the parent run just made, Ray not started
        ("_by_arm", "SIGTERM", 143),  # the trials done, the closing not begun
        ("_by_arm", "SIGINT", 130),
    ],
    ids=["writing-state", "trials-done", "trials-done-ctrl-c"],
)
def test_a_stop_between_a_sweeps_stretches_leaves_nothing_running(
    tmp_path: Path, where: str, sent: str, status: int
) -> None:
    """Python's default SIGTERM ended the driver there at once, and Ctrl-C raised past the
    closing: the parent run left RUNNING."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    code = SIGNAL_BEFORE.format(module="sweeps.run", where=where, sent=sent)
    stopped = _lrsweep(tmp_path, "run", str(spec_file), code=code)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == status, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    _stopped_sweep_runs(tmp_path, output)
    if where == "_write_state":  # stopped before sweep.json: nothing to resume
        assert "lrsweep resume" not in output, output[-3000:]
        return
    assert f"lrsweep resume {NAME}" in output, output[-3000:]
    # resuming from here (trials FINISHED, parent KILLED): the report-stop test above checks it


def test_sigterm_once_ray_started_or_as_a_resume_reopens_the_parent_closes_it_killed(
    tmp_path: Path,
) -> None:
    """SIGTERM once Ray has started, before the trials; then as ``lrsweep resume`` has marked
    the parent run RUNNING again, before Ray starts. Both ended the driver with the parent run
    left RUNNING. The sweep resumes to its end after both."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    code = SIGNAL_BEFORE.format(module="sweeps.run", where="Interrupts", sent="SIGTERM")
    stopped = _lrsweep(tmp_path, "run", str(spec_file), code=code)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 143, output[-3000:]
    assert "Traceback" not in output and f"lrsweep resume {NAME}" in output, output[-3000:]
    assert len(_stopped_sweep_runs(tmp_path, output)) == 1  # no trial began
    reopened = """
import os, signal
from sweeps.tracking import Tracker
reopen = Tracker.reopen_run
def reopen_then_sigterm(self, run_id):
    reopen(self, run_id)
    os.kill(os.getpid(), signal.SIGTERM)
Tracker.reopen_run = reopen_then_sigterm
"""
    stopped = _lrsweep(tmp_path, "resume", NAME, code=reopened)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 143, output[-3000:]
    assert "Traceback" not in output and f"lrsweep resume {NAME}" in output, output[-3000:]
    _stopped_sweep_runs(tmp_path, output)
    resumed = _lrsweep(tmp_path, "resume", NAME)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert "LR finder vs search" in resumed.stdout
    tracker = Tracker(default_tracking_uri(tmp_path))
    runs = tracker.search_runs(tracker.experiment_id(NAME))
    assert {run.info.status for run in runs} == {"FINISHED"}
