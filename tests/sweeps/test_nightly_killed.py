"""A night killed outright (``kill -9`` of its process group) during an entry's sweep: what the
next night finds and closes. The night runs as ``lrsweep nightly`` in a process of its own, its
sweep's parent run, ``sweep.json``, ``driver.json`` and driver lock made by the real
``run_sweep``; only the trials are replaced by a wait, so that the kill lands mid-entry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

from sweeps.clean import driver_lock
from sweeps.nightly import Figure, NightStore
from sweeps.nightly import _run as nightly_run
from sweeps.spec import load_suite
from sweeps.tracking import Tracker

ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "name": "tiny-digits",
    "task": {"dataset": {"name": "digits"}, "model": {"arch": "simple_cnn"}, "image_size": 8},
    "strategies": [{"kind": "random", "lr": {"min": 3.0e-3, "max": 5.0e-3}, "trials": 1}],
    "tracking": {"checkpoints": "none"},
}
SUITE = {"name": "tiny", "entries": [{"name": "digits", "spec": SPEC}]}

_NIGHT_KILLED_MID_ENTRY = """
import json, sys, time
import sweeps.run
from sweeps import _location as location
from sweeps.clean import DRIVER_FILE, driver_record
from sweeps.nightly import _run

def trials_running(spec, tracker, state, sweep_dir, **kwargs):  # as _execute starts them
    location.write_text(sweep_dir, DRIVER_FILE, json.dumps(driver_record()))
    print("sweep started", flush=True)
    time.sleep(300)

sweeps.run._execute = trials_running
_run.measure_reference = lambda **kwargs: None  # seconds of a busy machine, and beside the point
from sweeps.cli import app
app(["nightly", sys.argv[1], "--tracking-uri", sys.argv[2], "--report-dir", sys.argv[3]])
"""


def _killed_mid_entry(tmp_path: Path, uri: str) -> None:
    """``lrsweep nightly`` started, then ``kill -9`` of its process group once the entry's sweep
    is running."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps(SUITE))
    script = textwrap.dedent(_NIGHT_KILLED_MID_ENTRY)
    night = subprocess.Popen(
        [sys.executable, "-c", script, str(suite), uri, str(tmp_path / "report")],
        cwd=tmp_path, stdout=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert night.stdout is not None
        assert "sweep started" in night.stdout.readline()
    finally:
        os.killpg(night.pid, signal.SIGKILL)
        night.wait(timeout=30)


def _next_night(uri: str, report_dir: Path):
    """The next night, judged as ``run_nightly`` judges it (its own sweeps not run)."""
    suite = load_suite(SUITE)
    store = NightStore(Tracker(uri), suite.name)
    tonight = nightly_run._open_night(suite, store)
    figures = [Figure("digits", "wall_time_s", None, 10.0)]
    return nightly_run._conclude(suite, store, replace(tonight, figures=figures), 7, report_dir)


def test_the_next_night_closes_what_a_night_killed_outright_left_running(
    tracking_uri: str, tmp_path: Path
) -> None:
    """Before: the killed night's run stayed RUNNING for a day and its entry's sweep run (and
    so `lrsweep report` of it: "still running") for good."""
    _killed_mid_entry(tmp_path, tracking_uri)
    tracker = Tracker(tracking_uri)
    (sweep,) = tracker.sweep_runs(tracker.experiment_id("nightly/tiny/digits"))
    (killed,) = tracker.search_runs(tracker.experiment_id("nightly/tiny"))
    assert sweep.info.status == killed.info.status == "RUNNING"
    folder = tmp_path / ".lrsweep/ray_results/tiny-digits" / sweep.data.tags["sweeps.sweep_id"]

    with driver_lock(folder):  # a `lrsweep resume` of that sweep holds it: left alone
        first = _next_night(tracking_uri, tmp_path / "r1")
    assert tracker.get_run(sweep.info.run_id).info.status == "RUNNING"
    closed = tracker.get_run(killed.info.run_id)  # the night itself: its process is gone
    assert closed.info.status == "KILLED" and closed.data.tags["nightly.status"] == "failed"
    assert "never finished" in closed.data.tags["nightly.failure_reason"]
    assert any(killed.info.run_id in note for note in first.notes)

    second = _next_night(tracking_uri, tmp_path / "r2")
    assert tracker.get_run(sweep.info.run_id).info.status == "KILLED"
    (note,) = [n for n in second.notes if "left RUNNING" in n]
    assert f"run {sweep.info.run_id} of nightly/tiny/digits" in note
    assert note in (tmp_path / "r2" / "nightly-report.md").read_text()
    assert second.verdict.status == "passed"  # the killed sweep's figures judge nothing
