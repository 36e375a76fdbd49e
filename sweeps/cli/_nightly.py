"""``lrsweep nightly``: run the nightly suite, compare it with earlier nights, print the verdict.

Exit codes: 0 passed (also the first night, with no baseline), 1 a figure regressed past its
threshold, 2 bad input (the suite, a ``--set``, the tracking URI or ``--report-dir`` is unusable;
nothing ran), 3 the night failed (a sweep raised or was interrupted, a trial crashed, the
tracking store is unreachable, or the night itself crashed or was interrupted: never 1, which
only ever means a regression).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from sweeps._uri import TrackingUriError, checked_tracking_uri, redact_uri
from sweeps.cli import app
from sweeps.cli._options import (
    TRACKING_URI_HELP,
    Address,
    fail,
    print_note,
    usable_tracking_uri,
    wrong_kind_hint,
)
from sweeps.spec import SpecError, Suite, load_suite
from sweeps.spec._redact import redact_text
from sweeps.spec._suite import DEFAULT_BASELINE_NIGHTS

if TYPE_CHECKING:  # Ray, MLflow and torch load when the command runs, not for --help
    from sweeps.nightly import NightResult

# Checked first thing in the command: an unreachable store is a failed night (exit 3, with a
# FAILED report in --report-dir), not bad input; a refused URI is bad input (exit 2, and a FAILED
# report replaces the last night's).
NightlyTrackingUri = Annotated[str | None, typer.Option("--tracking-uri", help=TRACKING_URI_HELP)]


@app.command("nightly")
def nightly_command(
    suite: Annotated[Path, typer.Argument(help="The suite file, e.g. sweeps/specs/nightly.yaml.")],
    address: Address = None,
    tracking_uri: NightlyTrackingUri = None,
    baseline_nights: Annotated[
        int,
        typer.Option("--baseline-nights", min=1, help="Earlier completed nights in the median."),
    ] = DEFAULT_BASELINE_NIGHTS,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override one entry's spec: ENTRY.key.path=VALUE, e.g. "
            "--set 'digits-cnn-one-cycle.strategies.1={kind: fixed, lr: 2.0}'; ENTRY * is "
            "every entry. Repeatable. A night with --set (other than storage) is a what-if: "
            "recorded and judged, never part of a later baseline.",
        ),
    ] = None,
    report_dir: Annotated[
        Path, typer.Option("--report-dir", help="Where nightly-report.md/.html and trends/ go.")
    ] = Path("nightly-report"),
) -> None:
    """Run the suite's specs and compare each headline figure with earlier nights.

    Every spec of SUITE runs; each figure is compared with the median of earlier nights; the
    report is written and logged. Exit 0 (passed), 1 (regressed), 2 (bad input) or 3 (failed)."""
    from mlflow.exceptions import MlflowException

    from sweeps._interrupts import honour_sigint
    from sweeps.nightly import EXIT_BAD_INPUT, EXIT_FAILED, ReportDirError, run_nightly

    err = Console(stderr=True, soft_wrap=True)
    honour_sigint()  # a script's `&` job starts with SIGINT ignored
    tracking_uri = _usable_store(tracking_uri, suite, overrides or [], report_dir)
    loaded = _loaded_suite(suite, overrides or [], report_dir, err)
    try:
        night = run_nightly(
            loaded,
            address=address,
            tracking_uri=tracking_uri,
            baseline_nights=baseline_nights,
            report_dir=report_dir,
            on_note=print_note,  # as `lrsweep validate --suite` prints them
        )
    except ReportDirError as error:  # found before anything ran: bad input
        err.print(f"Error: --report-dir {report_dir}: {error}", markup=False, highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (MlflowException, OSError) as error:
        err.print(f"Error: the night could not run: {error}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    except (KeyboardInterrupt, SystemExit):  # outside a sweep (a sweep's own Ctrl-C ends as a
        # failed night); SystemExit: Ray's SIGTERM handler, while a sweep starts Ray
        _print_interrupted(err, suite)
        raise typer.Exit(EXIT_FAILED) from None
    except Exception as error:  # any crash is a failed night (exit 3), never "regressed" (1)
        err.print_exception()
        err.print(f"Error: the night crashed: {error!r}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    _print_night(night)
    raise typer.Exit(night.exit_code)


def _loaded_suite(suite: Path, overrides: list[str], report_dir: Path, err: Console) -> Suite:
    """The suite with its overrides; if invalid, say so, leave a FAILED report and exit 2."""
    from sweeps.nightly import EXIT_BAD_INPUT, report_night_not_run

    try:
        return load_suite(suite, overrides=overrides)
    except SpecError as error:
        hint = wrong_kind_hint(error, suite, expected="suite")
        err.print(f"Error: {error}{hint}", markup=False, highlight=False)
        reason = f"invalid suite or --set: {error}"
        report_night_not_run(_suite_name(suite, []), report_dir, reason, only_replacing=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _print_interrupted(err: Console, suite: Path) -> None:
    """Print on ``err`` that the night was interrupted, and the command that runs it again."""
    err.print(
        "Error: the night was interrupted (Ctrl-C or SIGTERM) and is recorded as failed. "
        f"Run it again with: lrsweep nightly {shlex.quote(str(suite))} (`lrsweep resume` "
        "would finish the stopped entry's sweep, not the night).",
        markup=False,
        highlight=False,
    )


def _usable_store(
    tracking_uri: str | None, suite: Path, overrides: list[str], report_dir: Path
) -> str | None:
    """``--tracking-uri`` checked as every command checks it, before anything else (None: the
    fallbacks apply).

    A refused URI (a password, a file store, ``sqlite://x.db``: exit 2) replaces an earlier
    night's report in ``report_dir`` with a FAILED one, as an invalid suite does; a store that
    does not answer, or a check that fails in a way nobody foresaw, leaves a FAILED report
    before exiting 3 (never 1, which means "regressed").
    """
    from sweeps.nightly import EXIT_FAILED, report_night_not_run

    given = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "(embedded)"
    try:
        checked_tracking_uri(tracking_uri)
    except TrackingUriError as error:  # its message names the source and shows no password
        reason = f"the tracking URI was refused: {error} No sweep ran."
        report_night_not_run(_suite_name(suite, overrides), report_dir, reason, only_replacing=True)
        raise fail(error) from None
    try:
        uri = usable_tracking_uri(tracking_uri, unreachable_exit=EXIT_FAILED)
    except typer.Exit as stop:
        if stop.exit_code == EXIT_FAILED:
            reason = f"the tracking store {redact_uri(given)} could not be reached; no sweep ran"
            report_night_not_run(_suite_name(suite, overrides), report_dir, reason)
        raise
    except Exception as error:  # an unforeseen failure of the check: a failed night, not 1
        why = redact_text(f"{type(error).__name__}: {error}")
        problem = f"the tracking store {redact_uri(given)} could not be checked ({why})"
        report_night_not_run(_suite_name(suite, overrides), report_dir, f"{problem}; no sweep ran")
        raise fail(f"{problem}; the night could not run.", code=EXIT_FAILED) from None
    return uri if tracking_uri else None


def _suite_name(suite: Path, overrides: list[str]) -> str:
    """The suite's name for a report of a night that did not run (the file's stem when the
    suite cannot be loaded)."""
    for given in (overrides, []):  # a bad --set: the suite file's own name
        try:
            return load_suite(suite, overrides=given).name
        except SpecError:
            continue
    return suite.stem


def _print_night(night: NightResult) -> None:
    from sweeps.nightly import Status

    styles = {
        Status.REGRESSED: "bold red",
        Status.IMPROVED: "green",
        Status.NO_BASELINE: "yellow",
        Status.MISSING: "dim",
    }
    console = Console(soft_wrap=True)
    if not console.is_terminal:  # a log or a pipe: keep every cell whole
        console = Console(soft_wrap=True, width=200)
    table = Table(title=f"nightly {night.suite}: tonight against the baseline")
    columns = ("spec", "figure", "strategy", "baseline", "machine x", "tonight", "limit", "status")
    for column in columns:
        table.add_column(column, justify="right" if column in ("baseline", "tonight") else "left")
    for c in night.verdict.comparisons:  # a scaled time figure: raw baseline, factor, its limit
        raw = c.scaling.raw_baseline if c.scaling else c.baseline
        factor = f"x{c.scaling.factor:.3g}" if c.scaling else ""
        cells = [c.entry, c.name, c.strategy or "", _num(raw), factor, _num(c.value)]
        cells += [_num(c.limit), c.status.value]
        table.add_row(*cells, style=styles.get(c.status))
    console.print(table)
    for line in night.verdict.failures:
        console.print(f"failed: {line}", markup=False, highlight=False, style="bold red")
    for comparison in night.verdict.regressions:
        console.print(f"regression: {comparison.describe()}", markup=False, highlight=False)
    for comparison in night.verdict.improvements:
        console.print(f"improvement: {comparison.describe()}", markup=False, highlight=False)
    for note in night.notes:  # a spec or the environment changed since baseline nights
        console.print(f"note: {note}", markup=False, highlight=False)
    if night.overrides:
        kind = "What-if night (never part of a baseline)" if night.what_if else "Night"
        shown = ", ".join(night.overrides)
        console.print(f"{kind} run with --set {shown}", markup=False, highlight=False)
    console.print(night.verdict.summary(), markup=False, highlight=False, style="bold")
    console.print(
        f"report: {night.report.html} (and {night.report.markdown.name}); MLflow: experiment "
        f"{night.experiment}, run {night.night_run_id} in {night.tracking_uri}",
        markup=False,
        highlight=False,
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
