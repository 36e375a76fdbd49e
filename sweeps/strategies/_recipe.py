"""``recipe``: fastai's recipe (``Learner.fit_recipe``) as one more contender, once per seed."""

from __future__ import annotations

from sweeps._ray import grid_search
from sweeps.strategies._base import Search, Strategy


class RecipeStrategy(Strategy):
    """One ``fit_recipe`` trial per seed, starting from the arm's suggestion rule."""

    kind = "recipe"

    def searches(self) -> list[Search]:
        """One search over the seeds."""
        space = {**self._constants(), "seed": grid_search(self.seeds), "rule": self.arm.suggest}
        return [
            Search(
                name=self.arm_name,
                arm=self.arm_name,
                kind=self.kind,
                param_space=space,
                num_samples=1,
                n_trials=len(self.seeds),
            )
        ]
