"""``recipe``: fastai's recipe (``Learner.fit_recipe``) as one more contender, once per seed."""

from __future__ import annotations

from sweeps.strategies._base import Search, Strategy


class RecipeStrategy(Strategy):
    """One ``fit_recipe`` trial per seed, starting from the arm's suggestion rule."""

    kind = "recipe"

    def searches(self) -> list[Search]:
        """One search over the seeds."""
        return self._grid({}, rule=self.arm.suggest)
