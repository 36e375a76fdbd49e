"""``fixed``: one given learning rate over every seed (a re-run of a chosen config, a baseline)."""

from __future__ import annotations

from sweeps._ray import grid_search
from sweeps.strategies._base import Search, Strategy


class FixedStrategy(Strategy):
    """One trial per seed at ``lr``; what ``lrsweep best --format spec`` writes."""

    kind = "fixed"

    def searches(self) -> list[Search]:
        """One search over the seeds."""
        space = {**self._constants(), "seed": grid_search(self.seeds), "lr": float(self.arm.lr)}
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
