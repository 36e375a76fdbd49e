"""A night that ran, judged: tonight's figures logged, the baseline of the earlier nights that
ran the same specs, the verdict, the notes on what differs from those nights (specs, package
versions, machine, commits, load), the trend plots and the report; the night run closed with
its status. Also what makes a night a what-if (its ``--set`` overrides), which no later
baseline counts.

:func:`sweeps.nightly._run.run_nightly` calls :func:`conclude` (tests call it as
``_run._conclude`` on a night of their own figures); :mod:`sweeps.nightly._run` re-exports
:class:`NightResult`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sweeps.nightly._compare import Verdict, comparable_figures, judge, reference_notes
from sweeps.nightly._env import (
    MACHINE_PREFIX,
    TAG_COMMIT,
    TAG_LOAD,
    VERSION_PREFIX,
    spec_fingerprint,
)
from sweeps.nightly._figures import COMPUTE, WALL_TIME, Figure
from sweeps.nightly._orphans import Orphans
from sweeps.nightly._reference import Reference
from sweeps.nightly._report import NightReport, ReportFiles, write_report
from sweeps.nightly._store import TAG_BASELINE_RUNS, Night, NightStore
from sweeps.spec import Suite, SuiteEntry
from sweeps.tracking import redact_uri

__all__ = ["STORAGE_KEY", "TREND_NIGHTS", "NightResult", "Tonight", "conclude", "what_if_overrides"]

logger = logging.getLogger("sweeps.nightly._run")  # its messages, as before the split

TREND_NIGHTS = 30
STORAGE_KEY = "storage"


@dataclass(frozen=True)
class NightResult:
    """What one night produced.

    Attributes:
        suite: The suite's name.
        night_run_id: The night run in ``experiment``.
        experiment: ``nightly/<suite>``.
        tracking_uri: The store (credentials removed).
        verdict: Status, every comparison, failures.
        figures: Tonight's figures.
        baseline_run_ids: The earlier night runs the baseline is the median of, newest first.
        report: The report files written.
        notes: What the report says about the baseline (an entry's spec changed since some
            baseline nights; they ran with other package versions or on another machine).
        overrides: The ``--set`` overrides the night ran with, as shown (secrets hidden).
        what_if: Whether they make it a what-if night, which no later baseline counts.
        reference: The machine-speed reference, the faster of its timings before and after the
            sweeps (None: neither could be measured).
    """

    suite: str
    night_run_id: str
    experiment: str
    tracking_uri: str
    verdict: Verdict
    figures: tuple[Figure, ...]
    baseline_run_ids: tuple[str, ...]
    report: ReportFiles
    notes: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    what_if: bool = False
    reference: Reference | None = None

    @property
    def exit_code(self) -> int:
        """0 passed, 1 regressed, 3 failed."""
        return self.verdict.exit_code


@dataclass(frozen=True)
class Tonight:
    """What a night has gathered by the time it is judged."""

    night_run_id: str
    environment: dict[str, str]
    overrides: list[str]
    specs: dict[str, str]
    figures: list[Figure]
    failures: list[str]
    reference: Reference | None = None
    orphans: Orphans = field(default_factory=Orphans)  # left RUNNING by killed nights, closed


def what_if_overrides(suite: Suite) -> list[str]:
    """The extra overrides that make a night a what-if (never part of a baseline).

    Every ``--set`` does, except those that only move Ray's ``storage`` (where checkpoints go
    changes no figure, and a cluster needs shared storage:
    ``--set '*.storage={path: /mnt/shared/ray-results, shared: true}'``).
    """
    return [f"{entry.name}.{override}" for entry in suite.entries for override in _what_if(entry)]


def _what_if(entry: SuiteEntry) -> list[str]:
    return [
        override
        for override in entry.extra_overrides
        if override.partition("=")[0].strip().split(".")[0] != STORAGE_KEY
    ]


def _trend(
    earlier: list[Night], figures: list[Figure], specs: dict[str, str]
) -> list[tuple[str, dict[str, float]]]:
    """``(label, figures)`` per night, oldest first, tonight last, for the trend plots.

    An earlier night shows an entry's figures only when it ran the spec tonight is judged
    against (``specs``), as in the baseline: a line across a change of seeds or epochs would
    draw the change as a trend.
    """
    trend = [
        (_label(n.start_ms), comparable_figures(n.figures, n.specs, specs))
        for n in reversed(earlier)
    ]
    trend.append(("tonight", {f.key: f.value for f in figures}))
    return trend


def _specs_to_match(suite: Suite, specs: dict[str, str]) -> dict[str, str]:
    """The fingerprint each entry's earlier nights must have to join tonight's baseline.

    Tonight's own, except for an entry changed by a what-if ``--set``: that one is judged against
    the suite as written tonight (its file's overrides applied, not the command line's), whatever
    spec the latest nights ran: after an edit of the suite, a what-if is no comparison with the
    nights of the old spec.
    """
    matched = dict(specs)
    for entry in suite.entries:
        if _what_if(entry):
            matched[entry.name] = spec_fingerprint(entry.spec_as_written)
    return matched


def conclude(
    suite: Suite,
    store: NightStore,
    tonight: Tonight,
    baseline_nights: int,
    report_dir: str | Path,
) -> NightResult:
    """Tonight's figures logged; baseline, verdict, report; the night run closed with its status."""
    night_run_id, figures = tonight.night_run_id, tonight.figures
    store.log_figures(night_run_id, figures)
    earlier = store.earlier_nights(
        limit=max(baseline_nights, TREND_NIGHTS - 1), exclude=night_run_id
    )
    baseline = earlier[:baseline_nights]
    specs = _specs_to_match(suite, tonight.specs)
    comparable = [comparable_figures(n.figures, n.specs, specs) for n in baseline]
    reference_s = tonight.reference.seconds if tonight.reference else None
    verdict = _judge(suite, tonight, baseline, comparable, reference_s=reference_s)
    trend = _trend(earlier[: TREND_NIGHTS - 1], figures, specs)
    baseline_ids = [n.run_id for n, kept in zip(baseline, comparable, strict=True) if kept]
    notes = _notes(suite, tonight, verdict, baseline, comparable, specs, reference_s)
    files = _write_report(
        suite, store, tonight, verdict, baseline_ids, trend, notes, report_dir=report_dir
    )
    store.set_tags(night_run_id, {TAG_BASELINE_RUNS: ",".join(baseline_ids)})
    store.finish_night(night_run_id, verdict.status, "; ".join(verdict.failures))
    logger.info("night %s: %s", night_run_id, verdict.summary())
    return NightResult(
        suite=suite.name,
        night_run_id=night_run_id,
        experiment=store.experiment,
        tracking_uri=redact_uri(store.tracker.uri),
        verdict=verdict,
        figures=tuple(figures),
        baseline_run_ids=tuple(baseline_ids),
        report=files,
        notes=tuple(notes),
        overrides=tuple(tonight.overrides),
        what_if=bool(what_if_overrides(suite)),
        reference=tonight.reference,
    )


def _judge(
    suite: Suite,
    tonight: Tonight,
    baseline: list[Night],
    comparable: list[dict[str, float]],
    *,
    reference_s: float | None,
) -> Verdict:
    """Tonight's verdict against the ``baseline`` nights' ``comparable`` figures (those of the
    specs tonight is judged against); a what-if night does not count, and its entries changed by
    ``--set`` are not judged as the same spec."""
    figures = tonight.figures
    return judge(
        figures,
        comparable,
        suite.thresholds,
        tonight.failures,
        counts=not what_if_overrides(suite),
        same_spec={f.entry for f in figures} - {e.name for e in suite.entries if _what_if(e)},
        reference_s=reference_s,
        references=[n.reference_s for n in baseline],
    )


def _notes(
    suite: Suite,
    tonight: Tonight,
    verdict: Verdict,
    baseline: list[Night],
    comparable: list[dict[str, float]],
    specs: dict[str, str],
    reference_s: float | None,
) -> list[str]:
    """What the report says about the baseline, in this order: spec changes, environment
    changes, the commits of the nights that kept figures, the machine-speed reference, a busy
    machine, and what earlier nights killed outright left RUNNING, closed tonight."""
    notes = _spec_changes(baseline, specs) + _environment_changes(baseline, tonight.environment)
    kept = [n for n, figures in zip(baseline, comparable, strict=True) if figures]
    notes += _commit_changes(kept, tonight.environment)
    refs = [n.reference_s for n in kept]
    notes += reference_notes(verdict, suite.thresholds, reference_s=reference_s, references=refs)
    notes += _busy_machine(verdict, tonight.environment)
    return notes + _orphan_notes(tonight.orphans)


def _orphan_notes(orphans: Orphans) -> list[str]:
    """The runs nights killed outright left RUNNING that tonight closed, named."""
    notes = []
    if killed := orphans.nights:
        notes.append(
            f"{len(killed)} earlier night{'s' if len(killed) != 1 else ''} never finished (killed "
            f"outright: out of memory, a reboot, SIGKILL) and are now recorded failed: "
            + ", ".join(killed)
            + "."
        )
    if orphans.sweeps:
        sweeps = ", ".join(f"run {run_id} of {experiment}" for experiment, run_id in orphans.sweeps)
        notes.append(
            f"Sweeps left RUNNING by a night killed outright are closed as KILLED (their figures "
            f"count in no night): {sweeps}."
        )
    return notes


def _write_report(
    suite: Suite,
    store: NightStore,
    tonight: Tonight,
    verdict: Verdict,
    baseline_ids: list[str],
    trend: list[tuple[str, dict[str, float]]],
    notes: list[str],
    *,
    report_dir: str | Path,
) -> ReportFiles:
    """Write the night's report into ``report_dir`` and upload it onto the night run: both
    reports at its root, the trend plots under ``trends``."""
    report = NightReport(
        suite=suite.name,
        night_run_id=tonight.night_run_id,
        experiment=store.experiment,
        environment=tonight.environment,
        verdict=verdict,
        baseline_run_ids=baseline_ids,
        trend=trend,
        overrides=tonight.overrides,
        what_if=bool(what_if_overrides(suite)),
        notes=notes,
        reference=tonight.reference,
    )
    files = write_report(report, report_dir)
    store.log_files(tonight.night_run_id, [files.markdown, files.html])
    store.log_files(tonight.night_run_id, files.plots, "trends")
    return files


def _spec_changes(baseline: list[Night], specs: dict[str, str]) -> list[str]:
    """One line per entry whose spec differs from that of some baseline nights, per entry some
    of them never ran (new in the suite, or renamed: an entry's history follows its name), and
    per entry they ran that tonight's suite has no more."""
    notes = []
    for entry, sha in specs.items():
        other = [n for n in baseline if entry in n.specs and n.specs[entry] != sha]
        never = [n for n in baseline if entry not in n.specs]
        if other:
            notes.append(
                f"{entry}: {len(other)} of the {len(baseline)} baseline nights ran another spec "
                f"of it (fingerprint {sha[:12]} tonight) and are left out of its baseline."
            )
        if never and len(never) == len(baseline):
            notes.append(
                f"{entry}: new in the suite, no baseline night ran it: its figures start their "
                "baseline tonight (an entry's history follows its name: a renamed entry starts "
                "afresh)."
            )
        elif never:
            notes.append(
                f"{entry}: {len(never)} of the {len(baseline)} baseline nights did not run it."
            )
    gone = sorted({e for n in baseline for e in n.specs} - set(specs))
    if gone:
        notes.append(
            f"Baseline nights ran {', '.join(gone)}, which tonight's suite no longer has "
            "(removed or renamed): their figures are listed as missing, and judge nothing."
        )
    return notes


def _environment_changes(baseline: list[Night], environment: dict[str, str]) -> list[str]:
    """One line naming the package versions and machine fields (the node's name aside: a pod's
    changes every night) in which baseline nights differ from tonight, if any do."""
    keys = [k for k in environment if k.startswith((VERSION_PREFIX, MACHINE_PREFIX))]
    keys = [k for k in keys if k != MACHINE_PREFIX + "node"]
    differing = {
        key: sorted({n.environment.get(key, "?") for n in baseline} - {environment[key]})
        for key in keys
    }
    changes = [
        f"{key.removeprefix('nightly.')} {', '.join(before)} -> {environment[key]}"
        for key, before in sorted(differing.items())
        if before
    ]
    if not changes:
        return []
    return [
        "Baseline nights ran with another environment (" + "; ".join(changes) + "): "
        "compute_s and wall_time_s may differ for that reason alone."
    ]


def _commit_changes(baseline: list[Night], environment: dict[str, str]) -> list[str]:
    """One line naming the commits the baseline nights ran (with how many nights each) when any
    is not tonight's: the changes between them are where a regression comes from."""
    tonight = environment.get(TAG_COMMIT, "unknown")
    counts = Counter(n.environment.get(TAG_COMMIT, "unknown") for n in baseline)
    if not counts or set(counts) == {tonight}:
        return []
    ran = ", ".join(
        f"{commit} ({count} night{'s' if count != 1 else ''})"
        for commit, count in counts.most_common()
    )
    return [f"Tonight ran commit {tonight}; its baseline nights ran {ran}."]


def _busy_machine(verdict: Verdict, environment: dict[str, str]) -> list[str]:
    """A line when a time figure regressed on a machine that was already busy as the night
    began (a load average of half its cores or more): the other work, not the code, may be what
    slowed it. Error rates and regret do not move with load (on the CPU, the same seed gives
    the same curves)."""
    timed = [c.label for c in verdict.regressions if c.name in (COMPUTE, WALL_TIME)]
    try:
        load = float(environment[TAG_LOAD])
        cores = int(environment[MACHINE_PREFIX + "cpu_count"])
    except (KeyError, ValueError):
        return []
    if not timed or load < cores / 2:
        return []
    return [
        f"The machine was already busy as the night began (load average {load:g} on {cores} "
        f"cores): the time figures that regressed ({', '.join(timed)}) may have been slowed "
        "by that other work rather than the code; the error rates and regret are not affected "
        "by load. Run the night on an idle machine to tell."
    ]


def _label(start_ms: int) -> str:
    return datetime.fromtimestamp(start_ms / 1000, tz=UTC).strftime("%m-%d %H:%M")
