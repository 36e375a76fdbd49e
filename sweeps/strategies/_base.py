"""The strategy contract: one arm of the spec becomes one or more Ray Tune searches.

A :class:`Strategy` is pure planning: it turns one ``strategies:`` entry of the spec and the
sweep's seeds into :class:`Search` values (param space, number of samples, searcher), and never
runs anything. Every trial config it produces carries ``strategy`` (the kind), ``arm`` (the arm's
name) and ``seed``; search arms add ``lr``, LR-finder and recipe arms add ``rule``.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sweeps._ray import SearcherSpec, grid_search

SEARCH_METRIC = "best_valid_loss"
"""What searchers optimise: the trial's best validation loss so far (its best epoch counts)."""


@dataclass(frozen=True)
class Search:
    """One Ray Tune run (one ``Tuner``) of an arm.

    Attributes:
        name: Folder name of the Tune experiment, unique within the sweep.
        arm: The arm's name (``spec.strategies[i].arm_name``).
        kind: The strategy kind (``grid``, ``optuna`` ...).
        param_space: Ray Tune param space; constants are passed to every trial as they are.
        num_samples: Ray Tune's ``num_samples`` (multiplied by the grid size).
        n_trials: The number of trials this search creates.
        searcher: The search algorithm, or None for Ray's default variant generator.
    """

    name: str
    arm: str
    kind: str
    param_space: dict[str, Any]
    num_samples: int
    n_trials: int
    searcher: SearcherSpec | None = field(default=None)


class Strategy(ABC):
    """Plans the Ray Tune searches of one arm.

    Args:
        arm: The arm's spec (a ``strategies:`` entry of a ``SweepSpec``).
        seeds: The sweep's seeds; every arm runs over every seed.

    Raises:
        ValueError: if ``seeds`` is empty or ``arm`` is of another kind.
    """

    kind: ClassVar[str]

    def __init__(self, arm: Any, *, seeds: Sequence[int]) -> None:
        if not seeds:
            raise ValueError("seeds must hold at least one seed, but got [].")
        if arm.kind != self.kind:
            raise ValueError(
                f"{type(self).__name__} plans arms of kind {self.kind!r}, but got {arm.kind!r}."
            )
        self.arm = arm
        self.seeds = [int(seed) for seed in seeds]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(arm={self.arm_name!r}, seeds={self.seeds})"

    @property
    def arm_name(self) -> str:
        """The arm's name in tags, folders and the report."""
        return str(self.arm.arm_name)

    @abstractmethod
    def searches(self) -> list[Search]:
        """The Ray Tune searches that run this arm over every seed."""

    def n_trials(self) -> int:
        """How many trials the arm runs in all."""
        return sum(search.n_trials for search in self.searches())

    def _constants(self) -> dict[str, Any]:
        return {"strategy": self.kind, "arm": self.arm_name}

    def _grid(self, axes: dict[str, Sequence[Any]], **fixed: Any) -> list[Search]:
        """One search over every combination of the seeds and ``axes``; ``fixed`` values as is.

        Keys keep their order (seed first), which fixes the order Tune expands the grid in.
        """
        space = {**self._constants(), "seed": grid_search(self.seeds)}
        n_trials = len(self.seeds)
        for key, values in axes.items():
            space[key] = grid_search(list(values))
            n_trials *= len(values)
        space.update(fixed)
        return [
            Search(
                name=self.arm_name,
                arm=self.arm_name,
                kind=self.kind,
                param_space=space,
                num_samples=1,
                n_trials=n_trials,
            )
        ]


DRIFT_RTOL = 1e-14
"""How far (relative) ``log_spaced`` moves a point to reach a short decimal: float noise only."""


def log_spaced(low: float, high: float, points: int) -> list[float]:
    """``points`` learning rates from ``low`` to ``high`` (both included), evenly spaced in log.

    Values are not rounded for display (rounding to a few digits bends the spacing and merges the
    points of a narrow range); only float drift is removed: a point within :data:`DRIFT_RTOL`
    of a shorter decimal is that decimal, so ``5e-4`` is ``0.0005`` (in MLflow params and
    ``lrsweep best --format spec``), not ``0.0004999999999999999``. Both ends are exactly as given.

    Raises:
        ValueError: for ``points < 2``, ``not 0 < low < high``, or a range too narrow to hold
            ``points`` distinct floats.

    Example:
        >>> log_spaced(5e-5, 0.5, 5)
        [5e-05, 0.0005, 0.005, 0.05, 0.5]
    """
    if points < 2:
        raise ValueError(f"points must be at least 2, but got {points=}.")
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, but got {low=} and {high=}.")
    log_low = math.log10(low)
    step = (math.log10(high) - log_low) / (points - 1)
    values = [_without_drift(10.0 ** (log_low + i * step)) for i in range(points)]
    values[0], values[-1] = float(low), float(high)
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(
            f"{points=} log-spaced values from {low=} to {high=} are not all distinct (the "
            "range is too narrow for that many floats); widen the range or use fewer points."
        )
    return values


def _without_drift(value: float) -> float:
    """The shortest decimal within :data:`DRIFT_RTOL` of ``value`` (``value`` when none is)."""
    for digits in range(1, 18):
        candidate = float(f"{value:.{digits}g}")
        if abs(candidate - value) <= DRIFT_RTOL * abs(value):
            return candidate
    return value
