"""The note above a sweep report's tables: why they are incomplete (a sweep failed, was
interrupted, is still running, or some of its trials failed) and what completes it: a resume,
or running the sweep again when nothing can resume it."""

from __future__ import annotations

from typing import Any

from sweeps.tracking import TAG_CLEANED, TAG_RESUMABLE

__all__ = ["failed_trials_note", "status_note"]


def failed_trials_note(parent: Any, children: list[Any]) -> str:
    """A sweep that ended with some of its trials failed (not all: its run is FINISHED): which
    and why, since the tables leave them out ('' when none failed)."""
    failed = [run for run in children if run.info.status == "FAILED"]
    if not failed:
        return ""
    errors = [run.data.tags.get("sweeps.error", "") for run in failed]
    first = next((error for error in errors if error), "")
    why = f" (the first error: {first[:300]}{'...' if len(first) > 300 else ''})" if first else ""
    name = parent.data.tags.get("sweeps.spec_name", "<spec name>")
    if parent.data.tags.get(TAG_RESUMABLE) == "true":
        then = f"after fixing the cause, `lrsweep resume {name}` retries the failed trials."
    elif parent.data.tags.get(TAG_CLEANED):
        then = _cleaned(parent) + " to run them again, run the sweep again."
    else:  # failed for good (the error says what to change), a night, or an older lrsweep's
        then = "to run them again, fix what the error names and run the sweep again."
    return (
        f"Partly failed: {len(failed)} of {len(children)} trial runs failed{why}. The "
        "losses and error rates count only trial runs that finished (the failed ones' epochs "
        f"and compute are counted, as spent); {then}"
    )


def _cleaned(parent: Any) -> str:
    """The start of a note's advice for a sweep whose folder ``lrsweep clean`` deleted."""
    when = parent.data.tags[TAG_CLEANED]
    return (
        f"its folder in Ray's storage was deleted by `lrsweep clean` ({when}), so it cannot be "
        "resumed;"
    )


def status_note(parent: Any, children: list[Any]) -> str:
    """Why a sweep's tables are incomplete ('' when every trial run has ended): its run failed
    (FAILED, with the error it was tagged with), was interrupted (KILLED) or is still RUNNING
    (or was left so by a driver that died)."""
    status = parent.info.status
    if status == "FAILED":
        failed = sum(run.info.status == "FAILED" for run in children)
        counted = (
            f"{failed} of {len(children)} trial runs failed"
            if children
            else "no trial got as far as its run"
        )
        error = parent.data.tags.get("sweeps.error", "").rstrip(". ")
        why = f": {error[:500]}{'...' if len(error) > 500 else ''}" if error else ""
        name = parent.data.tags.get("sweeps.spec_name", "<spec name>")
        then = (
            f"{_cleaned(parent)} run the sweep again after fixing the cause."
            if parent.data.tags.get(TAG_CLEANED)
            else f"after fixing the cause, `lrsweep resume {name}` retries the failed trials."
        )
        return (
            f"Failed: this sweep's run is FAILED ({counted}){why}. The comparison counts only "
            f"trial runs that finished; {then}"
        )
    unended = sum(run.info.status not in ("FINISHED", "FAILED") for run in children)
    if status == "FINISHED" or (status == "RUNNING" and not unended):
        # a sweep closing builds its report while its own run is still RUNNING
        return failed_trials_note(parent, children)
    if status != "KILLED" and status != "RUNNING":
        return ""
    ended = sum(run.info.status == "FINISHED" for run in children)
    command = f"lrsweep resume {parent.data.tags.get('sweeps.spec_name', '<spec name>')}"
    if status == "KILLED":
        state = "was interrupted (its run is KILLED)"
        then = f"Continue it with `{command}` (and the --storage-path it ran with, if any)."
    else:
        state = "is still running (or its driver died and left its run RUNNING)"
        then = f"If nothing runs it any more, `{command}` continues it."
    if parent.data.tags.get(TAG_CLEANED):
        cleaned = _cleaned(parent)
        then = f"{cleaned[:1].upper()}{cleaned[1:]} run the sweep again to complete it."
    return (
        f"Incomplete: this sweep {state}. Its losses and error rates count the {ended} trial "
        f"runs that finished; {unended} did not end (their epochs and compute are counted, as "
        f"spent), and trials that never started are not listed. {then}"
    )
