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
import dataclasses
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


@dataclasses.dataclass
class _Sides:
    """The sides' shared setup, and what the logging sides leave behind: their runs, the
    seconds taken to open and close each, its steps and its logging CPU share per side."""

    run_logger: Any  # sweeps.tracking.RunLogger
    dls: Any
    start_state: Any
    template: Any
    experiment: str
    epochs: int
    run_ids: list[str] = dataclasses.field(default_factory=list)
    open_close_s: list[float] = dataclasses.field(default_factory=list)
    steps: list[int] = dataclasses.field(default_factory=list)
    inside: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def side(self, name: str, flush_every_s: float = 5.0, store: Any = None) -> common.Measure:
        """One timed fit; with a ``store``, logging through a :class:`StepLogger` into a run
        opened before and closed after the timing."""
        # locals, as in the closure this was: the timed regions below look up no attribute
        experiment, epochs, run_ids, open_close_s = (
            self.experiment,
            self.epochs,
            self.run_ids,
            self.open_close_s,
        )
        self.dls.load_state_dict(self.start_state)
        seed_everything(1)
        learn = Learner(copy.deepcopy(self.template), self.dls, progress=False, device="cpu")
        cbs: list[StepLogger] = []
        if store is not None:
            start = time.perf_counter()
            run_id = store.start_run(experiment, run_name=f"rep{len(run_ids)}")
            open_close_s.append(time.perf_counter() - start)
            run_ids.append(run_id)
            cbs.append(StepLogger(self.run_logger(store, run_id), flush_every_s=flush_every_s))
        with learn.added_cbs(*cbs), common.Stopwatch() as sw:
            learn.fit_one_cycle(epochs, 3e-3)
        if store is not None:
            start = time.perf_counter()
            store.end_run(run_ids[-1])
            open_close_s[-1] += time.perf_counter() - start
            self.steps.append(len(learn.recorder.losses))
            ratio = cbs[0].spent.cpu_s / max(sw.measure.cpu_s, 1e-9)
            self.inside.setdefault(name, []).append(ratio)
        return sw.measure


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
    sides = _Sides(RunLogger, dls, start_state, template, experiment, epochs)
    common.log(f"logging overhead: {reps} reps x {epochs} epochs")
    cases = {
        "no logging": lambda: sides.side("no logging"),
        DEFAULT: lambda: sides.side(DEFAULT, 5.0, tracker),
        EVERY_EPOCH: lambda: sides.side(EVERY_EPOCH, 0.0, tracker),
        ORM: lambda: sides.side(ORM, 0.0, orm_tracker),
    }
    timings = common.interleaved(cases, reps=reps)
    missing = _missing_points(tracker, sides)
    config = {
        "task": "sweeps/specs/digits.yaml task",
        "epochs": epochs,
        "reps": reps,
        "threads": args.threads,
        "store": "embedded SQLite (WAL)",
    }
    return _result(list(cases), timings, sides, missing, config)


def _missing_points(tracker: Any, sides: _Sides) -> int:
    """The steps each logged run lacks in MLflow, per metric (a surplus elsewhere cannot hide
    one)."""
    missing = 0
    for run_id, n in zip(sides.run_ids, sides.steps, strict=True):
        for key in ("train_loss", "lr"):
            got = {s for s, _ in tracker.metric_history(run_id, key)}
            missing += len(set(range(n)) - got)
        for key in (*EPOCH_METRICS, "epoch_train_loss"):
            got = {s for s, _ in tracker.metric_history(run_id, key)}
            missing += len(set(range(sides.epochs)) - got)
    return missing


def _ratio(times: dict[str, list[float]], name: str) -> float:
    """Median of the per-repetition time ratios of side ``name`` to the side logging nothing."""
    return common.median(common.paired_ratios(times[name], times["no logging"]))


def _result(
    names: list[str],
    timings: common.Timings,
    sides: _Sides,
    missing: int,
    config: dict[str, Any],
) -> common.Result:
    """The table, figures and targets of the measured sides (``names``, in their order)."""
    wall, cpu, inside = timings.wall, timings.cpu, sides.inside
    points_per_run = sides.steps[-1] * 2 + sides.epochs * (len(EPOCH_METRICS) + 1)
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
        rows=[_row(name, timings, inside) for name in names],
        metrics={
            "slowdown": _ratio(wall, DEFAULT),
            "cpu_slowdown": _ratio(cpu, DEFAULT),
            "direct_cpu_slowdown": direct,
            "slowdown_every_epoch": _ratio(wall, EVERY_EPOCH),
            "direct_cpu_slowdown_every_epoch": 1 + common.median(inside[EVERY_EPOCH]),
            "slowdown_orm_every_epoch": _ratio(wall, ORM),
            "direct_cpu_slowdown_orm_every_epoch": 1 + common.median(inside[ORM]),
            "points_per_run": points_per_run,
            "runs_checked": len(sides.run_ids),
            "missing_points": missing,
            "run_open_close_s": common.median(sides.open_close_s),
            "wall_s": wall,
        },
        targets=_targets(timings, direct, missing, points_per_run),
        config=config,
        notes=[
            f"{points_per_run} points per run; the default sends them when 5 s have passed "
            "since the last send and at the fit's end (here: once), the every-epoch sides in "
            f"{sides.epochs} sends. Creating + closing the run costs "
            f"{common.median(sides.open_close_s):.3g} s, not counted above (every trial pays it).",
            "points are checked in MLflow for every logging run of every side.",
        ],
    )


def _row(name: str, timings: common.Timings, inside: dict[str, list[float]]) -> list[Any]:
    """Side ``name``'s row of the table."""
    wall, cpu = timings.wall, timings.cpu
    return [
        name,
        common.median(wall[name]),
        common.median(cpu[name]),
        common.spread(wall[name]),
        "-" if name == "no logging" else _ratio(wall, name),
        "-" if name == "no logging" else 1 + common.median(inside[name]),
    ]


def _targets(
    timings: common.Timings, direct: float, missing: int, points_per_run: int
) -> list[common.Target]:
    return [
        common.Target(
            "default logging / no logging time (wall)",
            _ratio(timings.wall, DEFAULT),
            "<=",
            MAX_SLOWDOWN,
        ),
        common.Target("same, from CPU time", _ratio(timings.cpu, DEFAULT), "<=", MAX_SLOWDOWN),
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
    ]


if __name__ == "__main__":
    common.main(run, __doc__, reps="default 15, quick 2")
