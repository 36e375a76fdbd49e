"""``run_sweep`` and ``resume_sweep``: a spec becomes Ray Tune searches, MLflow runs and a report.

How a sweep runs:

- One MLflow **parent run** per execution (tag ``sweeps.kind=sweep``) in the experiment named by
  the spec, holding the resolved spec (params, redacted, and ``spec.yaml``) and, at the end,
  the comparison report. Every trial is a child run (see :mod:`sweeps.trial`).
- All arms run in **one** ``Tuner``: every arm's searches (an Optuna arm runs one study per
  seed) are served in order as one stream of trials by one searcher, and trials run in
  parallel, as many as the resources allow. One Tuner means one set of worker processes for
  the whole sweep (Ray reuses them from trial to trial, so torch is imported once per slot),
  no idle cores between arms, and one ``Tuner.restore`` to resume, Optuna studies included.
- Ray keeps experiment state and trial checkpoints under
  ``<storage>/<spec name>/<sweep id>/tune`` (``storage`` is ``storage.path`` or
  ``./.lrsweep/ray_results``); ``sweep.json`` beside it records the MLflow ids and whether the
  sweep finished, which is what :func:`resume_sweep` reads.
- Ctrl-C (or SIGTERM) stops the running search gracefully: trials stop, their runs and the
  parent close as KILLED, and ``lrsweep resume NAME`` continues later. The same holds for a
  SIGTERM sent to the whole process group (``timeout``, ``kill -- -PGID``): the local Ray's
  processes run in process groups of their own, so only the driver gets it.

Here: starting the sweep (or finding its parent run again) and running its Tuner. Which sweep a
resume continues, and the checks that it may, are in ``_lookup.py``; how a sweep closes (its
runs, report, Tune checkpoints, ``sweep.json``) is in ``_closing.py``; ``SweepResult`` is in
``_result.py``. This module re-exports the names it always offered.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from sweeps import _location as location
from sweeps import _ray, preflight
from sweeps._closing import (
    close_failed,
    close_killed,
    close_sweep,
    end_after_error,
    never_left_running,
)
from sweeps._closing import resume_hint as resume_hint  # re-exported
from sweeps._closing import write_state as _write_state
from sweeps._interrupts import Interrupts, closing_runs, sigterm_stops
from sweeps._location import Location
from sweeps._location import default_storage as default_storage  # re-exported
from sweeps._lookup import SweepNotFound as SweepNotFound  # re-exported
from sweeps._lookup import SweepNotInStore as SweepNotInStore  # re-exported
from sweeps._lookup import SweepRunning as SweepRunning  # re-exported
from sweeps._lookup import check_store_exists, check_store_holds, claimed
from sweeps._lookup import find_sweep as _find_sweep
from sweeps._reporter import flatten_params
from sweeps._result import SweepResult as SweepResult  # re-exported
from sweeps._resume_command import resume_tags
from sweeps._uri import command_uri
from sweeps.clean import DRIVER_FILE, TUNE_DIR, driver_lock, driver_record, new_sweep_id
from sweeps.progress import SweepProgress
from sweeps.spec import StorageSpec, SweepSpec, dump_yaml, load_spec, redact
from sweeps.stoppers import from_spec
from sweeps.strategies import SEARCH_METRIC, plan
from sweeps.tracking import (
    TAG_KIND,
    TAG_SWEEP_ID,
    Tracker,
    check_tracking_server,
    min_free_mb,
    resolve_tracking_uri,
)
from sweeps.trial import TrialContext, range_tests_prefix, train_trial

logger = logging.getLogger(__name__)


_RAY_JOB_COPY = "/working_dir_files/_ray_pkg_"
"""In the path of the folder ``ray job submit --working-dir`` runs its entrypoint in."""


def _load(spec: SweepSpec | str | Path | dict[str, Any], overrides: Sequence[str]) -> SweepSpec:
    if isinstance(spec, SweepSpec):
        if not overrides:
            return spec
        # what the spec wrote, not every default: a default written out reads as a setting
        # (an early_stop the user never wrote was then said to be one that can never fire)
        return load_spec(spec.model_dump(mode="json", exclude_unset=True), overrides=overrides)
    return load_spec(spec, overrides=overrides)


def _tuner_plan(
    spec: SweepSpec, context: TrialContext, sweep_dir: Location, progress: SweepProgress
) -> _ray.TunerPlan:
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu, **spec.resources.custom}
    return _ray.TunerPlan(
        name=TUNE_DIR,
        storage_path=str(sweep_dir),
        trainable=train_trial,
        constants={"context": context},
        searches=[search for strategy in plan(spec) for search in strategy.searches()],
        resources=resources,
        node_labels=spec.resources.node_labels,
        max_concurrent=spec.resources.max_concurrent,
        max_failures=spec.failure.max_failures,
        stopper=from_spec(spec),
        callbacks=[progress],
        metric=SEARCH_METRIC,
        mode="min",
    )


def _start_parent(
    tracker: Tracker,
    spec: SweepSpec,
    experiment_id: str,
    sweep_dir: Location,
    sweep_id: str,
    address: str | None,
) -> str:
    run_id = tracker.start_run(
        experiment_id,
        run_name=f"{spec.name}-{sweep_id}",
        tags={
            TAG_KIND: "sweep",
            TAG_SWEEP_ID: sweep_id,
            "sweeps.spec_name": spec.name,
            **resume_tags(sweep_dir, address),  # the report's resume command
        },
    )
    try:
        resolved = redact(spec.resolved())
        tracker.log_params(run_id, flatten_params(resolved))
        tracker.log_text(run_id, dump_yaml(resolved), "spec.yaml")
    except BaseException:
        end_after_error(tracker, run_id)
        raise
    return run_id


def stored_tracking_uri(uri: str) -> str:
    """The tracking URI as ``sweep.json`` keeps it for ``resume_sweep``: secrets masked, and a
    database's user kept (``postgresql://mlflow@db/x``), which is no secret and whom a resume
    must connect as. An ``http(s)`` user may be a token, so it is dropped there.

    Example:
        >>> stored_tracking_uri("postgresql://mlflow@db:5432/mlflow")
        'postgresql://mlflow@db:5432/mlflow'
        >>> stored_tracking_uri("https://tok3n@mlflow.example.com")
        'https://mlflow.example.com'
    """
    return command_uri(uri)


def _log_note(spec_name: str, note: str) -> None:
    """``run_sweep``'s notes where no ``on_note`` takes them: a warning naming the spec."""
    logger.warning("spec %s: %s", spec_name, note)


def _preflight(
    spec: SweepSpec,
    uri: str,
    root: Location,
    *,
    address: str | None,
    on_note: Callable[[str], None],
) -> None:
    """Every check that can refuse the sweep, before its experiment or parent run exists; what
    the data's size makes pointless goes to ``on_note``."""
    check_tracking_server(uri)  # an absent server: refused now, not retried for minutes later
    preflight.check_accelerator(spec)
    source = None  # the data as the local check opened it: opened once, its warnings said once
    if address is None:
        preflight.check_local_resources(spec)
        source = preflight.check_local_data(spec)
        preflight.check_local_weights(spec, source=source)
    else:
        preflight.check_portable_inputs(spec)  # the same on every node: no need to ask them
        storage = spec.storage
        if str(root) != str(spec.storage.path or ""):
            storage = StorageSpec(path=str(root), shared=spec.storage.shared)
        preflight.connect(address)
        preflight.check_cluster(spec, address=address, tracking_uri=uri, storage=storage)
    for note in preflight.data_notes(spec, source=source):  # the data's size, once readable
        on_note(note)
    preflight.check_artifact_location(uri, min_free_mb=min_free_mb())
    preflight.check_artifact_location(
        root, min_free_mb=min_free_mb(), what="Ray's checkpoint folder (storage.path)"
    )
    if isinstance(root, str):  # a URI: this driver writes sweep.json there first
        preflight.check_storage_uri(root)


def run_sweep(
    spec: SweepSpec | str | Path | dict[str, Any],
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    overrides: Sequence[str] = (),
    storage_path: str | Path | None = None,
    progress: SweepProgress | None = None,
    retry_failed: bool = True,
    on_note: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every arm of ``spec`` on Ray Tune, log it all to MLflow and write the report.

    Args:
        spec: A ``SweepSpec``, or a spec file / dict for :func:`sweeps.spec.load_spec`.
        address: A Ray cluster to join (``ray://...`` or ``host:port``); None starts Ray here.
        tracking_uri: MLflow store; else ``tracking.uri``, ``$MLFLOW_TRACKING_URI``, or the
            embedded ``./.lrsweep/mlflow.db``.
        overrides: ``key.path=value`` overrides, type-checked like the spec.
        storage_path: Ray's storage root; else ``storage.path`` or ``./.lrsweep/ray_results``.
        progress: The live display (a quiet one when None and stdout is no terminal).
        retry_failed: A sweep some of whose trials failed (not for good) stays resumable, the
            failed trials' checkpoints kept for ``lrsweep resume``; False closes it as finished
            (``lrsweep nightly``, which never resumes a sweep).
        on_note: Called, before anything starts, with each note ``lrsweep validate`` prints:
            a valid setting that cannot work as meant (:meth:`SweepSpec.advice`), then what
            the data's size makes pointless (:func:`sweeps.preflight.data_notes`, once the data
            proved readable); ``lrsweep run`` prints each as a ``Note:`` line. None logs each
            as a warning of logger ``sweeps.run`` (``spec NAME: ...``). No note stops a sweep.

    Returns:
        The :class:`SweepResult`; ``interrupted`` is True after Ctrl-C / SIGTERM.

    Raises:
        SpecError: for an invalid spec or override (before anything starts).
        PreflightError: when this machine or cluster cannot run the trials, or the tracking
            store or artifact folder is unusable (checked before any run is created).
        OSError: when the artifact location or Ray's storage is unwritable or full (checked
            before training starts).
    """
    spec = _load(spec, overrides)
    note = on_note or partial(_log_note, spec.name)
    for advice in spec.advice():
        note(advice)
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri)
    root = location.storage_root(storage_path or spec.storage.path or default_storage())
    if not (storage_path or spec.storage.path) and _RAY_JOB_COPY in str(root):
        logger.warning(
            "sweep %s: its Ray storage %s is inside the copy of the working directory Ray made "
            "for this job, which a job with other files gets anew and Ray deletes when unused: "
            "an interrupted sweep could not be resumed from there. Set storage.path to a "
            "folder outside it (shared by every node) or a s3:// URI.",
            spec.name,
            root,
        )
    _preflight(spec, uri, root, address=address, on_note=note)
    tracker = Tracker(uri)
    experiment_id = tracker.ensure_experiment(spec.experiment_name)
    tracker.check_artifacts_writable(experiment_id)
    sweep_id = new_sweep_id()
    sweep_dir = location.child(root, spec.name, sweep_id)
    with sigterm_stops():  # from the parent run on; Ray's start and the trials guard their own
        parent_run_id = _start_parent(tracker, spec, experiment_id, sweep_dir, sweep_id, address)
        with (
            never_left_running(
                tracker, experiment_id, parent_run_id, spec.name, sweep_dir, address
            ),
            driver_lock(sweep_dir),  # a new folder: held before sweep.json lets a resume find it
        ):
            state = {
                "name": spec.name,
                "sweep_id": sweep_id,
                "spec": spec.resolved(),
                "tracking_uri": stored_tracking_uri(uri),
                "experiment_id": experiment_id,
                "parent_run_id": parent_run_id,
                "finished": False,
                "retry_failed": retry_failed,
            }
            _write_state(sweep_dir, state)
            logger.info(
                "sweep %s: parent run %s, Ray storage %s",
                sweep_id,
                parent_run_id,
                location.shown(sweep_dir),
            )
            return _execute(spec, tracker, state, sweep_dir, address=address, progress=progress)


def resume_sweep(
    name_or_path: str | Path,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    storage_path: str | Path | None = None,
    progress: SweepProgress | None = None,
    on_note: Callable[[str], None] | None = None,
) -> SweepResult:
    """Continue an interrupted sweep: the latest unfinished one of that name, or that folder.

    The Tuner is restored with ``Tuner.restore``: finished trials are kept, not re-run;
    unfinished ones continue from their checkpoints in their own MLflow child runs; the searcher
    (Optuna studies included) continues where it was. The parent run is reused. Runs of trials
    the restored Tune state does not hold (started after its last snapshot by a driver that was
    then killed; their configs run again under new trial ids) are deleted at the end, so no
    config counts twice.

    The preflight runs again, and what the data's size makes pointless goes to ``on_note``, as
    in :func:`run_sweep` (None logs it as a warning).

    Raises:
        SweepNotFound: nothing to resume there (the message lists the sweeps that exist).
    """
    root = location.storage_root(storage_path or default_storage())
    sweep_dir, state = _find_sweep(name_or_path, root)
    with claimed(name_or_path, root, sweep_dir):  # two resumes at once: the second refused
        spec = load_spec(state["spec"])
        uri = resolve_tracking_uri(tracking_uri, state["tracking_uri"])
        check_store_exists(uri, state, name_or_path)
        _preflight(
            spec, uri, sweep_dir, address=address, on_note=on_note or partial(_log_note, spec.name)
        )
        tracker = Tracker(uri)
        check_store_holds(tracker, uri, state, name_or_path)
        tracker.check_artifacts_writable(state["experiment_id"])
        experiment_id, parent_run_id = state["experiment_id"], state["parent_run_id"]
        with (
            sigterm_stops(),
            never_left_running(
                tracker, experiment_id, parent_run_id, spec.name, sweep_dir, address
            ),
        ):
            tracker.reopen_run(parent_run_id)
            tracker.set_tags(parent_run_id, resume_tags(sweep_dir, address))  # where it runs now
            logger.info("resuming sweep %s from %s", state["sweep_id"], location.shown(sweep_dir))
            return _execute(
                spec, tracker, state, sweep_dir, address=address, progress=progress, restoring=True
            )


def _run_trials(
    spec: SweepSpec,
    sweep_dir: Location,
    context: TrialContext,
    progress: SweepProgress,
    *,
    restoring: bool,
) -> tuple[list[_ray.TrialOutcome], bool]:
    """Run (or restore) the sweep's Tuner; return the outcomes and whether it was interrupted."""
    tuner_plan = _tuner_plan(spec, context, sweep_dir, progress)
    for strategy in plan(spec):
        progress.expect(strategy.arm_name, strategy.n_trials())
    restore = restoring and _ray.can_restore(_ray.experiment_path(tuner_plan))
    try:
        outcomes = _ray.restore_tuner(tuner_plan) if restore else _ray.run_tuner(tuner_plan)
    finally:
        _ray.shared_drop(range_tests_prefix(context.sweep_id))
    unfinished = len(outcomes) < tuner_plan.n_trials or not all(o.ended for o in outcomes)
    return outcomes, unfinished


def _by_arm(outcomes: list[_ray.TrialOutcome]) -> dict[str, list[_ray.TrialOutcome]]:
    grouped: dict[str, list[_ray.TrialOutcome]] = {}
    for outcome in outcomes:
        grouped.setdefault(str(outcome.config.get("arm", "?")), []).append(outcome)
    return grouped


def _execute(
    spec: SweepSpec,
    tracker: Tracker,
    state: dict[str, Any],
    sweep_dir: Location,
    *,
    address: str | None,
    progress: SweepProgress | None,
    restoring: bool = False,
) -> SweepResult:
    experiment_id, parent_run_id = state["experiment_id"], state["parent_run_id"]
    context = TrialContext(
        spec,
        tracker.uri,
        experiment_id,
        parent_run_id,
        state["sweep_id"],
        data_said=address is None,  # the local preflight opened the data (``_preflight``)
    )
    progress = progress or SweepProgress()
    started_ray = not _ray.is_initialized()
    interrupts = Interrupts(
        partial(close_killed, tracker, experiment_id, parent_run_id),
        resume=resume_hint(spec.name, sweep_dir, address),
        watch_local_ray=address is None,
        watch_head=preflight.head_address(address) if address else None,
        store=command_uri(tracker.uri),
    )
    # while this process runs the sweep: `lrsweep clean` keeps it, `lrsweep resume` refuses it
    location.write_text(sweep_dir, DRIVER_FILE, json.dumps(driver_record()))
    try:  # MLflow first (the guard), then Ray: Ray's shutdown cannot leave a run RUNNING
        with never_left_running(
            tracker, experiment_id, parent_run_id, spec.name, sweep_dir, address
        ):
            with sigterm_stops():  # Ray's start takes seconds; its sys.exit(15) is undone here
                _ray.init_ray(address)
            outcomes, interrupted = _run_or_interrupt(
                spec, tracker, state, sweep_dir, context, progress, interrupts, restoring=restoring
            )
            result = SweepResult(
                name=spec.name,
                sweep_id=state["sweep_id"],
                experiment=spec.experiment_name,
                experiment_id=experiment_id,
                parent_run_id=parent_run_id,
                tracking_uri=command_uri(tracker.uri),
                sweep_dir=sweep_dir,
                trials=_by_arm(outcomes),
                interrupted=interrupted,
                address=address,
                stop_signal=(interrupts.signal or "SIGINT") if interrupted else None,
            )
            unended = {o.trial_id for o in outcomes if not o.ended}
            with closing_runs() if interrupted else sigterm_stops():
                return close_sweep(spec, tracker, state, sweep_dir, result, unended=unended)
    finally:
        interrupts.finished()
        if started_ray:
            _ray.shutdown_ray()
        with contextlib.suppress(Exception):  # a file left behind names a dead process
            location.remove_file(sweep_dir, DRIVER_FILE)


def _run_or_interrupt(
    spec: SweepSpec,
    tracker: Tracker,
    state: dict[str, Any],
    sweep_dir: Location,
    context: TrialContext,
    progress: SweepProgress,
    interrupts: Interrupts,
    *,
    restoring: bool,
) -> tuple[list[_ray.TrialOutcome], bool]:
    """The trials' outcomes and whether Ctrl-C / SIGTERM stopped them; FAILED on an error."""
    try:
        with interrupts.catching(), progress:
            outcomes, unfinished = _run_trials(
                spec, sweep_dir, context, progress, restoring=restoring
            )
        # A SIGTERM that also reached Ray's processes can fail the trials before Tune sees the
        # signal's Ctrl-C: Tune then ends normally, yet the sweep was stopped, not failed.
        return outcomes, unfinished or interrupts.signal is not None
    except KeyboardInterrupt:
        return [], True
    except BaseException:
        close_failed(tracker, state["experiment_id"], state["parent_run_id"])
        raise
