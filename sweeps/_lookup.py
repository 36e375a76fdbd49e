"""Which sweep ``resume_sweep`` continues, and whether it may: the latest unfinished sweep of a
name (or the folder given), refused while a live process still runs it or when the tracking store
does not hold its runs. The messages say what exists instead."""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NoReturn

from sweeps import _location as location
from sweeps._location import Location, default_storage
from sweeps._uri import command_uri, existing_store_uri, redact_uri, sqlite_path
from sweeps.clean import STATE_FILE, DriverLockHeld, driver_lock, parse_state, running_driver
from sweeps.tracking import Tracker, resolve_tracking_uri, restore_command

__all__ = [
    "SweepNotFound",
    "SweepNotInStore",
    "SweepRunning",
    "check_not_running",
    "check_store_exists",
    "check_store_holds",
    "claimed",
    "find_sweep",
]

logger = logging.getLogger("sweeps.run")  # the name the user has always seen, as _interrupts.py


class SweepNotFound(LookupError):
    """``resume_sweep`` found no sweep by that name or path; the message lists what exists."""


class SweepNotInStore(SweepNotFound):
    """``resume_sweep`` found the sweep, but the tracking store given does not hold its runs."""


class SweepRunning(SweepNotFound):
    """``resume_sweep`` found the sweep, but a live process still runs it (the message names
    it, and any other unfinished sweep of that name)."""


def find_sweep(name_or_path: str | Path, root: Location) -> tuple[Location, dict[str, Any]]:
    """The sweep folder to resume and its state (``sweep.json``), each read once."""
    direct = location.storage_root(name_or_path)
    text = location.read_text(direct, STATE_FILE)
    if text is not None:
        state = json.loads(text)
        if isinstance(state, dict) and state.get("finished") is True:
            # as for a name: restoring a finished Tuner re-opened its FINISHED run, moved its
            # end (the wall time) to now and logged the report again, all to train nothing
            raise SweepNotFound(
                f"{name_or_path!r}: the sweep in {location.shown(direct)} finished: there is "
                f"nothing to resume. Its results: `{_report_command(state, name_or_path)}"
                f"{_run_id_flag(state)}`; to run the sweep again: `lrsweep run SPEC`."
            )
        return direct, state
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
    if isinstance(root, Path) and not root.is_dir() and root != default_storage():
        # a mistyped --storage-path: "sweeps there: none" read as an empty storage
        raise SweepNotFound(
            f"{name_or_path!r} has no sweep to resume under {root}: that folder does not exist. "
            "Pass the storage.path the sweep ran with as --storage-path (or run lrsweep from "
            "the folder it ran in), or the path of a sweep folder (the one holding sweep.json)."
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


def _run_id_flag(state: dict[str, Any]) -> str:
    """`` --run-id <its parent run>``: the report of that sweep, not the experiment's latest."""
    run_id = state.get("parent_run_id")
    return f" --run-id {shlex.quote(str(run_id))}" if run_id else ""


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


def check_store_exists(uri: str, state: dict[str, Any], name_or_path: str | Path) -> None:
    """Refuse to resume into an embedded SQLite store that does not exist (a ``--tracking-uri``
    of another store), before anything creates it."""
    try:
        existing_store_uri(uri)
    except LookupError:
        _not_in_store(uri, state, name_or_path, f"there is no MLflow store at {sqlite_path(uri)}")


def check_store_holds(
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
    if run.info.lifecycle_stage == "deleted":  # MLflow refuses to reopen it: a traceback
        _deleted(tracker, uri, state, name_or_path)


def _deleted(
    tracker: Tracker, uri: str, state: dict[str, Any], name_or_path: str | Path
) -> NoReturn:
    """Refuse a sweep whose run (or whole experiment) was deleted in MLflow, saying how to
    restore it."""
    from mlflow.exceptions import MlflowException

    run_id, experiment_id = state["parent_run_id"], state["experiment_id"]
    try:
        experiment = tracker.client.get_experiment(experiment_id)
        gone_with_experiment = experiment.lifecycle_stage == "deleted"
    except MlflowException:  # the run's own state is reason enough to refuse
        gone_with_experiment = False
    if gone_with_experiment:
        what = f"its experiment {experiment.name!r} (id {experiment_id}) was deleted"
        restore = restore_command(uri, experiment_id=experiment_id)
    else:
        what = f"its sweep run {run_id} was deleted"
        restore = restore_command(uri, run_id=run_id)
    raise SweepNotInStore(
        f"{name_or_path!r}: {what} in {redact_uri(uri)} (in the MLflow UI or with `mlflow "
        f"... delete`), so it cannot be resumed. Restore it first (`{restore}`) and resume "
        "again, or start the sweep again: `lrsweep run SPEC`."
    )


def _not_in_store(
    uri: str, state: dict[str, Any], name_or_path: str | Path, where: str
) -> NoReturn:
    logged = redact_uri(str(state["tracking_uri"]))
    if redact_uri(uri) == logged:  # no --tracking-uri: the sweep's own store is gone
        then = "its runs are gone with it (a store deleted or moved?), so it cannot be resumed"
    else:
        then = "resume it with that store (--tracking-uri, or none to use the one it ran with)"
    raise SweepNotInStore(f"{name_or_path!r}: the sweep logged to {logged}, and {where}; {then}.")


def check_not_running(name_or_path: str | Path, root: Location, sweep_dir: Location) -> None:
    """Refuse to resume the sweep in ``sweep_dir`` while a live process still runs it
    (:class:`SweepRunning`), naming the other unfinished sweeps of that name, resumable by their
    folder."""
    driver = running_driver(sweep_dir)
    if driver:
        _refuse_running(name_or_path, root, sweep_dir, driver)


@contextmanager
def claimed(name_or_path: str | Path, root: Location, sweep_dir: Location) -> Iterator[None]:
    """Hold the sweep in ``sweep_dir`` for this process while the block runs (its driver lock,
    :func:`sweeps.clean.driver_lock`), after :func:`check_not_running`.

    Raises:
        SweepRunning: another process holds it (a resume started at the same moment, or a run
            or resume still starting), or its ``driver.json`` names a live process.
    """
    with ExitStack() as stack:
        try:
            stack.enter_context(driver_lock(sweep_dir))
        except DriverLockHeld:
            driver = (
                running_driver(sweep_dir) or "another lrsweep process on this machine, starting"
            )
            _refuse_running(name_or_path, root, sweep_dir, driver)
        check_not_running(name_or_path, root, sweep_dir)
        yield


def _refuse_running(
    name_or_path: str | Path, root: Location, sweep_dir: Location, driver: str
) -> NoReturn:
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
