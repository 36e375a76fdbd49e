"""Exceptions raised by trainers: training faults and the callback control flow."""

from __future__ import annotations


class TrainingDiverged(RuntimeError):
    """The loss became non-finite; carries where it happened.

    Attributes:
        epoch: Zero-based epoch in which the loss stopped being finite.
        batch: Zero-based batch index within that epoch.
        loss: The offending loss value (``nan`` or ``inf``).
        cause: What the message blames instead of the learning rate, when the loss was not
            finite before the fit took a step (None: the usual advice to lower the rate).
    """

    def __init__(self, epoch: int, batch: int, loss: float, cause: str | None = None) -> None:
        self.epoch = epoch
        self.batch = batch
        self.loss = loss
        self.cause = cause
        super().__init__(
            f"Training diverged: the loss is {loss} at epoch {epoch}, batch {batch}. "
            + (
                cause
                or "The learning rate is probably too high; run lr_find() and pick a lower one "
                "(the weights are now those of the diverged step: load a checkpoint or rebuild "
                "the model first)."
            )
        )

    def __reduce__(self):  # keep picklable across Ray processes
        return (type(self), (self.epoch, self.batch, self.loss, self.cause))


class CancelBatch(Exception):
    """Raised by a callback to skip the rest of the current batch."""


class CancelEpoch(Exception):
    """Raised by a callback to end the current epoch early."""


class CancelFit(Exception):
    """Raised by a callback to end training; ``after_fit`` still runs."""


class CallbackError(RuntimeError):
    """A callback raised; the message names the callback and the event."""

    def __init__(self, callback: str, event: str, error: BaseException) -> None:
        self.callback = callback
        self.event = event
        super().__init__(f"Exception in callback {callback} during {event}: {error!r}")

    def __reduce__(self):
        return (type(self), (self.callback, self.event, self.__cause__ or RuntimeError(str(self))))
