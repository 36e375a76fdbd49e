"""The sweep's parent run never stays RUNNING when the driver fails around the trials.

The faults here (the report or the first log call failing) cannot be caused on demand for real
without racing the sweep, so the failing call is replaced; Ray, MLflow and the trials are real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import sweeps._closing
from sweeps.run import run_sweep
from sweeps.tracking import Tracker

pytestmark = pytest.mark.slow

SPEC: dict[str, Any] = {
    "name": "closes",
    "task": {"dataset": {"name": "shapes", "options": {"n_per_class": 8}}, "image_size": 8,
             "batch_size": 16, "epochs": 1},
    "seeds": [0],
    "strategies": [{"kind": "fixed", "lr": 1e-3}],
    "resources": {"cpu": 1},
    "failure": {"max_failures": 0},
}  # fmt: skip


def _runs(uri: str) -> list[Any]:
    tracker = Tracker(uri)
    experiment = tracker.client.get_experiment_by_name("closes")
    assert experiment is not None
    return tracker.search_runs(experiment.experiment_id)


def test_a_failing_report_closes_the_parent_failed_after_the_trials(
    ray_cluster: None, tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("report store gone")

    monkeypatch.setattr(sweeps._closing, "build_report", broken)  # the sweep's closing makes it
    with pytest.raises(RuntimeError, match="report store gone"):
        run_sweep(SPEC, tracking_uri=tracking_uri, storage_path=tmp_path / "ray")
    runs = _runs(tracking_uri)
    parents = [r for r in runs if r.data.tags.get("sweeps.kind") == "sweep"]
    trials = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(trials) == 1
    assert parents[0].info.status == "FAILED"
    assert "report store gone" in parents[0].data.tags["sweeps.error"]
    assert trials[0].info.status == "FINISHED"


def test_a_failing_first_log_call_closes_the_parent_failed(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Tracker, *args: Any, **kwargs: Any) -> None:
        raise OSError("artifact store gone")

    monkeypatch.setattr(Tracker, "log_text", broken)
    with pytest.raises(OSError, match="artifact store gone"):
        run_sweep(SPEC, tracking_uri=tracking_uri, storage_path=tmp_path / "ray")
    assert [r.info.status for r in _runs(tracking_uri)] == ["FAILED"]


@pytest.mark.parametrize("state_written", [False, True])
def test_a_stop_between_stretches_with_mlflow_gone_says_so_in_one_line_within_seconds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, state_written: bool
) -> None:
    """Ctrl-C between the stretches that guard themselves, the tracking server gone: the guard
    retried every MLflow call for minutes, then let the client's error replace the stop. Now
    the stop goes on after :data:`~sweeps._retry.STOP_RETRY_S`, with one line on the runs."""
    tracker = Tracker("http://127.0.0.1:9")  # the discard port: nothing answers
    if state_written:
        sweeps._closing.write_state(tmp_path, {"finished": False})
    with pytest.raises(KeyboardInterrupt), caplog.at_level("WARNING", logger="sweeps.run"):
        with sweeps._closing.never_left_running(tracker, "1", "0" * 32, "gone", tmp_path):
            raise KeyboardInterrupt
    said = [r.getMessage() for r in caplog.records if r.name == "sweeps.run"]
    assert len(said) == 1, said
    assert said[0].startswith(
        "sweep ended early. The tracking server at http://127.0.0.1:9 could not be reached, so "
        "the sweep's runs could not be closed (they still show RUNNING)"
    )
    assert ("continue the sweep with: lrsweep resume gone" in said[0]) is state_written
