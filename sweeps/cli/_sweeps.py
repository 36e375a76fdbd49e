"""``lrsweep sweeps``: the sweep runs of an experiment, the run ids the other commands take."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sweeps.cli import app
from sweeps.cli._options import Experiment, TextOrJson, TrackingUri, fail


@app.command("sweeps")
def sweeps_command(
    experiment: Experiment,
    tracking_uri: TrackingUri = None,
    output_format: Annotated[
        TextOrJson, typer.Option("--format", help="text (a table) | json (a list of objects).")
    ] = TextOrJson.text,
) -> None:
    """List the sweep runs of an experiment, latest first, with their trials and best loss.

    Each run id is what ``--run-id`` of ``lrsweep best``, ``report`` and ``predict`` takes."""
    from sweeps.best import BestConfigError, sweep_runs  # MLflow loads only when used

    try:
        found = sweep_runs(experiment, tracking_uri=tracking_uri)
    except BestConfigError as error:
        raise fail(error) from None
    if output_format is TextOrJson.json:
        typer.echo(json.dumps([summary.to_dict() for summary in found], indent=2))
        return
    if not found:
        typer.echo(f"Experiment {experiment!r} has no sweep run.{_below(experiment, tracking_uri)}")
        return
    header = ("run id", "started (UTC)", "status", "trials", "best valid_loss", "data")
    rows = [header]
    for summary in found:
        counts = ", ".join(f"{n} {status.lower()}" for status, n in summary.trials.items())
        loss = "-" if summary.best_valid_loss is None else f"{summary.best_valid_loss:.4g}"
        data = " ".join(
            f"{key.removeprefix('task.dataset.')}={value}" for key, value in summary.data.items()
        )
        rows.append((summary.run_id, summary.started, summary.status, counts or "none", loss, data))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, row[-1]]).rstrip())


def _below(experiment: str, tracking_uri: str | None) -> str:
    """`` Its sweeps are in the experiments [...]`` for a nightly suite's own experiment
    (``nightly/<suite>`` holds the nights; each entry's sweeps are in ``nightly/<suite>/<entry>``),
    as ``lrsweep report`` and ``best`` say it; else ''."""
    from sweeps.report import sweeps_below_hint
    from sweeps.tracking import Tracker, existing_store_uri

    return sweeps_below_hint(Tracker(existing_store_uri(tracking_uri)), experiment)
