"""``lrsweep report``: recompute a sweep's comparison from MLflow and print or save it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sweeps.cli import app
from sweeps.cli._options import TrackingUri
from sweeps.cli._run import fail, make_console, print_report
from sweeps.report import build_report


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
) -> None:
    """Print the strategy comparison of a sweep, read from MLflow alone."""
    try:
        report = build_report(
            experiment, parent_run_id=run_id, tracking_uri=tracking_uri, figures_dir=out
        )
    except LookupError as error:
        raise fail(error) from None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(report.to_markdown(), encoding="utf-8")
        (out / "report.html").write_text(report.to_html(), encoding="utf-8")
        (out / "results.csv").write_text(report.results_csv(), encoding="utf-8")
        (out / "trials.csv").write_text(report.trials_csv(), encoding="utf-8")
    print_report(make_console(), report)
