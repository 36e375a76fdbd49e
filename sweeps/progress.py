"""A live terminal table of a running sweep, fed by Ray Tune's driver-side callback events.

Per arm: trials running, done, stopped early (``rising_val_loss`` / ``diverged``), failed, the
total expected, and the best validation loss so far with its LR. The table redraws in place
with rich when stdout is a terminal; otherwise the display is quiet and each finished trial is
one INFO log line.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import Any

from sweeps._ray import Callback

logger = logging.getLogger(__name__)


@dataclass
class ArmProgress:
    """Counters of one arm."""

    total: int = 0
    running: int = 0
    done: int = 0
    stopped: int = 0
    failed: int = 0
    best_valid_loss: float = math.inf
    best_lr: float = math.nan


class SweepProgress(Callback):
    """Ray Tune callback that keeps per-arm counters and draws them.

    Args:
        live: Draw a live table: True, False, or None (only when stdout is a terminal).

    Use as a context manager around the sweep; pickles without its display (Tune stores its
    callbacks with the experiment).
    """

    def __init__(self, *, live: bool | None = None) -> None:
        self.live = sys.stdout.isatty() if live is None else live
        self.arms: dict[str, ArmProgress] = {}
        self._display: Any = None
        self._stop_reason: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_display"] = None
        return state

    def __enter__(self) -> SweepProgress:
        if self.live and self._display is None:
            from rich.live import Live

            self._display = Live(self.table(), refresh_per_second=2, transient=False)
            self._display.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._display is not None:
            self._display.update(self.table())
            self._display.stop()
            self._display = None

    def expect(self, arm: str, n_trials: int) -> None:
        """Add ``n_trials`` to the arm's expected total."""
        self.arms.setdefault(arm, ArmProgress()).total += n_trials
        self._refresh()

    def _arm(self, trial: Any) -> ArmProgress:
        return self.arms.setdefault(str(trial.config.get("arm", "?")), ArmProgress())

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._arm(trial).running += 1
        self._refresh()

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        arm = self._arm(trial)
        best = result.get("best_valid_loss", math.inf)
        if isinstance(best, int | float) and best < arm.best_valid_loss:
            arm.best_valid_loss = float(best)
            arm.best_lr = float(result.get("trial_lr", math.nan))
        if result.get("stop_reason"):
            self._stop_reason[trial.trial_id] = str(result["stop_reason"])
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        arm = self._arm(trial)
        arm.running = max(0, arm.running - 1)
        arm.done += 1
        reason = self._stop_reason.get(trial.trial_id, "completed")
        if reason in ("rising_val_loss", "diverged"):
            arm.stopped += 1
        if not self.live:
            logger.info("trial %s (%s) finished: %s", trial.trial_id, trial.config, reason)
        self._refresh()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        arm = self._arm(trial)
        arm.running = max(0, arm.running - 1)
        arm.failed += 1
        logger.warning("trial %s (%s) failed", trial.trial_id, trial.config)
        self._refresh()

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        logger.warning("trial %s restarts from its last checkpoint", trial.trial_id)

    def table(self) -> Any:
        """The rich table of the current counters."""
        from rich.table import Table

        table = Table(title="lrsweep: trials per arm")
        for column in ("arm", "running", "done", "stopped early", "failed", "total"):
            table.add_column(column, justify="left" if column == "arm" else "right")
        table.add_column("best valid loss (lr)", justify="right")
        for name, arm in self.arms.items():
            best = "-"
            if math.isfinite(arm.best_valid_loss):
                best = f"{arm.best_valid_loss:.4f} ({arm.best_lr:.2e})"
            table.add_row(
                name,
                str(arm.running),
                str(arm.done),
                str(arm.stopped),
                str(arm.failed),
                str(arm.total),
                best,
            )
        return table

    def _refresh(self) -> None:
        if self._display is not None:
            self._display.update(self.table())
