"""Trials of one seed share one range test: the second rule reads the first one's curve.

Real sweeps on the shared local Ray and a SQLite MLflow store. The rule that reads a shared
test must train exactly as the same rule running its own test alone (``lr_find`` puts every
RNG back), and count the test's seconds in its compute as if it had run it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from sweeps import _ray
from sweeps.progress import SweepProgress
from sweeps.run import SweepResult, run_sweep
from sweeps.tracking import Tracker
from sweeps.trial import TAG_LR_FIND_FROM, range_tests_prefix

pytestmark = pytest.mark.slow

SPEC: dict[str, Any] = {
    "name": "shared-range-test",
    "task": {
        "dataset": {"name": "digits"},
        "image_size": 8,
        "batch_size": 64,
        "epochs": 2,
        "schedule": {"kind": "one_cycle"},
    },
    "seeds": [1],
    "strategies": [{"kind": "lr_finder", "name": "finder", "suggest": ["valley", "minimum"]}],
    "early_stop": None,
    "resources": {"cpu": 1, "max_concurrent": 1},  # valley's trial runs first, then minimum's
    "failure": {"max_failures": 0},
}


def _sweep(spec: dict[str, Any], root: Path) -> tuple[SweepResult, Tracker, dict[str, Any]]:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = run_sweep(
        spec, tracking_uri=uri, storage_path=root / "ray", progress=SweepProgress(live=False)
    )
    tracker = Tracker(uri)
    runs = tracker.child_runs(result.experiment_id, result.parent_run_id)
    return result, tracker, {run.data.tags["sweeps.rule"]: run for run in runs}


def test_rules_of_one_seed_share_one_range_test_and_train_as_if_alone(
    ray_cluster: None, tmp_path: Path
) -> None:
    result, tracker, runs = _sweep(SPEC, tmp_path / "both")
    valley, minimum = runs["valley"], runs["minimum"]
    assert TAG_LR_FIND_FROM not in valley.data.tags  # it ran the test
    assert minimum.data.tags[TAG_LR_FIND_FROM] == valley.info.run_id  # and minimum read it
    for key in ("lr_find/loss", "lr_find/lr", "lr_find/raw_loss"):
        assert tracker.metric_history(minimum.info.run_id, key) == tracker.metric_history(
            valley.info.run_id, key
        )
    assert minimum.data.metrics["lr_find_s"] == valley.data.metrics["lr_find_s"] > 0
    assert "lr_find.png" in tracker.list_artifacts(minimum.info.run_id)
    assert minimum.data.params["lr"] != valley.data.params["lr"]  # each its own rule's pick
    assert _ray.shared_get(f"{range_tests_prefix(result.sweep_id)}finder/1") is None  # dropped

    alone = copy.deepcopy(SPEC)
    alone["name"] = "shared-range-test-alone"
    alone["strategies"][0]["suggest"] = ["minimum"]
    _, tracker_alone, runs_alone = _sweep(alone, tmp_path / "alone")
    by_itself = runs_alone["minimum"]
    assert TAG_LR_FIND_FROM not in by_itself.data.tags
    assert by_itself.data.params["lr"] == minimum.data.params["lr"]
    for key in ("lr_find/loss", "valid_loss", "train_loss", "error_rate"):
        assert [v for _, v in tracker_alone.metric_history(by_itself.info.run_id, key)] == [
            v for _, v in tracker.metric_history(minimum.info.run_id, key)
        ], key
