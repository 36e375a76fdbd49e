"""The strategy contract: one arm of the spec becomes one or more Ray Tune searches.

A :class:`Strategy` is pure planning: it turns one ``strategies:`` entry of the spec and the
sweep's seeds into :class:`Search` values (param space, number of samples, searcher), and never
runs anything. Every trial config it produces carries ``strategy`` (the kind), ``arm`` (the arm's
name) and ``seed``; search arms add ``lr``, LR-finder and recipe arms add ``rule``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral
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
        seeds_apart: Serve the trials of a grid seed by seed in turn (each seed's first
            trial, then each seed's second ...), not every trial of a seed in a row.
    """

    name: str
    arm: str
    kind: str
    param_space: dict[str, Any]
    num_samples: int
    n_trials: int
    searcher: SearcherSpec | None = field(default=None)
    seeds_apart: bool = False


class Strategy(ABC):
    """Plans the Ray Tune searches of one arm.

    Args:
        arm: The arm's spec (a ``strategies:`` entry of a ``SweepSpec``).
        seeds: The sweep's seeds; every arm runs over every seed.

    Raises:
        ValueError: if ``seeds`` is empty, holds a repeat or anything but a whole number
            ``>= 0`` (the spec's rule), or ``arm`` is of another kind.
    """

    kind: ClassVar[str]

    def __init__(self, arm: Any, *, seeds: Sequence[int]) -> None:
        if len(seeds) == 0:
            raise ValueError("seeds must hold at least one seed, but got [].")
        for seed in seeds:
            if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
                raise ValueError(f"seeds must be whole numbers >= 0, but got {seed!r}.")
        repeated = sorted({int(seed) for seed in seeds if list(seeds).count(seed) > 1})
        if repeated:
            raise ValueError(f"seeds must not repeat, but these do: {repeated}.")
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

    def _grid(
        self, axes: dict[str, Sequence[Any]], *, seeds_apart: bool = False, **fixed: Any
    ) -> list[Search]:
        """One search over every combination of the seeds and ``axes``; ``fixed`` values as is.

        Tune expands a grid in the order of its keys' names, the first name changing fastest
        (``lr`` before ``seed``: a seed's every LR, then the next seed); ``seeds_apart``
        serves the seeds in turn instead (:class:`Search`).
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
                seeds_apart=seeds_apart,
            )
        ]
