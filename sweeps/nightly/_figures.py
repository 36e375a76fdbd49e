"""The headline figures of one suite entry, computed from its sweep's MLflow child runs.

Per entry (one sweep) the figures are, with ``<group>`` the sweep report's strategy group (an
arm, or one rule of an ``lr_finder`` arm such as ``lr_finder:valley``):

- ``error_rate_pct/<group>``: the group's best error rate in percent (for each seed the trial
  with the lowest ``best/valid_loss``, averaged over seeds, as ``report.md``). A seed of the
  group with no usable trial (all diverged to NaN or failed) reads 100, the worst possible, so
  a strategy that stops producing a model on some seed shows as a regression rather than
  vanishing (``report.md`` averages the seeds that have one and shows how many do).
- ``regret_pp/<group>`` for each ``lr_finder`` group: its error rate minus the best error rate of
  any group, in percentage points (0 when the finder's pick is the best; the report's
  ``regret (error pp)``).
- ``compute_s/<group>``: compute seconds summed over the group's trials (range tests included).
- ``wall_time_s``: the sweep's wall time (its parent run's end minus start).
- ``stopped_early``: trials stopped by a stopper (``rising_val_loss`` or ``diverged``).

A figure's MLflow metric key on the night run is ``<entry>/<figure>[/<group>]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sweeps.report import GroupRow, TrialRow, compare

__all__ = [
    "COMPUTE",
    "ERROR_RATE",
    "FIGURE_NAMES",
    "REGRET",
    "STOPPED_EARLY",
    "WALL_TIME",
    "Figure",
    "entry_figures",
]

ERROR_RATE = "error_rate_pct"
REGRET = "regret_pp"
COMPUTE = "compute_s"
WALL_TIME = "wall_time_s"
STOPPED_EARLY = "stopped_early"
FIGURE_NAMES = (ERROR_RATE, REGRET, COMPUTE, WALL_TIME, STOPPED_EARLY)
EARLY_STOP_REASONS = frozenset({"rising_val_loss", "diverged"})
NO_RESULT_ERROR_PCT = 100.0


@dataclass(frozen=True)
class Figure:
    """One headline number of one entry on one night.

    Attributes:
        entry: The suite entry (one sweep spec).
        name: One of ``FIGURE_NAMES``.
        strategy: The strategy group for per-strategy figures, else None.
        value: The number (percent, percentage points, seconds or a count; see the name).
    """

    entry: str
    name: str
    strategy: str | None
    value: float

    @property
    def key(self) -> str:
        """The MLflow metric key: ``<entry>/<name>[/<strategy>]``."""
        return "/".join(part for part in (self.entry, self.name, self.strategy) if part)

    @property
    def label(self) -> str:
        """``name[strategy]`` or ``name``, for tables and messages."""
        return f"{self.name}[{self.strategy}]" if self.strategy else self.name

    @classmethod
    def from_key(cls, key: str, value: float) -> Figure | None:
        """The figure a metric key names, or None for a key that is no figure."""
        parts = key.split("/")
        if len(parts) not in (2, 3) or parts[1] not in FIGURE_NAMES or not all(parts):
            return None
        strategy = parts[2] if len(parts) == 3 else None
        return cls(entry=parts[0], name=parts[1], strategy=strategy, value=float(value))


def entry_figures(
    entry: str, trials: Sequence[TrialRow], *, wall_time_s: float | None
) -> list[Figure]:
    """Every figure of one entry from its sweep's trial rows (pure; see the module docstring).

    Args:
        entry: The suite entry's name.
        trials: ``sweeps.report.trial_row`` of each child run of the sweep.
        wall_time_s: The sweep's wall time, or None when unknown (then no ``wall_time_s``).

    Returns:
        Figures in a stable order: error rates, regrets, compute, wall time, stopped early.
        Empty when there are no trials.
    """
    if not trials:
        return []
    groups = compare(list(trials))
    errors = {g.group: _error_pct(g) for g in groups}
    best = min(errors.values())
    figures = [Figure(entry, ERROR_RATE, g, v) for g, v in sorted(errors.items())]
    figures += [
        Figure(entry, REGRET, g.group, errors[g.group] - best)
        for g in sorted(groups, key=lambda g: g.group)
        if g.kind == "lr_finder"
    ]
    figures += [
        Figure(entry, COMPUTE, g.group, g.compute_s) for g in sorted(groups, key=lambda g: g.group)
    ]
    if wall_time_s is not None and math.isfinite(wall_time_s):
        figures.append(Figure(entry, WALL_TIME, None, wall_time_s))
    stopped = sum(t.stop_reason in EARLY_STOP_REASONS for t in trials)
    figures.append(Figure(entry, STOPPED_EARLY, None, float(stopped)))
    return figures


def _error_pct(group: GroupRow) -> float:
    """The group's error rate in percent over every seed it ran, 100 for a seed without a
    usable trial (``report.compare`` averages only the seeds that have one)."""
    if not math.isfinite(group.error_rate_mean) or group.n_seeds == 0:
        return NO_RESULT_ERROR_PCT
    seeds = max(group.n_seeds_run, group.n_seeds)
    lost = seeds - group.n_seeds
    return (100.0 * group.error_rate_mean * group.n_seeds + NO_RESULT_ERROR_PCT * lost) / seeds
