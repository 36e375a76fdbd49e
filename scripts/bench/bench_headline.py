"""Item 6, the headline: the LR finder against grid, Optuna and random search on digits.

Runs ``sweeps/specs/digits.yaml`` (3 seeds, every arm: the finder with fastai's ``valley``,
``steep``, ``minimum`` and ``slide`` rules as published, a 7-point grid, 8 Optuna TPE trials and
8 random trials per seed) through ``sweeps.run.run_sweep`` and reads the sweep's report
(recomputed from MLflow): per strategy and per rule the best validation error (mean over seeds
of each seed's best trial), the regret against the best group, and the compute spent (range
tests included).

Target: the finder's best rule within 1 error-rate point of the grid's best, for <= 1/5 of the
grid's compute. Reported as measured, whichever way it goes.

Run: ``python scripts/bench/bench_headline.py [--quick] [--json]`` (``--quick`` runs a
shrunken spec, one seed and two epochs, to check the path; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

import _common as common

MAX_GAP_PP = 1.0
MAX_COMPUTE = 0.2
SPEC_PATH = common.REPO / "sweeps" / "specs" / "digits.yaml"


def _spec(quick: bool) -> dict[str, Any]:
    from sweeps.spec import load_spec

    spec = load_spec(SPEC_PATH).resolved()
    spec["name"] = "bench-headline" + ("-quick" if quick else "")
    if quick:
        spec["seeds"] = [0]
        spec["task"]["epochs"] = 2
        for arm in spec["strategies"]:
            if arm["kind"] == "grid":
                arm["lr"]["points"] = 3
            elif arm["kind"] in ("optuna", "random"):
                arm["trials"] = 2
            elif arm["kind"] == "lr_finder":
                arm["num_it"] = 30
    return spec


def run(args: argparse.Namespace) -> common.Result:
    """Run the sweep and summarise its report."""
    from sweeps import _ray
    from sweeps.run import run_sweep

    spec = _spec(args.quick)
    root = common.temp_dir("headline-")
    _ray.init_ray(num_cpus=os.cpu_count())
    try:
        common.log(f"headline: {spec['name']} ({len(spec['seeds'])} seeds)")
        start = time.perf_counter()
        result = run_sweep(spec, tracking_uri=f"sqlite:///{root / 'mlflow.db'}", storage_path=root)
        wall = time.perf_counter() - start
    finally:
        _ray.shutdown_ray()
    report = result.report
    if report is None:
        raise RuntimeError("the sweep was interrupted; no report.")
    groups = list(report.groups)
    grid = next(g for g in groups if g.kind == "grid")
    rules = [g for g in groups if g.kind == "lr_finder" and math.isfinite(g.error_rate_mean)]
    best_rule = min(rules, key=lambda g: g.error_rate_mean)
    finder_compute = sum(g.compute_s for g in groups if g.kind == "lr_finder")
    gap_pp = 100 * (best_rule.error_rate_mean - grid.error_rate_mean)
    rule_compute = best_rule.compute_s / grid.compute_s
    rows = [
        [
            g.group,
            g.n_seeds,
            g.chosen_lr,
            f"{100 * g.error_rate_mean:.2f} ± {100 * g.error_rate_std:.2f}",
            g.regret_error_pp,
            g.valid_loss_mean,
            g.regret,
            g.n_trials,
            g.epochs_run,
            g.compute_s,
            g.compute_vs_grid,
        ]
        for g in groups
    ]
    stops: dict[str, int] = {}
    for t in report.trials:
        stops[t.stop_reason] = stops.get(t.stop_reason, 0) + 1
    return common.Result(
        benchmark="headline",
        item=6,
        title="The headline: LR finder rules vs grid / Optuna / random search on digits",
        columns=[
            "group",
            "seeds",
            "median chosen lr",
            "error % (mean ± sd)",
            "regret (error pp)",
            "valid_loss",
            "regret (loss)",
            "trials",
            "epochs",
            "compute s",
            "compute / grid",
        ],
        rows=rows,
        metrics={
            "best_rule": best_rule.group,
            "best_rule_error_rate": best_rule.error_rate_mean,
            "grid_error_rate": grid.error_rate_mean,
            "gap_error_pp": gap_pp,
            "best_rule_compute_vs_grid": rule_compute,
            "finder_arm_compute_vs_grid": finder_compute / grid.compute_s,
            "sweep_wall_s": wall,
            "trials": len(report.trials),
            "stop_reasons": stops,
            "groups": [g.__dict__ for g in groups],
        },
        targets=[
            common.Target(
                f"finder best rule ({best_rule.group}) error - grid best error, points",
                gap_pp,
                "<=",
                MAX_GAP_PP,
            ),
            common.Target(f"compute of {best_rule.group} / grid", rule_compute, "<=", MAX_COMPUTE),
        ],
        config={"spec": str(SPEC_PATH.relative_to(common.REPO)), "quick": args.quick},
        notes=[
            f"{len(report.trials)} trials in {wall:.0f} s wall; stop reasons {stops}.",
            "a group's result is, per seed, its trial with the lowest best-epoch validation "
            "loss (a rule has one trial per seed); error is that trial's best-epoch error rate.",
            f"the whole finder arm (all {len(rules)} rules) cost "
            f"{finder_compute / grid.compute_s:.2f}x the grid's compute; one rule, chosen "
            "beforehand, costs what its row says.",
        ]
        + (["--quick: shrunken spec, the figures mean nothing."] if args.quick else []),
    )


if __name__ == "__main__":
    common.main(run, __doc__)
