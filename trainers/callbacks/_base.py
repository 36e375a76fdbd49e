"""The callback base class and the names of the events a Learner fires."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainers.learner import Learner

__all__ = ["EVENTS", "Callback"]

EVENTS: tuple[str, ...] = (
    "before_fit",
    "before_epoch",
    "before_train",
    "before_batch",
    "after_pred",
    "after_loss",
    "before_backward",
    "after_backward",
    "before_step",
    "after_step",
    "after_batch",
    "after_train",
    "before_validate",
    "after_validate",
    "after_epoch",
    "after_fit",
    "after_cancel_batch",
    "after_cancel_epoch",
    "after_cancel_fit",
)
"""Every event, in the order a normal epoch fires them, then the three cancellation events."""


class Callback:
    """Base class of every callback: subclass it and define methods named after events.

    A method takes no argument and reads (or changes) the training state through
    ``self.learn``. Only the events a callback defines are dispatched to it, so an unused event
    costs nothing. Callbacks run in increasing ``order`` (ties keep the order they were added).
    Batch events (``before_batch`` ... ``after_batch``) fire for training batches only.

    Control flow: raise :class:`~trainers.errors.CancelBatch`, ``CancelEpoch`` or ``CancelFit``
    to skip the rest of the batch, stop the epoch's training (validation and ``after_epoch``
    still run, so every history record is complete) or end the fit (``after_cancel_fit`` then
    ``after_fit`` run; raised in ``after_epoch``, after every callback's ``after_epoch``, so
    progress rows, checkpoints and reports of the last epoch are not skipped). Any other
    exception is re-raised as :class:`~trainers.errors.CallbackError` naming the callback
    class and the event.

    ``before_step`` fires after ``after_backward``, right before the optimizer step (fastai's
    gradient clipping event). A public method named ``before_*`` / ``after_*`` that is not an
    event is refused when the callback is added, so a misspelt event cannot be ignored silently.

    Example:
        >>> class StopAfter(Callback):
        ...     def __init__(self, n_epochs: int) -> None:
        ...         self.n_epochs = n_epochs
        ...     def after_epoch(self) -> None:
        ...         if self.learn.epoch + 1 >= self.n_epochs:
        ...             raise CancelFit  # from trainers.errors
    """

    order: int = 0
    learn: Learner

    @property
    def name(self) -> str:
        """The class name, as used in error messages."""
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{self.name}(order={self.order})"
