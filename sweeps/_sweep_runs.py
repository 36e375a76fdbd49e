"""A sweep's runs as a whole: its trial runs found, checked, reopened, pruned and closed.

The bodies of the :class:`sweeps.tracking.Tracker` methods of the same names, which delegate
here (``tracker.close_unfinished(...)`` is ``close_unfinished(tracker, ...)``): each works
through the tracker's own calls (searches, tags, ``end_run``), retried as every MLflow call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from sweeps._retry import redact_text
from sweeps._retry import retrying as _retrying
from sweeps._tags import PARENT_TAG, TAG_CURVE_CUT, TAG_TRIAL_ID, TERMINAL_STATUSES

if TYPE_CHECKING:
    from sweeps.tracking import Tracker

__all__ = [
    "LISTED_SWEEP_RUNS",
    "check_sweep_run",
    "close_unfinished",
    "delete_stray_trial_runs",
    "find_trial_run",
    "reopen_interrupted",
]

logger = logging.getLogger("sweeps.tracking")  # its messages, as before the split

LISTED_SWEEP_RUNS = 10
"""How many sweep runs an unknown ``--run-id`` error lists."""


def check_sweep_run(
    tracker: Tracker,
    experiment_id: str,
    experiment: str,
    run_id: str,
    *,
    without_run_id: str = "for the latest",
) -> None:
    """Raise ``LookupError`` unless ``run_id`` is a sweep run of the experiment; the message
    lists those that are (latest first, at most ``LISTED_SWEEP_RUNS``) and says what leaving
    ``--run-id`` out does (``without_run_id``)."""
    parents = tracker.sweep_runs(experiment_id)
    if any(p.info.run_id == run_id for p in parents):
        return
    listed = [f"{p.info.run_id} ({p.info.run_name})" for p in parents[:LISTED_SWEEP_RUNS]]
    extra = len(parents) - LISTED_SWEEP_RUNS
    more = f" and {extra} older" if extra > 0 else ""
    raise LookupError(
        f"run {run_id} is not a sweep run of experiment {experiment!r}"
        f"{_what_run_is(tracker, experiment_id, run_id)}; pass --run-id one of "
        f"its sweep runs (latest first): {', '.join(listed) or 'none'}{more}, "
        f"or leave --run-id out {without_run_id}."
    )


def _what_run_is(tracker: Tracker, experiment_id: str, run_id: str) -> str:
    """`` (it is a trial run of sweep run P)``, `` (it was deleted)`` or `` (it is a run of
    experiment 'X')`` for a run that exists; '' for one that does not (or a store that cannot
    say): a trial's run id, which ``lrsweep best`` prints, was refused without a word on it."""
    from mlflow.exceptions import MlflowException

    try:
        run = tracker.client.get_run(run_id)
        if run.info.experiment_id != experiment_id:
            name = tracker.client.get_experiment(run.info.experiment_id).name
            return f" (it is a run of experiment {name!r})"
    except (MlflowException, OSError):  # no such run; a store that does not answer
        return ""
    if run.info.lifecycle_stage == "deleted":
        return " (it was deleted)"
    parent = run.data.tags.get(PARENT_TAG)
    return f" (it is a trial run of sweep run {parent})" if parent else ""


def find_trial_run(
    tracker: Tracker, experiment_id: str, parent_run_id: str, trial_id: str
) -> str | None:
    """The child run already created for a Ray Tune trial id, if any."""
    runs = tracker.search_runs(
        experiment_id,
        f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TAG_TRIAL_ID}` = '{trial_id}'",
    )
    return runs[0].info.run_id if runs else None


def reopen_interrupted(
    tracker: Tracker, experiment_id: str, parent_run_id: str, trial_ids: Iterable[str]
) -> list[str]:
    """Mark KILLED the child runs of trials Tune stopped on an interrupt; return their ids.

    A trial stopped by Ctrl-C / SIGTERM may close its own run as FINISHED on its way out;
    Tune knows it did not end (no ``done``), so its run is KILLED and its ``stop_reason``
    removed: ``lrsweep resume`` then trains it on from its checkpoint in the same run.
    """
    wanted, reopened = set(trial_ids), []
    for run in tracker.child_runs(experiment_id, parent_run_id):
        if run.info.status == "FINISHED" and run.data.tags.get(TAG_TRIAL_ID) in wanted:
            if "sweeps.stop_reason" in run.data.tags:
                tracker.delete_tags(run.info.run_id, ["sweeps.stop_reason"])
            tracker.end_run(run.info.run_id, "KILLED")
            reopened.append(run.info.run_id)
    return reopened


def delete_stray_trial_runs(
    tracker: Tracker, experiment_id: str, parent_run_id: str, trial_ids: Iterable[str]
) -> list[str]:
    """Delete the child runs of trials the sweep's Tuner does not hold; return their ids.

    A driver killed between two of Ray Tune's experiment snapshots (taken at most every
    10 s) leaves runs of trials started after the last one: the restored Tuner never knew
    them, and its searcher hands their places out again to new trials (a grid or random config,
    or a seeded Optuna study's suggestion, runs again), so each would count twice in the
    report and in ``best_config``. Their runs are tagged
    ``sweeps.deleted_reason`` and deleted (MLflow's soft delete: ``mlflow runs restore``
    brings one back). Runs without a ``sweeps.trial_id`` tag are left alone.
    """
    known = set(trial_ids)
    stray = [
        run
        for run in tracker.child_runs(experiment_id, parent_run_id)
        if run.data.tags.get(TAG_TRIAL_ID) not in known | {None}
    ]
    reason = (
        "a trial the resumed sweep's Ray Tune state did not hold (the driver stopped before "
        "Tune saved it); the restored searcher gave its place to a new trial of this sweep"
    )
    for run in stray:
        run_id = run.info.run_id
        if run.info.status in ("RUNNING", "SCHEDULED"):
            tracker.end_run(run_id, "KILLED")
        tracker.set_tags(run_id, {"sweeps.deleted_reason": reason})
        _retrying(partial(tracker.client.delete_run, run_id), what="delete_run")
        logger.warning(
            "deleted run %s (%s, trial %s): %s",
            run_id,
            run.info.run_name,
            run.data.tags.get(TAG_TRIAL_ID),
            reason,
        )
    return [run.info.run_id for run in stray]


def close_unfinished(
    tracker: Tracker,
    experiment_id: str,
    parent_run_id: str,
    *,
    status: str,
    errors: Mapping[str, str] | None = None,
) -> list[str]:
    """End every child of ``parent_run_id`` still RUNNING with ``status``; return their ids.

    ``errors`` (trial id -> error, what Ray Tune knows of a trial whose worker died before
    it could close its run) becomes a FAILED run's ``sweeps.error`` tag, and a FAILED run is
    tagged ``sweeps.curve_cut`` (its trial's unsent points died with it). Every such run is
    closed even when one of them (its tag or its status) cannot be written; the first error
    is raised after the others were tried.
    """
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"status must be one of {TERMINAL_STATUSES}, but got {status!r}.")
    closed: list[str] = []
    first_error: Exception | None = None
    for run in tracker.child_runs(experiment_id, parent_run_id):
        if run.info.status not in ("RUNNING", "SCHEDULED"):
            continue
        run_id = run.info.run_id
        try:
            try:
                tags = run.data.tags
                if status == "FAILED":
                    error = (errors or {}).get(tags.get(TAG_TRIAL_ID, ""))
                    failed = {TAG_CURVE_CUT: "true"}
                    if "sweeps.stop_reason" not in tags:
                        failed["sweeps.stop_reason"] = "failed"
                    if error and "sweeps.error" not in tags:
                        failed["sweeps.error"] = redact_text(error)[:500]
                    tracker.set_tags(run_id, failed)
            finally:  # a run whose tag could not be written is closed all the same
                tracker.end_run(run_id, status)
            closed.append(run_id)
        except Exception as error:
            shown = redact_text(str(error))
            logger.warning("could not close MLflow run %s as %s: %s", run_id, status, shown)
            first_error = first_error or error
    if first_error is not None:
        raise first_error
    return closed
