"""Ctrl-C while ``lrsweep run`` makes the report of a sweep whose trials all finished: the
parent run ends KILLED, the command says how to continue (exit 130), and that command makes
the report. It ended KILLED with exit 130 and no word of what to do."""

from __future__ import annotations

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
# The real signal, sent by the process to itself once the trials are done and the report starts
# (the only moment the test chooses).
CTRL_C_IN_REPORT = """
import os, signal
import sweeps.run
make_report = sweeps.run.build_report
def ctrl_c_then_report(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return make_report(*args, **kwargs)
sweeps.run.build_report = ctrl_c_then_report
"""


def _lrsweep(tmp_path: Path, *args: str, code: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code + CLI, *args],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ctrl_c_during_the_report_says_how_to_resume_and_resume_makes_the_report(
    tmp_path: Path,
) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    stopped = _lrsweep(tmp_path, "run", str(spec_file), code=CTRL_C_IN_REPORT)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 130, output[-3000:]
    assert f"lrsweep resume {NAME}" in output and "Traceback" not in output, output[-3000:]
    tracker = Tracker(default_tracking_uri(tmp_path))
    runs = tracker.search_runs(tracker.experiment_id(NAME))
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert parent.info.status == "KILLED"
    assert {run.info.status for run in runs if run is not parent} == {"FINISHED"}

    resumed = _lrsweep(tmp_path, "resume", NAME)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    parent = tracker.client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    assert "report.md" in {item.path for item in tracker.client.list_artifacts(parent.info.run_id)}
    assert "LR finder vs search" in resumed.stdout
