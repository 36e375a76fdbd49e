"""``lrsweep best``: the best trial's config, metrics, run id and model URI, from MLflow."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

import typer

from sweeps.cli import app
from sweeps.cli._options import BestMetric, BestStrategy, Experiment, SweepRunId, TrackingUri


class Format(StrEnum):
    """Output formats of ``lrsweep best``."""

    json = "json"
    yaml = "yaml"
    spec = "spec"


class Mode(StrEnum):
    """Whether the metric is minimised or maximised."""

    min = "min"
    max = "max"


@app.command("best")
def best_command(
    experiment: Experiment,
    strategy: BestStrategy = None,
    metric: BestMetric = "valid_loss",
    mode: Annotated[
        Mode | None,
        typer.Option("--mode", help="min or max. Default: max for accuracy, min for the others."),
    ] = None,
    output_format: Annotated[
        Format, typer.Option("--format", help="json | yaml | spec (a spec that re-runs the trial).")
    ] = Format.json,
    tracking_uri: TrackingUri = None,
    run_id: SweepRunId = None,
) -> None:
    """Print the best trial of a sweep, read from MLflow (works from any machine)."""
    from sweeps.best import BestConfigError, best_config  # MLflow loads only when used

    # No "Downloading artifacts" progress bar on stderr for the one small spec.yaml read back.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        best = best_config(
            experiment,
            metric=metric,
            mode=None if mode is None else ("max" if mode is Mode.max else "min"),
            strategy=strategy,
            tracking_uri=tracking_uri,
            parent_run_id=run_id,
        )
        render = {Format.json: best.to_json, Format.yaml: best.to_yaml, Format.spec: best.to_spec}
        text = render[output_format]()
    except BestConfigError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(text.rstrip("\n"))
