"""``optuna``: Ray Tune's ``OptunaSearch`` with the named sampler, one study per seed.

Optuna cannot take a grid over seeds, and one study mixing seeds would learn from noise, so each
training seed gets its own study of ``trials`` trials; the sampler seed of the study for training
seed ``s`` is ``arm.seed + s``, which makes every study repeatable.
"""

from __future__ import annotations

from sweeps._ray import SearcherSpec, loguniform
from sweeps.strategies._base import SEARCH_METRIC, Search, Strategy


class OptunaStrategy(Strategy):
    """``trials`` Optuna trials per seed over a log-uniform ``lr`` range."""

    kind = "optuna"

    def searches(self) -> list[Search]:
        """One search (one Optuna study) per seed."""
        return [
            Search(
                name=f"{self.arm_name}-seed{seed}",
                arm=self.arm_name,
                kind=self.kind,
                param_space={
                    **self._constants(),
                    "seed": seed,
                    "lr": loguniform(self.arm.lr.min, self.arm.lr.max),
                },
                num_samples=self.arm.trials,
                n_trials=self.arm.trials,
                searcher=SearcherSpec(
                    kind="optuna",
                    metric=SEARCH_METRIC,
                    mode="min",
                    seed=self.arm.seed + seed,
                    sampler=self.arm.sampler,
                    startup_trials=self.arm.startup_trials,
                ),
            )
            for seed in self.seeds
        ]
