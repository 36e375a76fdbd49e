"""``run_nightly``: run every entry of a suite, compare the figures with earlier nights, report.

One night:

1. a night run in ``nightly/<suite>`` (status ``running``) with the environment tags, and the
   machine-speed reference timed and logged (``_reference.py``);
2. each entry's sweep with ``run_sweep``, logged to ``nightly/<suite>/<entry>``; then its
   figures are read back **from MLflow** (the sweep's child runs), so a night judged here and
   one run elsewhere against the same store are read the same way;
3. the baseline: per figure, the median of the last ``baseline_nights`` completed nights
   (failed nights and what-if nights run with ``--set`` never count), each entry's figures
   taken only from nights that ran the same spec of it (its fingerprint,
   ``nightly.spec_sha256.<entry>``; a what-if entry is matched with the suite as written);
4. the verdict, ``nightly-report.md`` / ``.html`` with trend plots of the last 30 nights (an
   entry drawn only from nights of the spec it is judged against), written to ``report_dir``
   and logged on the night run; the run is closed with its status.

A night *fails* (status ``failed``, reason in ``nightly.failure_reason``, exit code 3) when a
sweep raises (the cluster goes away, the data is gone), is interrupted, or any trial crashes;
the other entries still run, so the report shows what still works.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweeps._interrupts import Terminated, before_forced_exit
from sweeps.nightly._compare import EXIT_FAILED, Verdict, comparable_figures, judge, reference_notes
from sweeps.nightly._env import (
    MACHINE_PREFIX,
    TAG_COMMIT,
    TAG_LOAD,
    VERSION_PREFIX,
    environment_tags,
    spec_fingerprint,
)
from sweeps.nightly._figures import COMPUTE, WALL_TIME, Figure, entry_figures
from sweeps.nightly._reference import Reference, faster, measure_reference
from sweeps.nightly._report import (
    HTML_FILE,
    MARKDOWN_FILE,
    NightReport,
    ReportDirError,
    ReportFiles,
    prepare_report_dir,
    write_report,
)
from sweeps.nightly._store import (
    TAG_BASELINE_RUNS,
    TAG_OVERRIDES,
    Night,
    NightStore,
    entry_experiment,
    night_experiment,
)
from sweeps.spec import Suite, SuiteEntry, SweepSpec
from sweeps.spec._overrides import shown_override
from sweeps.spec._suite import DEFAULT_BASELINE_NIGHTS
from sweeps.tracking import Tracker, redact_uri, resolve_tracking_uri

logger = logging.getLogger(__name__)

TREND_NIGHTS = 30
STORAGE_KEY = "storage"
MAX_REASON_CHARS = 600


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


def run_nightly(
    suite: Suite,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    baseline_nights: int = DEFAULT_BASELINE_NIGHTS,
    report_dir: str | Path = "nightly-report",
    storage_path: str | Path | None = None,
) -> NightResult:
    """Run one night of ``suite`` and judge it against earlier nights.

    Example:
        >>> from sweeps.spec import load_suite
        >>> night = run_nightly(load_suite("sweeps/specs/nightly.yaml"))  # doctest: +SKIP
        >>> night.verdict.status, night.report.html  # doctest: +SKIP
        ('passed', PosixPath('nightly-report/nightly-report.html'))

    Args:
        suite: A loaded suite (``sweeps.spec.load_suite``); entries' ``extra_overrides``
            (other than ``storage``) make this a what-if night that later baselines ignore.
        address: A Ray cluster (``auto``, ``ray://...``); None starts Ray here.
        tracking_uri: The MLflow store of every entry and of the night (else
            ``$MLFLOW_TRACKING_URI``, else ``./.lrsweep``); an entry's ``tracking.uri`` is ignored.
        baseline_nights: How many earlier completed nights the baseline median takes.
        report_dir: Where ``nightly-report.md``, ``.html`` and ``trends/`` are written.
        storage_path: Ray's storage root for the sweeps (else each spec's or ``./.lrsweep``).

    Returns:
        The :class:`NightResult`; its ``exit_code`` is what ``lrsweep nightly`` exits with.

    Raises:
        ValueError: ``baseline_nights`` below 1 (before anything starts).
        ReportDirError: ``report_dir`` cannot be created or written (before anything starts).
        MlflowException: the store cannot be reached to create the night run.
        KeyboardInterrupt: re-raised after the night is recorded as failed (run KILLED); SIGTERM
            outside a sweep (a sweep handles its own) ends the night the same way, and so does
            a ``SystemExit`` (Ray's own SIGTERM handler while it starts), re-raised too.
    """
    if baseline_nights < 1:
        raise ValueError(f"baseline_nights must be at least 1, but got {baseline_nights=}.")
    prepare_report_dir(report_dir)  # hours of sweeps must not end in an unwritable folder
    uri = resolve_tracking_uri(tracking_uri)
    with _sigterm_as_interrupt():
        try:
            store = NightStore(Tracker(uri), suite.name)
            tonight = _open_night(suite, store)
        except Exception as error:  # no night run to record it on: the report says it alone
            reason = f"the night could not start in the store {redact_uri(uri)}: {error!r}"
            report_night_not_run(suite.name, report_dir, _one_line(reason))
            raise
        night_run_id = tonight.night_run_id
        logger.info("night %s of suite %s in %s", night_run_id, suite.name, redact_uri(uri))

        def ray_lost() -> None:  # the process ends without running the handlers below
            reason = "interrupted (SIGTERM): it reached Ray's own processes too, so the sweep "
            reason += "could not stop gracefully"
            _report_failure(suite, store, tonight, report_dir, reason)
            store.finish_night(night_run_id, "failed", reason, killed=True)

        try:
            with before_forced_exit(ray_lost, status=EXIT_FAILED):
                if tonight.overrides:
                    store.set_tags(night_run_id, {TAG_OVERRIDES: "; ".join(tonight.overrides)})
                if (reference := measure_reference()) is not None:  # before the sweeps load it
                    store.log_reference(night_run_id, reference)
                tonight = replace(tonight, reference=reference)
                figures, failures = _run_entries(
                    suite, store, night_run_id, uri=uri, address=address, storage_path=storage_path
                )
                if (kept := faster(reference, measure_reference(when="end"))) is not None:
                    store.log_reference(night_run_id, kept)  # the tag names both measurements
                tonight = replace(tonight, figures=figures, failures=failures, reference=kept)
                return _conclude(suite, store, tonight, baseline_nights, report_dir)
        except (KeyboardInterrupt, SystemExit) as error:  # SystemExit: Ray's SIGTERM handler
            reason = _interrupted_reason(error)
            _report_failure(suite, store, tonight, report_dir, reason)
            store.finish_night(night_run_id, "failed", reason, killed=True)
            raise
        except Exception as error:
            reason = f"the night itself crashed: {error!r}"
            _report_failure(suite, store, tonight, report_dir, reason)
            store.finish_night(night_run_id, "failed", reason)
            raise


def _interrupted_reason(error: KeyboardInterrupt | SystemExit) -> str:
    """The night's failure reason for an interrupt: Ctrl-C raises ``KeyboardInterrupt``, the
    night's own SIGTERM handler and a sweep's outside its trials :class:`Terminated` (one);
    Ray's SIGTERM handler (``ray.init`` installs it) exits with the signal's number, so
    ``SystemExit(15)`` is a SIGTERM too."""
    if isinstance(error, _EntryInterrupted):
        return error.reason
    if isinstance(error, Terminated):
        return "interrupted (SIGTERM)"
    if not isinstance(error, SystemExit):
        return "interrupted (Ctrl-C or SIGTERM)"
    if error.code == signal.SIGTERM:
        return f"interrupted (SIGTERM): Ray's handler ended the night (status {error.code})"
    return f"interrupted (Ctrl-C or SIGTERM); the night exited with status {error.code}"


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (systemd stopping the unit, a CI timeout) raises :class:`Terminated` (a
    ``KeyboardInterrupt``, as Ctrl-C raises), so that the night is recorded as failed wherever
    it is; a sweep installs its own handler while it runs and restores this one after. Only the
    first SIGTERM interrupts: a second must not cut short the recording of the first. In the
    main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def _keeping_sigterm_handler() -> Iterator[None]:
    """Put the night's SIGTERM handler back after a sweep: ``ray.init`` installs its own
    (``sys.exit``), which would end the night between entries with its run left RUNNING.
    ``run_sweep`` puts the caller's back itself; this guards any path that starts Ray
    without it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, handler if handler is not None else signal.SIG_DFL)


def _report_failure(
    suite: Suite, store: NightStore, tonight: _Tonight, report_dir: str | Path, reason: str
) -> None:
    """Best effort: a report saying the night failed and why, in ``report_dir`` and on the run
    (the folder's earlier report is gone: ``prepare_report_dir``)."""
    verdict = Verdict("failed", (), (reason,), 0, counts=not what_if_overrides(suite))
    report = NightReport(
        suite=suite.name,
        night_run_id=tonight.night_run_id,
        experiment=store.experiment,
        environment=tonight.environment,
        verdict=verdict,
        baseline_run_ids=(),
        trend=(),
        overrides=tonight.overrides,
        what_if=bool(what_if_overrides(suite)),
        compared=False,
    )
    try:
        files = write_report(report, report_dir)
        store.log_files(tonight.night_run_id, [files.markdown, files.html])
    except Exception:  # the failure itself is what must be recorded
        logger.exception("could not write the failed night's report into %s", report_dir)


def report_night_not_run(
    suite: str, report_dir: str | Path, reason: str, *, only_replacing: bool = False
) -> ReportFiles | None:
    """A FAILED report in ``report_dir`` for a night that could not start (its tracking store
    does not answer, its suite or ``--set`` is invalid).

    Nothing ran and no night run exists to log it on, but the folder must not keep the last
    night's verdict (a schedule publishes it whatever the exit code). Best effort: None when the
    folder cannot be written.

    Args:
        suite: The suite's name.
        report_dir: The night's ``--report-dir``.
        reason: Why the night did not run (no credentials).
        only_replacing: Write it only over an earlier night's report (bad input: a mistyped
            command creates no report folder).
    """
    folder = Path(report_dir)
    if only_replacing and not any((folder / n).is_file() for n in (MARKDOWN_FILE, HTML_FILE)):
        return None
    report = NightReport(
        suite=suite,
        night_run_id="none (the night did not start)",
        experiment=night_experiment(suite),
        environment=environment_tags(),
        verdict=Verdict("failed", (), (reason,), 0, counts=False),
        baseline_run_ids=(),
        trend=(),
        compared=False,
    )
    try:
        prepare_report_dir(report_dir)
        return write_report(report, report_dir)
    except (ReportDirError, OSError):
        logger.exception("could not write the failed night's report into %s", report_dir)
        return None


def _open_night(suite: Suite, store: NightStore) -> _Tonight:
    """The night run, started with its environment and spec fingerprints (the overrides are
    tagged by the caller, once a failure can be recorded). The overrides are kept as they may
    be shown, in the tag and the report: a secret in a value (``s3://...?secret_key=``, a
    ``*password*`` key) is ``***``."""
    overrides = [f"{e.name}.{shown_override(o)}" for e in suite.entries for o in e.extra_overrides]
    environment = environment_tags()
    specs = {entry.name: spec_fingerprint(entry.spec) for entry in suite.entries}
    night_run_id = store.start_night(
        environment, eligible=not what_if_overrides(suite), specs=specs
    )
    return _Tonight(night_run_id, environment, overrides, specs, [], [])


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


def _run_entries(
    suite: Suite,
    store: NightStore,
    night_run_id: str,
    *,
    uri: str,
    address: str | None,
    storage_path: str | Path | None,
) -> tuple[list[Figure], list[str]]:
    figures: list[Figure] = []
    failures: list[str] = []
    for index, entry in enumerate(suite.entries):
        found, problems, interrupted = _run_entry(
            suite.name, entry, store, night_run_id, uri=uri, address=address,
            storage_path=storage_path,
        )  # fmt: skip
        figures += found
        failures += [_one_line(f"{entry.name}: {p}") for p in problems]
        if interrupted:
            skipped = [e.name for e in suite.entries[index + 1 :]]
            logger.warning(
                "night interrupted during %s; entries not run: %s",
                entry.name,
                ", ".join(skipped) or "none",
            )
            raise _EntryInterrupted(entry.name, interrupted, skipped)
    return figures, failures


class _EntryInterrupted(KeyboardInterrupt):
    """A signal the sweep of an entry handled itself (it closed its runs KILLED and returned):
    the night ends as interrupted, as a signal between sweeps ends it, not as a night that
    ran and found its figures missing."""

    def __init__(self, entry: str, signal_name: str, skipped: list[str]) -> None:
        super().__init__(entry, signal_name, skipped)
        not_run = f"; entries not run: {', '.join(skipped)}" if skipped else ""
        self.reason = f"interrupted ({signal_name}) during the sweep of entry {entry}{not_run}"


def _run_entry(
    suite: str,
    entry: SuiteEntry,
    store: NightStore,
    night_run_id: str,
    *,
    uri: str,
    address: str | None,
    storage_path: str | Path | None,
) -> tuple[list[Figure], list[str], str | None]:
    """One entry's sweep: its figures, its problems, and the signal that interrupted it."""
    from sweeps.run import run_sweep  # the Ray-heavy import, only when a night really runs

    experiment = entry_experiment(suite, entry.name)
    spec = _in_experiment(entry.spec, experiment, uri)
    started_ms = int(time.time() * 1000)
    problems: list[str] = []
    interrupted: str | None = None  # the signal that stopped the sweep
    logger.info("entry %s: sweep %s into experiment %s", entry.name, spec.name, experiment)
    try:
        with _keeping_sigterm_handler():
            result = run_sweep(
                spec,
                address=address,
                tracking_uri=uri,
                storage_path=storage_path,
                retry_failed=False,  # a night is never resumed: its checkpoints go
            )
        sweep_run_id: str | None = result.parent_run_id
        interrupted = (result.stop_signal or "SIGINT") if result.interrupted else None
        ray_errors = _ray_errors(result)
    except Exception as error:  # any way a sweep dies fails the night; its reason is kept
        logger.exception("entry %s: the sweep raised", entry.name)
        problems.append(f"the sweep raised {type(error).__name__}: {error}")
        sweep_run_id, ray_errors = store.latest_sweep_run(experiment, started_ms), []
    if interrupted:
        problems.append(f"the sweep was interrupted ({interrupted})")
    if sweep_run_id is None:
        return [], problems or ["the sweep left no run in MLflow"], interrupted
    store.link_sweep(night_run_id, entry.name, sweep_run_id)
    reading = store.read_sweep(sweep_run_id)
    problems += reading.failures or ray_errors
    figures = entry_figures(entry.name, reading.trials, wall_time_s=reading.wall_time_s)
    return figures, problems, interrupted


def _in_experiment(spec: SweepSpec, experiment: str, uri: str) -> SweepSpec:
    """``spec`` logging to ``experiment`` (no re-validation: the suite validated it)."""
    if spec.tracking.uri and spec.tracking.uri != uri:
        logger.warning(
            "spec %s sets tracking.uri; the nightly logs every entry to %s instead",
            spec.name,
            redact_uri(uri),
        )
    tracking = spec.tracking.model_copy(update={"experiment": experiment, "uri": None})
    return spec.model_copy(update={"tracking": tracking})


def _ray_errors(result: Any) -> list[str]:
    """Trials Ray Tune saw error (some never reach MLflow, e.g. when their data is missing)."""
    errors = []
    for outcomes in result.trials.values():
        for outcome in outcomes:
            if outcome.status == "ERROR":
                text = (outcome.error or "no error text").strip().splitlines() or ["?"]
                arm = outcome.config.get("arm", "?")
                errors.append(f"trial {outcome.trial_id} ({arm}) errored: {text[-1]}")
    return errors


@dataclass(frozen=True)
class _Tonight:
    """What a night has gathered by the time it is judged."""

    night_run_id: str
    environment: dict[str, str]
    overrides: list[str]
    specs: dict[str, str]
    figures: list[Figure]
    failures: list[str]
    reference: Reference | None = None


def _conclude(
    suite: Suite,
    store: NightStore,
    tonight: _Tonight,
    baseline_nights: int,
    report_dir: str | Path,
) -> NightResult:
    """Tonight's figures logged; baseline, verdict, report; the night run closed with its status."""
    night_run_id, figures = tonight.night_run_id, tonight.figures
    store.log_figures(night_run_id, figures)
    killed = store.close_stale_nights(night_run_id, now_ms=int(time.time() * 1000))
    earlier = store.earlier_nights(
        limit=max(baseline_nights, TREND_NIGHTS - 1), exclude=night_run_id
    )
    baseline = earlier[:baseline_nights]
    specs = _specs_to_match(suite, tonight.specs)
    comparable = [comparable_figures(n.figures, n.specs, specs) for n in baseline]
    reference_s = tonight.reference.seconds if tonight.reference else None
    verdict = judge(
        figures,
        comparable,
        suite.thresholds,
        tonight.failures,
        counts=not what_if_overrides(suite),
        same_spec={f.entry for f in figures} - {e.name for e in suite.entries if _what_if(e)},
        reference_s=reference_s,
        references=[n.reference_s for n in baseline],
    )
    trend = _trend(earlier[: TREND_NIGHTS - 1], figures, specs)
    baseline_ids = [n.run_id for n, kept in zip(baseline, comparable, strict=True) if kept]
    notes = _spec_changes(baseline, specs) + _environment_changes(baseline, tonight.environment)
    kept = [n for n, figures in zip(baseline, comparable, strict=True) if figures]
    notes += _commit_changes(kept, tonight.environment)
    refs = [n.reference_s for n in kept]
    notes += reference_notes(verdict, suite.thresholds, reference_s=reference_s, references=refs)
    notes += _busy_machine(verdict, tonight.environment)
    if killed:
        notes.append(
            f"{len(killed)} earlier night{'s' if len(killed) != 1 else ''} never finished (killed "
            f"outright: out of memory, a reboot, SIGKILL) and are now recorded failed: "
            + ", ".join(killed)
            + "."
        )
    report = NightReport(
        suite=suite.name,
        night_run_id=night_run_id,
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
    store.log_files(night_run_id, [files.markdown, files.html])
    store.log_files(night_run_id, files.plots, "trends")
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


def _one_line(text: str) -> str:
    """``text`` on one line, cut to ``MAX_REASON_CHARS``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_REASON_CHARS else flat[: MAX_REASON_CHARS - 3] + "..."


def _label(start_ms: int) -> str:
    return datetime.fromtimestamp(start_ms / 1000, tz=UTC).strftime("%m-%d %H:%M")
