"""A night killed outright (``kill -9`` of its process group) during a trial of an entry's sweep:
what the nights after it find and close. The killed night is a real ``lrsweep nightly`` in a
session of its own, with a Ray of its own as a night on one machine has; the night after is a
real ``lrsweep nightly`` too, through the CLI in this process on the shared Ray, run while a
process holds the killed sweep's driver lock. That the sweep is closed once no one holds the
lock is seen through ``close_orphans``, what a night runs first as it opens: a third whole night
(~20 s of sweep on a loaded 2-core machine) would add nothing but its own sweep.

One part of every night is left out: the machine-speed reference (``measure_reference``, timed
as a night starts and again as it ends). On a loaded 2-core machine each timing takes 7-14 s
(measured; about a second on an idle one), no suite or CLI option turns it off, and it has no
part in what a killed night leaves behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _cli_helpers import invoke
from _server_helpers import CLI, clean_env, kill_all, session_pids

from sweeps.clean import driver_lock
from sweeps.nightly import NightStore
from sweeps.nightly import _run as nightly_run
from sweeps.nightly._orphans import close_orphans
from sweeps.tracking import Tracker

pytestmark = pytest.mark.slow

SPEC = {
    "name": "tiny-digits",
    "task": {
        "dataset": {"name": "digits"},
        "model": {"arch": "simple_cnn"},
        "image_size": 8,
        "epochs": 6,  # seconds of training: the kill lands inside the trial
    },
    "strategies": [{"kind": "random", "lr": {"min": 3.0e-3, "max": 5.0e-3}, "trials": 1}],
    "tracking": {"checkpoints": "none"},
}
SUITE = {"name": "tiny", "entries": [{"name": "digits", "spec": SPEC}]}
ENTRY = "nightly/tiny/digits"
NO_REFERENCE = "from sweeps.nightly import _run; _run.measure_reference = lambda **kwargs: None"
START_GUARD_S = 240.0  # a hang guard only: a loaded machine takes 10-80 s to start the trial


def _killed_mid_trial(suite: Path, uri: str, tracker: Tracker, tmp_path: Path) -> None:
    """``lrsweep nightly SUITE`` started, and ``kill -9`` of its process group as soon as its
    entry's trial run is in the store; what of its Ray outlives it (in process groups of their
    own) is killed too, as a reboot kills it."""
    log = tmp_path / "killed-night.log"
    command = [sys.executable, "-c", f"{NO_REFERENCE}\n{CLI}", "nightly", str(suite)]
    command += ["--tracking-uri", uri, "--report-dir", str(tmp_path / "killed-report")]
    with log.open("wb") as out:
        night = subprocess.Popen(
            command, cwd=tmp_path, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_GUARD_S
        while not _trial_runs(tracker):
            assert night.poll() is None, f"the night ended by itself:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no trial started:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
    finally:
        os.killpg(night.pid, signal.SIGKILL)
        night.wait()
        kill_all(session_pids(night.pid))


def _trial_runs(tracker: Tracker) -> list:
    experiment = tracker.client.get_experiment_by_name(ENTRY)
    runs = tracker.search_runs(experiment.experiment_id) if experiment else []
    return [run for run in runs if "mlflow.parentRunId" in run.data.tags]


def test_the_next_night_closes_what_a_night_killed_outright_left_running(
    ray_cluster: None, tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the killed night's run stayed RUNNING for a day and its entry's sweep run (and
    so `lrsweep report` of it: "still running") and trial run for good."""
    monkeypatch.chdir(tmp_path)  # the next night's Ray storage and report
    monkeypatch.setattr(nightly_run, "measure_reference", lambda **kwargs: None)
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps(SUITE))
    tracker = Tracker(tracking_uri)
    _killed_mid_trial(suite, tracking_uri, tracker, tmp_path)
    (killed,) = tracker.search_runs(tracker.experiment_id("nightly/tiny"))
    (sweep,) = tracker.sweep_runs(tracker.experiment_id(ENTRY))
    (trial,) = _trial_runs(tracker)
    assert killed.info.status == sweep.info.status == trial.info.status == "RUNNING"
    folder = tmp_path / ".lrsweep/ray_results/tiny-digits" / sweep.data.tags["sweeps.sweep_id"]

    args = ["nightly", str(suite), "--tracking-uri", tracking_uri, "--report-dir", "r"]
    with driver_lock(folder):  # a `lrsweep resume` of that sweep holds it: left open
        night = invoke(*args)
    assert night.exit_code == 0, night.output  # the killed sweep is no result of it
    assert tracker.get_run(sweep.info.run_id).info.status == "RUNNING"
    closed = tracker.get_run(killed.info.run_id)  # the night itself: its process is gone
    assert closed.info.status == "KILLED" and closed.data.tags["nightly.status"] == "failed"
    assert "never finished" in closed.data.tags["nightly.failure_reason"]
    report = " ".join((tmp_path / "r" / "nightly-report.md").read_text().split())
    assert "1 earlier night never finished (killed outright: out of memory, a reboot" in report
    assert f"are now recorded failed: {killed.info.run_id}." in report

    # the lock released: what the night after runs as it opens ("": no night run of its own)
    after = close_orphans(NightStore(tracker, "tiny"), "", now_ms=int(time.time() * 1000))
    assert after.sweeps == ((ENTRY, sweep.info.run_id),) and not after.nights
    assert tracker.get_run(sweep.info.run_id).info.status == "KILLED"
    assert tracker.get_run(trial.info.run_id).info.status == "KILLED"
    runs = tracker.search_runs(tracker.experiment_id(ENTRY))
    runs += tracker.search_runs(tracker.experiment_id("nightly/tiny"))
    assert "RUNNING" not in {run.info.status for run in runs}
