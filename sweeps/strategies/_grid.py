"""``grid``: every learning rate of a log-spaced grid, once per seed (``tune.grid_search``)."""

from __future__ import annotations

from sweeps.spec._lr import log_spaced
from sweeps.strategies._base import Search, Strategy


class GridStrategy(Strategy):
    """``lr.points`` log-spaced LRs from ``lr.min`` to ``lr.max``, times the seeds."""

    kind = "grid"

    def lrs(self) -> list[float]:
        """The grid's learning rates, smallest first."""
        spec = self.arm.lr
        return log_spaced(spec.min, spec.max, spec.points)

    def searches(self) -> list[Search]:
        """One search: the grid crossed with the seeds."""
        return self._grid({"lr": self.lrs()})
