"""SIGTERM to every process of ``lrsweep run`` at once, not only to the driver.

``timeout`` and ``kill -- -PGID`` signal the driver's process group; systemd's default
``KillMode=control-group`` signals every process of the unit. Either way the driver must close
every run of the sweep as KILLED, say how to resume and exit by itself with status 143, not by
Ray's own "Failed to connect to GCS" abort (60 s later, with another status). The local Ray's
processes run in process groups of their own, so a group signal reaches the driver only and the
sweep stops gracefully; a signal to each process also stops the raylet, and the driver then
exits without it. Ray's processes may even stop seconds before the driver: the driver owns no
object in Ray's store, so the raylet's death does not make Ray end it (exit 1, runs left
RUNNING) while it recovers one; its main thread, blocked in a call to the dead GCS, cannot run
a Python handler, so a thread woken by the signal's wakeup fd closes the runs; and trials that
died of the signal make a stopped sweep, not a failed one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from _server_helpers import CLI, clean_env, endless_sweep_spec

from sweeps.tracking import Tracker, default_tracking_uri

pytestmark = pytest.mark.slow

# Only a hang guard, never a speed target: it lies past Ray's own abort (60 s after its GCS
# died), so a driver that waited for that abort is caught by its exit status and output instead.
HANG_GUARD_S = 180.0
RAY_FIRST_DELAY_S = 3.0
SPEC = endless_sweep_spec(
    "sigterm-group-sweep",
    [{"kind": "fixed", "lr": 0.0005}],
)  # one trial: the quickest start


def _session_pids(sid: int) -> list[int]:
    """Every live process of session ``sid`` (Ray's workers make their own process groups)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, ValueError):
            continue
        if fields[3] == str(sid) and fields[0] != "Z":  # session id, not a zombie
            pids.append(int(entry.name))
    return pids


def _reap_session(sid: int, timeout_s: float = 15.0) -> list[int]:
    """Wait for the session's processes to end, SIGKILL the rest; return the ones that lingered."""
    deadline = time.monotonic() + timeout_s
    while _session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.5)
    lingering = _session_pids(sid)
    for pid in lingering:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return lingering


def _wait_for_an_epoch(
    tracker: Tracker, proc: subprocess.Popen, log: Path, experiment: str = SPEC["name"]
) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"sweep ended by itself:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no epoch logged:\n{log.read_text()[-3000:]}"
        found = tracker.client.get_experiment_by_name(experiment)
        runs = tracker.search_runs(found.experiment_id) if found else []
        if any("valid_loss" in run.data.metrics for run in runs):
            return
        time.sleep(0.5)


def _signal_every_process(sid: int) -> None:
    for pid in _session_pids(sid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _signal_ray_then_the_driver(sid: int) -> None:
    """Ray's processes first, the driver seconds later: Ray's store is gone before the handler
    runs, and the driver's main thread is blocked in a call to the dead GCS by then (Python
    cannot run its handler there; Ray aborts the driver 60 s later)."""
    for pid in _session_pids(sid):
        if pid != sid:
            os.kill(pid, signal.SIGTERM)
    time.sleep(RAY_FIRST_DELAY_S)
    os.kill(sid, signal.SIGTERM)


def _signalled(
    command: list[str], tmp_path: Path, tracker: Tracker, experiment: str, send: Any
) -> tuple[int, str, list[int]]:
    """Run ``command`` in a session of its own, ``send(pid)`` once an epoch is in MLflow, and
    wait for it to exit: its status, its output and the processes of it that outlived it."""
    log = tmp_path / "command.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_an_epoch(tracker, proc, log, experiment)
        send(proc.pid)
        try:
            proc.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit {HANG_GUARD_S:.0f} s after SIGTERM:\n{log.read_text()[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        lingering = _reap_session(proc.pid)
    return proc.returncode, log.read_text(), lingering


SENDERS = {
    "process group": lambda pid: os.killpg(pid, signal.SIGTERM),  # as `timeout`, `kill -- -PGID`
    "every process": _signal_every_process,  # as systemd's KillMode=control-group does
    "ray first": _signal_ray_then_the_driver,
}


@pytest.mark.parametrize("target", ["process group", "every process", "ray first"])
def test_sigterm_to_every_process_of_the_sweep_closes_its_runs_killed_and_exits_143(
    tmp_path: Path, target: str
) -> None:
    uri = default_tracking_uri(tmp_path)
    tracker = Tracker(uri)  # the store exists before the sweep and this test both open it
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    command = [sys.executable, "-c", CLI, "run", str(spec_file), "--tracking-uri", uri]
    status, output, lingering = _signalled(
        command, tmp_path, tracker, SPEC["name"], SENDERS[target]
    )
    runs = tracker.search_runs(tracker.experiment_id(SPEC["name"]))
    statuses = {run.info.run_name: run.info.status for run in runs}
    parents = [run.info.status for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run.info.status for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert "RUNNING" not in statuses.values(), (statuses, output[-3000:])
    assert parents == ["KILLED"], (statuses, output[-3000:])
    assert children and set(children) == {"KILLED"}, (statuses, output[-3000:])
    assert status == 143, (status, output[-3000:])  # 128 + SIGTERM
    assert f"lrsweep resume {SPEC['name']}" in output, output[-3000:]
    if target == "process group":  # Ray never saw the signal: the graceful stop ran
        assert "reached Ray's own processes" not in output, output[-3000:]
    assert not lingering, f"processes of the sweep outlived it: {lingering}"


def test_sigterm_to_every_process_of_a_night_records_it_failed_and_exits_3(
    tmp_path: Path,
) -> None:
    """The same signal to ``lrsweep nightly``: the watchdog's forced exit runs no ``finally`` of
    the night, which was left RUNNING with exit 143; now the night is closed as failed first
    (its report says why) and the exit status is the night's own 3."""
    uri = default_tracking_uri(tmp_path)
    tracker = Tracker(uri)
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump({"name": "sigterm", "entries": [{"spec": SPEC}]}))
    report_dir = tmp_path / "report"
    command = [sys.executable, "-c", CLI, "nightly", str(suite_file), "--tracking-uri", uri]
    command += ["--report-dir", str(report_dir)]
    experiment = f"nightly/sigterm/{SPEC['name']}"
    status, output, lingering = _signalled(
        command, tmp_path, tracker, experiment, _signal_every_process
    )
    (night,) = tracker.search_runs(tracker.experiment_id("nightly/sigterm"))
    sweep_runs = tracker.search_runs(tracker.experiment_id(experiment))
    assert night.info.status == "KILLED", (night.info.status, output[-3000:])
    assert night.data.tags["nightly.status"] == "failed"
    reason = night.data.tags["nightly.failure_reason"]
    assert "interrupted (SIGTERM)" in reason, (reason, output[-3000:])
    assert {run.info.status for run in sweep_runs} == {"KILLED"}, output[-3000:]
    assert status == 3, (status, output[-3000:])
    assert "FAILED" in (report_dir / "nightly-report.md").read_text()
    assert not lingering, f"processes of the night outlived it: {lingering}"
