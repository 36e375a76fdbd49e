"""``RisingValLoss``: stop a trial that has started to overfit."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sweeps.stoppers._base import MetricStopper, TrialState, finite_number, whole_number

__all__ = ["OWN_STOP_RULE", "RisingValLoss"]

OWN_STOP_RULE = "own_stop_rule"
"""Result key of a trial that stops itself by a rule of its own (a ``recipe`` arm: SGDR until
its validation loss stops improving): ``RisingValLoss`` leaves it alone, ``Divergence`` not."""


class RisingValLoss(MetricStopper):
    """Stop once the metric has been worse than its best for ``patience`` epochs in a row.

    An epoch is *bad* when its value is worse than the best so far by more than ``min_delta``,
    or is NaN / infinite. A new best resets the run of bad epochs, and so does an epoch within
    ``min_delta`` of the best (a plateau is not overfitting). The first ``grace_epochs`` epochs
    never count as bad, though their values still set the best.

    Example:
        >>> stopper = RisingValLoss(patience=2, grace_epochs=0)
        >>> [stopper("t", {"valid_loss": v, "training_iteration": i + 1})
        ...  for i, v in enumerate([0.9, 0.5, 0.6, 0.7])]
        [False, False, False, True]

    Args:
        metric: The metric to watch.
        mode: ``"min"`` (losses, error rate) or ``"max"`` (accuracy).
        patience: Consecutive bad epochs that stop the trial, at least 1.
        min_delta: How much worse than the best an epoch must be to count as bad, ``>= 0``.
        grace_epochs: Leading epochs that never count as bad, ``>= 0``.
        epoch_key: The result key counting epochs (see ``MetricStopper``).

    Raises:
        ValueError: for a parameter out of range (the message names it).
    """

    reason = "rising_val_loss"
    severity = 1

    def __init__(
        self,
        metric: str = "valid_loss",
        *,
        mode: str = "min",
        patience: int = 2,
        min_delta: float = 0.0,
        grace_epochs: int = 1,
        epoch_key: str | None = "training_iteration",
    ) -> None:
        super().__init__(metric, mode=mode, epoch_key=epoch_key)
        self.patience = whole_number("patience", patience, minimum=1)
        delta = finite_number(min_delta)
        if delta is None or delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, but got {min_delta!r}.")
        self.min_delta = delta
        self.grace_epochs = whole_number("grace_epochs", grace_epochs, minimum=0)

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        """As :meth:`MetricStopper.__call__`; never True for a result marked
        ``OWN_STOP_RULE``: a recipe's head steps (frozen body) would be cut before it ever
        unfreezes, on a rule its own final step applies anyway."""
        if result.get(OWN_STOP_RULE):
            return False
        return super().__call__(trial_id, result)

    def _update(self, state: TrialState, signed: float, epoch: int) -> bool:
        finite = math.isfinite(signed)
        if finite and signed < state.best:
            state.best, state.best_epoch, state.bad_epochs = signed, epoch, 0
            return False
        if epoch <= self.grace_epochs:
            return False
        if not finite or signed > state.best + self.min_delta:
            state.bad_epochs += 1
        else:
            state.bad_epochs = 0
        return state.bad_epochs >= self.patience
