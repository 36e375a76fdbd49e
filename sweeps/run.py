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
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from sweeps import _location as location
from sweeps import _ray, preflight
from sweeps._interrupts import Interrupts, Terminated, closing_runs, sigterm_stops
from sweeps._location import Location
from sweeps._location import default_storage as default_storage  # re-exported
from sweeps._reporter import flatten_params
from sweeps._uri import command_uri, existing_store_uri, redact_uri, sqlite_path
from sweeps.clean import (
    DRIVER_FILE,
    STATE_FILE,
    TUNE_DIR,
    driver_record,
    parse_state,
    running_driver,
)
from sweeps.progress import SweepProgress
from sweeps.report import Report, build_report, log_report
from sweeps.spec import StorageSpec, SweepSpec, dump_yaml, load_spec, redact
from sweeps.stoppers import from_spec
from sweeps.strategies import SEARCH_METRIC, plan
from sweeps.tracking import (
    TAG_FAILED_FOR_GOOD,
    TAG_KIND,
    TAG_RESUMABLE,
    TAG_SWEEP_ID,
    TAG_TRIAL_ID,
    Tracker,
    check_tracking_server,
    min_free_mb,
    resolve_tracking_uri,
)
from sweeps.trial import TrialContext, range_tests_prefix, train_trial

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    """What one sweep execution produced.

    Attributes:
        name: The spec's name.
        sweep_id: This execution's id (``sweeps.sweep_id`` on every run).
        experiment: The MLflow experiment name.
        experiment_id: Its id.
        parent_run_id: The parent run of this execution.
        tracking_uri: The MLflow store (credentials never included).
        sweep_dir: Where Ray's state and checkpoints live; ``lrsweep resume`` takes it.
        trials: Every trial's outcome as Ray Tune saw it, per arm name.
        report: The comparison (None when the sweep was interrupted or every trial failed).
        interrupted: True when Ctrl-C / SIGTERM stopped the sweep before the end.
        stop_signal: ``SIGINT`` or ``SIGTERM`` when interrupted (``SIGINT`` when unknown).
        address: The Ray cluster it ran on (None: a Ray of its own on this machine).
        resumable: True when the sweep was left for ``lrsweep resume`` to retry its failed
            trials: every trial failed, or some did and not all of those for good (an error
            that comes back the same on every retry, ``sweeps.failed_for_good``).
    """

    name: str
    sweep_id: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    sweep_dir: Location
    trials: dict[str, list[_ray.TrialOutcome]] = field(default_factory=dict)
    report: Report | None = None
    interrupted: bool = False
    stop_signal: str | None = None
    address: str | None = None
    resumable: bool = False

    @property
    def n_trials(self) -> int:
        """Trials run in all."""
        return sum(len(outcomes) for outcomes in self.trials.values())

    @property
    def failed(self) -> list[_ray.TrialOutcome]:
        """The trials that ended in an error (their ``error`` says which)."""
        return [o for outcomes in self.trials.values() for o in outcomes if o.status == "ERROR"]

    @property
    def failed_arms(self) -> list[str]:
        """The arms that ran trials and lost every one of them (the comparison has no row
        measured for them): empty when every trial failed (see :attr:`all_failed`)."""
        if self.all_failed:
            return []
        return [
            arm
            for arm, outcomes in self.trials.items()
            if outcomes and all(o.status == "ERROR" for o in outcomes)
        ]

    @property
    def all_failed(self) -> bool:
        """True when trials ran and every one of them failed (the parent run is FAILED)."""
        return not self.interrupted and self.n_trials > 0 and len(self.failed) == self.n_trials


class SweepNotFound(LookupError):
    """``resume_sweep`` found no sweep by that name or path; the message lists what exists."""


class SweepNotInStore(SweepNotFound):
    """``resume_sweep`` found the sweep, but the tracking store given does not hold its runs."""


class SweepRunning(SweepNotFound):
    """``resume_sweep`` found the sweep, but a live process still runs it (the message names
    it, and any other unfinished sweep of that name)."""


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


def _write_state(sweep_dir: Location, state: dict[str, Any]) -> None:
    location.write_text(sweep_dir, STATE_FILE, json.dumps(state, indent=1, default=str))


def resume_hint(name: str, sweep_dir: Location, address: str | None = None) -> str:
    """``lrsweep resume NAME``, with ``--storage-path`` when the sweep's Ray storage is not the
    default one (else that command would look for another sweep) and ``--address`` when it ran
    on a cluster (else the resume would start a Ray of its own on the machine it is typed on)."""
    root = location.parent(sweep_dir, 2)  # <root>/<name>/<sweep id>
    root = root.resolve() if isinstance(root, Path) else root
    command = f"lrsweep resume {shlex.quote(name)}"
    if root != default_storage():
        command += f" --storage-path {shlex.quote(location.shown(root))}"
    if address and address != "local":
        command += f" --address {shlex.quote(address)}"
    return command


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


def _start_parent(tracker: Tracker, spec: SweepSpec, experiment_id: str, sweep_id: str) -> str:
    run_id = tracker.start_run(
        experiment_id,
        run_name=f"{spec.name}-{sweep_id}",
        tags={TAG_KIND: "sweep", TAG_SWEEP_ID: sweep_id, "sweeps.spec_name": spec.name},
    )
    try:
        resolved = redact(spec.resolved())
        tracker.log_params(run_id, flatten_params(resolved))
        tracker.log_text(run_id, dump_yaml(resolved), "spec.yaml")
    except BaseException:
        _end_after_error(tracker, run_id)
        raise
    return run_id


@contextmanager
def _never_left_running(
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
            if tracker.get_run(parent_run_id).info.status != "RUNNING":
                raise  # closed, and said so, by the stretch it came from or an inner guard
            stopped = isinstance(error, KeyboardInterrupt)
            closed = _close_killed if stopped else _close_failed
            closed(tracker, experiment_id, parent_run_id)
            if stopped and location.read_text(sweep_dir, STATE_FILE) is not None:
                hint = resume_hint(name, sweep_dir, address)
                logger.warning("sweep interrupted; continue it with: %s", hint)
        raise


def _end_after_error(tracker: Tracker, run_id: str) -> None:
    """Close ``run_id`` FAILED (KILLED for Ctrl-C or SIGTERM) on the way out of an error, never
    RUNNING."""
    interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt)
    tracker.end_run(run_id, "KILLED" if interrupted else "FAILED")


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


def _preflight(spec: SweepSpec, uri: str, root: Location, *, address: str | None) -> None:
    """Every check that can refuse the sweep, before its experiment or parent run exists."""
    check_tracking_server(uri)  # an absent server: refused now, not retried for minutes later
    preflight.check_accelerator(spec)
    if address is None:
        preflight.check_local_resources(spec)
        preflight.check_local_data(spec)
        preflight.check_local_weights(spec)
    else:
        preflight.check_portable_inputs(spec)  # the same on every node: no need to ask them
        storage = spec.storage
        if str(root) != str(spec.storage.path or ""):
            storage = StorageSpec(path=str(root), shared=spec.storage.shared)
        preflight.connect(address)
        preflight.check_cluster(spec, address=address, tracking_uri=uri, storage=storage)
    for note in preflight.data_notes(spec):  # the data's size, once it proved readable
        logger.warning("spec %s: %s", spec.name, note)
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
    for note in spec.advice():
        logger.warning("spec %s: %s", spec.name, note)
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
    _preflight(spec, uri, root, address=address)
    tracker = Tracker(uri)
    experiment_id = tracker.ensure_experiment(spec.experiment_name)
    tracker.check_artifacts_writable(experiment_id)
    sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    sweep_dir = location.child(root, spec.name, sweep_id)
    with sigterm_stops():  # from the parent run on; Ray's start and the trials guard their own
        parent_run_id = _start_parent(tracker, spec, experiment_id, sweep_id)
        with _never_left_running(
            tracker, experiment_id, parent_run_id, spec.name, sweep_dir, address
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


def _find_sweep(name_or_path: str | Path, root: Location) -> tuple[Location, dict[str, Any]]:
    """The sweep folder to resume and its state (``sweep.json``), each read once."""
    direct = location.storage_root(name_or_path)
    text = location.read_text(direct, STATE_FILE)
    if text is not None:
        return direct, json.loads(text)
    candidates = _sweeps_of(name_or_path, root)
    latest = [c for c in candidates if c[1] is None or not c[1]["finished"]]
    if latest and latest[-1][1] is None:  # the sweep to resume is the one that cannot be read
        raise SweepNotFound(
            f"{name_or_path!r}: the latest sweep that may be unfinished, {latest[-1][0]}, has a "
            f"damaged {STATE_FILE} (cut short or edited?), so it cannot be resumed; pass the "
            "folder of another sweep of that name, or start it again with `lrsweep run`."
        )
    if latest:
        sweep_dir, state = latest[-1]
        assert state is not None
        newer = [d for d, _ in candidates[[d for d, _ in candidates].index(sweep_dir) + 1 :]]
        if newer:  # every newer sweep of the name finished (else it would be the latest)
            logger.warning(
                "%r: resuming %s, the latest sweep of that name that did not finish; %d newer "
                "sweep(s) of it finished since (the latest: %s). Its trials go on in its own "
                "MLflow run, beside theirs.",
                str(name_or_path),
                location.shown(sweep_dir),
                len(newer),
                location.shown(newer[-1]),
            )
        return sweep_dir, state
    candidates = [c for c in candidates if c[1] is not None]
    known = location.subfolders(root)
    if candidates:  # the name matched: every sweep of it finished
        # one command per experiment and store, latest first: sweeps of one name may have
        # logged elsewhere (another --tracking-uri, or a nightly entry running the same spec)
        commands = list(
            dict.fromkeys(
                _report_command(state or {}, name_or_path) for _, state in reversed(candidates)
            )
        )
        results = "; ".join(f"`{command}`" for command in commands)
        raise SweepNotFound(
            f"{name_or_path!r} has only finished sweeps under {location.shown(root)}: there is "
            f"nothing to resume. Their results{' (latest first)' if len(commands) > 1 else ''}: "
            f"{results}; to run the sweep again: `lrsweep run SPEC`."
        )
    raise SweepNotFound(
        f"{name_or_path!r} has no sweep to resume under {location.shown(root)}; sweeps there: "
        f"{known or 'none'}. "
        "Pass a sweep name or the path of a sweep folder (the one holding sweep.json)."
    )


def _report_command(state: dict[str, Any], name_or_path: str | Path) -> str:
    """``lrsweep report`` of a finished sweep (its ``sweep.json`` state), with its store when
    that is not the one the command would read by default."""
    tracking = (state.get("spec") or {}).get("tracking") or {}
    experiment = tracking.get("experiment") or state.get("name") or name_or_path
    store = str(state.get("tracking_uri") or "")
    flag = (
        f" --tracking-uri {shlex.quote(command_uri(store))}"
        if store and store != resolve_tracking_uri()
        else ""
    )
    return f"lrsweep report {shlex.quote(str(experiment))}{flag}"


def _sweeps_of(
    name_or_path: str | Path, root: Location
) -> list[tuple[Location, dict[str, Any] | None]]:
    """``(folder, state)`` of every sweep called ``name_or_path`` under ``root`` that has a
    ``sweep.json`` (its state None when unreadable), oldest sweep id first."""
    folder = location.child(root, str(name_or_path))
    found = []
    for sweep_id in location.subfolders(folder):
        sweep_dir = location.child(folder, sweep_id)
        text = location.read_text(sweep_dir, STATE_FILE)
        if text is not None:
            found.append((sweep_dir, parse_state(text)))
    return found


def _unfinished_sweeps(name_or_path: str | Path, root: Location) -> list[Location]:
    """The folders of the sweeps called ``name_or_path`` under ``root`` whose state says they
    have not finished, oldest first (none for a folder given by its path)."""
    return [d for d, state in _sweeps_of(name_or_path, root) if state and not state["finished"]]


def _check_store_exists(uri: str, state: dict[str, Any], name_or_path: str | Path) -> None:
    """Refuse to resume into an embedded SQLite store that does not exist (a ``--tracking-uri``
    of another store), before anything creates it."""
    try:
        existing_store_uri(uri)
    except LookupError:
        _not_in_store(uri, state, name_or_path, f"there is no MLflow store at {sqlite_path(uri)}")


def _check_store_holds(
    tracker: Tracker, uri: str, state: dict[str, Any], name_or_path: str | Path
) -> None:
    """Refuse to resume into a store without the sweep's parent run. Only MLflow's "does not
    exist" counts as absence; a refusal or an outage goes through as it is."""
    from mlflow.exceptions import MlflowException

    try:
        run = tracker.get_run(state["parent_run_id"])
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        run = None
    if run is None or run.info.experiment_id != state["experiment_id"]:
        where = f"{redact_uri(uri)} holds no run {state['parent_run_id']} of it"
        _not_in_store(uri, state, name_or_path, where)


def _not_in_store(uri: str, state: dict[str, Any], name_or_path: str | Path, where: str) -> None:
    logged = redact_uri(str(state["tracking_uri"]))
    if redact_uri(uri) == logged:  # no --tracking-uri: the sweep's own store is gone
        then = "its runs are gone with it (a store deleted or moved?), so it cannot be resumed"
    else:
        then = "resume it with that store (--tracking-uri, or none to use the one it ran with)"
    raise SweepNotInStore(f"{name_or_path!r}: the sweep logged to {logged}, and {where}; {then}.")


def resume_sweep(
    name_or_path: str | Path,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    storage_path: str | Path | None = None,
    progress: SweepProgress | None = None,
) -> SweepResult:
    """Continue an interrupted sweep: the latest unfinished one of that name, or that folder.

    The Tuner is restored with ``Tuner.restore``: finished trials are kept, not re-run;
    unfinished ones continue from their checkpoints in their own MLflow child runs; the searcher
    (Optuna studies included) continues where it was. The parent run is reused. Runs of trials
    the restored Tune state does not hold (started after its last snapshot by a driver that was
    then killed; their configs run again under new trial ids) are deleted at the end, so no
    config counts twice.

    Raises:
        SweepNotFound: nothing to resume there (the message lists the sweeps that exist).
    """
    root = location.storage_root(storage_path or default_storage())
    sweep_dir, state = _find_sweep(name_or_path, root)
    driver = running_driver(sweep_dir)
    if driver:
        others = [
            d
            for d in _unfinished_sweeps(name_or_path, root)
            if str(d) != str(sweep_dir) and not running_driver(d)
        ]
        also = (
            " Other unfinished sweeps of that name, resumable by their folder: "
            + "; ".join(f"`lrsweep resume {shlex.quote(str(d))}`" for d in others)
            + "."
            if others
            else ""
        )
        raise SweepRunning(
            f"{name_or_path!r}: the sweep in {location.shown(sweep_dir)} is still running "
            f"({driver}); resuming it now would run its trials twice. Wait for it to end, or "
            "stop it (Ctrl-C in its "
            f"terminal, or SIGINT / SIGTERM to that process) and resume then.{also}"
        )
    spec = load_spec(state["spec"])
    uri = resolve_tracking_uri(tracking_uri, state["tracking_uri"])
    _check_store_exists(uri, state, name_or_path)
    _preflight(spec, uri, sweep_dir, address=address)
    tracker = Tracker(uri)
    _check_store_holds(tracker, uri, state, name_or_path)
    tracker.check_artifacts_writable(state["experiment_id"])
    experiment_id, parent_run_id = state["experiment_id"], state["parent_run_id"]
    with (
        sigterm_stops(),
        _never_left_running(tracker, experiment_id, parent_run_id, spec.name, sweep_dir, address),
    ):
        tracker.reopen_run(parent_run_id)
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
    context = TrialContext(spec, tracker.uri, experiment_id, parent_run_id, state["sweep_id"])
    progress = progress or SweepProgress()
    started_ray = not _ray.is_initialized()
    interrupts = Interrupts(
        partial(_close_killed, tracker, experiment_id, parent_run_id),
        resume=resume_hint(spec.name, sweep_dir, address),
        watch_local_ray=address is None,
        watch_head=preflight.head_address(address) if address else None,
    )
    # while this process runs the sweep: `lrsweep clean` keeps it, `lrsweep resume` refuses it
    location.write_text(sweep_dir, DRIVER_FILE, json.dumps(driver_record()))
    try:  # MLflow first (the guard), then Ray: Ray's shutdown cannot leave a run RUNNING
        with _never_left_running(
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
                return _close(spec, tracker, state, sweep_dir, result, unended=unended)
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
        _close_failed(tracker, state["experiment_id"], state["parent_run_id"])
        raise


def _close_killed(tracker: Tracker, experiment_id: str, parent_run_id: str) -> None:
    tracker.close_unfinished(experiment_id, parent_run_id, status="KILLED")
    tracker.end_run(parent_run_id, "KILLED")


def _close_failed(tracker: Tracker, experiment_id: str, parent_run_id: str) -> None:
    tracker.close_unfinished(experiment_id, parent_run_id, status="FAILED")
    tracker.end_run(parent_run_id, "FAILED")


def _close(
    spec: SweepSpec,
    tracker: Tracker,
    state: dict[str, Any],
    sweep_dir: Location,
    result: SweepResult,
    *,
    unended: Iterable[str] = (),
) -> SweepResult:
    """End the parent run: KILLED (interrupted), FAILED (every trial failed) or FINISHED."""
    experiment_id, parent_run_id = result.experiment_id, result.parent_run_id
    if result.interrupted:
        tracker.reopen_interrupted(experiment_id, parent_run_id, unended)
        _close_killed(tracker, experiment_id, parent_run_id)
        logger.warning(
            "sweep interrupted; continue it with: %s",
            resume_hint(spec.name, sweep_dir, result.address),
        )
        return result
    try:
        return _close_ended(spec, tracker, state, sweep_dir, result)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM after the trials: `lrsweep resume`
        with closing_runs():  # closes and reports; a second signal must not cut this short
            _close_killed(tracker, experiment_id, parent_run_id)
        logger.warning(
            "sweep interrupted; continue it with: %s",
            resume_hint(spec.name, sweep_dir, result.address),
        )
        stop_signal = "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"
        return replace(result, interrupted=True, stop_signal=stop_signal)


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
    except KeyboardInterrupt:  # a stop, not a broken report: `_close` ends the run KILLED
        raise
    except BaseException as error:  # the trials are done; `lrsweep report NAME` can retry
        tracker.set_tags(parent_run_id, {"sweeps.error": f"report: {error!r}"[:5000]})
        _end_after_error(tracker, parent_run_id)
        raise
    tracker.end_run(parent_run_id, "FINISHED")
    if not retry:
        state["finished"] = True
        _write_state(sweep_dir, state)
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
