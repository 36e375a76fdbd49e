"""EarlyStoppingCallback: stop when the monitored value stops improving, keep the best weights."""

from __future__ import annotations

import logging

import torch

from trainers.callbacks._tracker import TrackerCallback
from trainers.errors import CancelFit

__all__ = ["EarlyStoppingCallback"]

logger = logging.getLogger(__name__)


class EarlyStoppingCallback(TrackerCallback):
    """Stop training after ``patience`` epochs without improvement of ``monitor``.

    Args:
        monitor: History key to watch (default ``"valid_loss"``).
        patience: Epochs without improvement tolerated before stopping, ``>= 1``.
        min_delta: Smallest change that counts as an improvement, ``>= 0``.
        restore_best: At the end of the fit (stopped early or not), load the weights of the best
            epoch, kept as an in-memory copy of the model's state dict. A fit resumed with
            ``start_epoch`` counts the checkpoint's epochs towards ``patience`` and the best;
            when that best came before the resume and is not the loaded last epoch, its
            weights are not in memory: a warning says so and the last epoch's stay. When
            the epochs before the resume already spent ``patience`` (the checkpoint of the
            epoch that ended the fit), the resumed fit stops before training another.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy).

    Attributes:
        best, best_epoch: Best value and its epoch (see :class:`TrackerCallback`).
        stopped_epoch: Epoch after which training stopped, or None when it ran to the end.

    Example:
        >>> learn.fit_one_cycle(20, 1e-2)  # doctest: +SKIP
        >>> # with Learner(..., callbacks=[EarlyStoppingCallback(patience=2)])
    """

    def __init__(
        self,
        monitor: str = "valid_loss",
        patience: int = 1,
        min_delta: float = 0.0,
        restore_best: bool = True,
        *,
        mode: str = "auto",
    ) -> None:
        super().__init__(monitor, min_delta=min_delta, mode=mode)
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, but got {patience!r}.")
        self.patience = patience
        self.restore_best = restore_best
        self.stopped_epoch: int | None = None
        self._wait = 0
        self._spent_before_resume = False
        self._best_state: dict[str, torch.Tensor] | None = None

    def before_fit(self) -> None:
        super().before_fit()
        self.stopped_epoch = None
        self._wait = 0
        self._best_state = None
        for improved in self._resumed:  # a resumed fit: the epochs before start_epoch
            self._wait = 0 if improved else self._wait + 1
        if self._resumed and self._resumed[-1] and self.restore_best:
            self._keep_weights()  # the loaded weights are the best epoch's (the last one)
        self._spent_before_resume = bool(self._resumed) and self._wait >= self.patience

    def before_epoch(self) -> None:
        # A fit resumed from the checkpoint of the epoch that spent the patience (the last
        # checkpoint of a fit this callback ended) stops before training any more, as the
        # uninterrupted fit did; every callback has seen before_fit by now.
        if self._spent_before_resume:
            self._spent_before_resume = False
            self._stop(self.learn.epoch - 1, f"before epoch {self.learn.epoch} of a resumed fit")

    def after_epoch(self) -> None:
        if self._improved():
            self._wait = 0
            if self.restore_best:
                self._keep_weights()
            return
        self._wait += 1
        if self._wait >= self.patience:
            self._stop(self.learn.epoch, f"after epoch {self.learn.epoch}")

    def _stop(self, stopped_epoch: int, when: str) -> None:
        self.stopped_epoch = stopped_epoch
        logger.info(
            "early stop %s: %s not better than %.6g (epoch %s) for %d epochs",
            when,
            self.monitor,
            self.best,
            self.best_epoch,
            self._wait,
        )
        raise CancelFit

    def _keep_weights(self) -> None:
        state = self.learn.model.state_dict()
        self._best_state = {k: v.detach().clone() for k, v in state.items()}

    def after_fit(self) -> None:
        if not self._end_fit():
            return
        if self.restore_best and self._best_state is None and self.best_epoch is not None:
            logger.warning(
                "the best epoch (%s, %s=%.6g) came before this resumed fit and its weights are "
                "not in memory: the model keeps the last epoch's; a SaveModelCallback on the "
                "interrupted fit's best checkpoint reloads them",
                self.best_epoch,
                self.monitor,
                self.best,
            )
        if self.restore_best and self._best_state is not None:
            self.learn.model.load_state_dict(self._best_state)
            logger.info(
                "restored the weights of epoch %s (%s=%.6g)",
                self.best_epoch,
                self.monitor,
                self.best,
            )
