"""Strategy arms: how each way of choosing a learning rate becomes Ray Tune searches.

One file per arm; this registry maps a spec's ``kind`` to its planner.

Example:
    >>> from sweeps.strategies import plan  # doctest: +SKIP
    >>> [s.arm_name for s in plan(spec)]  # doctest: +SKIP
    ['lr_finder', 'grid', 'optuna', 'random']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sweeps.spec._lr import log_spaced
from sweeps.strategies._base import SEARCH_METRIC, Search, Strategy
from sweeps.strategies._fixed import FixedStrategy
from sweeps.strategies._grid import GridStrategy
from sweeps.strategies._lr_finder import LrFinderStrategy
from sweeps.strategies._optuna import OptunaStrategy
from sweeps.strategies._random import RandomStrategy
from sweeps.strategies._recipe import RecipeStrategy

__all__ = [
    "SEARCH_METRIC",
    "STRATEGIES",
    "FixedStrategy",
    "GridStrategy",
    "LrFinderStrategy",
    "OptunaStrategy",
    "RandomStrategy",
    "RecipeStrategy",
    "Search",
    "Strategy",
    "log_spaced",
    "make_strategy",
    "plan",
]

STRATEGIES: dict[str, type[Strategy]] = {
    cls.kind: cls
    for cls in (
        LrFinderStrategy,
        GridStrategy,
        OptunaStrategy,
        RandomStrategy,
        RecipeStrategy,
        FixedStrategy,
    )
}


def make_strategy(arm: Any, *, seeds: Sequence[int]) -> Strategy:
    """The planner for one ``strategies:`` entry.

    Raises:
        ValueError: for an unknown ``kind``, listing the known ones.
    """
    try:
        cls = STRATEGIES[arm.kind]
    except KeyError:
        raise ValueError(
            f"strategies[].kind must be one of {sorted(STRATEGIES)}, but got {arm.kind!r}."
        ) from None
    return cls(arm, seeds=seeds)


def plan(spec: Any) -> list[Strategy]:
    """One planner per arm of ``spec``, in the spec's order."""
    return [make_strategy(arm, seeds=spec.seeds) for arm in spec.strategies]
