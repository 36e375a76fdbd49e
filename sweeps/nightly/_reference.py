"""The machine-speed reference: a fixed PyTorch workload timed as a night starts.

Nights run on machines whose CPU speed differs (the same work takes 2-4x longer on one CI VM
than on another), so a night's time figures (``compute_s``, ``wall_time_s``) are judged against
a baseline scaled by how fast tonight's machine runs this workload compared with the baseline
nights' machines (``sweeps.nightly._compare``; ``thresholds.scale_time_by_reference``).

The workload is the inner loop of a trial, fixed once and for all: forward, backward and an
AdamW step of a small conv net (three conv-bn-relu stages and a linear head, defined here and
not taken from ``trainers``, so that a change to the project's models never moves the
reference) on one seeded random batch of 64 one-channel 16 px images, :data:`STEPS` steps per
run, on the CPU with one torch thread (what a trial with ``resources.cpu: 1`` uses). One
warm-up run, then the median of :data:`RUNS` runs: about a second in all on this project's
2-core machines. The CPU is used even where trials run on a GPU: a night's devices vary, a
trial's CPU-side work (data loading, Python, MLflow) does not go away on a GPU, and the
reference must mean the same on every machine.

The workload is timed twice, before the sweeps and after them, and the faster measurement is the
night's (:func:`faster`): load present at only one of the two moments slows that one alone.
The figure is ``reference_s`` on the night run (one run's seconds, the median), with
:data:`TAG_REFERENCE` saying how it was measured; :func:`measure_reference` never raises (a
night without a reference is judged on raw times, as nights before it existed were).

Example:
    >>> reference = measure_reference()  # doctest: +SKIP
    >>> reference.seconds > 0, reference.describe()  # doctest: +SKIP
    (True, 'conv net fwd+bwd+AdamW, 64x1x16x16 batch, 60 steps, 1 thread, cpu; median of 5 ...')
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "METRIC_REFERENCE",
    "RUNS",
    "STEPS",
    "TAG_REFERENCE",
    "Reference",
    "faster",
    "measure_reference",
]

logger = logging.getLogger(__name__)

METRIC_REFERENCE = "reference_s"
"""The night run's metric: seconds of one run of the reference workload (median of runs)."""
TAG_REFERENCE = "nightly.reference"
"""The night run's tag: how the reference was measured, and every run's seconds."""
STEPS = 60
"""Training steps per run (changing it, or the workload, changes every night's reference:
scaled comparisons across such a change would be wrong, so never do it lightly)."""
RUNS = 5
"""Timed runs after the warm-up; the reference is their median."""
BATCH = (64, 1, 16, 16)
WORKLOAD = "conv net fwd+bwd+AdamW"
When = Literal["start", "end"]
"""When in a night the reference is timed: before its sweeps or after them."""


@dataclass(frozen=True)
class Reference:
    """One measurement of the reference workload.

    Attributes:
        seconds: The median run, in seconds.
        runs_s: Every timed run's seconds, in order.
        threads: Torch intra-op threads used.
    """

    seconds: float
    runs_s: tuple[float, ...]
    threads: int = 1
    when: When = "start"
    """When in the night it was timed: ``start`` (before the sweeps) or ``end`` (after them)."""
    other_s: float | None = None
    """The other measurement's seconds, when :func:`faster` kept this one of two."""

    def describe(self) -> str:
        """How it was measured, for the night run's tag and the report."""
        batch = "x".join(map(str, BATCH))
        runs = ", ".join(f"{s:.3f}" for s in self.runs_s)
        thread = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        kept = ""
        if self.other_s is not None:
            other = "end" if self.when == "start" else "start"
            kept = (
                f"; the faster of two, timed at the {self.when} (the {other}: {self.other_s:.3f} s)"
            )
        return (
            f"{WORKLOAD}, {batch} batch, {STEPS} steps, {thread}, cpu; median of "
            f"{len(self.runs_s)} runs after 1 warm-up: {runs} s{kept}"
        )


def faster(start: Reference | None, end: Reference | None) -> Reference | None:
    """The night's reference from its two measurements, before and after the sweeps: the
    faster. Load that is on the machine only at one of them (a backup, another job finishing)
    slows that one; the machine's own speed cannot make either faster than it is. None when
    neither was measured; the one there when only one was."""
    if start is None or end is None:
        return start or end
    kept, other = (start, end) if start.seconds <= end.seconds else (end, start)
    return replace(kept, other_s=other.seconds)


def measure_reference(
    *, runs: int = RUNS, threads: int = 1, when: When = "start"
) -> Reference | None:
    """Time the reference workload: one warm-up run, then the median of ``runs`` runs.

    Torch's thread count is set to ``threads`` for the measurement and put back after. Never
    raises for the measurement itself: on any error (out of memory, a broken torch) it logs it
    and returns None, and the night is judged on raw times.

    Args:
        runs: Timed runs (at least 1).
        threads: Torch intra-op threads (1: as a trial with ``resources.cpu: 1``).
        when: ``start`` or ``end`` of the night, as :attr:`Reference.when` records it.

    Raises:
        ValueError: ``runs`` or ``threads`` below 1 (a programming error, not a measurement).
    """
    if runs < 1 or threads < 1:
        raise ValueError(f"runs and threads must be at least 1, but got {runs=}, {threads=}.")
    try:
        import torch  # heavy: only when a night really runs, never at CLI import

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            step = _workload()
            _timed(step)  # warm-up: allocator, kernel choice, lazy initialisation
            times = tuple(_timed(step) for _ in range(runs))
        finally:
            torch.set_num_threads(before)
    except Exception:  # a night must not fail for its yardstick
        logger.exception("the machine-speed reference could not be measured")
        return None
    median = statistics.median(times)
    if not (math.isfinite(median) and median > 0):
        logger.warning("the machine-speed reference measured %r s: not used", median)
        return None
    return Reference(median, times, threads, when)


def _timed(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    return time.perf_counter() - start


def _workload() -> Callable[[], None]:
    """One training step of the fixed net on the fixed batch, as a closure (weights and batch
    seeded: the same numbers every night, so no denormal or NaN makes one night slower)."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(0)
    widths = (BATCH[1], 16, 32, 64)
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(widths):
        conv = nn.Conv2d(n_in, n_out, kernel_size=3, stride=2, padding=1, bias=False)
        layers += [conv, nn.BatchNorm2d(n_out), nn.ReLU(inplace=True)]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    images = torch.randn(BATCH, generator=generator)
    labels = torch.randint(0, 10, (BATCH[0],), generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_func = nn.CrossEntropyLoss()

    def step() -> None:
        loss = loss_func(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step
