"""A sweep process stopped with SIGTERM mid-trial leaves its runs KILLED, never RUNNING."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _server_helpers import clean_env, endless_sweep_spec

from sweeps.tracking import Tracker, default_tracking_uri

pytestmark = pytest.mark.slow

SPEC = endless_sweep_spec(
    "sigterm-sweep",
    [{"kind": "grid", "lr": {"min": 0.0003, "max": 0.001, "points": 2}}],
)  # no trial may end by itself before the signal comes: low rates, no stoppers
SWEEP = """
import os, signal, sys, yaml
from sweeps.run import run_sweep
from sweeps.tracking import Tracker

reopen = Tracker.reopen_interrupted
def ctrl_c_then_reopen(self, *args, **kwargs):  # a second Ctrl-C just as the runs close
    os.kill(os.getpid(), signal.SIGINT)
    return reopen(self, *args, **kwargs)
Tracker.reopen_interrupted = ctrl_c_then_reopen
result = run_sweep(yaml.safe_load(open(sys.argv[1])), tracking_uri=sys.argv[2])
print("INTERRUPTED", result.interrupted, result.stop_signal)
"""


def test_sigterm_mid_trial_closes_child_and_parent_as_killed(tmp_path: Path) -> None:
    """Also when Ctrl-C comes while the runs close (Tune has given SIGINT back by then: it was
    a KeyboardInterrupt out of the closing, the parent left RUNNING, no resume command)."""
    uri = default_tracking_uri(tmp_path)
    tracker = Tracker(uri)  # the store exists before the sweep and this test both open it
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    log = tmp_path / "sweep.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SWEEP, str(spec_file), uri],
            cwd=tmp_path,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 240
        while True:  # until the trial has finished an epoch
            assert proc.poll() is None, f"sweep ended by itself:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no epoch logged:\n{log.read_text()[-3000:]}"
            found = tracker.client.get_experiment_by_name("sigterm-sweep")
            runs = tracker.search_runs(found.experiment_id) if found else []
            if any("valid_loss" in run.data.metrics for run in runs):
                break
            time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert "INTERRUPTED True SIGTERM" in output, output[-3000:]
    assert "closing its MLflow runs" in output and "continue it with" in output, output[-3000:]
    runs = tracker.search_runs(tracker.experiment_id("sigterm-sweep"))
    parents = [run.info.status for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run.info.status for run in runs if "mlflow.parentRunId" in run.data.tags]
    reasons = [run.data.tags.get("sweeps.stop_reason") for run in runs]
    assert parents == ["KILLED"]
    assert children and set(children) == {"KILLED"}, (children, reasons)
