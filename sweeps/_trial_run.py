"""A trial's child run in MLflow: its params, finding it again, reopening or creating it, and
the Tune result of one that had already ended.

Called by :func:`sweeps.trial.train_trial` (and ``log_new_params`` by the trial's start and
end, :mod:`sweeps._trial_end`); :mod:`sweeps.trial` re-exports ``ended_result``,
``REPORTED_METRICS`` and ``open_run`` (as ``_open_run``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sweeps import _ray
from sweeps._best_result import BEST_EPOCH_TAG, best_epoch_of
from sweeps._reporter import flatten_params
from sweeps.spec import redact
from sweeps.tracking import TAG_CURVE_CUT, TAG_SWEEP_ID, TAG_TRIAL_ID, Tracker

if TYPE_CHECKING:
    from sweeps.trial import TrialContext

logger = logging.getLogger("sweeps.trial")  # its messages, as before the split

REPORTED_METRICS = ("valid_loss", "train_loss", "error_rate", "accuracy", "compute_s")


def trial_params(context: TrialContext, config: Mapping[str, Any], arm: Any) -> dict[str, Any]:
    """The child run's params; values under keys like ``*password*``/``*token*`` redacted."""
    params: dict[str, Any] = {k: v for k, v in redact(dict(config)).items() if k != "lr"}
    params.update(flatten_params(redact(context.spec.resolved()["task"]), prefix="task."))
    arm_fields = {k: v for k, v in arm.model_dump(mode="json").items() if k not in ("kind", "name")}
    params.update(flatten_params(redact(arm_fields), prefix="arm."))
    params["schedule"] = context.spec.task.schedule.kind
    params["epochs"] = context.spec.task.epochs
    return params


def find_run(tracker: Tracker, context: TrialContext) -> str | None:
    """The child run already created for this trial (a restart with no checkpoint yet)."""
    return tracker.find_trial_run(context.experiment_id, context.parent_run_id, _ray.trial_id())


def report_if_ended(tracker: Tracker, run_id: str) -> bool:
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
    best_epoch = best_epoch_of(tags.get(BEST_EPOCH_TAG))
    result: dict[str, Any] = {k: float(metrics.get(k, math.nan)) for k in REPORTED_METRICS}
    result.update(
        {
            "epoch": epochs,
            "training_iteration": epochs,
            "best_valid_loss": float(metrics.get("best/valid_loss", math.inf)),
            "best_epoch": -1 if best_epoch is None else best_epoch,
            "trial_lr": float(run.data.params.get("lr", math.nan)),
            "stop_reason": tags["sweeps.stop_reason"],
        }
    )
    return result


def open_run(
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
    """A retry starts clean: the last try's ``sweeps.error``, ``sweeps.curve_cut`` (the retry
    sends what its checkpoint held and trains the rest again) and ``stop_reason=failed`` go (a
    retry that then finishes, or is interrupted, would show them)."""
    tags = tracker.get_run(run_id).data.tags
    stale = [key for key in ("sweeps.error", TAG_CURVE_CUT) if key in tags]
    if tags.get("sweeps.stop_reason") == "failed":
        stale.append("sweeps.stop_reason")
    tracker.delete_tags(run_id, stale)


def log_new_params(tracker: Tracker, run_id: str, params: Mapping[str, Any]) -> None:
    """Log the params the run does not have yet (a reopened run keeps its first values)."""
    existing = tracker.get_run(run_id).data.params
    tracker.log_params(run_id, {k: v for k, v in params.items() if k not in existing})
