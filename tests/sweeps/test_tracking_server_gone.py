"""A sweep logging to an MLflow server that goes away, then stopped: it says so in one line and
how to close its runs later, instead of retrying for minutes and logging urllib3's traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _server_helpers import (
    CLI,
    PG,
    clean_env,
    endless_sweep_spec,
    kill_all,
    lrsweep_server,
    session_pids,
)

from sweeps.tracking import Tracker

pytestmark = pytest.mark.slow

SPEC = endless_sweep_spec("server-gone", [{"kind": "fixed", "lr": 0.001}])


def _wait_for_an_epoch(tracker: Tracker, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 240
    while True:
        assert proc.poll() is None, f"sweep ended by itself:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no epoch logged:\n{log.read_text()[-3000:]}"
        found = tracker.find_experiment(SPEC["name"], timeout_s=0)
        runs = tracker.search_runs(found.experiment_id) if found else []
        if any("valid_loss" in run.data.metrics for run in runs):
            return
        time.sleep(1)


def test_sigterm_after_the_server_went_away_says_so_and_exits_143(tmp_path: Path) -> None:
    """The SIGTERM handler retried for 5 minutes, logged a urllib3 traceback, and the sweep
    then retried for 5 more before it failed."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    log = tmp_path / "sweep.log"
    with lrsweep_server(tmp_path, env=clean_env()) as server:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", CLI, "run", "spec.yaml", "--tracking-uri", server.url],
                cwd=tmp_path,
                env=clean_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for_an_epoch(Tracker(server.url), proc, log)
            kill_all(session_pids(server.sid))  # the server goes away mid-sweep
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
        finally:
            kill_all(session_pids(proc.pid))
        store = Tracker(f"{PG}/{server.database}")  # the server's database, read directly
        runs = store.search_runs(store.experiment_id(SPEC["name"]))
    output = log.read_text()
    assert code == 143, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert (
        f"interrupted (SIGTERM). The tracking server at {server.url} could not be reached, so the "
        "sweep's runs could not be closed (they still show RUNNING). Once it answers again, "
        "continue the sweep with: lrsweep resume server-gone (it closes them as it ends"
    ) in " ".join(output.split()), output[-3000:]
    assert {run.info.status for run in runs} == {"RUNNING"}
