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
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import importlib
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweeps import _fitting, _ray
from sweeps._fitting import train
from sweeps._reporter import (
    EpochReporter,
    StopTrial,
    TrialRecord,
    flatten_params,
    training_rows,
)
from sweeps.predictor import predictor_files
from sweeps.spec import redact
from sweeps.stoppers import from_spec
from sweeps.tracking import TAG_FAILED_FOR_GOOD, TAG_SWEEP_ID, TAG_TRIAL_ID, RunLogger, Tracker
from trainers import (
    CallbackError,
    Learner,
    LRFindResult,
    TrainingDiverged,
)
from trainers.suggestions import CurveTooShort

logger = logging.getLogger(__name__)


class TrialFailedForGood(RuntimeError):
    """A retried trial whose first attempt failed in a way a retry repeats (not run again)."""


META_FILE = "trial.json"
LEARNER_FILE = "learner.pt"
BEST_MODEL_FILE = "best_model.pt"
CONFUSION_FILE = "confusion_matrix.json"
"""Child artifact: the best epoch's confusion counts, ``{"classes", "counts", "epoch"}``."""
REPORTED_METRICS = ("valid_loss", "train_loss", "error_rate", "accuracy", "compute_s")


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (registered with the trainable, ``sweeps._ray._bind``).

    Attributes:
        spec: The validated ``SweepSpec``.
        tracking_uri: The MLflow store.
        experiment_id: The sweep's experiment.
        parent_run_id: The sweep execution's parent run.
        sweep_id: The sweep execution's id (tag ``sweeps.sweep_id``).
    """

    spec: Any
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep_id: str


_TRACKERS: dict[str, Tracker] = {}


def _tracker(uri: str) -> Tracker:
    """One client per store per worker process (Ray reuses a worker for several trials).

    A worker's first trial also pays the once-per-process costs of what every trial needs
    (:func:`_warm_up`) at its start, before the trial's run opens, not inside its first trial.
    """
    if uri not in _TRACKERS:
        _TRACKERS[uri] = Tracker(uri)
        _warm_up()
    return _TRACKERS[uri]


_FIRST_LOG_MODEL_IMPORTS = (
    "git",
    "mlflow.pyfunc.scoring_server",
    "mlflow.pyfunc.utils.environment",
    "mlflow.tracing.processor.base_mlflow",
    "mlflow.tracing.processor.otel",
)
"""Modules MLflow's first ``log_model`` imports on its way (GitPython is optional to MLflow,
and a release may move its own modules: a missing one is skipped)."""


@functools.cache  # once per process, whatever number of stores its trials log to
def _warm_up() -> None:
    """Import what a trial needs beyond the trainers, once per worker process (~3 CPU-s).

    ``torch._dynamo`` (imported by the first optimizer built; ~1.2 s), matplotlib for the
    figures, ``mlflow.pytorch`` for the model and MLflow's map of installed packages (scanned
    by the first ``log_model``; ~0.6 s), and what the first ``log_model`` imports on its way
    (~0.25 s): ``mlflow.pyfunc`` and its scoring server (it loads the model back to check the
    input example), GitPython (the source's commit), MLflow's tracing processors (which
    ``mlflow.set_tracking_uri`` retires).
    """
    import mlflow.pytorch  # noqa: F401  (imports mlflow.pyfunc too)

    import trainers.plots  # noqa: F401

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # imports torch._dynamo
    for module in _FIRST_LOG_MODEL_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    try:  # private to MLflow: without it the first log_model scans the packages instead
        from mlflow.utils.requirements_utils import _init_packages_to_modules_map

        _init_packages_to_modules_map()
    except (ImportError, AttributeError):
        pass


def _arm_spec(spec: Any, arm: str) -> Any:
    for candidate in spec.strategies:
        if candidate.arm_name == arm:
            return candidate
    names = [a.arm_name for a in spec.strategies]
    raise ValueError(f"config.arm must name one of the spec's arms {names}, but got {arm!r}.")


_DATA_CACHE = _fitting.DATA_CACHE  # the worker's last data (tests clear it)
_dataloaders = _fitting.dataloaders
_learner = _fitting.learner


def _trial_params(context: TrialContext, config: Mapping[str, Any], arm: Any) -> dict[str, Any]:
    """The child run's params; values under keys like ``*password*``/``*token*`` redacted."""
    params: dict[str, Any] = {k: v for k, v in redact(dict(config)).items() if k != "lr"}
    params.update(flatten_params(redact(context.spec.resolved()["task"]), prefix="task."))
    arm_fields = {k: v for k, v in arm.model_dump(mode="json").items() if k not in ("kind", "name")}
    params.update(flatten_params(redact(arm_fields), prefix="arm."))
    params["schedule"] = context.spec.task.schedule.kind
    params["epochs"] = context.spec.task.epochs
    return params


def _find_run(tracker: Tracker, context: TrialContext) -> str | None:
    """The child run already created for this trial (a restart with no checkpoint yet)."""
    return tracker.find_trial_run(context.experiment_id, context.parent_run_id, _ray.trial_id())


def _report_if_ended(tracker: Tracker, run_id: str) -> bool:
    """When the trial's run already ended (FINISHED, tagged), report its result and say True.

    A trial can finish between Tune's last experiment-state snapshot and a driver crash; the
    restored Tuner then starts it again. Training it again would log its final metrics and
    model twice, so it only tells Tune (and the searcher) the result its run holds.
    """
    result = ended_result(tracker.get_run(run_id))
    if result is None:
        return False
    logger.warning(
        "run %s of this trial had finished before the sweep stopped; not training again", run_id
    )
    _ray.report(result)
    return True


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


def ended_result(run: Any) -> dict[str, Any] | None:
    """The Tune result of a trial whose MLflow run had ended (None when it had not).

    Every metric the stoppers watch is there, NaN when the run holds none (a trial that
    diverged in its first epoch has no ``valid_loss``): a missing one would stop the restored
    sweep with ``MissingMetricError``.
    """
    tags, metrics = run.data.tags, run.data.metrics
    if run.info.status != "FINISHED" or "sweeps.stop_reason" not in tags:
        return None
    epochs = int(metrics.get("epochs_run", 0))
    best_epoch = tags.get("sweeps.best_epoch", "")
    result: dict[str, Any] = {k: float(metrics.get(k, math.nan)) for k in REPORTED_METRICS}
    result.update(
        {
            "epoch": epochs,
            "training_iteration": epochs,
            "best_valid_loss": float(metrics.get("best/valid_loss", math.inf)),
            "best_epoch": int(best_epoch) if best_epoch.isdigit() else -1,
            "trial_lr": float(run.data.params.get("lr", math.nan)),
            "stop_reason": tags["sweeps.stop_reason"],
        }
    )
    return result


def _open_run(
    tracker: Tracker, context: TrialContext, config: Mapping[str, Any], found: str | None
) -> tuple[str, bool]:
    """The child run of this trial: ``found`` reopened (True) or newly created (False)."""
    if found is not None:
        tracker.reopen_run(found)
        _drop_failure_tags(tracker, found)
        return found, True
    trial_id = _ray.trial_id()
    tags = {
        "sweeps.strategy": config["strategy"],
        "sweeps.arm": config["arm"],
        "sweeps.node": _ray.node_name(),
        TAG_TRIAL_ID: trial_id,
        TAG_SWEEP_ID: context.sweep_id,
    }
    if config.get("rule"):
        tags["sweeps.rule"] = config["rule"]
    name = f"{config['arm']}-seed{config['seed']}-{trial_id}"
    run_id = tracker.start_run(
        context.experiment_id, run_name=name, tags=tags, parent_run_id=context.parent_run_id
    )
    return run_id, False


def _drop_failure_tags(tracker: Tracker, run_id: str) -> None:
    """A retry starts clean: the last try's ``sweeps.error`` and ``stop_reason=failed`` go (a
    retry that then finishes, or is interrupted, would show them)."""
    tags = tracker.get_run(run_id).data.tags
    stale = [key for key in ("sweeps.error",) if key in tags]
    if tags.get("sweeps.stop_reason") == "failed":
        stale.append("sweeps.stop_reason")
    tracker.delete_tags(run_id, stale)


def _restore(learn: Learner, folder: Path | None, task: Any) -> dict[str, Any] | None:
    """Load a Tune checkpoint into ``learn``; return its metadata (None on a fresh start)."""
    if folder is None:
        return None
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    resize = _fitting.resizer(task)
    if resize is not None:  # the loaders the checkpoint was taken on (their size is checked)
        learn.dls = resize.sized(meta.get("image_size"), learn.dls)
    learn.load(folder / LEARNER_FILE)
    best_file = folder / BEST_MODEL_FILE
    if best_file.exists():
        meta["best_state"] = torch.load(best_file, map_location="cpu", weights_only=True)
    logger.info("trial resumes at epoch %d in run %s", len(learn.history), meta["run_id"])
    return meta


TAG_LR_FIND_FROM = "sweeps.lr_find_from"
"""Run tag: the run whose range test this trial read instead of running its own."""


def range_tests_prefix(sweep_id: str) -> str:
    """The prefix of a sweep's shared range tests in Ray's key-value store."""
    return f"lr_find/{sweep_id}/"


def _range_test_key(context: TrialContext, config: Mapping[str, Any]) -> str:
    """Trials of one arm and seed in one sweep run the same range test (same task, weights,
    data order and test settings; ``lr_find`` puts every RNG back, so the training after it
    is the same whether the test ran or was read)."""
    return f"{range_tests_prefix(context.sweep_id)}{config['arm']}/{int(config['seed'])}"


def _find_lr(learn: Learner, arm: Any, rule: str, record: TrialRecord, *, key: str) -> float:
    """The rule's pick on the seed's range test: read when another trial of the seed has run
    it, else run here and shared. Either way ``lr_find_s`` is the test's own time, so a rule's
    compute stays what using that rule alone costs."""
    shared = _ray.shared_get(key)
    if shared is not None:
        found = json.loads(shared)
        curve = LRFindResult.from_json(found["curve"])
        record.lr_find_s, record.lr_find_from = float(found["seconds"]), str(found["run_id"])
    else:
        start = time.perf_counter()
        curve = learn.lr_find(arm.start_lr, arm.end_lr, arm.num_it, suggest=())
        record.lr_find_s = time.perf_counter() - start
        value = {"curve": curve.to_json(), "seconds": record.lr_find_s, "run_id": record.run_id}
        _ray.shared_put(key, json.dumps(value).encode())
    record.lr_find = curve  # logged even when the rule cannot read it (the test's cost counts)
    suggestions = curve.suggest(rule)  # CurveTooShort as lr_find(suggest=rule) raises it
    record.lr_find = dataclasses.replace(curve, suggestions=suggestions)
    return float(suggestions[rule])


def _choose_lr(
    learn: Learner, context: TrialContext, config: Mapping[str, Any], arm: Any, record: TrialRecord
) -> float:
    if config["strategy"] == "lr_finder":
        key = _range_test_key(context, config)
        lr = _find_lr(learn, arm, str(config["rule"]), record, key=key)
        logger.info("range test picked lr=%.3g with rule %s", lr, config["rule"])
        return lr
    if config["strategy"] == "recipe":
        return math.nan  # the recipe finds and adjusts its own LR
    lr = float(config["lr"])
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"config.lr must be a positive finite number, but got {lr!r}.")
    return lr


def _log_new_params(tracker: Tracker, run_id: str, params: Mapping[str, Any]) -> None:
    """Log the params the run does not have yet (a reopened run keeps its first values)."""
    existing = tracker.get_run(run_id).data.params
    tracker.log_params(run_id, {k: v for k, v in params.items() if k not in existing})


def _log_lr_find(tracker: Tracker, run_id: str, result: Any, seconds: float) -> None:
    """The range-test curve by iteration, its seconds (``lr_find_s``: logged now, so a trial that
    fails later still counts them) and ``lr_find.png``, each point and the figure once.

    A retry sends only what the run lacks: a try that failed between two batches of the curve
    (or before its figure) left part of it there.
    """
    from trainers.plots import plot_lr_find

    log = RunLogger(tracker, run_id)
    log.hold({k: s for k, s in tracker.last_steps(run_id).items() if k.startswith("lr_find")})
    log.add("lr_find_s", seconds, 0)
    log.extend("lr_find/loss", result.losses)
    log.extend("lr_find/raw_loss", result.raw_losses)
    log.extend("lr_find/lr", result.lrs)
    log.flush()
    if "lr_find.png" in tracker.list_artifacts(run_id):
        return
    with tempfile.TemporaryDirectory(prefix="lrsweep-") as folder:
        path = Path(folder) / "lr_find.png"
        plot_lr_find(result, path)
        tracker.log_artifact(run_id, path)


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
    _log_new_params(tracker, run_id, _trial_params(context, config, arm))
    if context.spec.task.fine_tune is not None:
        learn.freeze()  # as fastai: the range test of a transfer task runs on the frozen model
    try:
        record.lr = _choose_lr(learn, context, config, arm, record)
    except ValueError as error:  # CurveTooShort, a bad config.lr: the same seed fails the same way
        try:  # a test the rule could not read: its curve and its cost still count
            _log_range_test(tracker, record)
        except Exception:  # the error to report is the rule's, not this one
            logger.exception("trial %s: could not log its range test", run_id)
        _mark_failed_for_good(tracker, run_id, error)
        raise
    _log_range_test(tracker, record)
    if math.isfinite(record.lr):
        _log_new_params(tracker, run_id, {"lr": record.lr})


def _log_range_test(tracker: Tracker, record: TrialRecord) -> None:
    """The range test's source tag, curve, seconds and figure, when the trial has one."""
    if record.lr_find_from is not None:
        tracker.set_tags(record.run_id, {TAG_LR_FIND_FROM: record.lr_find_from})
    if record.lr_find is not None:
        _log_lr_find(tracker, record.run_id, record.lr_find, record.lr_find_s)


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
    dls = _dataloaders(task, seed)
    learn = _learner(task, dls, seed)
    with _ray.resume_checkpoint() as folder:
        # A recipe cannot continue mid-way: it restarts (same seed, same run, no epoch re-logged).
        meta = _restore(learn, folder, task) if config["strategy"] != "recipe" else None
    _fitting.at_stage(learn, task, dls)  # progressive resizing: the next epoch's image size
    found = meta["run_id"] if meta is not None else _find_run(tracker, context)
    if found is not None and _report_if_ended(tracker, found):
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
        record.lr = _recipe_lr(history, arm.suggest)


def _recipe_marker(history: list[dict[str, Any]], phase: str) -> dict[str, Any] | None:
    """The step marker a recipe wrote for ``phase`` (``lr_find_frozen``, ...), or None."""
    return next((r for r in history if r.get("epoch") is None and r.get("phase") == phase), None)


def _recipe_lr(history: list[dict[str, Any]], rule: str) -> float:
    """The LR the recipe's first range test picked (its head's rate), from the step markers."""
    row = _recipe_marker(history, "lr_find_frozen")
    if row is None:
        return math.nan
    suggestions = row.get("suggestions") or {}
    if rule in suggestions:
        return float(suggestions[rule])
    lrs = row.get("lrs") or []
    return float(lrs[-1]) if lrs else math.nan


def _recipe_unfrozen_lr(history: list[dict[str, Any]]) -> float:
    """The top group's rate a recipe's second range test picked for its unfrozen SGDR (the
    ``lr`` param holds the first test's, the head's), NaN for any other trial."""
    row = _recipe_marker(history, "lr_find_unfrozen")
    picks = [float(v) for v in ((row or {}).get("suggestions") or {}).values()]
    return picks[0] if picks else math.nan


def _checkpointer(record: TrialRecord) -> Any:
    """A function writing the Tune checkpoint folder of the current epoch.

    The folder lives from its writing until Tune has its copy (``EpochReporter`` removes it). A
    worker killed in between (SIGKILL, the OOM killer) leaves it behind: its name carries the
    host and the writer's pid, and the next trial on that host removes the folders of dead pids.
    """
    _remove_orphan_checkpoints()
    prefix = f"{_ckpt_prefix()}{os.getpid()}-"

    def write(learn: Learner, best_state: Mapping[str, Any] | None) -> Path:
        folder = Path(tempfile.mkdtemp(prefix=prefix))
        learn.save(folder / LEARNER_FILE)
        if best_state is not None:
            torch.save(dict(best_state), folder / BEST_MODEL_FILE)
        meta = {**record.to_meta(), "image_size": getattr(learn.dls, "image_size", None)}
        (folder / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
        return folder

    return write


def _ckpt_prefix() -> str:
    return f"lrsweep-ckpt-{socket.gethostname()}-"


def _remove_orphan_checkpoints() -> None:
    """Remove this host's checkpoint folders whose writer process is gone."""
    prefix = _ckpt_prefix()
    for folder in Path(tempfile.gettempdir()).glob(f"{glob.escape(prefix)}*-*"):
        pid = folder.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _finalize(
    learn: Learner, record: TrialRecord, tracker: Tracker, spec: Any, *, reopened: bool = False
) -> None:
    """Best-epoch metrics, the stop reason, diagnosis and artifacts on the child run.

    In a reopened run the summary metrics and the model it holds already are kept, not logged
    again: a try killed after finalizing and before closing its run would otherwise leave two
    points each and a second logged model.
    """
    run_id, history = record.run_id, learn.history
    points = [(f"best/{k}", v, 0) for k, v in record.best.items() if math.isfinite(v)]
    points += [
        ("compute_s", record.compute_s(history), 0),
        ("epochs_run", float(len(training_rows(history))), 0),
    ]
    if record.lr_find is None:  # a finder trial logged its range test's seconds with its curve
        points.append(("lr_find_s", record.lr_find_s, 0))
    if reopened:
        held = tracker.get_run(run_id).data.metrics
        points = [point for point in points if point[0] not in held]
    tracker.log_metrics(run_id, points)
    params: dict[str, Any] = {"lr_group_ratios": lr_group_ratios(learn)}
    if math.isfinite(record.lr):
        params["lr"] = record.lr
    unfrozen = _recipe_unfrozen_lr(history)  # a recipe's unfrozen SGDR runs at its second pick
    if math.isfinite(unfrozen):
        params["recipe_unfrozen_lr"] = unfrozen
    _log_new_params(tracker, run_id, params)
    diagnosis = _diagnose(history, record, spec)
    tags = {
        "sweeps.stop_reason": record.stop_reason,
        "sweeps.best_epoch": "" if record.best_epoch is None else record.best_epoch,
        "sweeps.diagnosis": diagnosis[0],
        "sweeps.diagnosis_reason": diagnosis[1][:500],
        "sweeps.node": _ray.node_name(),
    }
    tracker.set_tags(run_id, tags)
    if record.best_state is not None:  # the figures and the logged model show the best epoch
        learn.model.load_state_dict(dict(record.best_state))
        if spec.task.tta is not None:
            _log_tta(learn, record, tracker, spec.task.tta, reopened=reopened)
    _log_figures(learn, record, tracker)
    best_state = record.best_state if spec.tracking.checkpoints != "none" else None
    if best_state is not None and not (reopened and tracker.has_model(run_id)):
        example = learn.dls.valid_images[:2].detach().cpu()
        with tempfile.TemporaryDirectory(prefix="lrsweep-export-") as folder:
            metadata, files = predictor_files(learn, Path(folder))
            model = learn.model.cpu()
            tracker.log_pytorch_model(run_id, model, example, metadata, extra_files=files)


TTA_METRICS = ("valid_loss", "error_rate", "accuracy")
"""``learn.tta``'s results logged as ``best/tta_<name>`` (the best epoch's weights)."""


def _log_tta(
    learn: Learner, record: TrialRecord, tracker: Tracker, tta: Any, *, reopened: bool
) -> None:
    """``best/tta_valid_loss``, ``best/tta_error_rate`` and ``best/tta_accuracy``: the best
    epoch's weights under test-time augmentation (``task.tta``), beside its plain ``best/*``.
    Best effort, as the figures: a failure is a warning, not a failed trial."""
    try:
        result = learn.tta(tta.n, beta=tta.beta)
    except (ValueError, RuntimeError) as error:
        logger.warning("trial %s: TTA could not run: %s", record.run_id, error)
        return
    points = [(f"best/tta_{name}", float(result[name]), 0) for name in TTA_METRICS]
    if reopened:
        held = tracker.get_run(record.run_id).data.metrics
        points = [point for point in points if point[0] not in held]
    tracker.log_metrics(record.run_id, points)


def lr_group_ratios(learn: Learner) -> str:
    """Each layer group's rate over the top group's at the trial's last step, earliest first
    (``"0.1,0.316,1"``: a fine-tune's discriminative rates, ``lr_mult`` 10 over three groups).

    The per-step ``lr`` metric is the top group's; schedules scale every group together, so
    these ratios are what the body trained at, beside it. All 1 without discriminative rates.
    """
    rates = learn.group_lrs
    top = rates[-1]
    return ",".join(f"{rate / top:.3g}" if top > 0 else "nan" for rate in rates)


def _diagnose(history: list[dict[str, Any]], record: TrialRecord, spec: Any) -> tuple[str, str]:
    """The trial's curve diagnosis, told what the curve alone cannot show: a trial stopped as
    ``diverged`` had a too high rate (the epoch that blew up may have no record, or the blow-up
    came within the first epoch, which then is no reference); its loss before the first step
    is the reference for an explosion; a trial ``early_stop`` ended has risen for ``patience``
    epochs, which is what ``overfitting`` then asks for (the rule's own 3 would never be met
    by a trial stopped after 2)."""
    from trainers.diagnose import diagnose

    if record.stop_reason == "diverged":
        return "lr_too_high", (
            "the trial diverged (its training loss turned non-finite or passed "
            "divergence.factor times its loss before the first step): lower the learning rate."
        )
    if not training_rows(history):
        return "no_epochs", "the trial ended before its first epoch finished"
    history = _one_size(history, spec)
    options: dict[str, Any] = {"start_loss": record.start_loss}
    stop = getattr(spec, "early_stop", None)
    if record.stop_reason == "rising_val_loss" and stop is not None:
        options["rise_epochs"] = max(1, min(3, int(stop.patience)))
    try:
        found = diagnose(history, **options)
    except ValueError as error:  # e.g. every epoch cancelled before its losses were measured
        return "no_epochs", str(error)
    return str(found.label), str(found.reason)


def _one_size(history: list[dict[str, Any]], spec: Any) -> list[dict[str, Any]]:
    """The epochs a curve diagnosis compares: with ``task.progressive_resizing``, the last run
    of two or more epochs at one image size (a loss that rises as the images grow is no sign of
    a too low rate or of overfitting); else, or when no size held two epochs, all of them."""
    resize = _fitting.resizer(spec.task) if hasattr(spec, "task") else None
    if resize is None:
        return history
    rows = training_rows(history)
    runs: list[list[dict[str, Any]]] = []
    for epoch, row in enumerate(rows):
        if runs and resize.size_at(epoch) == resize.size_at(epoch - 1):
            runs[-1].append(row)
        else:
            runs.append([row])
    return next((run for run in reversed(runs) if len(run) >= 2), history)


def _log_figures(learn: Learner, record: TrialRecord, tracker: Tracker) -> None:
    """``curves.png``, and the best epoch's confusion matrix (``confusion_matrix.png`` and its
    counts, ``confusion_matrix.json``); best effort.

    The counts are the ones the best epoch's validation produced (kept by the reporter), not a
    second pass over the validation set; a record without them (its best epoch validated
    before a restart from an older checkpoint) predicts again with the best weights, which
    ``_finalize`` loaded.
    """
    from trainers import Interpretation
    from trainers.plots import plot_confusion_matrix, plot_curves

    with tempfile.TemporaryDirectory(prefix="lrsweep-") as tmp:
        folder = Path(tmp)
        try:
            if learn.history:
                tracker.log_artifact(
                    record.run_id, plot_curves(learn.history, folder / "curves.png")
                )
            n_classes = learn.dls.n_classes
            classes = [str(c) for c in getattr(learn.dls, "classes", range(n_classes))]
            if record.best_confusion is not None:
                counts = np.asarray(record.best_confusion, dtype=np.int64)
            elif record.best_state is not None:
                counts = Interpretation.from_learner(learn).confusion_matrix()
            else:
                return
            path = plot_confusion_matrix(counts, classes, folder / "confusion_matrix.png")
            tracker.log_artifact(record.run_id, path)
            table = {"classes": classes, "counts": counts.tolist(), "epoch": record.best_epoch}
            tracker.log_text(record.run_id, json.dumps(table), CONFUSION_FILE)
        except (ValueError, RuntimeError, OSError) as error:
            logger.warning("trial %s: a figure could not be drawn: %s", record.run_id, error)
