"""Item 3: a trial logging every step's loss and LR to MLflow vs the same trial logging nothing.

Both sides train the task of ``sweeps/specs/digits.yaml`` (digits, simple_cnn, 16 px, batch 64,
one-cycle, light augmentation, the spec's 8 epochs) from the same weights and data order. The
logging side adds a callback that does exactly what the sweep's trial reporter
(``sweeps._reporter.EpochReporter``) does for metrics: at each epoch's end it buffers the epoch's
per-step ``train_loss`` and ``lr`` (steps numbered ``epoch * batches + batch``) and the epoch's
``valid_loss``, ``error_rate``, ``accuracy``, ``epoch_time_s`` in a ``sweeps.tracking.RunLogger``
and sends the buffer once ``tracking.flush_every_s`` has passed since the last send (default 5 s)
and at the fit's end, into the embedded SQLite store (``sweeps.tracking.Tracker``, which writes SQL
stores in bulk through ``sweeps._sqlmetrics``). Creating and closing the run is timed separately (a
sweep trial pays it whether or not it logs steps).

Sides, interleaved: no logging; the default (``flush_every_s: 5``); a flush every epoch
(``flush_every_s: 0``); and, for reference, a flush every epoch through MLflow's own
``log_batch`` (its SQLAlchemy ORM path, what lrsweep used before the bulk writer).

Targets: the default logging side <= 3% slower (median of per-repetition time ratios), and every
point present in MLflow afterwards (``get_metric_history`` counts).

Run: ``python scripts/bench/bench_logging_overhead.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import _common as common

from trainers import Callback, Learner, build_model, make_dataloaders, seed_everything

MAX_SLOWDOWN = 1.03
EPOCH_METRICS = ("valid_loss", "error_rate", "accuracy", "epoch_time_s")


class StepLogger(Callback):
    """Per epoch: buffer the steps' ``train_loss`` and ``lr`` and the epoch metrics; send the
    buffer when ``flush_every_s`` has passed since the last send, and at the end of the fit."""

    order = 50

    def __init__(self, run_logger: Any, *, flush_every_s: float) -> None:
        self.log = run_logger
        self.flush_every_s = flush_every_s
        self.spent = common.Measure(0.0, 0.0)
        self._first = 0
        self._last_flush = time.monotonic()

    def before_epoch(self) -> None:
        self._first = len(self.learn.recorder.losses)

    def after_epoch(self) -> None:
        with common.Stopwatch() as sw:
            self._log_epoch()
        self._add(sw.measure)

    def _add(self, m: common.Measure) -> None:
        self.spent = common.Measure(self.spent.wall_s + m.wall_s, self.spent.cpu_s + m.cpu_s)

    def _log_epoch(self) -> None:
        learn = self.learn
        epoch = len(learn.history) - 1
        first_step = epoch * learn.n_iter
        self.log.extend("train_loss", learn.recorder.losses[self._first :], first_step=first_step)
        self.log.extend("lr", learn.recorder.lrs[self._first :], first_step=first_step)
        row = learn.history[-1]
        self.log.add_many({k: row[k] for k in EPOCH_METRICS}, epoch)
        self.log.add("epoch_train_loss", float(row["train_loss"]), epoch)  # as EpochReporter
        now = time.monotonic()
        if now - self._last_flush >= self.flush_every_s:
            self.log.flush(wait=False)
            self._last_flush = now

    def after_fit(self) -> None:
        with common.Stopwatch() as sw:
            self.log.flush()
        self._add(sw.measure)


DEFAULT = "MLflow per step, default (flush_every_s 5)"
EVERY_EPOCH = "MLflow per step, flush every epoch (flush_every_s 0)"
ORM = "same, through MLflow's log_batch (ORM path), every epoch"


def run(args: argparse.Namespace) -> common.Result:
    """Measure and return the result."""
    from sweeps.tracking import RunLogger, Tracker

    common.setup_torch(args.threads)
    from sweeps.spec import load_spec

    task = load_spec(common.REPO / "sweeps" / "specs" / "digits.yaml").task
    epochs = 2 if args.quick else task.epochs  # the spec's trial: 8 epochs
    reps = args.reps or (2 if args.quick else 15)
    dls = make_dataloaders(
        "digits", image_size=16, batch_size=64, seed=42, augment={"rotate": 10, "zoom": 1.1}
    )
    seed_everything(0)
    template = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    start_state = dls.state_dict()
    root = common.temp_dir("logging-")
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}")
    orm_tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", bulk_metrics=False)  # reference row
    experiment = tracker.ensure_experiment("bench-logging")
    run_ids: list[str] = []
    open_close_s: list[float] = []
    steps: list[int] = []
    inside: dict[str, list[float]] = {}

    def side(name: str, flush_every_s: float = 5.0, store: Any = None) -> common.Measure:
        dls.load_state_dict(start_state)
        seed_everything(1)
        learn = Learner(copy.deepcopy(template), dls, progress=False, device="cpu")
        cbs: list[StepLogger] = []
        if store is not None:
            start = time.perf_counter()
            run_id = store.start_run(experiment, run_name=f"rep{len(run_ids)}")
            open_close_s.append(time.perf_counter() - start)
            run_ids.append(run_id)
            cbs.append(StepLogger(RunLogger(store, run_id), flush_every_s=flush_every_s))
        with learn.added_cbs(*cbs), common.Stopwatch() as sw:
            learn.fit_one_cycle(epochs, 3e-3)
        if store is not None:
            start = time.perf_counter()
            store.end_run(run_ids[-1])
            open_close_s[-1] += time.perf_counter() - start
            steps.append(len(learn.recorder.losses))
            ratio = cbs[0].spent.cpu_s / max(sw.measure.cpu_s, 1e-9)
            inside.setdefault(name, []).append(ratio)
        return sw.measure

    common.log(f"logging overhead: {reps} reps x {epochs} epochs")
    cases = {
        "no logging": lambda: side("no logging"),
        DEFAULT: lambda: side(DEFAULT, 5.0, tracker),
        EVERY_EPOCH: lambda: side(EVERY_EPOCH, 0.0, tracker),
        ORM: lambda: side(ORM, 0.0, orm_tracker),
    }
    timings = common.interleaved(cases, reps=reps)
    wall, cpu = timings.wall, timings.cpu

    def ratio(times: dict[str, list[float]], name: str) -> float:
        return common.median(common.paired_ratios(times[name], times["no logging"]))

    missing = 0  # the steps each run lacks, per metric (a surplus elsewhere cannot hide one)
    for run_id, n in zip(run_ids, steps, strict=True):
        for key in ("train_loss", "lr"):
            got = {s for s, _ in tracker.metric_history(run_id, key)}
            missing += len(set(range(n)) - got)
        for key in (*EPOCH_METRICS, "epoch_train_loss"):
            got = {s for s, _ in tracker.metric_history(run_id, key)}
            missing += len(set(range(epochs)) - got)
    points_per_run = steps[-1] * 2 + epochs * (len(EPOCH_METRICS) + 1)
    rows = [
        [
            name,
            common.median(wall[name]),
            common.median(cpu[name]),
            common.spread(wall[name]),
            "-" if name == "no logging" else ratio(wall, name),
            "-" if name == "no logging" else 1 + common.median(inside[name]),
        ]
        for name in cases
    ]
    direct = 1 + common.median(inside[DEFAULT])
    return common.Result(
        benchmark="logging_overhead",
        item=3,
        title="MLflow logging of every step's loss and LR vs logging nothing",
        columns=[
            "side",
            "median wall s / trial",
            "median CPU s",
            "range wall s",
            "x no logging (wall)",
            "1 + logging CPU / fit CPU",
        ],
        rows=rows,
        metrics={
            "slowdown": ratio(wall, DEFAULT),
            "cpu_slowdown": ratio(cpu, DEFAULT),
            "direct_cpu_slowdown": direct,
            "slowdown_every_epoch": ratio(wall, EVERY_EPOCH),
            "direct_cpu_slowdown_every_epoch": 1 + common.median(inside[EVERY_EPOCH]),
            "slowdown_orm_every_epoch": ratio(wall, ORM),
            "direct_cpu_slowdown_orm_every_epoch": 1 + common.median(inside[ORM]),
            "points_per_run": points_per_run,
            "runs_checked": len(run_ids),
            "missing_points": missing,
            "run_open_close_s": common.median(open_close_s),
            "wall_s": wall,
        },
        targets=[
            common.Target(
                "default logging / no logging time (wall)", ratio(wall, DEFAULT), "<=", MAX_SLOWDOWN
            ),
            common.Target("same, from CPU time", ratio(cpu, DEFAULT), "<=", MAX_SLOWDOWN),
            common.Target(
                "same, logging CPU timed inside the fit",
                direct,
                "<=",
                MAX_SLOWDOWN,
                note="1 + logging CPU / fit CPU: least noisy",
            ),
            common.Target(
                "points missing in MLflow", float(missing), "<=", 0, note=f"of {points_per_run}/run"
            ),
        ],
        config={
            "task": "sweeps/specs/digits.yaml task",
            "epochs": epochs,
            "reps": reps,
            "threads": args.threads,
            "store": "embedded SQLite (WAL)",
        },
        notes=[
            f"{points_per_run} points per run; the default sends them when 5 s have passed "
            "since the last send and at the fit's end (here: once), the every-epoch sides in "
            f"{epochs} sends. Creating + closing the run costs "
            f"{common.median(open_close_s):.3g} s, not counted above (every trial pays it).",
            "points are checked in MLflow for every logging run of every side.",
        ],
    )


if __name__ == "__main__":
    common.main(run, __doc__, reps="default 15, quick 2")
