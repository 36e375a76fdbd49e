"""``lr_finder``: the LR range test inside each trial, then training at the rule's suggestion.

One trial per (rule, seed). Trials of one seed need the same range test (same seed, same data
order, so the same curve): the first runs it and shares the curve, the others read it
(``sweeps.trial``), and each counts its seconds: a rule's compute is what a person using that rule
alone would spend, range test included. The LR is not in the param space; the trial finds it.

The seeds are served in turn (``seeds_apart``: every seed's trial of the first rule, then of
the next): trials started side by side are of other seeds, so a seed's first trial has run
its range test before the next rule's trial of that seed starts and reads it. Served seed by
seed, a seed's rules started side by side and each ran the same test.
"""

from __future__ import annotations

from sweeps.strategies._base import Search, Strategy


class LrFinderStrategy(Strategy):
    """Every suggestion rule in ``suggest`` crossed with every seed."""

    kind = "lr_finder"

    def searches(self) -> list[Search]:
        """One search: rules x seeds, the seeds served in turn."""
        return self._grid({"rule": list(self.arm.suggest)}, seeds_apart=True)
