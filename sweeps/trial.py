"""The trial body: one Ray Tune trial trains one trainers ``Learner`` and logs it to MLflow.

``train_trial(config, context=...)`` is the function trainable every arm runs:

1. data (``make_dataloaders``; the split is the dataset's seed, shared by every trial so all are
   judged on the same validation images; the training order, augmentation and initial weights
   come from the trial's ``seed``), model (``build_model``) and ``Learner``;
2. ``lr_finder`` trials run ``learn.lr_find`` (or read the curve another trial of their arm and
   seed ran and shared through Ray's key-value store) and take their rule's suggestion as the
   LR (the range test's time counts in ``compute_s`` either way); ``recipe`` trials run
   ``learn.fit_recipe``; search arms use the ``lr`` in their config;
3. training on the spec's schedule with :class:`~sweeps._reporter.EpochReporter`, which per
   epoch logs to MLflow (one ``log_batch``), checkpoints (``learn.save``) and reports to Tune;
4. the end: best-epoch metrics, tags, plots (the confusion matrix from the best epoch's own
   validation, no second pass) and the best model on the child run, then the last report.
   The trial applies the spec's stoppers itself (the same pure stoppers Ray runs), so it
   knows its stop reason and finishes its MLflow run before Tune sees the stopping result.

Restarts: the checkpoint holds the MLflow run id, the LR and the range test's cost, so a trial
restarted after its worker died (or after ``resume_sweep``) continues in the same child run from
its last epoch, without a second range test. A trial with no checkpoint yet finds its run by its
``sweeps.trial_id`` tag. Epochs already in MLflow are not logged twice.

This module keeps the trial's course (its start, training, retries that would fail the same
way); its parts live beside it, each name other code reads re-exported here:
:mod:`sweeps._trial_worker` (the worker's client per store and its one-off imports),
:mod:`sweeps._trial_run` (the child run: params, found, reopened or created, already ended),
:mod:`sweeps._trial_checkpoint` (Tune checkpoints written, restored, orphans removed),
:mod:`sweeps._trial_lr` (the shared range test and the LR it picks, a recipe's picks) and
:mod:`sweeps._trial_end` (the end: best metrics, tags, TTA, figures, the logged model).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sweeps import _fitting, _ray
from sweeps._fitting import train
from sweeps._reporter import EpochReporter, StopTrial, TrialRecord, training_rows
from sweeps._trial_checkpoint import BEST_MODEL_FILE as BEST_MODEL_FILE  # re-exported
from sweeps._trial_checkpoint import LEARNER_FILE as LEARNER_FILE
from sweeps._trial_checkpoint import META_FILE as META_FILE
from sweeps._trial_checkpoint import checkpointer as _checkpointer
from sweeps._trial_checkpoint import ckpt_prefix as _ckpt_prefix  # noqa: F401 (re-exported)
from sweeps._trial_checkpoint import process_alive as _process_alive  # noqa: F401 (re-exported)
from sweeps._trial_checkpoint import (  # noqa: F401 (re-exported)
    remove_orphan_checkpoints as _remove_orphan_checkpoints,
)
from sweeps._trial_checkpoint import restore as _restore
from sweeps._trial_end import CONFUSION_FILE as CONFUSION_FILE  # re-exported
from sweeps._trial_end import TTA_METRICS as TTA_METRICS
from sweeps._trial_end import diagnose_trial as _diagnose  # noqa: F401 (re-exported)
from sweeps._trial_end import finalize as _finalize
from sweeps._trial_end import lr_group_ratios as lr_group_ratios
from sweeps._trial_end import one_size as _one_size  # noqa: F401 (re-exported)
from sweeps._trial_lr import TAG_LR_FIND_FROM as TAG_LR_FIND_FROM  # re-exported
from sweeps._trial_lr import choose_lr, log_range_test, recipe_lr
from sweeps._trial_lr import log_lr_find as _log_lr_find  # noqa: F401 (re-exported)
from sweeps._trial_lr import range_tests_prefix as range_tests_prefix
from sweeps._trial_run import REPORTED_METRICS as REPORTED_METRICS  # re-exported
from sweeps._trial_run import ended_result as ended_result
from sweeps._trial_run import find_run, log_new_params, report_if_ended, trial_params
from sweeps._trial_run import open_run as _open_run
from sweeps._trial_worker import data_warnings_said as _data_warnings_said
from sweeps._trial_worker import tracker as _tracker
from sweeps._trial_worker import warm_up as _warm_up  # noqa: F401 (re-exported)
from sweeps.stoppers import from_spec
from sweeps.tracking import TAG_FAILED_FOR_GOOD, Tracker
from trainers import CallbackError, Learner, TrainingDiverged
from trainers.suggestions import CurveTooShort

logger = logging.getLogger(__name__)


class TrialFailedForGood(RuntimeError):
    """A retried trial whose first attempt failed in a way a retry repeats (not run again)."""


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (registered with the trainable, ``sweeps._ray._bind``).

    Attributes:
        spec: The validated ``SweepSpec``.
        tracking_uri: The MLflow store.
        experiment_id: The sweep's experiment.
        parent_run_id: The sweep execution's parent run.
        sweep_id: The sweep execution's id (tag ``sweeps.sweep_id``).
        data_said: The driver opened the data before the sweep (a local sweep's preflight)
            and said its warnings (a class of a single image ...): the trials keep them out
            of the console instead of each saying them again.
    """

    spec: Any
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep_id: str
    data_said: bool = False


def _arm_spec(spec: Any, arm: str) -> Any:
    for candidate in spec.strategies:
        if candidate.arm_name == arm:
            return candidate
    names = [a.arm_name for a in spec.strategies]
    raise ValueError(f"config.arm must name one of the spec's arms {names}, but got {arm!r}.")


_DATA_CACHE = _fitting.DATA_CACHE  # the worker's last data (tests clear it)
_dataloaders = _fitting.dataloaders
_learner = _fitting.learner


def _raise_if_failed_for_good(tracker: Tracker, run_id: str) -> None:
    """A retry of a trial whose LR choice failed deterministically fails again at once.

    Tune restarts an errored trial ``failure.max_failures`` times, whatever the error. A range
    test too short for its rule (``CurveTooShort``) or an invalid ``config.lr`` comes back the
    same on the same seed and data, so the retry raises the first attempt's error (kept on the
    run as ``sweeps.failed_for_good``) instead of running the range test again.
    """
    run = tracker.get_run(run_id)
    why = run.data.tags.get(TAG_FAILED_FOR_GOOD)
    if run.info.status == "FAILED" and why:
        arm = run.data.tags.get("sweeps.arm", "?")
        raise TrialFailedForGood(  # the advice first: Tune's error text is cut at 500 characters
            f"a trial of arm {arm!r}, not retried (run {run_id}): the same seed and data fail the "
            f"same way; change the arm in the spec and start a new sweep with `lrsweep run`. {why}"
        )


def _start(
    learn: Learner,
    tracker: Tracker,
    context: TrialContext,
    config: Mapping[str, Any],
    arm: Any,
    record: TrialRecord,
) -> None:
    """A fresh trial (no checkpoint): params, then the range test when the arm runs one."""
    run_id = record.run_id
    log_new_params(tracker, run_id, trial_params(context, config, arm))
    if context.spec.task.fine_tune is not None:
        learn.freeze()  # as fastai: the range test of a transfer task runs on the frozen model
    try:
        record.lr = choose_lr(learn, context, config, arm, record)
    except ValueError as error:  # CurveTooShort, a bad config.lr: the same seed fails the same way
        try:  # a test the rule could not read: its curve and its cost still count
            log_range_test(tracker, record)
        except Exception:  # the error to report is the rule's, not this one
            logger.exception("trial %s: could not log its range test", run_id)
        _mark_failed_for_good(tracker, run_id, error)
        raise
    log_range_test(tracker, record)
    if math.isfinite(record.lr):
        log_new_params(tracker, run_id, {"lr": record.lr})


def _mark_failed_for_good(tracker: Tracker, run_id: str, error: Exception) -> None:
    """Tag the run with ``error``; its retries raise it at once (``_raise_if_failed_for_good``)."""
    tracker.set_tags(run_id, {TAG_FAILED_FOR_GOOD: f"{type(error).__name__}: {error}"[:500]})


def train_trial(config: dict[str, Any], *, context: TrialContext) -> None:
    """Ray Tune function trainable of every arm; see the module docstring.

    Args:
        config: ``strategy``, ``arm``, ``seed`` and ``lr`` (search arms) or ``rule``
            (``lr_finder`` and ``recipe`` arms).
        context: The sweep's shared :class:`TrialContext`.

    Raises:
        Whatever training raised other than ``TrainingDiverged`` (a diverged trial ends
        normally, as ``diverged``); the MLflow run is closed FAILED (KILLED when interrupted).
    """
    spec, task = context.spec, context.spec.task
    arm = _arm_spec(spec, config["arm"])
    seed = int(config["seed"])
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    _ray.quiet_trial_logs()
    tracker = _tracker(context.tracking_uri)
    with _data_warnings_said(context.data_said):
        dls = _dataloaders(task, seed)
    learn = _learner(task, dls, seed)
    with _ray.resume_checkpoint() as folder:
        # A recipe cannot continue mid-way: it restarts (same seed, same run, no epoch re-logged).
        meta = _restore(learn, folder, task) if config["strategy"] != "recipe" else None
    _fitting.at_stage(learn, task, dls)  # progressive resizing: the next epoch's image size
    found = meta["run_id"] if meta is not None else find_run(tracker, context)
    if found is not None and report_if_ended(tracker, found):
        return  # finished before the driver died; Tune's saved state had not caught up
    if found is not None and meta is None:
        _raise_if_failed_for_good(tracker, found)
    run_id, reopened = _open_run(tracker, context, config, found)
    record = TrialRecord.from_meta(meta, run_id=run_id)
    max_epochs = None if config["strategy"] == "recipe" else task.epochs
    reporter = EpochReporter(
        tracker,
        record,
        spec=spec,
        stopper=from_spec(spec),
        checkpoint=_checkpointer(record),
        max_epochs=max_epochs,
        epoch_budget=arm.max_epochs if config["strategy"] == "recipe" else task.epochs,
    )
    try:
        if meta is None:
            _start(learn, tracker, context, config, arm, record)
        reporter.attach(learn, reopened=reopened)
        if record.stop_reason is None:
            try:
                _run_training(learn, task, arm, config, record, reporter)
            except CurveTooShort as error:  # a recipe's range test: the same seed repeats it
                _mark_failed_for_good(tracker, run_id, error)
                raise
        reporter.finish(
            learn, lambda lrn, rec: _finalize(lrn, rec, tracker, spec, reopened=reopened)
        )
    except BaseException as error:
        reporter.abort(error)
        raise


def _run_training(
    learn: Learner,
    task: Any,
    arm: Any,
    config: Mapping[str, Any],
    record: TrialRecord,
    reporter: EpochReporter,
) -> None:
    try:
        if config["strategy"] == "recipe":
            _run_recipe(learn, arm, record)
        else:
            train(learn, task, record.lr, should_continue=lambda: not reporter.stopped)
    except TrainingDiverged as error:
        logger.info("trial diverged: %s", error)
        reporter.diverged(learn, error)
    except CallbackError as error:
        if not isinstance(error.__cause__, StopTrial):
            raise


def _run_recipe(learn: Learner, arm: Any, record: TrialRecord) -> None:
    """``fit_recipe``; its range tests count as ``lr_find_s`` and the rest of its time outside
    the epochs (switching steps, precomputing features) as extra compute."""
    start = time.perf_counter()
    try:
        learn.fit_recipe(suggest=arm.suggest, max_epochs=arm.max_epochs)
    finally:
        history = learn.history
        epochs_s = sum(float(r.get("epoch_time_s", 0.0)) for r in training_rows(history))
        tests_s = sum(
            float(r.get("seconds", 0.0))
            for r in history
            if r.get("epoch") is None and str(r.get("phase", "")).startswith("lr_find")
        )
        record.lr_find_s += tests_s
        record.extra_compute_s += max(0.0, time.perf_counter() - start - epochs_s - tests_s)
        record.lr = recipe_lr(history, arm.suggest)
