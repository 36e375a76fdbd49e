"""The monitored-value bookkeeping shared by early stopping and best-model saving."""

from __future__ import annotations

import math

from trainers.callbacks._base import Callback

__all__ = ["TrackerCallback"]

_MAXIMISED = ("accuracy",)
_MODES = ("auto", "min", "max")


class TrackerCallback(Callback):
    """Tracks the best value of one history key across epochs.

    Args:
        monitor: A key of the history record (``"valid_loss"``, ``"error_rate"``,
            ``"accuracy"``, ``"train_loss"``).
        min_delta: An epoch improves only when it beats the best by more than this, ``>= 0``.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy, min otherwise).

    Attributes:
        best: Best value seen in the current fit (inf / -inf before the first epoch).
        best_epoch: Epoch of :attr:`best`, or None.

    A NaN value never counts as an improvement. A monitor missing from the records raises
    ``ValueError`` listing the keys that exist, at ``before_fit`` (so ``fit`` raises a
    :class:`~trainers.errors.CallbackError` whose cause it is).
    """

    order = 10

    def __init__(
        self, monitor: str = "valid_loss", *, min_delta: float = 0.0, mode: str = "auto"
    ) -> None:
        if not isinstance(monitor, str):
            raise ValueError(f"monitor must be a history key (a string), but got {monitor!r}.")
        ok = isinstance(min_delta, int | float) and not isinstance(min_delta, bool)
        if not (ok and math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0, but got {min_delta!r}.")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, but got {mode!r}.")
        self.monitor = monitor
        self.min_delta = float(min_delta)
        self.maximise = mode == "max" or (mode == "auto" and monitor in _MAXIMISED)
        self.best = -math.inf if self.maximise else math.inf
        self.best_epoch: int | None = None

    def before_fit(self) -> None:
        keys = ["train_loss", "valid_loss", *self.learn.metric_names, "lr", "epoch_time_s"]
        if self.monitor not in keys:
            raise ValueError(
                f"monitor={self.monitor!r} is not in the history records; the keys are {keys}."
            )
        self.best = -math.inf if self.maximise else math.inf
        self.best_epoch = None

    def _improved(self) -> bool:
        """Read this epoch's value; update :attr:`best` and return True when it improved."""
        value = float(self.learn.history[-1][self.monitor])
        if math.isnan(value):
            return False
        better = (
            value > self.best + self.min_delta
            if self.maximise
            else value < self.best - self.min_delta
        )
        if better:
            self.best = value
            self.best_epoch = self.learn.epoch
        return better
