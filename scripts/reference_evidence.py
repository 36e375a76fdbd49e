"""Does the nightly machine-speed reference track a real trial's speed? Measured, not assumed.

``lrsweep nightly`` times a fixed workload as a night starts (``sweeps.nightly._reference``)
and scales the time figures' baselines by it. That is only right if the reference slows down
as training does when the machine is slower. This script causes real slowdowns on this machine
and, under each, times both sides back to back:

- the reference, exactly as a night measures it (``measure_reference()``);
- a fixed short training: a ``trainers.Learner`` on ``digits`` (16 px, batch 64, ``simple_cnn``,
  ``fit_one_cycle`` for ``--epochs`` epochs, validation included), 1 torch thread as a trial.

The slowdowns are CPU contention, caused for real: this process pinned to one core
(``sched_setaffinity``) sharing it with busy-loop processes ("hogs") at various niceness (a
nice-19 hog takes ~1% of the core, nice 10 ~10%, nice 0 half, nice -5 three quarters), or
left on every core with a hog per core; and, a different kind of slowdown, a process streaming
a 256 MB array on the other core (no time taken from ours: shared cache and memory bandwidth).
Each condition runs ``--rounds`` rounds (reference then training, alternating the order), and
prints the medians and training / reference: if the reference tracks training, that ratio
stays put while both raw times move.

The machine is shared (other processes add noise of their own): the load average before and
after is printed; run it on a machine as idle as you can. Runtime about 3 minutes.

Usage:
    python scripts/reference_evidence.py [--rounds 5] [--epochs 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

from sweeps.nightly._reference import measure_reference
from trainers import Learner, build_model, make_dataloaders

HOGS = {
    "busy": "while True: pass",
    "memory": "import numpy as np\na = np.ones(2**25)\nwhile True: a += 1.0",  # 256 MB
}


@dataclass(frozen=True)
class Condition:
    """Where the measurement runs and what competes with it.

    Attributes:
        name: Shown in the table.
        pinned: Pin this process to core 0; else every core is allowed.
        hogs: The niceness of each competing process.
        kind: What the competing processes do: ``busy`` (a Python busy loop) or ``memory``
            (stream a 256 MB array).
        hog_core: Pin the competing processes to this core (default: where this process runs).
    """

    name: str
    pinned: bool
    hogs: tuple[int, ...] = ()
    kind: str = "busy"
    hog_core: int | None = None


CONDITIONS = (
    Condition("all cores, no hog", pinned=False),
    Condition("core 0 alone", pinned=True),
    Condition("core 0 + 1 hog nice 19", pinned=True, hogs=(19,)),
    Condition("core 0 + 1 hog nice 10", pinned=True, hogs=(10,)),
    Condition("core 0 + 1 hog nice 5", pinned=True, hogs=(5,)),
    Condition("core 0 + 1 hog nice 0", pinned=True, hogs=(0,)),
    Condition("core 0 + 2 hogs nice 0", pinned=True, hogs=(0, 0)),
    Condition("core 0 + 1 hog nice -5", pinned=True, hogs=(-5,)),
    Condition("all cores + 1 hog per core", pinned=False, hogs=(0,) * (os.cpu_count() or 1)),
    Condition("core 0 + memory hog on core 1", pinned=True, hogs=(0,), kind="memory", hog_core=1),
)


@dataclass(frozen=True)
class Row:
    """One condition's medians."""

    condition: str
    reference_s: float
    training_s: float
    ratio: float


@contextmanager
def _hogs(condition: Condition) -> Iterator[None]:
    """Start the condition's busy loops (this script's own children) and stop them after."""
    cores = {0} if condition.pinned else set(range(os.cpu_count() or 1))
    hog_cores = cores if condition.hog_core is None else {condition.hog_core}
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    started: list[subprocess.Popen[bytes]] = []
    try:
        for nice in condition.hogs:
            command = [sys.executable, "-c", HOGS[condition.kind]]
            started.append(subprocess.Popen(command, preexec_fn=_placed(hog_cores, nice)))
        time.sleep(1.0)  # let the scheduler settle (and the memory hog allocate)
        yield
    finally:
        for hog in started:
            hog.terminate()
        for hog in started:
            hog.wait()
        os.sched_setaffinity(0, before)


def _placed(cores: set[int], nice: int) -> Callable[[], None]:
    """What a competing process runs before its program: its cores and its niceness."""

    def place() -> None:
        os.sched_setaffinity(0, cores)
        os.nice(nice)

    return place


def _training(epochs: int) -> Callable[[], float]:
    dls = make_dataloaders("digits", image_size=16, batch_size=64, seed=0)

    def run() -> float:
        model = build_model("simple_cnn", n_classes=10, in_channels=1)
        learn = Learner(model, dls, seed=0, progress=False)
        start = time.perf_counter()
        learn.fit_one_cycle(epochs, 3e-3)
        return time.perf_counter() - start

    return run


def _reference() -> float:
    reference = measure_reference()
    if reference is None:
        raise RuntimeError("the reference could not be measured (see the log)")
    return reference.seconds


def measure(condition: Condition, train: Callable[[], float], rounds: int) -> Row:
    """Medians of ``rounds`` reference and training runs under ``condition``."""
    refs: list[float] = []
    trains: list[float] = []
    with _hogs(condition):
        for index in range(rounds):
            if index % 2:
                trains.append(train())
                refs.append(_reference())
            else:
                refs.append(_reference())
                trains.append(train())
    ref, trained = statistics.median(refs), statistics.median(trains)
    return Row(condition.name, ref, trained, trained / ref)


def _spread(values: Sequence[float]) -> float:
    return max(values) / min(values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train = _training(args.epochs)
    train()  # warm-up: data, kernels
    load_before = os.getloadavg()[0]
    rows = []
    for condition in CONDITIONS:
        try:
            rows.append(measure(condition, train, args.rounds))
        except PermissionError as error:  # nice below 0 needs root
            print(f"skipped {condition.name}: {error}", file=sys.stderr)
    load_after = os.getloadavg()[0]
    summary: dict[str, Any] = {
        "rows": [asdict(r) for r in rows],
        "spread_reference": _spread([r.reference_s for r in rows]),
        "spread_training": _spread([r.training_s for r in rows]),
        "spread_ratio": _spread([r.ratio for r in rows]),
        "load_before": load_before,
        "load_after": load_after,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    base = rows[0]
    print(
        f"{'condition':<30} {'reference s':>11} {'training s':>10} {'x ref':>6} "
        f"{'x train':>7} {'train/ref':>9}"
    )
    for r in rows:
        print(
            f"{r.condition:<30} {r.reference_s:>11.3f} {r.training_s:>10.3f} "
            f"{r.reference_s / base.reference_s:>6.2f} {r.training_s / base.training_s:>7.2f} "
            f"{r.ratio:>9.2f}"
        )
    print(
        f"max/min across conditions: reference {summary['spread_reference']:.2f}, training "
        f"{summary['spread_training']:.2f}, training/reference {summary['spread_ratio']:.2f}"
    )
    print(
        f"{os.cpu_count()} cores, torch {torch.__version__}, 1-minute load average "
        f"{load_before:.2f} before, {load_after:.2f} after; {args.rounds} rounds, "
        f"{args.epochs} epochs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
