"""``Divergence``: stop a trial whose loss has blown up."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sweeps.stoppers._base import MetricStopper, TrialState, finite_number, whole_number

__all__ = ["Divergence"]


class Divergence(MetricStopper):
    """Stop at once when a loss is NaN or infinite, or exceeds ``factor`` times its best.

    A non-finite value stops the trial whatever the epoch. The explosion rule (value above
    ``factor * best`` so far) applies only after ``grace_epochs`` epochs, only once the best is
    positive (a loss of exactly 0 has no meaningful multiple), and only to a value above
    ``1 / factor`` of the first one seen: a training loss that has fallen near zero wobbles by
    several times (0.002 to 0.01) without blowing up, and such a trial is among the best, not
    diverged. The metric is a loss: lower is better.

    A first result carrying ``<metric>_at_start`` (lrsweep's trials send ``train_loss_at_start``,
    the loss of the first batch, before any update: the untrained model's) makes that value a
    best too, so a loss that blows up within the first epoch (a constant rate far too high, where
    epoch 1's mean is already hundreds of times the start and later epochs only fall back) is
    caught at epoch 1 (after ``grace_epochs``) instead of never.

    The first value is the one of the trial's first epoch. A stopper that meets a trial later
    (Ray Tune's driver after ``Tuner.restore``, which brings back the stopper as it was pickled
    when the sweep started, with no trial in it) does not know it and applies the NaN rule
    alone; the trial, which replays its history into its own stopper, still applies both.
    Taking a later, already small value for the first would stop a trial that is only
    wobbling near zero, and Tune would kill it in the middle of its run.

    Example:
        >>> stopper = Divergence(factor=4.0)
        >>> [stopper("t", {"train_loss": v, "training_iteration": i + 1})
        ...  for i, v in enumerate([2.0, 0.5, 1.9, 2.1])]
        [False, False, False, True]
        >>> [stopper("fits", {"train_loss": v, "training_iteration": i + 1})
        ...  for i, v in enumerate([2.0, 0.01, 0.002, 0.012])]
        [False, False, False, False]
        >>> stopper("blown", {"train_loss": 900.0, "train_loss_at_start": 2.3,
        ...                   "training_iteration": 1})
        True

    Args:
        metric: The loss to watch.
        factor: How many times the best a value may reach before the trial counts as diverged,
            above 1.
        grace_epochs: Leading epochs exempt from the explosion rule (not from the NaN rule).
        epoch_key: The result key counting epochs (see ``MetricStopper``).

    Raises:
        ValueError: for a parameter out of range (the message names it).
    """

    reason = "diverged"
    severity = 2

    def __init__(
        self,
        metric: str = "train_loss",
        *,
        factor: float = 4.0,
        grace_epochs: int = 0,
        epoch_key: str | None = "training_iteration",
    ) -> None:
        super().__init__(metric, mode="min", epoch_key=epoch_key)
        finite = finite_number(factor)
        if finite is None or finite <= 1:
            raise ValueError(f"factor must be a finite number above 1, but got {factor!r}.")
        self.factor = finite
        self.grace_epochs = whole_number("grace_epochs", grace_epochs, minimum=0)

    def _first_result(self, state: TrialState, result: Mapping[str, Any]) -> None:
        start = finite_number(result.get(f"{self.metric}_at_start"))
        if start is not None and start > 0:  # a loss: lower is better (mode "min")
            state.start = start

    def _reference(self, state: TrialState, counter: str) -> str:
        if state.start < state.best:
            return f"{self.metric} at the start {state.start}"
        return super()._reference(state, counter)

    def _update(self, state: TrialState, signed: float, epoch: int) -> bool:
        if not math.isfinite(signed):
            return True
        if math.isnan(state.first) and epoch == 1:
            state.first = signed  # met later: unknown, stays NaN, and the explosion rule is off
        best = min(state.best, state.start)
        exploded = (
            epoch > self.grace_epochs
            and 0 < best < math.inf
            and signed > self.factor * best
            and signed > state.first / self.factor
        )
        if signed < state.best:
            state.best, state.best_epoch = signed, epoch
        return exploded
