"""``fixed``: one given learning rate over every seed (a re-run of a chosen config, a baseline)."""

from __future__ import annotations

from sweeps.strategies._base import Search, Strategy


class FixedStrategy(Strategy):
    """One trial per seed at ``lr``; what ``lrsweep best --format spec`` writes."""

    kind = "fixed"

    def searches(self) -> list[Search]:
        """One search over the seeds."""
        return self._grid({}, lr=float(self.arm.lr))
