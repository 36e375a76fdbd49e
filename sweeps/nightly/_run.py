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

Here: the night from start to end (its run opened, interrupts and crashes recorded as a failed
night, the report of a night that could not start). Running the entries' sweeps is in
``_entries.py`` (called as ``_run_entries``, which tests replace); judging the night and
writing its report (steps 3 and 4) is in ``_conclude.py``, which holds :class:`NightResult`
(re-exported here).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from sweeps._interrupts import Terminated, before_forced_exit
from sweeps.nightly._compare import EXIT_FAILED, Verdict
from sweeps.nightly._conclude import NightResult as NightResult  # re-exported
from sweeps.nightly._conclude import Tonight, what_if_overrides
from sweeps.nightly._conclude import conclude as _conclude
from sweeps.nightly._entries import EntryInterrupted, one_line
from sweeps.nightly._entries import run_entries as _run_entries
from sweeps.nightly._env import environment_tags, spec_fingerprint
from sweeps.nightly._orphans import close_orphans
from sweeps.nightly._reference import faster, measure_reference
from sweeps.nightly._report import (
    HTML_FILE,
    MARKDOWN_FILE,
    NightReport,
    ReportDirError,
    ReportFiles,
    prepare_report_dir,
    write_report,
)
from sweeps.nightly._store import TAG_OVERRIDES, NightStore, night_experiment
from sweeps.spec import Suite
from sweeps.spec._overrides import shown_override
from sweeps.spec._suite import DEFAULT_BASELINE_NIGHTS
from sweeps.tracking import Tracker, redact_uri, resolve_tracking_uri

logger = logging.getLogger(__name__)


def run_nightly(
    suite: Suite,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    baseline_nights: int = DEFAULT_BASELINE_NIGHTS,
    report_dir: str | Path = "nightly-report",
    storage_path: str | Path | None = None,
    on_note: Callable[[str], None] | None = None,
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
        on_note: Takes each entry's notes (``entries.NAME: `` and what ``lrsweep validate``
            prints; ``lrsweep nightly`` prints ``Note:`` lines); None logs them as warnings.

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
            report_night_not_run(suite.name, report_dir, one_line(reason))
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
                    suite,
                    store,
                    night_run_id,
                    uri=uri,
                    address=address,
                    storage_path=storage_path,
                    on_note=on_note,
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
    if isinstance(error, EntryInterrupted):
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


def _report_failure(
    suite: Suite, store: NightStore, tonight: Tonight, report_dir: str | Path, reason: str
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


def _open_night(suite: Suite, store: NightStore) -> Tonight:
    """The night run, started with its environment and spec fingerprints (the overrides are
    tagged by the caller, once a failure can be recorded). The overrides are kept as they may
    be shown, in the tag and the report: a secret in a value (``s3://...?secret_key=``, a
    ``*password*`` key) is ``***``. What nights killed outright left RUNNING is closed first
    (``_orphans.py``), before tonight's sweeps run."""
    overrides = [f"{e.name}.{shown_override(o)}" for e in suite.entries for o in e.extra_overrides]
    environment = environment_tags()
    specs = {entry.name: spec_fingerprint(entry.spec) for entry in suite.entries}
    night_run_id = store.start_night(
        environment, eligible=not what_if_overrides(suite), specs=specs
    )
    orphans = close_orphans(store, night_run_id, now_ms=int(time.time() * 1000))
    return Tonight(night_run_id, environment, overrides, specs, [], [], orphans=orphans)
