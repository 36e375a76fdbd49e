"""How a sweep's execution ends: its parent run and unfinished trial runs closed KILLED (a
stop), FAILED (an error, or every trial failed) or FINISHED with the report; the failed trials a
resume could retry (the sweep left resumable, their checkpoints kept); the other Tune
checkpoints removed; ``sweep.json`` written; and the ``lrsweep resume`` command a stop logs."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from sweeps import _location as location
from sweeps._interrupts import Terminated, closing_runs
from sweeps._location import Location
from sweeps._result import SweepResult
from sweeps._resume_command import left_running_note, resume_command, storage_root_of
from sweeps._retry import giving_up_within, is_transient
from sweeps._uri import redact_uri
from sweeps.clean import STATE_FILE, TUNE_DIR
from sweeps.report import build_report, log_report
from sweeps.spec import SweepSpec
from sweeps.tracking import TAG_FAILED_FOR_GOOD, TAG_RESUMABLE, TAG_TRIAL_ID, Tracker

__all__ = [
    "close_failed",
    "close_killed",
    "close_sweep",
    "end_after_error",
    "never_left_running",
    "resume_hint",
    "write_state",
]

logger = logging.getLogger("sweeps.run")  # the name the user has always seen, as _interrupts.py


def write_state(sweep_dir: Location, state: dict[str, Any]) -> None:
    location.write_text(sweep_dir, STATE_FILE, json.dumps(state, indent=1, default=str))


def resume_hint(name: str, sweep_dir: Location, address: str | None = None) -> str:
    """``lrsweep resume NAME``, with ``--storage-path`` when the sweep's Ray storage is not the
    default one (else that command would look for another sweep) and ``--address`` when it ran
    on a cluster (else the resume would start a Ray of its own on the machine it is typed on)."""
    return resume_command(name, storage_root_of(sweep_dir), address=address)


@contextmanager
def never_left_running(
    tracker: Tracker,
    experiment_id: str,
    parent_run_id: str,
    name: str,
    sweep_dir: Location,
    address: str | None = None,
) -> Iterator[None]:
    """Whatever ends the block early leaves no run of the sweep RUNNING.

    The stretches that take long guard themselves (Ray's start, the trials, the closing and the
    report); this is for an error, Ctrl-C or SIGTERM (:class:`Terminated`, under
    :func:`sigterm_stops`) between them. The parent run and its unfinished trial runs close
    KILLED for a stop, FAILED for an error (unless a stretch has closed them already), and a
    stop logs how to resume once ``sweep.json`` is written. Guards nest: the one that closes
    the runs says so.
    """
    try:
        yield
    except BaseException as error:
        with closing_runs():  # a second signal must not cut the closing short
            stopped = isinstance(error, KeyboardInterrupt)
            try:
                with giving_up_within():  # a stop or an error must not wait minutes for MLflow
                    if tracker.get_run(parent_run_id).info.status != "RUNNING":
                        raise  # closed, and said so, by the stretch it came from or a guard
                    closed = close_killed if stopped else close_failed
                    closed(tracker, experiment_id, parent_run_id)
            except Exception as close_error:
                if close_error is error or not is_transient(close_error):
                    raise
                _say_left_running(tracker, name, sweep_dir, address)
                raise error from None
            if stopped and location.read_text(sweep_dir, STATE_FILE) is not None:
                hint = resume_hint(name, sweep_dir, address)
                logger.warning("sweep interrupted; continue it with: %s", hint)
        raise


def _say_left_running(
    tracker: Tracker, name: str, sweep_dir: Location, address: str | None
) -> None:
    """One line for runs :func:`never_left_running` could not close, MLflow out of reach
    (each call used to retry for minutes, then log the client's traceback)."""
    written = location.read_text(sweep_dir, STATE_FILE) is not None  # else nothing to resume
    resume = resume_hint(name, sweep_dir, address) if written else None
    logger.warning("sweep ended early. %s", left_running_note(redact_uri(tracker.uri), resume))


def end_after_error(tracker: Tracker, run_id: str) -> None:
    """Close ``run_id`` FAILED (KILLED for Ctrl-C or SIGTERM) on the way out of an error, never
    RUNNING."""
    interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt)
    tracker.end_run(run_id, "KILLED" if interrupted else "FAILED")


def close_killed(tracker: Tracker, experiment_id: str, parent_run_id: str) -> None:
    tracker.close_unfinished(experiment_id, parent_run_id, status="KILLED")
    tracker.end_run(parent_run_id, "KILLED")


def close_failed(tracker: Tracker, experiment_id: str, parent_run_id: str) -> None:
    tracker.close_unfinished(experiment_id, parent_run_id, status="FAILED")
    tracker.end_run(parent_run_id, "FAILED")


def close_sweep(
    spec: SweepSpec,
    tracker: Tracker,
    state: dict[str, Any],
    sweep_dir: Location,
    result: SweepResult,
    *,
    unended: Iterable[str] = (),
) -> SweepResult:
    """End the parent run: KILLED (interrupted), FAILED (every trial failed) or FINISHED."""
    hint = resume_hint(spec.name, sweep_dir, result.address)
    if result.interrupted:
        return _close_stopped(tracker, result, hint, unended=unended)
    try:
        return _close_ended(spec, tracker, state, sweep_dir, result)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM after the trials: `lrsweep resume`
        stop_signal = "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"
        stopped = replace(result, interrupted=True, stop_signal=stop_signal)
        with closing_runs():  # closes and reports; a second signal must not cut this short
            return _close_stopped(tracker, stopped, hint)


def _close_stopped(
    tracker: Tracker, result: SweepResult, hint: str, *, unended: Iterable[str] | None = None
) -> SweepResult:
    """Close a stopped sweep's runs KILLED (``unended``: the trials Tune stopped, whose runs
    may have closed themselves FINISHED) and log how to continue it.

    MLflow gets :data:`~sweeps._retry.STOP_RETRY_S` to answer, not minutes: when it cannot be
    reached, the runs stay RUNNING, one line says so and how ``hint`` closes them later, and
    the result's ``runs_left_running`` is set (a stop is not turned into a failure).
    """
    experiment_id, parent_run_id = result.experiment_id, result.parent_run_id
    try:
        with giving_up_within():
            if unended is not None:
                tracker.reopen_interrupted(experiment_id, parent_run_id, unended)
            close_killed(tracker, experiment_id, parent_run_id)
    except Exception as error:
        if not is_transient(error):
            raise
        logger.warning("sweep interrupted. %s", left_running_note(result.tracking_uri, hint))
        return replace(result, runs_left_running=True)
    logger.warning("sweep interrupted; continue it with: %s", hint)
    return result


def _close_ended(
    spec: SweepSpec,
    tracker: Tracker,
    state: dict[str, Any],
    sweep_dir: Location,
    result: SweepResult,
) -> SweepResult:
    """A sweep whose trials all ended: FAILED (every trial failed) or FINISHED, with its report;
    left resumable (``lrsweep resume`` retries the failed trials) when every trial failed, or
    some did and a retry could end otherwise."""
    experiment_id, parent_run_id = result.experiment_id, result.parent_run_id
    # runs of trials a resumed Tuner never knew (the driver died before Tune saved them): their
    # configs ran again under new trial ids and must not count twice
    trial_ids = {o.trial_id for outcomes in result.trials.values() for o in outcomes}
    if trial_ids:
        tracker.delete_stray_trial_runs(experiment_id, parent_run_id, trial_ids)
    # a worker that died (killed, out of memory) closed nothing: its run says why from here
    trial_errors = {o.trial_id: o.error for o in result.failed if o.error}
    tracker.close_unfinished(experiment_id, parent_run_id, status="FAILED", errors=trial_errors)
    if result.all_failed:
        errors = sorted({o.error or "unknown error" for o in result.failed})
        tracker.set_tags(parent_run_id, {"sweeps.error": "; ".join(errors)[:5000]})
        tracker.end_run(parent_run_id, "FAILED")
        logger.error("every trial of sweep %s failed: %s", result.sweep_id, "; ".join(errors))
        _log_failed_report(tracker, spec.experiment_name, parent_run_id)
        return replace(result, resumable=True)  # not marked finished: resume retries them
    retry = (
        _retryable(tracker, experiment_id, parent_run_id, result)
        if state.get("retry_failed", True)
        else []
    )
    # before the report, whose note says whether `lrsweep resume` can retry the failed trials
    tracker.set_tags(parent_run_id, {TAG_RESUMABLE: "true" if retry else "false"})
    try:
        report = build_report(spec.experiment_name, parent_run_id=parent_run_id, tracker=tracker)
        log_report(tracker, parent_run_id, report)
    except KeyboardInterrupt:  # a stop, not a broken report: `close_sweep` ends the run KILLED
        raise
    except BaseException as error:  # the trials are done; `lrsweep report NAME` can retry
        tracker.set_tags(parent_run_id, {"sweeps.error": f"report: {error!r}"[:5000]})
        end_after_error(tracker, parent_run_id)
        raise
    tracker.end_run(parent_run_id, "FINISHED")
    if not retry:
        state["finished"] = True
        write_state(sweep_dir, state)
    # a sweep with failed trials to retry stays resumable: `lrsweep resume` starts them from
    # their last checkpoints (kept) and writes the report again; the others' go
    _remove_tune_checkpoints(sweep_dir, keep=retry)
    return replace(result, report=report, resumable=bool(retry))


def _retryable(
    tracker: Tracker, experiment_id: str, parent_run_id: str, result: SweepResult
) -> list[str]:
    """The failed trials a resume could retry: all but those whose run holds an error that comes
    back on every retry (``sweeps.failed_for_good``: a range test too short for its rule)."""
    if not result.failed:
        return []
    for_good = {
        run.data.tags.get(TAG_TRIAL_ID)
        for run in tracker.child_runs(experiment_id, parent_run_id)
        if TAG_FAILED_FOR_GOOD in run.data.tags
    }
    return [o.trial_id for o in result.failed if o.trial_id not in for_good]


def _log_failed_report(tracker: Tracker, experiment: str, parent_run_id: str) -> None:
    """The report of a sweep whose every trial failed, on its (FAILED) run: the MLflow UI then
    shows why (its banner holds the error) instead of a run with nothing but its spec. A report
    that cannot be built is only warned about: the run is closed either way."""
    try:
        report = build_report(experiment, parent_run_id=parent_run_id, tracker=tracker)
        log_report(tracker, parent_run_id, report)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # the sweep's failure is what the user must see
        logger.warning("the failed sweep's report could not be written: %r", error)


def _remove_tune_checkpoints(sweep_dir: Location, *, keep: Sequence[str] = ()) -> None:
    """Delete the Tune checkpoints of a finished sweep: nothing resumes it any more, and what
    it keeps (models, ``checkpoints: all``) is in MLflow. Each trial kept its last two, a
    resnet18's ~190 MB: a nightly suite filled the disk by some GB a night. Tune's own state
    stays, so ``lrsweep resume`` still says the sweep finished. The trials in ``keep`` (ids)
    keep theirs: failed trials a resume will start from them."""
    tune_dir = location.child(sweep_dir, TUNE_DIR)
    try:
        for trial in location.subfolders(tune_dir):
            if any(f"_{trial_id}" in trial for trial_id in keep):  # Tune's <trainable>_<id>_...
                continue
            trial_dir = location.child(tune_dir, trial)
            for name in location.subfolders(trial_dir):
                if name.startswith("checkpoint_"):
                    location.remove_folder(location.child(trial_dir, name))
    except Exception as error:  # a folder left behind fails no sweep
        logger.warning("could not remove the Tune checkpoints under %s: %s", tune_dir, error)
