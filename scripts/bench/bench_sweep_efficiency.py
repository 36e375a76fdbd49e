"""Item 2: a sweep through ``run_sweep`` vs the same trials one after another in a plain process.

The sweep is ``sweeps/specs/digits.yaml``'s task with one grid arm of 8 learning rates and one
seed (8 trials, 1 CPU each, stoppers on), run by ``sweeps.run.run_sweep`` (Ray Tune, MLflow
child runs with per-step metrics, checkpoints, figures, the best model, the report). The plain
side runs the same 8 trials in this process with the trainers alone (data, model, Learner,
one-cycle fit), each for exactly the epochs its sweep twin ran (early stops and divergence
included), logging nothing.

Ideal sweep wall time = sum of the plain trials' times / trials the cores run at once
(``cpus // resources.cpu``). Target: sweep wall <= 1.15 x ideal. Ray's start-up (``ray.init``)
is measured separately and not counted in the sweep time. Sides are interleaved:
sweep, plain, sweep, plain ...

Run: ``python scripts/bench/bench_sweep_efficiency.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import _common as common

from trainers import (
    Callback,
    CancelFit,
    Learner,
    TrainingDiverged,
    build_model,
    make_dataloaders,
    seed_everything,
)

MAX_RATIO = 1.15

# Run in a fresh interpreter: the fixed costs a trial pays in a new worker process (cold) and
# again in the same process (warm, what a reused Ray actor pays), wall and CPU seconds.
_COLD_COSTS = r"""
import json, sys, tempfile, time
from pathlib import Path
out = {}
def step(name, fn, times=2):
    for i in range(times):
        w, c = time.perf_counter(), time.process_time()
        value = fn()
        out.setdefault(name, []).append((time.perf_counter() - w, time.process_time() - c))
    return value
import torch
torch.set_num_threads(1)
step("import trainers (torch, torchvision)", lambda: __import__("trainers"), 1)
step("import sweeps.trial (Ray Tune, MLflow)", lambda: __import__("sweeps.trial"), 1)
from trainers import Learner, Interpretation, build_model, make_dataloaders
from trainers.plots import plot_curves
from sweeps.tracking import Tracker
dls = step("make_dataloaders('digits')", lambda: make_dataloaders(
    "digits", image_size=16, batch_size=64, augment={"rotate": 10, "zoom": 1.1}))
root = Path(tempfile.mkdtemp())
tracker = step("Tracker(sqlite store)", lambda: Tracker(f"sqlite:///{root / 'mlflow.db'}"))
exp = tracker.ensure_experiment("cold")
run_id = step("start_run + log_params", lambda: (
    lambda r: (tracker.log_params(r, {f"p{i}": i for i in range(30)}), r)[1])(
    tracker.start_run(exp, run_name="x")))
learn = Learner(build_model("simple_cnn", 10, in_channels=1), dls, progress=False)
step("one epoch of training (reference)", lambda: learn.fit(1, 1e-3))
step("plot_curves", lambda: plot_curves(learn.history, root / "curves.png"))
step("confusion matrix figure", lambda: Interpretation.from_learner(learn)
     .plot_confusion_matrix(root / "cm.png"))
step("learn.save (checkpoint)", lambda: learn.save(root / "ckpt.pt"))
example = learn.dls.valid_images[:2].cpu()
step("log_pytorch_model", lambda: tracker.log_pytorch_model(run_id, learn.model, example))
print("COLD_COSTS " + json.dumps(out))
"""


def _spec(quick: bool) -> dict[str, Any]:
    from sweeps.spec import load_spec

    spec = load_spec(common.REPO / "sweeps" / "specs" / "digits.yaml").resolved()
    spec["name"] = "bench-sweep-efficiency"
    spec["seeds"] = [0]
    spec["strategies"] = [
        {"kind": "grid", "lr": {"min": 1e-4, "max": 1.0, "points": 4 if quick else 8}}
    ]
    if quick:
        spec["task"]["epochs"] = 2
    return spec


class StopAfter(Callback):
    """End the fit after ``epochs`` epochs (the epochs the sweep's twin trial ran)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def after_epoch(self) -> None:
        if len(self.learn.history) >= self.epochs:
            raise CancelFit


def _plain_trial(task: dict[str, Any], seed: int, lr: float, epochs_run: int) -> None:
    """The trial's training with the trainers alone (as ``sweeps.trial`` builds it)."""
    import torch

    dls = make_dataloaders(
        task["dataset"]["name"],
        image_size=task["image_size"],
        batch_size=task["batch_size"],
        valid_pct=task["dataset"]["valid_pct"],
        seed=task["dataset"]["seed"],
        augment=task["augment"],
    )
    order = torch.Generator().manual_seed(seed).get_state()
    augment_rng = torch.Generator().manual_seed(seed + 1).get_state()
    dls.load_state_dict({"train": {"order": order, "augment": augment_rng}})
    seed_everything(seed)
    model = build_model(task["model"]["arch"], dls.n_classes, in_channels=dls.in_channels)
    learn = Learner(model, dls, opt=task["opt"], wd=task["wd"], progress=False, device="cpu")
    schedule = task["schedule"]
    with learn.added_cbs(StopAfter(max(1, epochs_run))):
        try:
            learn.fit_one_cycle(
                task["epochs"],
                lr,
                pct_start=schedule["pct_start"],
                div=schedule["div"],
                div_final=schedule["div_final"],
            )
        except TrainingDiverged:
            pass


def cold_costs() -> dict[str, list[list[float]]]:
    """A trial's fixed costs in a new process: ``{step: [[wall, cpu] cold, [wall, cpu] warm]}``."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _COLD_COSTS],
        capture_output=True,
        text=True,
        cwd=common.REPO,
        timeout=600,
        check=True,
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("COLD_COSTS "))
    return json.loads(line[len("COLD_COSTS ") :])


def run(args: argparse.Namespace) -> common.Result:
    """Measure and return the result."""
    from sweeps import _ray
    from sweeps.run import run_sweep

    common.setup_torch(1)
    spec = _spec(args.quick)
    reps = args.reps or (1 if args.quick else 2)
    cpus = os.cpu_count() or 1
    concurrency = max(1, int(cpus // spec["resources"]["cpu"]))
    start = time.perf_counter()
    _ray.init_ray(num_cpus=cpus)
    ray_start_s = time.perf_counter() - start
    trials: list[Any] = []
    plain_sums: list[float] = []
    per_trial: list[list[float]] = []

    def sweep_side() -> float:
        root = common.temp_dir("sweep-eff-")
        start = time.perf_counter()
        result = run_sweep(spec, tracking_uri=f"sqlite:///{root / 'mlflow.db'}", storage_path=root)
        wall = time.perf_counter() - start
        if result.report is None:
            raise RuntimeError("the sweep was interrupted")
        trials[:] = list(result.report.trials)
        return wall

    def plain_side() -> float:
        times = []
        for t in sorted(trials, key=lambda t: t.lr):
            start = time.perf_counter()
            _plain_trial(spec["task"], t.seed, t.lr, t.epochs_run)
            times.append(time.perf_counter() - start)
        per_trial.append(times)
        plain_sums.append(sum(times))
        return sum(times)

    common.log("sweep efficiency: per-trial fixed costs in a fresh process")
    costs = cold_costs()
    n = spec["strategies"][0]["lr"]["points"] * len(spec["seeds"])
    common.log(f"sweep efficiency: {n} trials, {reps} reps, concurrency {concurrency}")
    try:
        timings = common.interleaved(
            {"sweep": sweep_side, "plain": plain_side}, reps=reps, warmup=0
        )
    finally:
        _ray.shutdown_ray()
    wall = timings.wall
    ideal = [p / concurrency for p in wall["plain"]]
    ratios = common.paired_ratios(wall["sweep"], ideal)
    ratio = common.median(ratios)
    epochs = sum(t.epochs_run for t in trials)
    overhead_per_trial = (common.median(wall["sweep"]) - common.median(ideal)) * concurrency / n
    rows = [
        ["Ray start-up (ray.init, once)", ray_start_s, "-"],
        ["plain process, sequential (sum)", common.median(wall["plain"]), "-"],
        [f"ideal = sum / {concurrency}", common.median(ideal), 1.0],
        ["run_sweep (Ray Tune + MLflow)", common.median(wall["sweep"]), ratio],
    ]
    cost_rows = [
        [
            f"  {name}",
            v[0][0],
            v[0][1],
            v[1][0] if len(v) > 1 else "-",
            v[1][1] if len(v) > 1 else "-",
        ]
        for name, v in costs.items()
    ]
    breakdown = common.table(
        ["fixed cost of a trial process", "cold wall s", "cold CPU s", "warm wall s", "warm CPU s"],
        cost_rows,
    )
    return common.Result(
        benchmark="sweep_efficiency",
        item=2,
        title=f"Sweep of {n} trials through run_sweep vs the same trials in a plain process",
        columns=["what", "median wall s", "x ideal"],
        rows=rows,
        metrics={
            "sweep_over_ideal": ratio,
            "ray_start_s": ray_start_s,
            "sweep_s": wall["sweep"],
            "plain_s": wall["plain"],
            "plain_trial_s": per_trial,
            "concurrency": concurrency,
            "trials": n,
            "epochs_run": epochs,
            "orchestration_s_per_trial": overhead_per_trial,
            "fixed_costs": costs,
        },
        targets=[common.Target("sweep wall / ideal", ratio, "<=", MAX_RATIO)],
        config={
            "spec": "sweeps/specs/digits.yaml task, grid arm only, seed 0",
            "trials": n,
            "epochs": spec["task"]["epochs"],
            "cpus": cpus,
            "reps": reps,
        },
        notes=[
            f"{n} trials, {epochs} epochs in all; a plain trial takes "
            f"{common.median(per_trial[-1]):.2g} s (median); the sweep adds about "
            f"{overhead_per_trial:.2g} slot-seconds per trial (worker start-up and imports, "
            "MLflow runs, checkpoints, figures, model logging, Tune bookkeeping, the report).",
            "the first round runs the sweep first: the plain side replays each trial's epochs "
            "from the latest sweep (training is deterministic, so they never change).",
            "where a trial's fixed time goes, measured in a fresh interpreter (cold = first call "
            "in a new worker process, warm = again in the same process, as a reused actor):\n\n"
            + breakdown,
        ],
    )


if __name__ == "__main__":
    common.main(run, __doc__)
