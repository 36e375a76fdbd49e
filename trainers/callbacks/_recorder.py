"""Recorder: per-step loss, learning rate and momentum, and the per-epoch history."""

from __future__ import annotations

import math
import time
from typing import Any

from trainers.callbacks._base import Callback

__all__ = ["Recorder"]


class Recorder(Callback):
    """Always installed on a Learner (as ``learn.recorder``); builds ``learn.history``.

    Per training step it appends the loss (the float the Learner already took with one
    ``.item()``), the top layer group's learning rate and its momentum (Adam's beta1 or SGD's
    momentum) to :attr:`losses`, :attr:`lrs` and :attr:`moms`; these lists restart at every
    ``fit``. After each epoch it appends one record to ``learn.history``::

        {"epoch", "train_loss", "valid_loss", <metrics...>, "lr", "epoch_time_s"
         [, "phase"][, "cancelled"]}

    ``train_loss`` is the mean of the epoch's batch losses, ``lr`` the top group's rate at the end
    of the epoch and ``phase`` is present when ``learn.phase`` is set. An epoch a ``CancelEpoch``
    cut short has ``"cancelled": True``; its ``train_loss`` is NaN when no step ran, and a metric
    whose validation was cancelled is NaN (not measured, which
    :func:`~trainers.diagnose.diagnose` tells apart from a loss that blew up). ``order`` is
    -10, so callbacks with the default order see the new record in their own ``after_epoch``.

    Attributes:
        losses: Training loss per step of the current fit.
        lrs: Top group's learning rate used at each step.
        moms: Top group's momentum used at each step.
    """

    order = -10

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.moms: list[float] = []
        self._mom_key: str | None = None
        self._epoch_start = 0.0
        self._epoch_first_step = 0
        self._cancelled = False

    def reset(self) -> None:
        """Forget the per-step records."""
        self.losses, self.lrs, self.moms = [], [], []

    def before_fit(self) -> None:
        self.reset()
        group = self.learn.opt.param_groups[-1]
        self._mom_key = "betas" if "betas" in group else "momentum" if "momentum" in group else None

    def before_epoch(self) -> None:
        self._epoch_start = time.perf_counter()
        self._epoch_first_step = len(self.losses)
        self._cancelled = False

    def after_cancel_epoch(self) -> None:
        self._cancelled = True

    def after_batch(self) -> None:
        value = self.learn.loss_value
        if value is None:  # the batch was cancelled
            return
        group = self.learn.opt.param_groups[-1]
        self.losses.append(value)
        self.lrs.append(group["lr"])
        key = self._mom_key
        if key is not None:
            mom = group[key]
            self.moms.append(mom[0] if key == "betas" else mom)

    def after_epoch(self) -> None:
        learn = self.learn
        steps = self.losses[self._epoch_first_step :]
        metrics = learn.metrics_values
        record: dict[str, Any] = {
            "epoch": learn.epoch,
            "train_loss": sum(steps) / len(steps) if steps else math.nan,
        }
        for key in ("valid_loss", *learn.metric_names):
            record[key] = float(metrics.get(key, math.nan))
        record["lr"] = float(learn.opt.param_groups[-1]["lr"])
        record["epoch_time_s"] = time.perf_counter() - self._epoch_start
        if learn.phase is not None:
            record["phase"] = learn.phase
        if self._cancelled:
            record["cancelled"] = True
        learn.history.append(record)
