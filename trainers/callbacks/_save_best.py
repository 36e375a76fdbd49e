"""SaveModelCallback: save the best model (or every epoch) with ``learn.save``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from trainers.callbacks._tracker import TrackerCallback

__all__ = ["SaveModelCallback"]


class SaveModelCallback(TrackerCallback):
    """Save a checkpoint whenever ``monitor`` improves, or after every epoch.

    Args:
        path: Checkpoint file for :meth:`Learner.save` (``~`` is the home folder). With
            ``every_epoch=True`` it may contain ``{epoch}`` (e.g. ``"ckpt/epoch_{epoch}.pt"``) to
            keep one file per epoch; otherwise the file is overwritten.
        monitor: History key deciding which epoch is best (default ``"valid_loss"``).
        every_epoch: Save after every epoch instead of only on improvement.
        min_delta: Smallest change that counts as an improvement.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy).
        reload_best: At the end of the fit (also one ended by ``CancelFit``, e.g. early
            stopping) load the best epoch's weights back into the model, as fastai does; the
            history, optimizer and RNG stay as the fit left them. Ignored with ``every_epoch``.
            A fit resumed with ``start_epoch`` keeps the checkpoint's best epoch as the one to
            beat (a worse resumed epoch does not overwrite ``path``) and reloads ``path`` when
            no resumed epoch beat it.

    Attributes:
        best, best_epoch: Best value and its epoch.
        last_saved: Path of the last checkpoint written, or None.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        monitor: str = "valid_loss",
        every_epoch: bool = False,
        *,
        min_delta: float = 0.0,
        mode: str = "auto",
        reload_best: bool = True,
    ) -> None:
        super().__init__(monitor, min_delta=min_delta, mode=mode)
        if not isinstance(path, str | os.PathLike):
            raise ValueError(f"path must be a file path, but got {path!r}.")
        if "{epoch}" in str(path) and not every_epoch:
            raise ValueError(
                f"path {str(path)!r} has an {{epoch}} field, which only every_epoch=True fills "
                "in; pass every_epoch=True, or a fixed path for the best epoch's checkpoint."
            )
        self.path = str(Path(path).expanduser())
        self.every_epoch = every_epoch
        self.reload_best = reload_best
        self.last_saved: Path | None = None

    def before_fit(self) -> None:
        super().before_fit()
        self.last_saved = None
        if any(self._resumed) and not self.every_epoch and Path(self.path).is_file():
            self.last_saved = Path(self.path)  # the interrupted fit's best, reloaded at the end

    def after_epoch(self) -> None:
        improved = self._improved()
        if self.every_epoch or improved:
            target = Path(
                self.path.format(epoch=self.learn.epoch) if self.every_epoch else self.path
            )
            self.learn.save(target)
            self.last_saved = target

    def after_fit(self) -> None:
        if not self._end_fit() or self.every_epoch or not self.reload_best:
            return
        if self.last_saved is None:  # no epoch improved (all NaN), or none ran
            return
        state = torch.load(self.last_saved, map_location=self.learn.device, weights_only=True)
        self.learn.model.load_state_dict(state["model"])
