"""``lrsweep run``: run a sweep, then print the comparison and how to browse the results."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sweeps._resume_command import left_running_note
from sweeps._uri import (
    TrackingUriError,
    command_uri,
    redact_uri,
    resolve_tracking_uri,
    sqlite_path,
)
from sweeps.cli import app
from sweeps.cli._options import (
    Address,
    fail,
    print_note,
    usable_tracking_uri,
    wrong_kind_hint,
)
from sweeps.spec import SpecError, load_spec
from sweeps.spec._overrides import shown_override

if TYPE_CHECKING:  # Ray, MLflow and torch load when a command runs a sweep, not for --help
    from sweeps.report import Report
    from sweeps.run import SweepResult

INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports Ctrl-C
TERMINATED_EXIT = 143  # 128 + SIGTERM
FAILED_EXIT = 1


def make_console() -> Console:
    """A console that does not squeeze the wide comparison table when output is piped."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


NARROW_COLUMNS = {
    "strategy": "strategy",
    "chosen LR (median)": "LR",
    "best valid loss": "valid loss",
    "error rate": "error",
    "error rate (TTA)": "TTA error",
    "regret (error pp)": "regret pp",
    "compute vs grid": "compute/grid",
}
"""The columns a terminal too narrow for the whole table keeps, with shorter headers."""


def print_report(console: Console, report: Report) -> None:
    """The strategy comparison as a rich table; in a terminal too narrow for it (the whole table
    needs ~165 columns), the columns that answer the question, headers shortened, instead of
    every cell cut to "…" (at 80 columns no number and no finder rule could be read). A sweep
    without a trial run gets a sentence that says so, not a table with no row."""
    from rich import box
    from rich.measure import Measurement

    if report.no_trials:
        console.print(report.no_trials, markup=False, highlight=False)
        return
    headers, rows = report.group_table()
    title = f"{report.experiment}: LR finder vs search (mean ± std over seeds)"
    table = _table(title, headers, rows)
    needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if needed <= console.width:
        console.print(table)
        return
    keep = [i for i, header in enumerate(headers) if header in NARROW_COLUMNS]
    cells = [[row[i] for i in keep] for row in rows]
    narrow = _table(title, [NARROW_COLUMNS[headers[i]] for i in keep], cells, box=box.SIMPLE_HEAD)
    spread = Measurement.get(console, console.options.update_width(10_000), narrow).maximum
    if spread > console.width:  # still too wide: the means alone (the ± spreads left out too)
        cells = [[cell.split(" ± ")[0] for cell in row] for row in cells]
        title = title.replace("mean ± std", "mean")
        narrow = _table(
            title, [NARROW_COLUMNS[headers[i]] for i in keep], cells, box=box.SIMPLE_HEAD
        )
    console.print(narrow)
    left_out = ", ".join(h for h in headers if h not in NARROW_COLUMNS)
    if spread > console.width:
        left_out += ", the spreads over seeds"
    # the report of another sweep than the latest needs its run id, else --out gets the latest
    which = f" --run-id {report.parent_run_id}" if report.other_sweeps else ""
    console.print(  # soft_wrap: the terminal wraps it, so the command copies whole
        f"(a narrow terminal: {left_out} left out; `lrsweep report "
        f"{shlex.quote(report.experiment)}{which} --out DIR` writes every column to report.md "
        "and results.csv)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _table(title: str, headers: Sequence[str], rows: list[list[str]], **kwargs: Any) -> Table:
    table = Table(title=title, **kwargs)
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index == 0 else "right", no_wrap=index == 0)
    for row in rows:
        table.add_row(*row)
    return table


def browse_hint(tracking_uri: str) -> str:
    """The command that shows this store in MLflow's UI (``--tracking-uri`` unless a plain
    ``lrsweep ui`` would open this very store); for a tracking server, its own address."""
    if tracking_uri.startswith(("http://", "https://")):  # a server serves its own UI:
        # `lrsweep ui` of it only said "open it in a browser"
        return f"Browse the runs: open {command_uri(tracking_uri)} in a browser"
    shown = shlex.quote(command_uri(tracking_uri))
    if sqlite_path(tracking_uri) is None:
        return f"Browse the runs: lrsweep ui --tracking-uri {shown}"
    if tracking_uri == resolve_tracking_uri():
        return f"Browse the runs: lrsweep ui   (or: mlflow ui --backend-store-uri {shown})"
    return (
        f"Browse the runs: lrsweep ui --tracking-uri {shown}   "
        f"(or: mlflow ui --backend-store-uri {shown})"
    )


def resume_hint(result: SweepResult) -> str:
    """The command that continues ``result``'s sweep (see :func:`sweeps.run.resume_hint`)."""
    from sweeps.run import resume_hint as run_resume_hint

    return run_resume_hint(result.name, result.sweep_dir, result.address)


def failures(result: SweepResult) -> list[str]:
    """One line per distinct error of the failed trials, with how many trials hit it."""
    counts: dict[str, list[str]] = {}
    for outcome in result.failed:
        counts.setdefault(outcome.error or "unknown error", []).append(outcome.trial_id)
    return [f"{len(ids)} trial(s) ({', '.join(ids[:4])}): {error}" for error, ids in counts.items()]


def rerun_hint(
    spec: Path | None,
    overrides: list[str] | None = None,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """The command that runs a fixed spec again (the spec file is a placeholder when unknown),
    with the ``--address`` and ``--tracking-uri`` it was given: without them, typed as printed,
    it ran on a Ray of its own and logged to the embedded store.

    A secret given with ``--set`` (a value under a ``*token*`` key, a password in a URL) shows as
    ``***``: the command is printed, and may end up in a log.
    """
    if spec is None:
        return "lrsweep run <your spec file>"
    args = ["lrsweep", "run", str(spec)]
    for override in overrides or []:
        args += ["--set", shown_override(override)]
    if address:
        args += ["--address", address]
    if tracking_uri:
        args += ["--tracking-uri", redact_uri(tracking_uri)]
    return shlex.join(args)


def stopped_exit(stop: KeyboardInterrupt) -> typer.Exit:
    """The exit of a sweep stopped outside its trials (it has closed its runs KILLED and, once
    resumable, logged how to resume): 143 for SIGTERM, 130 for Ctrl-C."""
    from sweeps._interrupts import Terminated  # imports Ray: only once a sweep has run

    return typer.Exit(TERMINATED_EXIT if isinstance(stop, Terminated) else INTERRUPTED_EXIT)


def finish(console: Console, result: SweepResult, *, rerun: str | None = None) -> None:
    """Print the outcome of a sweep (or how to resume it) and exit with its status.

    ``rerun`` is the command that runs a fixed spec again (printed when every trial failed:
    ``lrsweep resume`` retries the failed trials with the spec the sweep started with).
    Exit status: 0 done (failed trials, if some, listed on stderr), 1 every trial failed or
    every trial of an arm did (the report is printed, without that arm's numbers), 130 Ctrl-C,
    143 SIGTERM.
    """
    if result.interrupted:
        closed = (
            left_running_note(result.tracking_uri, resume_hint(result))
            if result.runs_left_running
            else f"Runs are closed as KILLED; continue it with: {resume_hint(result)}"
        )
        console.print(
            f"[yellow]Sweep {result.sweep_id} interrupted ({result.stop_signal}).[/] "
            f"{escape(closed)}",
            highlight=False,
            soft_wrap=True,  # the terminal wraps it: no line break inside the command to copy
        )
        raise typer.Exit(TERMINATED_EXIT if result.stop_signal == "SIGTERM" else INTERRUPTED_EXIT)
    if result.all_failed or result.report is None:
        _print_all_failed(result, rerun)
        raise typer.Exit(FAILED_EXIT)
    print_report(console, result.report)
    console.print(
        f"{result.n_trials} trial{'s' if result.n_trials != 1 else ''}; report on run "
        f"{result.parent_run_id} of experiment "
        f"{result.experiment!r}."
    )
    if result.failed:  # the table counts them (2/3); say which failed and why
        _warn_failed(result)
    console.print(browse_hint(result.tracking_uri), markup=False, highlight=False)
    if result.failed_arms:  # a comparison missing a contender is no answer: scripts must see it
        _print_failed_arms(result, rerun)
        raise typer.Exit(FAILED_EXIT)


def _print_all_failed(result: SweepResult, rerun: str | None) -> None:
    """Print on stderr that every trial failed, each distinct error, and the two ways on."""
    err = Console(stderr=True, soft_wrap=True)
    err.print(
        f"Error: every trial of sweep {result.sweep_id} failed; the parent run "
        f"{result.parent_run_id} is FAILED. First error of each:",
        markup=False,
        highlight=False,
    )
    for line in failures(result):
        err.print(f"  {line}", markup=False, highlight=False)
    err.print(
        "If the cause is outside the spec (a file, memory, a server), fix it, then retry "
        f"the failed trials with: {resume_hint(result)}",
        markup=False,
        highlight=False,
    )
    err.print(
        "If it is in the spec, fix the spec and run it again (resume keeps the spec the "
        f"sweep started with): {rerun or rerun_hint(None)}",
        markup=False,
        highlight=False,
    )


def _warn_failed(result: SweepResult) -> None:
    """Print on stderr which trials failed and why, and how to retry them when it can."""
    err = Console(stderr=True, soft_wrap=True)
    err.print(
        f"Warning: {len(result.failed)} of {result.n_trials} trials failed and are left out "
        "of the means above. First error of each:",
        markup=False,
        highlight=False,
    )
    for line in failures(result):
        err.print(f"  {line}", markup=False, highlight=False)
    if result.resumable and not result.failed_arms:  # else said with the exit (failed arms)
        err.print(
            f"The sweep stays resumable: fix the cause, then retry them with: "
            f"{resume_hint(result)}",
            markup=False,
            highlight=False,
        )


def _print_failed_arms(result: SweepResult, rerun: str | None) -> None:
    """Print on stderr the arms that lost every trial, and how to retry or rerun them."""
    names = ", ".join(repr(arm) for arm in result.failed_arms)
    then = (
        f"Fix the cause above, then retry its trials with: {resume_hint(result)}"
        if result.resumable
        else "Its trials failed for good (a resume would fail them again): fix what the "
        f"errors above name in the spec and run it again: {rerun or rerun_hint(None)}"
    )
    Console(stderr=True, soft_wrap=True).print(
        f"Error: every trial of arm {names} failed, so the comparison has no numbers for "
        f"it (exit {FAILED_EXIT}). {then}",
        markup=False,
        highlight=False,
    )


@app.command("run")
def run_command(
    spec: Annotated[Path, typer.Argument(help="The sweep spec YAML file.")],
    address: Address = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow store. Default: tracking.uri, MLFLOW_TRACKING_URI, else ./.lrsweep.",
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a spec field, e.g. --set task.epochs=3. Repeatable."),
    ] = None,
) -> None:
    """Run every strategy arm of SPEC on Ray Tune, log to MLflow and print the comparison.

    Before it starts, each note `lrsweep validate` prints (a setting that cannot work as meant,
    what the data's size makes pointless) is a `Note:` line on stderr."""
    from sweeps._interrupts import honour_sigint
    from sweeps.preflight import PreflightError
    from sweeps.run import run_sweep

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # without the live table (a pipe, a CI log) each finished trial is one line, as promised
    logging.getLogger("sweeps.progress").setLevel(logging.INFO)
    honour_sigint()  # a script's `&` job starts with SIGINT ignored
    try:
        loaded = load_spec(spec, overrides=overrides or [])
    except SpecError as error:
        raise fail(f"{error}{wrong_kind_hint(error, spec, expected='spec')}") from None
    except OSError as error:
        raise fail(error) from None
    # Before Ray starts or any run exists: a refused URI or a silent server ends it here.
    uri = usable_tracking_uri(tracking_uri, loaded.tracking.uri)
    try:
        result = run_sweep(loaded, address=address, tracking_uri=uri, on_note=print_note)
    except (SpecError, PreflightError, TrackingUriError, OSError) as error:
        raise fail(error) from None
    except KeyboardInterrupt as stop:  # outside the trials: runs closed, resume logged
        raise stopped_exit(stop) from None
    rerun = rerun_hint(spec, overrides, address=address, tracking_uri=tracking_uri)
    finish(make_console(), result, rerun=rerun)
