"""``random``: learning rates drawn log-uniformly (``tune.loguniform``) with a fixed seed."""

from __future__ import annotations

from sweeps._ray import SearcherSpec, grid_search, loguniform
from sweeps.strategies._base import SEARCH_METRIC, Search, Strategy


class RandomStrategy(Strategy):
    """``trials`` draws per seed from ``[lr.min, lr.max]``; the arm's ``seed`` fixes the draws."""

    kind = "random"

    def searches(self) -> list[Search]:
        """One search: ``trials`` rounds of one draw per seed.

        Ray's variant generator samples ``lr`` anew for every seed of the grid, from one
        generator seeded with the arm's ``seed``: each training seed gets its own ``trials``
        learning rates (no LR is run over every seed, unlike ``grid``), the same ones on every
        run of the same spec; a seed's draws change with the sweep's list of seeds.
        """
        space = {
            **self._constants(),
            "seed": grid_search(self.seeds),
            "lr": loguniform(self.arm.lr.min, self.arm.lr.max),
        }
        return [
            Search(
                name=self.arm_name,
                arm=self.arm_name,
                kind=self.kind,
                param_space=space,
                num_samples=self.arm.trials,
                n_trials=self.arm.trials * len(self.seeds),
                searcher=SearcherSpec(kind="random", metric=SEARCH_METRIC, seed=self.arm.seed),
            )
        ]
