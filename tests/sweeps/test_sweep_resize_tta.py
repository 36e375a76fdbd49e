"""A real sweep (local Ray, embedded MLflow) with ``task.progressive_resizing`` and ``task.tta``:
the finder's range test and the first epochs run on smaller images, every trial logs its best
epoch's TTA metrics, and the report, ``best`` and results.csv show them. Its Ray storage is on
an S3 API server named in the URI's query (MinIO's way; one sweep checks both, for time)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from _s3_helpers import s3_root
from typer.testing import CliRunner

from sweeps import _location as location
from sweeps.best import best_config
from sweeps.clean import STATE_FILE
from sweeps.cli import app
from sweeps.progress import SweepProgress
from sweeps.report import TTA_HEADER, build_report
from sweeps.run import run_sweep
from sweeps.tracking import Tracker

pytestmark = pytest.mark.slow

SPEC = {
    "name": "resize-tta",
    "task": {
        "dataset": {"name": "shapes", "valid_pct": 0.25, "seed": 3, "options": {"n_per_class": 16}},
        "image_size": 12,
        "batch_size": 12,
        "epochs": 3,
        "augment": "light",
        "progressive_resizing": [{"size": 8, "epochs": 2}],
        # beta 1: the plain pass alone, so each best/tta_* must be its best/* (same weights,
        # same images: the best epoch is one at task.image_size, never a stage's)
        "tta": {"n": 1, "beta": 1.0},
    },
    "seeds": [0],
    "strategies": [
        {"kind": "lr_finder", "suggest": ["valley"], "num_it": 20, "start_lr": 1e-5, "end_lr": 1.0},
        {"kind": "fixed", "lr": 1e-2},
    ],
    # stage epochs are no rise: a size switch must not stop a trial (patience 1, no grace)
    "early_stop": {"patience": 1, "grace_epochs": 0},
    "resources": {"cpu": 1},
    "failure": {"max_failures": 0},
}


def test_a_sweep_with_progressive_resizing_and_tta(
    ray_running: None, tracking_uri: str, s3_endpoint: str
) -> None:
    root = s3_root(s3_endpoint)
    result = run_sweep(
        SPEC, tracking_uri=tracking_uri, storage_path=root, progress=SweepProgress(live=False)
    )
    tracker = Tracker(tracking_uri)
    runs = tracker.child_runs(result.experiment_id, result.parent_run_id)
    assert len(runs) == 2
    for run in runs:
        metrics = run.data.metrics
        assert (run.info.status, run.data.tags["sweeps.stop_reason"]) == ("FINISHED", "completed")
        assert metrics["epochs_run"] == 3
        assert int(run.data.tags["sweeps.best_epoch"]) == 2  # the one epoch at 12 px
        tta = metrics["best/tta_error_rate"]
        assert tta == metrics["best/error_rate"] and 0.0 <= tta <= 1.0
        assert metrics["best/tta_accuracy"] == pytest.approx(1.0 - tta)
        assert metrics["best/tta_valid_loss"] == pytest.approx(metrics["best/valid_loss"], rel=1e-4)
        assert run.data.params["task.progressive_resizing"]  # the stages are the run's params

    report = build_report(SPEC["name"], result.parent_run_id, tracking_uri)
    headers, rows = report.group_table()
    column = headers.index(TTA_HEADER)
    assert headers[column - 1] == "error rate"
    assert all(row[column].endswith("%") for row in rows)
    assert "tta_error_rate_mean" in next(csv.reader(io.StringIO(report.results_csv())))
    assert TTA_HEADER in report.to_markdown()

    best = best_config(SPEC["name"], tracking_uri=tracking_uri, metric="tta_error_rate")
    assert best.metric == "tta_error_rate"
    assert best.value == min(r.data.metrics["best/tta_error_rate"] for r in runs)

    # Ray's state and sweep.json went to S3, under the path (not after the query)
    (sweep_id,) = location.subfolders(location.child(root, SPEC["name"]))
    state = json.loads(location.read_text(location.child(root, SPEC["name"], sweep_id), STATE_FILE))
    assert state["finished"] is True
    listed = CliRunner().invoke(app, ["clean", "--storage-path", root])
    assert listed.exit_code == 0, listed.output
    assert f"{SPEC['name']}  {sweep_id}  finished" in listed.output
    for text in (listed.output, json.dumps([r.data.params for r in runs])):
        assert "testing-secret" not in text
