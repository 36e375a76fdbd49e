"""A live terminal table of a running sweep, fed by Ray Tune's driver-side callback events.

Per arm: trials running, done (stopped early ones included), stopped early (``rising_val_loss``
/ ``diverged``), failed, the total expected, and the best validation loss so far with its LR.
The table redraws in place with rich when stdout is a terminal; otherwise the display is quiet
and each finished trial is one INFO log line.

Counts are kept per trial id, so Tune's repeated events cannot skew them: a trial restarted
from its checkpoint after a crash (``on_trial_recover``, then ``on_trial_start`` again) is one
running trial, and a second end of the same trial is not a second trial done. A non-finite or
non-numeric best validation loss is ignored (the best shown is always a finite one).

``Tuner.restore`` brings back the callbacks Tune pickled when the sweep started, not the
``SweepProgress`` the resumed sweep shows: a copy made by unpickling hands its events to the
``SweepProgress`` entered (``with progress:``) at the time, and the trials that had finished
before the resume count as done (or failed) from the first step on.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from sweeps._ray import Callback
from sweeps.stoppers._base import finite_number

logger = logging.getLogger(__name__)


def describe(config: dict[str, Any]) -> str:
    """A trial's config in a few words for a log line: ``lr_finder:valley seed 0``,
    ``grid lr=1.00e-03 seed 1`` (not the Python dict)."""
    arm = str(config.get("arm", config.get("strategy", "?")))
    rule = config.get("rule")
    words = [f"{arm}:{rule}" if rule else arm]
    lr = finite_number(config.get("lr"))
    if lr is not None:
        words.append(f"lr={lr:.2e}")
    if "seed" in config:
        words.append(f"seed {config['seed']}")
    return " ".join(words)


STOPPED_REASONS = ("rising_val_loss", "diverged")
"""Stop reasons that count a trial as stopped early."""


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

    _entered: ClassVar[list[SweepProgress]] = []
    """The instances inside ``with``, innermost last: where restored copies send events."""

    def __init__(self, *, live: bool | None = None) -> None:
        self.live = _is_terminal() if live is None else live
        self.arms: dict[str, ArmProgress] = {}
        self._display: Any = None
        self._stop_reason: dict[str, str] = {}
        self._status: dict[str, str] = {}  # trial id -> running | pending | done | failed
        self._restored = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_display"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"_status": {}, **state})  # older pickles lack ``_status``
        self._restored = True

    def __enter__(self) -> SweepProgress:
        SweepProgress._entered.append(self)
        if self.live and self._display is None:
            from rich.live import Live

            self._display = Live(self.table(), refresh_per_second=2, transient=False)
            self._display.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self in SweepProgress._entered:
            SweepProgress._entered.remove(self)
        if self._display is not None:
            self._display.update(self.table())
            self._display.stop()
            self._display = None

    def expect(self, arm: str, n_trials: int) -> None:
        """Add ``n_trials`` to the arm's expected total."""
        self.arms.setdefault(arm, ArmProgress()).total += n_trials
        self._refresh()

    # Tune's events ---------------------------------------------------------------------------

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._target()._count_ended_before(trials)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._target()._move(trial, "running")

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self._target()._note_result(trial, result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        target = self._target()
        if target._move(trial, "done") and not target.live:
            reason = target._stop_reason.get(trial.trial_id, "completed")
            logger.info(
                "trial %s (%s) finished: %s", trial.trial_id, describe(trial.config), reason
            )

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if self._target()._move(trial, "failed"):
            logger.warning("trial %s (%s) failed", trial.trial_id, describe(trial.config))

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._target()._move(trial, "pending")
        logger.warning(
            "trial %s (%s) failed; Tune starts it again (from its last checkpoint, if it saved "
            "one; a failure that would repeat ends it at once)",
            trial.trial_id,
            describe(trial.config),
        )

    # bookkeeping ---------------------------------------------------------------------------

    def _target(self) -> SweepProgress:
        """Where events go: the entered ``SweepProgress`` for a copy Tune restored, else self."""
        if self._restored and SweepProgress._entered:
            return SweepProgress._entered[-1]
        return self

    def _arm(self, trial: Any) -> ArmProgress:
        return self.arms.setdefault(str(trial.config.get("arm", "?")), ArmProgress())

    def _move(self, trial: Any, status: str) -> bool:
        """Put ``trial`` in ``status``; False (nothing changed) when it is there already."""
        trial_id = str(trial.trial_id)
        before = self._status.get(trial_id)
        if before == status:
            return False
        arm = self._arm(trial)
        stopped = self._stop_reason.get(trial_id) in STOPPED_REASONS
        if before == "running":
            arm.running -= 1
        elif before == "done":
            arm.done -= 1
            arm.stopped -= stopped
        elif before == "failed":
            arm.failed -= 1
        if status == "running":
            arm.running += 1
        elif status == "done":
            arm.done += 1
            arm.stopped += stopped
        elif status == "failed":
            arm.failed += 1
        self._status[trial_id] = status
        self._refresh()
        return True

    def _note_result(self, trial: Any, result: dict[str, Any]) -> None:
        arm = self._arm(trial)
        best = finite_number(result.get("best_valid_loss"))
        if best is not None and best < arm.best_valid_loss:
            arm.best_valid_loss = best
            lr = finite_number(result.get("trial_lr"))
            arm.best_lr = math.nan if lr is None else lr
        if result.get("stop_reason"):
            self._stop_reason[str(trial.trial_id)] = str(result["stop_reason"])
        self._refresh()

    def _count_ended_before(self, trials: list[Any]) -> None:
        """Count the trials Tune restored as ended, which it starts (and tells of) no more."""
        for trial in trials:
            status = getattr(trial, "status", None)
            if status not in ("TERMINATED", "ERROR") or str(trial.trial_id) in self._status:
                continue
            if status == "TERMINATED":
                self._note_result(trial, dict(getattr(trial, "last_result", None) or {}))
            self._move(trial, "done" if status == "TERMINATED" else "failed")

    # display -------------------------------------------------------------------------------

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
                lr = f"{arm.best_lr:.2e}" if math.isfinite(arm.best_lr) else "-"
                best = f"{arm.best_valid_loss:.4f} ({lr})"
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


def _is_terminal() -> bool:
    """True when stdout is a terminal (False for a pipe, a file, a stdout without isatty, or a
    CI job: ``CI`` set, as CI services set it, whose runner may give a pseudo-terminal that
    would log every redraw of the table)."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    isatty = getattr(sys.stdout, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stdout
        return False
