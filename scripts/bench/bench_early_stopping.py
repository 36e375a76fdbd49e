"""Item 5: epochs saved by ``RisingValLoss`` on a spec built to overfit (target >= 30% fewer).

Two sweeps of the same spec run through the real path (``sweeps.run.run_sweep``: Ray Tune,
MLflow, the trial body and its stoppers): one with ``early_stop`` (``RisingValLoss``, patience
2, grace 1 epoch), one with ``early_stop: null``. The spec overfits on purpose: 90 training
digits, a constant rate high enough to memorise them, 30 epochs, no weight decay. Trials are
matched by (seed, lr); training is deterministic, so a stopped trial is a prefix of its
unstopped twin.

Targets: total epochs run with the stopper >= 30% fewer than without, and the same best
validation loss: the sweep's best (what a user takes away) and, stricter, every trial's own best
(the stopper never cut a trial before its best epoch).

Run: ``python scripts/bench/bench_early_stopping.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from typing import Any

import _common as common

MIN_SAVING = 0.30

SPEC: dict[str, Any] = {
    "name": "bench-early-stop",
    "task": {
        # 90 training digits (5%), no weight decay or augmentation, a constant rate: the model
        # learns in a few epochs, then memorises and its validation loss climbs.
        "dataset": {"name": "digits", "valid_pct": 0.95, "seed": 42},
        "image_size": 16,
        "batch_size": 16,
        "epochs": 30,
        "wd": 0.0,
        "schedule": {"kind": "constant"},
    },
    "seeds": [0, 1, 2],
    "strategies": [{"kind": "grid", "lr": {"min": 3e-3, "max": 1e-2, "points": 2}}],
    "early_stop": {"metric": "valid_loss", "patience": 2, "min_delta": 0.0, "grace_epochs": 1},
    "divergence": {"metric": "train_loss", "factor": 1000.0},
    "resources": {"cpu": 1},
    "failure": {"max_failures": 0},
    "tracking": {"checkpoints": "none"},
}


def _spec(*, quick: bool, early_stop: bool) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    if quick:
        spec["task"]["epochs"] = 15
        spec["seeds"] = [0]
    if not early_stop:
        spec["early_stop"] = None
        spec["name"] += "-off"
    return spec


def _sweep(spec: dict[str, Any]) -> tuple[list[Any], float, dict[str, list[float]]]:
    """Run ``spec`` through ``run_sweep``: trial rows, wall time, valid_loss curve per run."""
    from sweeps.run import run_sweep
    from sweeps.tracking import Tracker

    root = common.temp_dir("early-stop-")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    start = time.perf_counter()
    result = run_sweep(spec, tracking_uri=uri, storage_path=root)
    wall = time.perf_counter() - start
    if result.report is None:
        raise RuntimeError(f"the sweep {spec['name']} was interrupted; no report to read.")
    tracker = Tracker(uri)
    curves = {
        t.run_id: [v for _, v in tracker.metric_history(t.run_id, "valid_loss")]
        for t in result.report.trials
    }
    return list(result.report.trials), wall, curves


def _replay(curves: list[list[float]], patience: int, grace: int) -> list[int]:
    """Epochs each full curve would run under ``RisingValLoss(patience, grace_epochs)``."""
    from sweeps.stoppers import RisingValLoss

    stopper = RisingValLoss(patience=patience, grace_epochs=grace)
    runs = []
    for i, curve in enumerate(curves):
        n = len(curve)
        for epoch, value in enumerate(curve, start=1):
            if stopper(str(i), {"valid_loss": value, "training_iteration": epoch}):
                n = epoch
                break
        runs.append(n)
    return runs


def _patience_table(curves: list[list[float]], grace: int) -> tuple[list[list[Any]], list[Any]]:
    """Replay the unstopped curves under several patiences: epochs saved vs best kept."""
    total = sum(len(c) for c in curves)
    best_all = min(min(c) for c in curves)
    rows, found = [], []
    for patience in (1, 2, 3, 4, 6, 8, 10):
        runs = _replay(curves, patience, grace)
        kept = [min(c[:n]) == min(c) for c, n in zip(curves, runs, strict=True)]
        best = min(min(c[:n]) for c, n in zip(curves, runs, strict=True))
        saving = 1 - sum(runs) / total
        rows.append([patience, sum(runs), total, saving, best, best == best_all, sum(kept)])
        found.append({"patience": patience, "saving": saving, "sweep_best_kept": best == best_all})
    return rows, found


def run(args: argparse.Namespace) -> common.Result:
    """Run both sweeps and compare them trial by trial."""
    import os

    from sweeps import _ray

    _ray.init_ray(num_cpus=os.cpu_count())
    try:
        common.log("early stopping: sweep with RisingValLoss")
        on, on_s, on_curves = _sweep(_spec(quick=args.quick, early_stop=True))
        common.log("early stopping: sweep without")
        off, off_s, off_curves = _sweep(_spec(quick=args.quick, early_stop=False))
    finally:
        _ray.shutdown_ray()
    key = lambda t: (t.seed, round(t.lr, 12))  # noqa: E731
    off_by_key = {key(t): t for t in off}
    rows: list[list[Any]] = []
    identical = prefix_ok = True
    for t in sorted(on, key=key):
        twin = off_by_key.get(key(t))
        if twin is None:
            raise RuntimeError(f"trial seed={t.seed} lr={t.lr} has no twin in the unstopped sweep")
        same = t.best_valid_loss == twin.best_valid_loss
        identical &= same
        stopped, full = on_curves[t.run_id], off_curves[twin.run_id]
        prefix_ok &= stopped == full[: len(stopped)]
        rows.append(
            [
                t.seed,
                t.lr,
                t.epochs_run,
                twin.epochs_run,
                t.stop_reason,
                t.best_epoch,
                t.best_valid_loss,
                twin.best_valid_loss,
                "yes" if same else "NO",
            ]
        )
    n_same = sum(r[-1] == "yes" for r in rows)
    best_on = min(t.best_valid_loss for t in on)
    best_off = min(t.best_valid_loss for t in off)
    sweep_same = best_on == best_off
    grace = SPEC["early_stop"]["grace_epochs"]
    curves = [off_curves[t.run_id] for t in sorted(off, key=key)]
    patience_rows, patience_found = _patience_table(curves, grace)
    epochs_on = sum(t.epochs_run for t in on)
    epochs_off = sum(t.epochs_run for t in off)
    saving = 1 - epochs_on / epochs_off if epochs_off else math.nan
    worst = max((abs(r[6] - r[7]) for r in rows), default=0.0)
    return common.Result(
        benchmark="early_stopping",
        item=5,
        title="Early stopping (RisingValLoss) on an overfitting spec: epochs saved",
        columns=[
            "seed",
            "lr",
            "epochs with stopper",
            "epochs without",
            "stop reason",
            "best epoch",
            "best valid_loss with",
            "best valid_loss without",
            "identical",
        ],
        rows=rows,
        metrics={
            "epochs_with_stopper": epochs_on,
            "epochs_without": epochs_off,
            "epoch_saving": saving,
            "identical_best_valid_loss_every_trial": identical,
            "trials_with_identical_best": n_same,
            "sweep_best_valid_loss_with": best_on,
            "sweep_best_valid_loss_without": best_off,
            "max_best_valid_loss_diff": worst,
            "sweep_wall_s_with": on_s,
            "sweep_wall_s_without": off_s,
            "trials": len(on),
            "stopped_curves_are_prefixes": prefix_ok,
            "patience_replay": patience_found,
        },
        targets=[
            common.Target("fewer epochs with RisingValLoss", saving, ">=", MIN_SAVING),
            common.Target(
                "identical sweep best valid_loss (1 = yes)",
                1.0 if sweep_same else 0.0,
                ">=",
                1.0,
                note=f"{best_on:.4f} with vs {best_off:.4f} without",
            ),
            common.Target(
                "trials whose own best is identical (fraction)",
                n_same / len(rows),
                ">=",
                1.0,
                note=f"max |difference| {worst:.3g}",
            ),
        ],
        config={
            "spec": _spec(quick=args.quick, early_stop=True),
            "path": "sweeps.run.run_sweep (Ray Tune + MLflow)",
        },
        notes=[
            f"{len(on)} trials per sweep; {epochs_on} epochs with the stopper vs {epochs_off} "
            f"without ({saving:.0%} fewer); sweep wall time {on_s:.0f} s vs {off_s:.0f} s.",
            "training is deterministic: every stopped trial's valid_loss curve is "
            + ("exactly" if prefix_ok else "NOT")
            + " the prefix of its unstopped twin's, so a lost best means the curve improved "
            "again after the stopper fired (noise bumps, not overfitting, tripped it).",
            f"the unstopped curves replayed through RisingValLoss(grace_epochs={grace}) at other "
            "patiences (no training; exact, given the prefix property):\n\n"
            + common.table(
                [
                    "patience",
                    "epochs",
                    "of",
                    "fewer",
                    "sweep best",
                    "sweep best kept",
                    "trials keeping own best",
                ],
                patience_rows,
            ),
        ],
    )


if __name__ == "__main__":
    common.main(run, __doc__)
