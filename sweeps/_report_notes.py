"""The note above a sweep report's tables: why they are incomplete (a sweep failed, was
interrupted, is still running, or some of its trials failed) and what completes it: a resume,
or running the sweep again when nothing can resume it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeps._location import Location
from sweeps._resume_command import resume_command
from sweeps.tracking import (
    TAG_ADDRESS,
    TAG_CLEANED,
    TAG_CURVE_CUT,
    TAG_RESUMABLE,
    TAG_STORAGE_PATH,
)

__all__ = ["failed_trials_note", "resume_of", "status_note"]

_STORAGE_PARAM = "storage.path"
"""The sweep run's param of its spec's ``storage.path`` (``None`` when it set none)."""


def resume_of(parent: Any, tracking_uri: str | None = None) -> str:
    """The ``lrsweep resume`` command that continues the sweep of run ``parent``, in backquotes:
    its name, and ``--storage-path``, ``--address`` and ``--tracking-uri`` where a command typed
    here needs them (see :func:`sweeps._resume_command.resume_command`; ``tracking_uri`` is the
    store the report is read from).

    A run of an lrsweep before its storage tag knows only its spec's ``storage.path``; without
    one it ran in ``.lrsweep/ray_results`` of its working directory, which the command then
    names.
    """
    tags = parent.data.tags
    name = tags.get("sweeps.spec_name", "<spec name>")
    stored = tags.get(TAG_STORAGE_PATH)
    if stored is None:
        stored = parent.data.params.get(_STORAGE_PARAM)
        stored = None if stored in (None, "", "None") else stored
        where = "" if stored is not None else " (in the folder the sweep ran in)"
    else:
        where = ""
    root: Location | None = None
    if stored is not None:
        root = stored if "://" in stored else Path(stored)
    command = resume_command(name, root, address=tags.get(TAG_ADDRESS), tracking_uri=tracking_uri)
    return f"`{command}`{where}"


def failed_trials_note(parent: Any, children: list[Any], tracking_uri: str | None = None) -> str:
    """A sweep that ended with some of its trials failed (not all: its run is FINISHED): which
    and why, since the tables leave them out ('' when none failed)."""
    failed = [run for run in children if run.info.status == "FAILED"]
    if not failed:
        return ""
    errors = [run.data.tags.get("sweeps.error", "") for run in failed]
    first = next((error for error in errors if error), "")
    why = f" (the first error: {first[:300]}{'...' if len(first) > 300 else ''})" if first else ""
    if parent.data.tags.get(TAG_RESUMABLE) == "true":
        then = (
            f"after fixing the cause, {resume_of(parent, tracking_uri)} retries the failed trials."
        )
    elif parent.data.tags.get(TAG_CLEANED):
        then = _cleaned(parent) + " to run them again, run the sweep again."
    else:  # failed for good (the error says what to change), a night, or an older lrsweep's
        then = "to run them again, fix what the error names and run the sweep again."
    return (
        f"Partly failed: {len(failed)} of {len(children)} trial runs failed{why}. The "
        "losses and error rates count only trial runs that finished (the failed ones' epochs "
        f"and compute are counted, as spent{_cut(failed)}); {then}"
    )


def _cut(failed: list[Any]) -> str:
    """What the note adds for failed runs whose worker died before sending its last points."""
    cut = sum(run.data.tags.get(TAG_CURVE_CUT) == "true" for run in failed)
    if not cut:
        return ""
    runs = "its curve stops" if cut == 1 else "their curves stop"
    return (
        f"; {cut} of them lost their worker before it sent its last metric points: {runs} "
        "short of what was trained, and those epochs and seconds are not counted"
    )


def _cleaned(parent: Any) -> str:
    """The start of a note's advice for a sweep whose folder ``lrsweep clean`` deleted."""
    when = parent.data.tags[TAG_CLEANED]
    return (
        f"its folder in Ray's storage was deleted by `lrsweep clean` ({when}), so it cannot be "
        "resumed;"
    )


def status_note(parent: Any, children: list[Any], tracking_uri: str | None = None) -> str:
    """Why a sweep's tables are incomplete ('' when every trial run has ended): its run failed
    (FAILED, with the error it was tagged with), was interrupted (KILLED) or is still RUNNING
    (or was left so by a driver that died), with the command that continues it
    (:func:`resume_of`; ``tracking_uri`` is the store the report is read from)."""
    status = parent.info.status
    if status == "FAILED":
        error = parent.data.tags.get("sweeps.error", "").rstrip(". ")
        why = f": {error[:500]}{'...' if len(error) > 500 else ''}" if error else ""
        retried = "retries the failed trials" if children else "starts its trials"
        then = (
            f"{_cleaned(parent)} run the sweep again after fixing the cause."
            if parent.data.tags.get(TAG_CLEANED)
            else f"after fixing the cause, {resume_of(parent, tracking_uri)} {retried}."
        )
        if not children:  # no comparison to qualify
            return (
                f"Failed: this sweep's run is FAILED (no trial got as far as its run){why}. "
                f"{then[:1].upper()}{then[1:]}"
            )
        failed = sum(run.info.status == "FAILED" for run in children)
        return (
            f"Failed: this sweep's run is FAILED ({failed} of {len(children)} trial runs "
            f"failed){why}. The comparison counts only trial runs that finished; {then}"
        )
    unended = sum(run.info.status not in ("FINISHED", "FAILED") for run in children)
    if status == "FINISHED" or (status == "RUNNING" and children and not unended):
        # a sweep closing builds its report while its own run is still RUNNING
        return failed_trials_note(parent, children, tracking_uri)
    if status != "KILLED" and status != "RUNNING":
        return ""
    ended = sum(run.info.status == "FINISHED" for run in children)
    command = resume_of(parent, tracking_uri)
    if status == "KILLED":
        state = "was interrupted (its run is KILLED)"
        then = f"Continue it with {command}."
    else:
        state = "is still running (or its driver died and left its run RUNNING)"
        then = f"If nothing runs it any more, {command} continues it."
    if parent.data.tags.get(TAG_CLEANED):
        cleaned = _cleaned(parent)
        then = f"{cleaned[:1].upper()}{cleaned[1:]} run the sweep again to complete it."
    if not children:  # nothing to compare yet: no count of trials to explain
        started = "before any trial started" if status == "KILLED" else "and no trial started yet"
        return f"Incomplete: this sweep {state} {started}. {then}"
    return (
        f"Incomplete: this sweep {state}. Its losses and error rates count the {ended} trial "
        f"runs that finished; {unended} did not end (their epochs and compute are counted, as "
        f"spent), and trials that never started are not listed. {then}"
    )
