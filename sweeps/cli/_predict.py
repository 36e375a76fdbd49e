"""``lrsweep predict``: the best trial's model on image files, read from MLflow."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sweeps.cli import app
from sweeps.cli._options import (
    BestMetric,
    BestStrategy,
    Experiment,
    SweepRunId,
    TrackingUri,
    fail,
)


class Output(StrEnum):
    """Output formats of ``lrsweep predict``."""

    text = "text"
    json = "json"


@app.command("predict")
def predict_command(
    experiment: Experiment,
    images: Annotated[
        list[Path], typer.Argument(help="Image files (any size; resized as the trial's data).")
    ],
    strategy: BestStrategy = None,
    metric: BestMetric = "valid_loss",
    run_id: SweepRunId = None,
    top: Annotated[
        int, typer.Option("--top", min=1, help="How many classes to give per image.")
    ] = 1,
    output_format: Annotated[
        Output, typer.Option("--format", help="text (a line per image) | json.")
    ] = Output.text,
    tracking_uri: TrackingUri = None,
) -> None:
    """Classify IMAGES with the best trial's logged model (as lrsweep best picks it).

    Prints, per image, its most probable classes and their probabilities. The model takes the
    files as the trial's data were made: decoded, resized and normalised with the training
    images' statistics (sweeps.load_predictor)."""
    from sweeps.best import BestConfigError, best_config
    from sweeps.predictor import load_predictor

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    missing = [str(path) for path in images if not path.is_file()]
    if missing:
        raise fail(f"no such image file: {', '.join(missing)}.")
    try:
        best = best_config(
            experiment,
            metric=metric,
            strategy=strategy,
            tracking_uri=tracking_uri,
            parent_run_id=run_id,
        )
        if best.model_uri is None:
            raise BestConfigError(
                f"the best trial (run {best.run_id}) logged no model: its sweep ran with "
                "tracking.checkpoints: none."
            )
        predictor = load_predictor(best.model_uri, tracking_uri=tracking_uri, device="cpu")
        probabilities = predictor.predict([str(path) for path in images])
    except (BestConfigError, ValueError) as error:
        raise fail(error) from None
    k = min(top, predictor.n_classes)
    ranked: list[list[tuple[str, float]]] = []
    for probs in probabilities:
        values, indices = probs.topk(k)
        ranked.append(
            [(predictor.classes[int(i)], float(p)) for p, i in zip(values, indices, strict=True)]
        )
    if output_format is Output.json:
        rows = [
            {
                "image": str(path),
                "predictions": [{"class": c, "probability": round(p, 4)} for c, p in classes],
            }
            for path, classes in zip(images, ranked, strict=True)
        ]
        payload = {"model_uri": best.model_uri, "run_id": best.run_id, "images": rows}
        typer.echo(json.dumps(payload, indent=2))
        return
    chosen = f"model {best.model_uri} (arm {best.arm}, best/{best.metric} {best.value:.4g})"
    typer.echo(chosen, err=True)
    for path, classes in zip(images, ranked, strict=True):
        typer.echo(f"{path}: " + ", ".join(f"{c} {p:.3f}" for c, p in classes))
