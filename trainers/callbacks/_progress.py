"""ProgressCallback: a rich progress bar over the batches and one table row per epoch."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from trainers.callbacks._base import Callback

__all__ = ["ProgressCallback"]


class ProgressCallback(Callback):
    """Shows training progress in the terminal, fastai-style.

    A bar advances over each epoch's training batches, and each finished epoch prints a row
    ``epoch  train_loss  valid_loss  <metrics>  time``. The Learner installs it when
    ``progress=True``, or when ``progress=None`` and stdout is a terminal. The terminal's cursor
    stays visible, so a fit that raises mid-epoch (``TrainingDiverged``, Ctrl-C) leaves the
    terminal usable.

    Args:
        console: Where to draw; a new :class:`rich.console.Console` on stdout when None.
    """

    order = 100

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._bar: Progress | None = None
        self._task = TaskID(0)

    def before_fit(self) -> None:
        self._stop()
        names = ["epoch", "train_loss", "valid_loss", *self.learn.metric_names, "time"]
        self.console.print("  ".join(f"{n:>10}" for n in names))

    def before_train(self) -> None:
        self._bar = Progress(
            TextColumn(f"epoch {self.learn.epoch}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._bar.start()
        # rich hides the cursor until stop(); an error or Ctrl-C mid-epoch skips after_train and
        # after_fit, and would leave the user's terminal without a cursor
        self.console.show_cursor(True)
        self._task = self._bar.add_task("train", total=self.learn.n_iter)

    def after_batch(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, refresh=True)

    def after_train(self) -> None:
        self._stop()

    def after_epoch(self) -> None:
        rec = self.learn.history[-1]
        cells = [f"{rec['epoch']:>10d}"]
        for key in ("train_loss", "valid_loss", *self.learn.metric_names):
            value = rec.get(key, math.nan)
            cells.append(f"{value:>10.6f}")
        minutes, seconds = divmod(int(rec["epoch_time_s"]), 60)
        cells.append(f"{minutes:>7d}:{seconds:02d}")
        self.console.print("  ".join(cells))

    def after_fit(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
