"""``lrsweep report``: recompute a sweep's comparison from MLflow and print or save it."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sweeps._uri import command_uri
from sweeps.cli import app
from sweeps.cli._options import TextOrJson, TrackingUri
from sweeps.cli._run import fail, make_console, print_report

if TYPE_CHECKING:
    from sweeps.report import Report


@app.command("report")
def report_command(
    experiment: Annotated[str, typer.Argument(help="The sweep's experiment name.")],
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="The sweep's parent run (default: latest).")
    ] = None,
    tracking_uri: TrackingUri = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Also write report.md, report.html, CSVs and PNGs here."),
    ] = None,
    output_format: Annotated[
        TextOrJson,
        typer.Option("--format", help="text (tables) | json (one object: both tables, status)."),
    ] = TextOrJson.text,
) -> None:
    """Print the strategy comparison of a sweep, read from MLflow alone.

    ``--format json`` prints one object: ``experiment``, ``parent_run_id``, ``status`` (the
    sweep run's), ``note`` (why the tables are incomplete, or null), ``other_sweeps``,
    ``trials_by_status``, and ``groups`` and ``trials``, the rows of results.csv and trials.csv
    keyed by their columns (null where a table shows "-")."""
    from sweeps.report import build_report  # MLflow and the figures load only when used

    try:
        report = build_report(
            experiment, parent_run_id=run_id, tracking_uri=tracking_uri, figures_dir=out
        )
    except LookupError as error:
        raise fail(error) from None
    except OSError as error:  # the figures are drawn into --out
        if out is None or not _concerns(error, out):
            raise
        raise fail(_out_error(out, error)) from None
    if out is not None:
        try:
            _write_documents(report, out)
        except OSError as error:
            raise fail(_out_error(out, error)) from None
    if output_format is TextOrJson.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    console = make_console()
    if report.status_note:  # above the tables, as in report.md / report.html
        # soft_wrap: no line break of rich's inside the command it gives, which is copied
        console.print(
            report.status_note, markup=False, highlight=False, style="bold", soft_wrap=True
        )
    print_report(console, report)
    others = report.other_sweeps
    if report.no_trials:  # said by print_report; where to look instead
        if others:
            command = f"lrsweep sweeps {shlex.quote(experiment)}"
            if tracking_uri:
                command += f" --tracking-uri {shlex.quote(command_uri(tracking_uri))}"
            console.print(
                f"The experiment has {others} other sweep run(s): `{command}` lists them with "
                "their trials; pick one with --run-id.",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        return
    console.print(
        f"{len(report.trials)} trial{'s' if len(report.trials) != 1 else ''} of sweep run "
        f"{report.parent_run_id} of experiment "
        f"{experiment!r}"
        + (
            f" (the latest with a trial run; {others} other sweep run(s): pick one with --run-id)."
            if others and not run_id
            else "."
        ),
        markup=False,
        highlight=False,
    )


def _write_documents(report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report.to_markdown(), encoding="utf-8")
    (out / "report.html").write_text(report.to_html(), encoding="utf-8")
    (out / "results.csv").write_text(report.results_csv(), encoding="utf-8")
    (out / "trials.csv").write_text(report.trials_csv(), encoding="utf-8")


def _concerns(error: OSError, out: Path) -> bool:
    """Whether ``error`` is about ``out``, a folder above it or a file in it."""
    target = Path(os.path.abspath(out))
    for name in (error.filename, error.filename2):
        if name is not None:
            path = Path(os.path.abspath(os.fsdecode(name)))
            if path == target or path in target.parents or target in path.parents:
                return True
    return False


def _out_error(out: Path, error: OSError) -> str:
    existing = next((path for path in (out, *out.parents) if path.exists()), None)
    if existing is not None and not existing.is_dir():
        reason = f"'{existing}' exists and is not a folder"
    else:
        where = f" ({error.filename})" if error.filename is not None else ""
        reason = f"{error.strerror or error}{where}"
    return (
        f"cannot write the report to --out '{out}': {reason}. Pass --out a folder you can "
        "write to (it is created if missing)."
    )
