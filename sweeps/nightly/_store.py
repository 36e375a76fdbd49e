"""The nightly benchmark's MLflow layout: night runs, links to their sweeps, earlier nights.

- Experiment ``nightly/<suite>``: one **night run** per night (tag ``sweeps.kind=nightly``),
  tagged with the environment (``nightly.date``, ``nightly.git_commit``,
  ``nightly.version.<package>``, ``nightly.machine.<field>``), each entry's spec fingerprint
  (``nightly.spec_sha256.<entry>``), the outcome (``nightly.status``:
  ``running``, ``passed``, ``regressed`` or ``failed``; ``nightly.failure_reason``), the baseline
  it was compared with (``nightly.baseline_runs``), the process that runs it
  (``nightly.driver``, for the next night to see it was killed: ``_orphans.py``), and holding
  every figure as a metric ``<entry>/<figure>[/<group>]``, the machine-speed reference as the
  metric ``reference_s`` (how it was measured: tag ``nightly.reference``; nights before
  2026-12-07 have none), plus the report as artifacts.
- Experiment ``nightly/<suite>/<entry>`` per entry: the entry's sweep, logged by ``run_sweep``
  exactly like any sweep (parent ``sweeps.kind=sweep``, one child run per trial), so
  ``lrsweep report`` and ``lrsweep best`` work on it. Its parent run is tagged
  ``nightly.night_run_id`` and ``nightly.entry``; the night run is tagged
  ``nightly.sweep_run.<entry>`` with the sweep's parent run id.

A night is part of later baselines when its run FINISHED with status ``passed`` or
``regressed`` and it ran the suite as written (no ``--set`` other than one moving ``storage``:
tag ``nightly.baseline_eligible``). Failed nights, interrupted ones and what-if nights never are.
Within such a night, an entry's figures join tonight's baseline only when its spec fingerprint
is tonight's (``sweeps.nightly._compare.comparable_figures``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeps.clean import driver_record
from sweeps.nightly._env import (
    MACHINE_PREFIX,
    SPEC_PREFIX,
    TAG_COMMIT,
    TAG_DATE,
    VERSION_PREFIX,
)
from sweeps.nightly._figures import Figure
from sweeps.nightly._reference import METRIC_REFERENCE, TAG_REFERENCE, Reference
from sweeps.report import TrialRow, trial_row, with_epochs_held
from sweeps.tracking import TAG_KIND, Tracker

logger = logging.getLogger(__name__)

KIND = "nightly"
TAG_SUITE = "nightly.suite"
TAG_STATUS = "nightly.status"
TAG_REASON = "nightly.failure_reason"
TAG_ELIGIBLE = "nightly.baseline_eligible"
TAG_OVERRIDES = "nightly.overrides"
TAG_BASELINE_RUNS = "nightly.baseline_runs"
TAG_NIGHT = "nightly.night_run_id"
TAG_ENTRY = "nightly.entry"
TAG_DRIVER = "nightly.driver"  # the night's process, as a sweep's driver.json: its host, pid, start
SWEEP_RUN_PREFIX = "nightly.sweep_run."
BASELINE_STATUSES = ("passed", "regressed")
MAX_TAG_CHARS = 5000


def night_experiment(suite: str) -> str:
    """``nightly/<suite>``: where the night runs live."""
    return f"nightly/{suite}"


def entry_experiment(suite: str, entry: str) -> str:
    """``nightly/<suite>/<entry>``: where an entry's sweeps live."""
    return f"nightly/{suite}/{entry}"


@dataclass(frozen=True)
class Night:
    """One earlier night as read back from MLflow.

    Attributes:
        run_id: The night run.
        date: Its ``nightly.date`` tag (``YYYY-MM-DD``).
        start_ms: Its start time (ms since the epoch), for ordering.
        status: ``nightly.status``.
        figures: Figure key -> value, from the run's metrics.
        specs: Entry -> spec fingerprint (``nightly.spec_sha256.<entry>``; empty for nights
            recorded before fingerprints).
        environment: Its ``nightly.version.*``, ``nightly.machine.*`` and
            ``nightly.git_commit`` tags.
        reference_s: Its machine-speed reference (metric ``reference_s``), or None (a night
            recorded before references, or whose measurement failed).
    """

    run_id: str
    date: str
    start_ms: int
    status: str
    figures: dict[str, float] = field(default_factory=dict)
    specs: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    reference_s: float | None = None


@dataclass(frozen=True)
class SweepReading:
    """What MLflow holds of one entry's sweep: trial rows, wall time and trial failures."""

    trials: list[TrialRow]
    wall_time_s: float | None
    failures: list[str]


class NightStore:
    """Night runs of one suite in one tracking store (every call goes through ``Tracker``).

    Args:
        tracker: The store.
        suite: The suite's name.
    """

    def __init__(self, tracker: Tracker, suite: str) -> None:
        self.tracker = tracker
        self.suite = suite
        self.experiment = night_experiment(suite)
        self.experiment_id = tracker.ensure_experiment(self.experiment)

    def start_night(
        self, tags: Mapping[str, str], *, eligible: bool, specs: Mapping[str, str]
    ) -> str:
        """Create the night run (status ``running``) and return its id.

        Args:
            tags: The environment tags.
            eligible: Whether the night may join later baselines (False for a what-if).
            specs: Entry -> spec fingerprint (``sweeps.nightly._env.spec_fingerprint``).
        """
        name = f"night-{tags.get(TAG_DATE, 'unknown')}"
        all_tags = {
            **tags,
            **{SPEC_PREFIX + entry: sha for entry, sha in specs.items()},
            TAG_KIND: KIND,
            TAG_SUITE: self.suite,
            TAG_STATUS: "running",
            TAG_ELIGIBLE: str(eligible).lower(),
            TAG_DRIVER: json.dumps(driver_record()),  # a night killed outright is seen as such
        }
        return self.tracker.start_run(self.experiment_id, run_name=name, tags=all_tags)

    def link_sweep(self, night_run_id: str, entry: str, sweep_run_id: str) -> None:
        """Tag the sweep's parent with the night, and the night with the sweep."""
        self.tracker.set_tags(sweep_run_id, {TAG_NIGHT: night_run_id, TAG_ENTRY: entry})
        self.tracker.set_tags(night_run_id, {SWEEP_RUN_PREFIX + entry: sweep_run_id})

    def latest_sweep_run(self, experiment: str, since_ms: int) -> str | None:
        """The newest sweep parent run of ``experiment`` started at or after ``since_ms``."""
        try:
            experiment_id = self.tracker.experiment_id(experiment)
        except LookupError:
            return None
        runs = self.tracker.search_runs(experiment_id, f"tags.`{TAG_KIND}` = 'sweep'")
        runs = [r for r in runs if r.info.start_time >= since_ms]
        return max(runs, key=lambda r: r.info.start_time).info.run_id if runs else None

    def read_sweep(self, sweep_run_id: str) -> SweepReading:
        """Trial rows, wall time and failed trials of a sweep, from its MLflow runs alone.

        A sweep with no trial run at all is a failure too (it would give no figure to judge).
        """
        parent = self.tracker.get_run(sweep_run_id)
        children = self.tracker.child_runs(parent.info.experiment_id, sweep_run_id)
        # a failed trial's epochs and range test count, as in lrsweep report's compute
        trials = [with_epochs_held(self.tracker, run, trial_row(run)) for run in children]
        failures = [
            f"trial {run.info.run_name or run.info.run_id} ({row.group}) ended "
            f"{run.info.status}: {run.data.tags.get('sweeps.error', 'no error recorded')}"
            for run, row in zip(children, trials, strict=True)
            if row.status != "FINISHED" or row.stop_reason == "failed"
        ]
        if not children:  # no figures at all: the entry must not pass with nothing judged
            failures.append("the sweep logged no trial to MLflow")
        wall = None
        if parent.info.end_time and parent.info.start_time:
            wall = (parent.info.end_time - parent.info.start_time) / 1000.0
        return SweepReading(trials, wall, failures)

    def log_figures(self, night_run_id: str, figures: Sequence[Figure]) -> None:
        """Every figure as a metric ``<entry>/<figure>[/<group>]`` at step 0."""
        points = [(f.key, f.value, 0) for f in figures if math.isfinite(f.value)]
        self.tracker.log_metrics(night_run_id, points)

    def log_reference(self, night_run_id: str, reference: Reference) -> None:
        """The machine-speed reference: metric ``reference_s``, tag ``nightly.reference``."""
        step = 1 if reference.when == "end" else 0  # the end's, kept: the latest value
        self.tracker.log_metrics(night_run_id, [(METRIC_REFERENCE, reference.seconds, step)])
        self.set_tags(night_run_id, {TAG_REFERENCE: reference.describe()})

    def set_tags(self, night_run_id: str, tags: Mapping[str, Any]) -> None:
        """Tags on the night run, each value cut to MLflow's tag size."""
        self.tracker.set_tags(night_run_id, {k: str(v)[:MAX_TAG_CHARS] for k, v in tags.items()})

    def log_files(self, night_run_id: str, files: Sequence[Path], artifact_path: str = "") -> None:
        """Upload report files onto the night run."""
        for path in files:
            self.tracker.log_artifact(night_run_id, path, artifact_path)

    def finish_night(
        self, night_run_id: str, status: str, reason: str = "", *, killed: bool = False
    ) -> None:
        """Record the outcome and close the run (FINISHED, or KILLED when interrupted)."""
        tags = {TAG_STATUS: status}
        if reason:
            tags[TAG_REASON] = reason[:MAX_TAG_CHARS]
        self.tracker.set_tags(night_run_id, tags)
        self.tracker.end_run(night_run_id, "KILLED" if killed else "FINISHED")

    def earlier_nights(self, *, limit: int, exclude: str | None = None) -> list[Night]:
        """The newest ``limit`` nights that may form a baseline, newest first."""
        runs = self.tracker.search_runs(self.experiment_id, f"tags.`{TAG_KIND}` = '{KIND}'")
        nights = []
        for run in runs:
            tags = run.data.tags
            if (
                run.info.run_id == exclude
                or run.info.status != "FINISHED"
                or tags.get(TAG_STATUS) not in BASELINE_STATUSES
                or tags.get(TAG_ELIGIBLE, "true") != "true"
            ):
                continue
            figures = {
                key: float(value)
                for key, value in run.data.metrics.items()
                if Figure.from_key(key, value) is not None
            }
            nights.append(
                Night(
                    run.info.run_id,
                    tags.get(TAG_DATE, ""),
                    run.info.start_time,
                    tags[TAG_STATUS],
                    figures,
                    {
                        key.removeprefix(SPEC_PREFIX): value
                        for key, value in tags.items()
                        if key.startswith(SPEC_PREFIX)
                    },
                    {
                        key: value
                        for key, value in tags.items()
                        if key.startswith((VERSION_PREFIX, MACHINE_PREFIX)) or key == TAG_COMMIT
                    },
                    run.data.metrics.get(METRIC_REFERENCE),
                )
            )
        nights.sort(key=lambda n: n.start_ms, reverse=True)
        return nights[:limit]
