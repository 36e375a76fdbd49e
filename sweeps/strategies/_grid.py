"""``grid``: every learning rate of a log-spaced grid, once per seed (``tune.grid_search``)."""

from __future__ import annotations

from sweeps._ray import grid_search
from sweeps.strategies._base import Search, Strategy, log_spaced


class GridStrategy(Strategy):
    """``lr.points`` log-spaced LRs from ``lr.min`` to ``lr.max``, times the seeds."""

    kind = "grid"

    def lrs(self) -> list[float]:
        """The grid's learning rates, smallest first."""
        spec = self.arm.lr
        return log_spaced(spec.min, spec.max, spec.points)

    def searches(self) -> list[Search]:
        """One search: the grid crossed with the seeds."""
        lrs = self.lrs()
        space = {**self._constants(), "seed": grid_search(self.seeds), "lr": grid_search(lrs)}
        return [
            Search(
                name=self.arm_name,
                arm=self.arm_name,
                kind=self.kind,
                param_space=space,
                num_samples=1,
                n_trials=len(lrs) * len(self.seeds),
            )
        ]
