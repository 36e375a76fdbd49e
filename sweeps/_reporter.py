"""The trial's per-epoch reporter: MLflow logging, Tune checkpoints and reports, the stop rule.

:class:`EpochReporter` is a trainers ``Callback`` (it runs after the ``Recorder``). At each
epoch's end it

- buffers the epoch's per-step ``train_loss`` / ``lr`` and its ``valid_loss``, ``error_rate``,
  ``accuracy``, ``epoch_time_s`` (steps are numbered ``epoch * batches_per_epoch + batch``,
  epochs from 0), skipping the steps of each metric MLflow already holds, and sends the buffer
  in one batched call once ``tracking.flush_every_s`` has passed since the last send and at
  the trial's end; points not sent yet travel in the checkpoint, so a restarted trial sends
  them (a point sent twice is stored once: it keeps its first timestamp); while MLflow is
  unreachable the points stay buffered and training goes on; the next flush re-sends them;
- once ``tracking.checkpoint_every_s`` has passed since the last one (0: every epoch), and at
  the trial's end, writes a checkpoint (``learn.save`` + the trial's metadata + the best weights
  so far), logged under ``checkpoints/epoch-NNN/`` when ``tracking.checkpoints`` is ``all``;
  a restarted trial resumes from it and trains the epochs after it again (their points are not
  logged twice: MLflow's history says which steps of each metric it holds);
- feeds the result to the spec's stoppers (the same pure ones Ray Tune runs on the driver);
- reports to Tune every epoch (with the checkpoint when one was written), except on the
  trial's last epoch: that report waits
  until :meth:`finish` has closed the MLflow run, because Tune may end the trial's process as
  soon as it sees a stopping result.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeps import _ray
from sweeps._fitting import training_rows
from sweeps.stoppers import OWN_STOP_RULE
from sweeps.tracking import RunLogger, Tracker
from trainers import CancelFit, Learner
from trainers.callbacks import Callback
from trainers.interpret import confusion_counts

logger = logging.getLogger(__name__)

EPOCH_METRICS = ("valid_loss", "error_rate", "accuracy", "epoch_time_s")
BEST_METRICS = ("valid_loss", "error_rate", "accuracy", "train_loss")
STEP_METRICS = ("train_loss", "lr", "epoch_train_loss", *EPOCH_METRICS)
"""Every metric the reporter logs by step (``train_loss``/``lr`` by batch, the rest by epoch)."""
STOP_REASONS = ("completed", "rising_val_loss", "diverged", "failed")


ABORT_FLUSH_TIMEOUT_S = 30.0
"""How long a failing or interrupted trial tries to send its last metric points."""

FAULT_EPOCH_ENV = "LRSWEEP_FAULT_KILL_EPOCH"
FAULT_ONCE_ENV = "LRSWEEP_FAULT_ONCE_FILE"


def _inject_fault(epoch: int) -> None:
    """Fault-injection hook for the reliability tests (off unless both variables are set).

    With ``LRSWEEP_FAULT_KILL_EPOCH=N`` and ``LRSWEEP_FAULT_ONCE_FILE=<path>`` in the workers'
    environment, the first trial to finish epoch ``N`` creates ``<path>`` and SIGKILLs its own
    worker process right after logging that epoch to MLflow and before reporting it to Tune:
    the worst moment for exactly-once logging. Later trials see the file and carry on.
    """
    target, marker = os.environ.get(FAULT_EPOCH_ENV), os.environ.get(FAULT_ONCE_ENV)
    if not target or not marker or int(target) != epoch:
        return
    try:
        with open(marker, "x", encoding="utf-8") as file:
            file.write(str(os.getpid()))
    except FileExistsError:
        return
    logger.warning("fault injection: killing worker %d after epoch %d", os.getpid(), epoch)
    os.kill(os.getpid(), signal.SIGKILL)


class StopTrial(Exception):
    """Raised from ``after_epoch`` to end a recipe trial that the stop rule stopped.

    ``CancelFit`` would end only the recipe's current fit; this propagates out of
    ``fit_recipe`` (wrapped in ``CallbackError``) and the trial body catches it.
    """


def flatten_params(values: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and None kept as their text."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _confusion(learn: Learner) -> list[list[int]] | None:
    """The confusion counts of the epoch just validated (None without class predictions)."""
    preds, targets = learn.valid_preds, learn.valid_targets
    if preds is None or targets is None:
        return None
    try:
        return confusion_counts(targets, preds, learn.dls.n_classes).tolist()
    except (RuntimeError, ValueError):  # outputs that are not the data's classes
        return None


@dataclass
class TrialRecord:
    """What a trial knows about itself; the part in :meth:`to_meta` travels in checkpoints."""

    run_id: str
    lr: float = math.nan
    lr_find_s: float = 0.0
    extra_compute_s: float = 0.0
    retrained_through: int = -1
    start_loss: float = math.nan
    stop_reason: str | None = None
    lr_find: Any = None
    lr_find_from: str | None = None
    best_epoch: int | None = None
    best: dict[str, float] = field(default_factory=dict)
    best_state: Mapping[str, Any] | None = None
    best_confusion: list[list[int]] | None = None
    unsent_metrics: list[list[Any]] = field(default_factory=list)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None, *, run_id: str) -> TrialRecord:
        """A fresh record, or the one a checkpoint's metadata describes."""
        if meta is None:
            return cls(run_id=run_id)
        return cls(
            run_id=meta["run_id"],
            lr=float(meta["lr"]),
            lr_find_s=float(meta["lr_find_s"]),
            extra_compute_s=float(meta.get("extra_compute_s", 0.0)),
            retrained_through=int(meta.get("retrained_through", -1)),
            start_loss=float(meta.get("start_loss", math.nan)),
            best_state=meta.get("best_state"),
            best_confusion=meta.get("best_confusion"),
            unsent_metrics=list(meta.get("unsent_metrics", [])),
        )

    def to_meta(self) -> dict[str, Any]:
        """The JSON-able part saved with every checkpoint."""
        return {
            "run_id": self.run_id,
            "lr": self.lr,
            "lr_find_s": self.lr_find_s,
            "extra_compute_s": self.extra_compute_s,
            "retrained_through": self.retrained_through,
            "start_loss": self.start_loss,
            "best_confusion": self.best_confusion,
            "unsent_metrics": self.unsent_metrics,
        }

    def compute_s(self, rows: list[dict[str, Any]]) -> float:
        """Range test + every epoch's training and validation time (+ a recipe's own tests, and
        the epochs a killed try trained past its checkpoint: see ``EpochReporter.attach``)."""
        epochs_s = sum(float(r.get("epoch_time_s", 0.0)) for r in rows)
        return self.lr_find_s + self.extra_compute_s + epochs_s


class EpochReporter(Callback):
    """Per-epoch MLflow logging, checkpointing, stop rule and Tune report of one trial.

    Args:
        tracker: The MLflow store.
        record: The trial's record (run id, LR, costs, best epoch).
        spec: The sweep spec (``task.epochs``, ``tracking.checkpoints``,
            ``tracking.checkpoint_every_s``, ``tracking.flush_every_s``).
        stopper: A fresh ``sweeps.stoppers.from_spec(spec)``, private to this trial.
        checkpoint: ``f(learn, best_state) -> folder`` writing the epoch's checkpoint.
        max_epochs: Epochs after which the trial ends (None: when the fit ends).
        epoch_budget: The most epochs the trial runs (default ``max_epochs``; a recipe's
            ``max_epochs``): a loss rising at the last of them stops nothing early.
    """

    order = 50

    def __init__(
        self,
        tracker: Tracker,
        record: TrialRecord,
        *,
        spec: Any,
        stopper: Any,
        checkpoint: Callable[[Learner, Mapping[str, Any] | None], Path],
        max_epochs: int | None,
        epoch_budget: int | None = None,
    ) -> None:
        self.tracker = tracker
        self.record = record
        self.policy = spec.tracking.checkpoints
        self.checkpoint_every_s = float(spec.tracking.checkpoint_every_s)
        self.flush_every_s = float(spec.tracking.flush_every_s)
        self.stopper = stopper
        self.checkpoint = checkpoint
        self.max_epochs = max_epochs
        self.epoch_budget = max_epochs if epoch_budget is None else epoch_budget
        # The leading epochs ``task.progressive_resizing`` trains on smaller images: their
        # validation is of other images than the task's, so they are no candidate for the best
        # epoch (its metrics, weights, TTA and logged model are the task's size) and
        # ``early_stop`` does not see them (a size switch is no rise); ``divergence`` does.
        task = getattr(spec, "task", None)
        stages = getattr(task, "progressive_resizing", None) or []
        self.staged_epochs = sum(int(stage.epochs) for stage in stages)
        self.log = RunLogger(tracker, record.run_id, pending=record.unsent_metrics)
        self.stopped = False
        self.closed = False
        self._first_step = 0
        self._epoch_start: float | None = None
        self._pending: tuple[dict[str, Any], Path | None] | None = None
        self._last_flush = self._last_checkpoint = time.monotonic()
        self._checkpointed_epoch = -1

    # setup --------------------------------------------------------------------------------

    def attach(self, learn: Learner, *, reopened: bool) -> None:
        """Install on ``learn``; a resumed trial replays its history into the stop rule."""
        if reopened:
            self.log.hold(self._held_steps())
            self._count_retrained_epochs(len(training_rows(learn.history)))
        for epoch, row in enumerate(training_rows(learn.history)):
            self._update_best(learn, epoch, row, keep_state=False)
            reason = self._stop_reason(epoch, self._result(learn, epoch, row))
            if reason is not None:
                self.record.stop_reason = reason
        learn.add_cb(self)

    def _count_retrained_epochs(self, kept: int) -> None:
        """Count in ``compute_s`` the epochs an earlier try trained past the ``kept`` ones its
        checkpoint holds (all of them without one): they are trained again, and their first
        time was spent all the same.

        Their times are the ``epoch_time_s`` points that try sent. A lower bound: the points it
        had not sent yet (``tracking.flush_every_s``) died with it, and a run holds one point
        per epoch, so a try killed before it passed the epochs an earlier one reached leaves
        no trace of its own. ``retrained_through`` (in the checkpoints) keeps an epoch from
        counting twice over several restarts.
        """
        history = self.tracker.metric_history(self.record.run_id, "epoch_time_s")
        lost = [
            (step, v) for step, v in history if step >= max(kept, self.record.retrained_through + 1)
        ]
        if lost:
            self.record.extra_compute_s += math.fsum(v for _, v in lost if math.isfinite(v))
            self.record.retrained_through = max(step for step, _ in lost)

    def _stop_reason(self, epoch: int, result: dict[str, Any]) -> str | None:
        """Why the stop rule ends the trial after ``epoch`` (None: it goes on).

        A validation loss rising at the last epoch stops nothing early: the trial ran every
        epoch, so it is ``completed`` (a divergence there stays ``diverged``).
        """
        if not self.stopper(self._key, result):
            return None
        reason = str(self.stopper.stop_reason(self._key))
        last = self.epoch_budget is not None and epoch + 1 >= self.epoch_budget
        return "completed" if last and reason == "rising_val_loss" else reason

    def _held_steps(self) -> dict[str, int]:
        """Per metric this reporter logs, the last step the reopened run holds already.

        A trial killed after sending points and before closing its run (a driver SIGKILL while
        a diverged trial was finishing, say) trains again what it had sent.
        """
        held = self.tracker.last_steps(self.record.run_id)
        return {key: step for key, step in held.items() if key in STEP_METRICS}

    @property
    def _key(self) -> str:
        return self.record.run_id

    # events -------------------------------------------------------------------------------

    def before_epoch(self) -> None:
        self._first_step = len(self.learn.recorder.losses)
        self._epoch_start = time.perf_counter()

    def after_epoch(self) -> None:
        learn = self.learn
        rows = training_rows(learn.history)
        epoch, row = len(rows) - 1, rows[-1]
        if epoch == 0 and len(learn.recorder.losses) > self._first_step:
            # the first batch's loss, before any update: the divergence rule's start
            self.record.start_loss = float(learn.recorder.losses[self._first_step])
        self._update_best(learn, epoch, row, keep_state=True)
        result = self._result(learn, epoch, row)
        reason = self._stop_reason(epoch, result)
        if reason is not None and reason != "completed":
            self.record.stop_reason = reason
            self.stopped = True
        # every epoch: the points a reopened run holds are dropped per metric (``hold``), so an
        # epoch cut between two batches by a killed worker is completed, the rest not repeated
        self._buffer_epoch(learn, epoch, row)
        # the budget's last epoch: its report waits for the closed run (finish), as a stop's
        last = self.epoch_budget is not None and epoch + 1 >= self.epoch_budget
        now = time.monotonic()
        due = self.stopped or last or now - self._last_checkpoint >= self.checkpoint_every_s
        if now - self._last_flush >= self.flush_every_s:
            self.log.flush(wait=False)  # MLflow down: the points wait, in the checkpoint too
            self._last_flush = now
        folder = self._checkpoint(learn, epoch) if due else None
        _inject_fault(epoch)
        if self.stopped or last:
            self._pending = (result, folder)
            if self.max_epochs is None:
                raise StopTrial
            raise CancelFit
        try:
            _ray.report(result, checkpoint_dir=folder)
        finally:  # Tune may end this thread inside the report (SystemExit); it has its copy
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def _checkpoint(self, learn: Learner, epoch: int) -> Path:
        """Write the checkpoint of ``epoch``; log it (``checkpoints: all``) to MLflow.

        An epoch trained again after a restart logs its checkpoint again, over the one MLflow
        holds: the restart may have cut that one's upload short (a killed worker, a failed
        upload), and the store would keep a partial checkpoint.
        """
        self.record.unsent_metrics = self.log.pending()
        folder = self.checkpoint(learn, self.record.best_state)
        if self.policy == "all":
            try:
                path = f"checkpoints/epoch-{epoch:03d}"
                self.tracker.log_artifacts(self.record.run_id, folder, path)
            except BaseException:  # the trial fails: nobody will report or remove the folder
                shutil.rmtree(folder, ignore_errors=True)
                raise
        self._last_checkpoint = time.monotonic()
        self._checkpointed_epoch = epoch
        return folder

    # bookkeeping --------------------------------------------------------------------------

    def _update_best(
        self, learn: Learner, epoch: int, row: Mapping[str, Any], *, keep_state: bool
    ) -> None:
        if epoch < self.staged_epochs:
            return
        value = float(row.get("valid_loss", math.nan))
        best = self.record.best.get("valid_loss", math.inf)
        if not math.isfinite(value) or value >= best:
            return
        self.record.best_epoch = epoch
        self.record.best = {k: float(row[k]) for k in BEST_METRICS if k in row}
        if keep_state:  # an epoch just validated: its predictions are the learner's
            state = learn.model.state_dict()
            self.record.best_state = {k: v.detach().cpu().clone() for k, v in state.items()}
            self.record.best_confusion = _confusion(learn)

    def _result(self, learn: Learner, epoch: int, row: Mapping[str, Any]) -> dict[str, Any]:
        best = self.record.best.get("valid_loss", math.inf)
        return {
            "epoch": epoch + 1,
            "training_iteration": epoch + 1,
            "valid_loss": float(row.get("valid_loss", math.nan)),
            "train_loss": float(row.get("train_loss", math.nan)),
            "train_loss_at_start": float(self.record.start_loss),
            "error_rate": float(row.get("error_rate", math.nan)),
            "accuracy": float(row.get("accuracy", math.nan)),
            "lr": float(row.get("lr", math.nan)),
            "trial_lr": float(self.record.lr),
            "epoch_time_s": float(row.get("epoch_time_s", 0.0)),
            "best_valid_loss": best,
            "best_epoch": -1 if self.record.best_epoch is None else self.record.best_epoch,
            "compute_s": self.record.compute_s(training_rows(learn.history)[: epoch + 1]),
            "stop_reason": "",
            # a recipe, or a progressive-resizing stage: early_stop leaves the epoch alone
            OWN_STOP_RULE: self.max_epochs is None or epoch < self.staged_epochs,
        }

    def _buffer_steps(self, learn: Learner, epoch: int) -> None:
        recorder = learn.recorder
        n_iter = max(1, int(learn.n_iter))
        first = epoch * n_iter
        losses = recorder.losses[self._first_step :]
        lrs = recorder.lrs[self._first_step :]
        self.log.extend("train_loss", losses, first_step=first)
        self.log.extend("lr", lrs, first_step=first)

    def _buffer_epoch(self, learn: Learner, epoch: int, row: Mapping[str, Any]) -> None:
        self._buffer_steps(learn, epoch)
        self.log.add_many({k: row[k] for k in EPOCH_METRICS if k in row}, epoch)
        self.log.add("epoch_train_loss", float(row.get("train_loss", math.nan)), epoch)

    # the end ------------------------------------------------------------------------------

    def diverged(self, learn: Learner, error: BaseException) -> None:
        """The loss became non-finite mid-epoch: log the steps run, end as ``diverged``.

        The steps of that unfinished epoch count in the trial's compute (it has no history
        row, so no ``epoch_time_s``); a recipe counts its own time (``sweeps.trial``).
        """
        epoch = len(training_rows(learn.history))
        if self.max_epochs is not None and self._epoch_start is not None:
            self.record.extra_compute_s += time.perf_counter() - self._epoch_start
        self.record.stop_reason = "diverged"
        self.stopped = True
        self._buffer_steps(learn, epoch)  # the steps a reopened run holds are dropped
        steps_run = len(learn.recorder.losses) - self._first_step
        self.log.add("train_loss", math.nan, epoch * max(1, int(learn.n_iter)) + steps_run)
        self.log.flush()
        result = self._result(learn, epoch, {"valid_loss": math.nan, "train_loss": math.nan})
        self._pending = (result, None)

    def finish(self, learn: Learner, finalize: Callable[[Learner, TrialRecord], None]) -> None:
        """Close the run (best metrics, tags, artifacts), then send the held-back report."""
        self.record.stop_reason = self.record.stop_reason or "completed"
        rows = training_rows(learn.history)
        if self._pending is None and rows:
            # a recipe that stopped itself before its epoch budget, or a restored trial whose
            # history had ended it: no epoch's report was held back, so its end is sent here,
            # with the last epoch's checkpoint when none was due yet
            epoch = len(rows) - 1
            folder = self._checkpoint(learn, epoch) if epoch > self._checkpointed_epoch else None
            self._pending = (self._result(learn, epoch, rows[-1]), folder)
        self.log.flush()
        finalize(learn, self.record)
        self.tracker.end_run(self.record.run_id, "FINISHED")
        self.closed = True  # Tune may end this thread inside the report below (SystemExit)
        if self._pending is not None:
            result, folder = self._pending
            self._pending = None
            # the trial's end (completed, rising_val_loss, diverged), in its own last result
            # and nowhere else: Tune's ``done`` reaches its saved state only now and then
            result["stop_reason"] = self.record.stop_reason
            try:
                _ray.report(result, checkpoint_dir=folder)
            finally:  # Tune ends a stopped trial's thread inside this report (SystemExit)
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)

    def abort(self, error: BaseException) -> None:
        """Close the run as FAILED (an error) or KILLED (interrupted); never raises.

        The run is closed even when its last points or its tags cannot be written.
        """
        if self.closed:
            return
        if self._pending is not None and self._pending[1] is not None:
            shutil.rmtree(self._pending[1], ignore_errors=True)  # a checkpoint never reported
        killed = isinstance(error, KeyboardInterrupt | SystemExit)
        run_id = self.record.run_id
        try:
            self.log.flush(timeout_s=ABORT_FLUSH_TIMEOUT_S)
        except Exception:  # those points are lost; the run is closed all the same
            logger.exception(
                "could not send the last %d metric points of run %s", len(self.log), run_id
            )
        try:
            try:
                if not killed:
                    self.tracker.set_tags(
                        run_id, {"sweeps.stop_reason": "failed", "sweeps.error": repr(error)[:500]}
                    )
            finally:  # a tag the store refuses does not leave the run RUNNING either
                self.tracker.end_run(run_id, "KILLED" if killed else "FAILED")
        except Exception:
            logger.exception("could not close MLflow run %s after %r", run_id, error)
