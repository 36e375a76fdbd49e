"""Ray Tune's search side: the search-space primitives the strategies build their spaces from,
a searcher built from a picklable :class:`SearcherSpec`, and trial configs drawn without running
anything (a dry run, and the grid and random searches of a sweep).

:mod:`sweeps._ray` re-exports every public name (the strategies import them from there) and
serves these searches to its Tuner (``_SearchesInOne``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import tune

__all__ = [
    "SearcherSpec",
    "build_searcher",
    "grid_search",
    "is_domain",
    "is_grid",
    "loguniform",
    "merge",
    "sample_configs",
]


@dataclass(frozen=True)
class SearcherSpec:
    """A picklable description of a Ray Tune search algorithm.

    Attributes:
        kind: ``optuna`` (Ray Tune's ``OptunaSearch``) or ``random`` (log-uniform draws from
            a numpy generator seeded with ``seed``).
        metric: The reported metric the searcher optimises.
        mode: ``min`` or ``max``.
        seed: Sampler seed; the same seed gives the same suggestions.
        sampler: Optuna sampler name (``tpe``, ``random``, ``qmc``, ``gp``, ``cmaes``).
        startup_trials: The sampler's ``n_startup_trials`` (``tpe``, ``gp``, ``cmaes``); None
            keeps Optuna's default.
    """

    kind: str
    metric: str = "best_valid_loss"
    mode: str = "min"
    seed: int = 0
    sampler: str = "tpe"
    startup_trials: int | None = None


def grid_search(values: Sequence[Any]) -> Any:
    """Ray Tune's ``grid_search`` over ``values``."""
    return tune.grid_search(list(values))


def loguniform(low: float, high: float) -> Any:
    """Ray Tune's log-uniform domain on ``[low, high]``."""
    return tune.loguniform(low, high)


def is_grid(value: Any) -> bool:
    """True for a ``grid_search`` marker."""
    return isinstance(value, dict) and set(value) == {"grid_search"}


def is_domain(value: Any) -> bool:
    """True for a sampled Ray Tune domain (``loguniform`` ...)."""
    return isinstance(value, tune.search.sample.Domain)


def _optuna_sampler(name: str, seed: int, startup_trials: int | None = None) -> Any:
    import optuna

    startup: dict[str, Any] = {} if startup_trials is None else {"n_startup_trials": startup_trials}
    samplers: dict[str, Callable[[], Any]] = {
        # constant liar: trials still running count as bad, so parallel asks spread out
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=True, **startup),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed, scramble=True),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, **startup),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, **startup),
    }
    if name not in samplers:
        raise ValueError(f"optuna sampler must be one of {sorted(samplers)}, but got {name!r}.")
    return samplers[name]()


def build_searcher(spec: SearcherSpec, param_space: Mapping[str, Any]) -> Any:
    """The Ray Tune searcher an ``optuna`` :class:`SearcherSpec` describes, set up on a space."""
    if spec.kind != "optuna":
        raise ValueError(f"only optuna searchers are built, but got kind {spec.kind!r}.")
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    algo = OptunaSearch(
        metric=spec.metric,
        mode=spec.mode,
        sampler=_optuna_sampler(spec.sampler, spec.seed, spec.startup_trials),
    )
    verbosity = optuna.logging.get_verbosity()
    # Optuna says "A new study created in memory" at INFO for each seed's study: quiet here
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        algo.set_search_properties(spec.metric, spec.mode, dict(param_space))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return algo


def sample_configs(
    param_space: Mapping[str, Any],
    *,
    num_samples: int,
    searcher: SearcherSpec | None = None,
    seeds_apart: bool = False,
) -> list[dict[str, Any]]:
    """The trial configs of a search, drawn without running anything (also a dry run).

    Grid and random spaces go through Ray's variant generator, seeded by ``searcher.seed``
    (``random``) so the draws repeat; an Optuna searcher is asked for ``num_samples``
    suggestions with no results told back, as for trials started at once. ``seeds_apart``
    orders them each seed's first config, then each seed's second ... (by ``seed``).
    """
    from ray.tune.search.variant_generator import generate_variants

    space = dict(param_space)
    if searcher is not None and searcher.kind == "optuna":
        algo = build_searcher(searcher, space)
        return [merge(space, algo.suggest(f"dry-{i}")) for i in range(num_samples)]
    rng = np.random.default_rng(searcher.seed if searcher else 0)
    configs = [
        resolved
        for _ in range(num_samples)
        for _, resolved in generate_variants(space, random_state=rng)
    ]
    return _seeds_in_turn(configs) if seeds_apart else configs


def _seeds_in_turn(configs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``configs`` reordered by their rank among the configs of their seed (stable)."""
    seen: dict[Any, int] = {}
    ranks = []
    for config in configs:
        ranks.append(seen.get(config.get("seed"), 0))
        seen[config.get("seed")] = ranks[-1] + 1
    order = sorted(range(len(configs)), key=lambda i: ranks[i])
    return [configs[i] for i in order]


def merge(space: Mapping[str, Any], suggested: Mapping[str, Any]) -> dict[str, Any]:
    """A searcher's ``suggested`` values over the fixed values of ``space`` (its constants)."""
    fixed = {k: v for k, v in space.items() if not is_domain(v) and not is_grid(v)}
    return {**fixed, **suggested}
