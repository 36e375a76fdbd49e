"""The monitored-value bookkeeping shared by early stopping and best-model saving."""

from __future__ import annotations

import math
from typing import Any

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

    A fit resumed with ``start_epoch=k`` (after :meth:`Learner.load`) first reads the records of
    epochs ``0 .. k-1`` at the end of ``learn.history`` (the checkpoint's), so the best value and
    its epoch are those the uninterrupted fit would have: a resumed epoch worse than an earlier
    best does not count as an improvement. Without such records it starts afresh.
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
        self._resumed: list[bool] = []
        self._fitting = False

    def before_fit(self) -> None:
        keys = ["train_loss", "valid_loss", *self.learn.metric_names, "lr", "epoch_time_s"]
        if self.monitor not in keys:
            raise ValueError(
                f"monitor={self.monitor!r} is not in the history records; the keys are {keys}."
            )
        self.best = -math.inf if self.maximise else math.inf
        self.best_epoch = None
        self._resumed = [self._judge(r, r["epoch"]) for r in self._earlier_records()]
        self._fitting = True

    def _end_fit(self) -> bool:
        """True once per fit whose ``before_fit`` this tracker ran; a fit cancelled by an
        earlier callback's ``before_fit`` still calls ``after_fit``, and must not restore
        what the previous fit kept."""
        fitting, self._fitting = self._fitting, False
        return fitting

    def _earlier_records(self) -> list[dict[str, Any]]:
        """The records of epochs ``0 .. start_epoch-1`` ending ``learn.history`` when this fit
        resumes an interrupted one (``start_epoch > 0``); else none. ``_resumed`` then holds,
        for each, whether it improved."""
        start, history = self.learn.resume_epoch, self.learn.history
        if start <= 0 or len(history) < start:
            return []
        tail = history[len(history) - start :]
        if [r.get("epoch") for r in tail] != list(range(start)):
            return []
        return tail if all(self.monitor in r for r in tail) else []

    def _improved(self) -> bool:
        """Read this epoch's value; update :attr:`best` and return True when it improved."""
        return self._judge(self.learn.history[-1], self.learn.epoch)

    def _judge(self, record: dict[str, Any], epoch: int) -> bool:
        """Update :attr:`best` from ``record`` of ``epoch``; True when it improved."""
        value = float(record[self.monitor])
        if math.isnan(value):
            return False
        better = (
            value > self.best + self.min_delta
            if self.maximise
            else value < self.best - self.min_delta
        )
        if better:
            self.best = value
            self.best_epoch = epoch
        return better
