"""What a night killed outright (SIGKILL, out of memory, a reboot) left RUNNING, closed by the
next night as it starts.

Such a night records nothing: its night run and the sweep run of the entry it was in stayed
RUNNING for good. The next night closes them before its own sweeps run:

- a night run still ``running`` whose process is gone: its tag ``nightly.driver`` (host, pid
  and start time, as a sweep's ``driver.json``) names a process of this machine that no longer
  lives, or, when that cannot be asked (a night of another machine, one recorded before the
  tag), it started more than :data:`STALE_NIGHT_S` ago. It is recorded failed and closed KILLED.
- a sweep run of the suite's entries (experiments ``nightly/<suite>/<entry>``) still RUNNING
  whose driver is gone: found by its tags ``sweeps.storage_path``, ``sweeps.spec_name`` and
  ``sweeps.sweep_id``, its folder's ``driver.json`` names a dead process here and no process
  holds its ``driver.lock`` (:func:`sweeps.clean.driver_gone`; a ``lrsweep resume`` of it holds
  the lock), or, when that cannot be told, it started more than :data:`STALE_NIGHT_S` ago. It
  and its unfinished trial runs are closed KILLED, as an interrupted sweep closes them.

A night reads only the sweeps it ran itself, so such a sweep never counts as a result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.clean import driver_gone, live_driver
from sweeps.nightly._store import KIND, TAG_DRIVER, TAG_STATUS, NightStore
from sweeps.tracking import TAG_KIND, TAG_STORAGE_PATH, TAG_SWEEP_ID

__all__ = ["STALE_NIGHT_S", "STALE_REASON", "Orphans", "close_orphans"]

logger = logging.getLogger(__name__)

# Past this, a run still RUNNING is taken for one whose process died, where the process cannot
# be asked (no night takes a day: the schedules stop one after 4-5 hours).
STALE_NIGHT_S = 24 * 3600
STALE_REASON = (
    "the night never finished: its process was killed before it could record an outcome (out "
    "of memory, a reboot, SIGKILL); closed as failed by night {night}"
)


@dataclass(frozen=True)
class Orphans:
    """What :func:`close_orphans` closed.

    Attributes:
        nights: The night runs recorded failed, oldest first.
        sweeps: ``(experiment, sweep run id)`` of each entry's sweep run closed KILLED.
    """

    nights: tuple[str, ...] = ()
    sweeps: tuple[tuple[str, str], ...] = ()


def close_orphans(store: NightStore, night_run_id: str, *, now_ms: int) -> Orphans:
    """Close what nights killed outright left RUNNING (see the module docstring); best effort:
    a store that refuses is logged, and tonight goes on. ``night_run_id`` is tonight's."""
    try:
        nights = _close_nights(store, night_run_id, now_ms)
        sweeps = _close_sweeps(store, now_ms)
    except Exception:  # closing yesterday's leftovers must not cost tonight
        logger.exception("could not close the runs of nights killed outright")
        return Orphans()
    return Orphans(tuple(nights), tuple(sweeps))


def _close_nights(store: NightStore, night_run_id: str, now_ms: int) -> list[str]:
    runs = store.tracker.search_runs(store.experiment_id, f"tags.`{TAG_KIND}` = '{KIND}'")
    orphans = sorted(
        (
            run
            for run in runs
            if run.info.run_id != night_run_id
            and run.info.status == "RUNNING"
            and run.data.tags.get(TAG_STATUS) == "running"
            and _gone(run, now_ms, live_driver(run.data.tags.get(TAG_DRIVER, "")) == "")
        ),
        key=lambda run: run.info.start_time,
    )
    for run in orphans:
        reason = STALE_REASON.format(night=night_run_id)
        store.finish_night(run.info.run_id, "failed", reason, killed=True)
    return [run.info.run_id for run in orphans]


def _close_sweeps(store: NightStore, now_ms: int) -> list[tuple[str, str]]:
    tracker, closed = store.tracker, []
    for experiment in tracker.experiment_names(f"{store.experiment}/"):
        experiment_id = tracker.experiment_id(experiment)
        for run in tracker.sweep_runs(experiment_id):
            if run.info.status != "RUNNING" or not _gone(run, now_ms, _sweep_driver_gone(run)):
                continue
            tracker.close_unfinished(experiment_id, run.info.run_id, status="KILLED")
            tracker.end_run(run.info.run_id, "KILLED")
            logger.warning(
                "closed sweep run %s of %s as KILLED: the night running it was killed outright",
                run.info.run_id,
                experiment,
            )
            closed.append((experiment, run.info.run_id))
    return closed


def _gone(run: Any, now_ms: int, driver_gone: bool) -> bool:
    """Whether ``run``'s process is known dead, or the run is older than any night."""
    return driver_gone or now_ms - (run.info.start_time or now_ms) > STALE_NIGHT_S * 1000


def _sweep_driver_gone(run: Any) -> bool:
    """Whether the sweep of ``run`` lies in a local folder whose driver is gone."""
    tags = run.data.tags
    root, name, sweep_id = (
        tags.get(k) for k in (TAG_STORAGE_PATH, "sweeps.spec_name", TAG_SWEEP_ID)
    )
    if not (root and name and sweep_id) or "://" in root:  # a URI: its driver cannot be asked
        return False
    return driver_gone(Path(root) / name / sweep_id)
