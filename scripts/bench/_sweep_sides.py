"""The sides ``bench_sweep_efficiency.py`` times, and what it reads back from a sweep.

The sweep side (:meth:`Sides.sweep_side`: one ``run_sweep``, its trial runs' times and its
workers' start-up read back from MLflow), the plain side (the latest sweep's trials one after
another in this process, each stopped after the epochs its twin ran) and the parallel plain
side (the same trials on a pool of plain processes, started and warmed up before timing), and
a trial's fixed costs measured in a fresh interpreter (:func:`cold_costs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
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

TrialRun = tuple[float, float, float]
"""A trial run's ``(start, end, training seconds)``: MLflow's run times, summed ``epoch_time_s``."""

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
from sweeps.predictor import predictor_files
def log_model():  # as a trial logs it: the pickled model, its metadata and weights-only export
    metadata, files = predictor_files(learn, Path(tempfile.mkdtemp()))
    tracker.log_pytorch_model(run_id, learn.model, example, metadata, extra_files=files)
step("log_pytorch_model (+ export)", log_model)
print("COLD_COSTS " + json.dumps(out))
"""


class StopAfter(Callback):
    """End the fit after ``epochs`` epochs (the epochs the sweep's twin trial ran)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def after_epoch(self) -> None:
        if len(self.learn.history) >= self.epochs:
            raise CancelFit


@functools.cache
def _plain_dataloaders(task_json: str) -> Any:
    """A plain process running trials back to back builds the data once, as a sweep's trial
    worker does (``sweeps.trial``'s cache); each trial then reseeds it."""
    task = json.loads(task_json)
    return make_dataloaders(
        task["dataset"]["name"],
        image_size=task["image_size"],
        batch_size=task["batch_size"],
        valid_pct=task["dataset"]["valid_pct"],
        seed=task["dataset"]["seed"],
        augment=task["augment"],
    )


def plain_trial(task: dict[str, Any], seed: int, lr: float, epochs_run: int) -> None:
    """The trial's training with the trainers alone (as ``sweeps.trial`` builds it)."""

    dls = _plain_dataloaders(json.dumps(task, sort_keys=True))
    dls.train.reseed(seed)  # the trial seed's own order and augmentation streams
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


def warm_worker(task: dict[str, Any]) -> None:
    common.setup_torch(1)
    plain_trial(task, 0, 1e-3, 1)  # imports, the first optimizer: paid before timing


@contextlib.contextmanager
def plain_pool(task: dict[str, Any], workers: int) -> Iterator[ProcessPoolExecutor]:
    """``workers`` plain processes, started and warmed up before any timing."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        with ctx.Manager() as manager:
            barrier = manager.Barrier(workers)  # keeps one process from taking two warm-ups
            for future in [pool.submit(_await_all, task, barrier) for _ in range(workers)]:
                future.result()
        yield pool


def _await_all(task: dict[str, Any], barrier: Any) -> None:
    warm_worker(task)
    barrier.wait()


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


def worker_startup_s(tracking_uri: str, result: Any, runs: list[TrialRun]) -> float:
    """Seconds from the sweep's parent run to its first trial run (the workers' start-up)."""
    from sweeps.tracking import Tracker

    parent = Tracker(tracking_uri).get_run(result.parent_run_id)
    return min(start for start, *_ in runs) - parent.info.start_time / 1000.0


def trial_runs(tracking_uri: str, result: Any) -> list[TrialRun]:
    """``(start, end, training seconds)`` of each trial run of a finished sweep."""
    from sweeps.tracking import Tracker

    tracker = Tracker(tracking_uri)
    runs = []
    for run in tracker.child_runs(result.experiment_id, result.parent_run_id):
        epochs = tracker.metric_history(run.info.run_id, "epoch_time_s")
        runs.append(
            (
                run.info.start_time / 1000.0,
                run.info.end_time / 1000.0,
                math.fsum(v for _, v in epochs),
            )
        )
    return runs


@dataclasses.dataclass
class Sides:
    """The sides of one trial size, and what they leave for the figures: the latest sweep's
    trials (the plain sides replay them), each plain round's trial times, each sweep's workers'
    start-up and trial runs. ``pool`` (the parallel side's processes) is set once started."""

    spec: dict[str, Any]
    uri: str
    run_sweep: Callable[..., Any]  # sweeps.run.run_sweep
    trials: list[Any] = dataclasses.field(default_factory=list)
    per_trial: list[list[float]] = dataclasses.field(default_factory=list)
    startup: list[float] = dataclasses.field(default_factory=list)
    sweep_runs: list[list[TrialRun]] = dataclasses.field(default_factory=list)
    pool: Any = None  # a ProcessPoolExecutor

    def sweep_side(self) -> float:
        """One ``run_sweep`` of the spec into the store: its wall seconds."""
        run_sweep, spec, uri = self.run_sweep, self.spec, self.uri
        root = common.temp_dir("sweep-eff-")
        start = time.perf_counter()
        result = run_sweep(spec, tracking_uri=uri, storage_path=root)
        wall = time.perf_counter() - start
        if result.report is None:
            raise RuntimeError("the sweep was interrupted")
        self.trials[:] = list(result.report.trials)
        self.sweep_runs.append(trial_runs(uri, result))
        self.startup.append(worker_startup_s(uri, result, self.sweep_runs[-1]))
        return wall

    def plain_side(self) -> float:
        """The latest sweep's trials one after another in this process: their summed seconds."""
        spec = self.spec
        times = []
        for t in sorted(self.trials, key=lambda t: t.lr):
            start = time.perf_counter()
            plain_trial(spec["task"], t.seed, t.lr, t.epochs_run)
            times.append(time.perf_counter() - start)
        self.per_trial.append(times)
        return sum(times)

    def parallel_side(self) -> float:
        """The same trials on the pool's processes at once: wall seconds to the last one's end."""
        pool, spec = self.pool, self.spec
        # longest first, as a scheduler that knew the lengths would run them
        order = sorted(self.trials, key=lambda t: (-t.epochs_run, t.lr))
        start = time.perf_counter()
        futures = [
            pool.submit(plain_trial, spec["task"], t.seed, t.lr, t.epochs_run) for t in order
        ]
        for future in futures:
            future.result()
        return time.perf_counter() - start
