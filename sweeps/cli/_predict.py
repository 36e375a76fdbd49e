"""``lrsweep predict``: a logged model on image files: the best trial's (as ``lrsweep best``
picks it), a trial run's (``--trial``), or one named by its MLflow URI or downloaded folder."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sweeps.cli import app
from sweeps.cli._options import (
    BestMetric,
    BestStrategy,
    SweepRunId,
    TextOrJson,
    TrackingUri,
    fail,
)

if TYPE_CHECKING:
    from trainers import Predictor


ExperimentOrModel = Annotated[
    str,
    typer.Argument(
        metavar="EXPERIMENT|MODEL",
        help="The sweep's experiment name (its best trial's model), or a model: "
        "runs:/<run id>/model, models:/<name>/<version> (or @<alias>), or a folder holding an "
        "MLmodel file (as mlflow artifacts download writes it; its path or file:// URI); a "
        "name that is both a model folder and an experiment is refused: give ./NAME for the "
        "folder. With --trial, leave it out (or give the trial's experiment).",
        show_default=False,
    ),
]
Trial = Annotated[
    str | None,
    typer.Option(
        "--trial",
        metavar="RUN_ID",
        help="Use this trial run's model (its MLflow run id, as lrsweep best, lrsweep sweeps "
        "or the MLflow UI show it).",
    ),
]
RANKING_OPTIONS = {"strategy": "--strategy", "metric": "--metric", "run_id": "--run-id"}
"""The options that pick the best trial of an experiment: nothing to pick once a model is named."""


@dataclass(frozen=True)
class Chosen:
    """The model ``lrsweep predict`` uses, as its output names it."""

    model_uri: str
    run_id: str | None
    note: str
    """What the text output adds in brackets (the arm and its loss, the run that logged it)."""


@app.command("predict")
def predict_command(
    ctx: typer.Context,
    experiment: ExperimentOrModel,
    images: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Image files (any size; resized as the trial's data).", show_default=False
        ),
    ] = None,
    strategy: BestStrategy = None,
    metric: BestMetric = "valid_loss",
    run_id: SweepRunId = None,
    trial: Trial = None,
    top: Annotated[
        int, typer.Option("--top", min=1, help="How many classes to give per image.")
    ] = 1,
    output_format: Annotated[
        TextOrJson, typer.Option("--format", help="text (a line per image) | json.")
    ] = TextOrJson.text,
    tracking_uri: TrackingUri = None,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle",
            help="Load a model logged without its weights-only export (by an lrsweep before "
            "2026-12-07), or whose export cannot be read, by unpickling it, which runs any code "
            "the file names: only for a store whose writers you trust.",
        ),
    ] = False,
) -> None:
    """Classify IMAGES with a logged model: a sweep's best trial's, a trial run's or a URI's.

    Prints, per image, its most probable classes and their probabilities, and which model gave
    them. The model takes the files as the trial's data were made: decoded, resized and
    normalised with the training images' statistics (sweeps.load_predictor), from the
    weights-only export each trial logs beside the model: nothing is unpickled. --strategy,
    --metric and --run-id pick the best trial of EXPERIMENT as lrsweep best does; a model URI,
    a model folder or --trial names the model itself and refuses them."""
    from sweeps.predictor import load_predictor

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    files = list(images or [])
    name: str | None = experiment
    if trial is not None and Path(experiment).is_file():  # --trial RUN_ID IMAGE...
        files.insert(0, Path(experiment))
        name = None
    if name is not None:
        _refuse_folder_and_experiment(name, tracking_uri)
    named = _named_model(name, trial)
    if named is not None:
        _refuse_ranking_options(ctx, named)
    _check_images(files, None if trial is None else name)
    if trial is not None:
        chosen = _chosen(partial(_trial, trial, name, tracking_uri), "--trial: ")
    elif named is not None:
        chosen = _chosen(partial(_by_reference, experiment, tracking_uri))
    else:
        best = partial(_best, experiment, strategy, metric, run_id, tracking_uri)
        chosen = _chosen(best, folder=experiment)
    try:
        predictor = load_predictor(
            chosen.model_uri, tracking_uri=tracking_uri, device="cpu", allow_pickle=allow_pickle
        )
        probabilities = predictor.predict([str(path) for path in files])
    except (LookupError, ValueError) as error:  # BestConfigError is a LookupError
        raise fail(error) from None
    _show(chosen, files, _ranked(predictor, probabilities, top), output_format)


def _chosen(choose: Callable[[], Chosen], prefix: str = "", *, folder: str = "") -> Chosen:
    """``choose()``, or exit 2 with its error after ``prefix``; an experiment that is also a
    ``folder`` of the working directory (one holding no model) is told apart."""
    from sweeps.best import BestConfigError
    from sweeps.predictor import model_folder_problem

    try:
        return choose()
    except BestConfigError as error:
        hint = ""
        if folder and Path(folder).is_dir():
            hint = f" ({folder} is a folder too, but no model: {model_folder_problem(folder)})"
        raise fail(f"{prefix}{error}{hint}") from None


def _refuse_folder_and_experiment(name: str, tracking_uri: str | None) -> None:
    """Exit 2 when ``name`` is both a model folder (one holding ``MLmodel``) and a live
    experiment of the store: which of the two is meant cannot be told, so neither is guessed.
    The message gives a form of each that is no longer both."""
    from sweeps.predictor import MODEL_FILE, experiment_store

    if ":/" in name or not (Path(name) / MODEL_FILE).is_file():
        return
    store = experiment_store(name, tracking_uri=tracking_uri)
    if store is None:
        return
    relative = not (name.startswith("./") or os.path.isabs(name))
    folder = f"./{name}" if relative else f"{name.rstrip('/')}/."
    raise fail(
        f"{name} is both a model folder (it holds {MODEL_FILE}) and an experiment of {store}; "
        f"give {folder} for the folder, or, for the sweep, one of its trials' models: --trial "
        f"RUN_ID or runs:/RUN_ID/model (lrsweep best {name} names its best trial's run id)."
    )


def _named_model(name: str | None, trial: str | None) -> str | None:
    """How the command line names the model itself (``--trial``, a model URI or folder, shown
    without credentials), or None when it leaves the pick to the best trial of experiment
    ``name``."""
    from sweeps._uri import redact_uri
    from sweeps.predictor import is_model_reference

    reference = name is not None and is_model_reference(name)
    if trial is not None and reference:
        raise fail(f"--trial and {redact_uri(str(name))} both name a model: give one of them.")
    if trial is not None:
        return "--trial"
    return redact_uri(str(name)) if reference else None


def _refuse_ranking_options(ctx: typer.Context, named: str) -> None:
    """Exit 2 naming each of --strategy, --metric and --run-id given: they pick among an
    experiment's trials, and ``named`` leaves nothing to pick. Typed on the command line counts,
    ``--metric valid_loss`` too (its default); the source is read by name, as Typer ships its
    own copy of click's ``ParameterSource``."""
    given = [
        flag
        for parameter, flag in RANKING_OPTIONS.items()
        if getattr(ctx.get_parameter_source(parameter), "name", None) == "COMMANDLINE"
    ]
    if given:
        verb, them = ("picks", "it") if len(given) == 1 else ("pick", "them")
        raise fail(
            f"{' and '.join(given)} {verb} the best trial of an experiment, but {named} already "
            f"names the model: leave {them} out."
        )


def _check_images(files: list[Path], taken_for_experiment: str | None) -> None:
    """Exit 2 when no image is given, or one is no file. ``taken_for_experiment``: the first
    argument, with --trial, when it is no file (so not taken for an image)."""
    if not files:
        nor = f" ({taken_for_experiment} is no file)" if taken_for_experiment else ""
        raise fail(
            f"no image files given{nor}: lrsweep predict EXPERIMENT|MODEL IMAGE... (with "
            "--trial: lrsweep predict --trial RUN_ID IMAGE...)."
        )
    folders = [path for path in files if path.is_dir()]
    if folders:
        empty = [str(path) for path in folders if not any(path.iterdir())]
        said = f" ({', '.join(empty)}: empty)" if empty else ""
        raise fail(
            f"{', '.join(map(str, folders))} is a folder, not an image file{said}: give the "
            f"image files in it (e.g. {folders[0] / '*.png'})."
        )
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise fail(f"no such image file: {', '.join(missing)}.")


def _best(
    experiment: str, strategy: str | None, metric: str, run_id: str | None, uri: str | None
) -> Chosen:
    """The best trial's model, as ``lrsweep best`` picks the trial."""
    from sweeps.best import BestConfigError, best_config

    best = best_config(
        experiment, metric=metric, strategy=strategy, tracking_uri=uri, parent_run_id=run_id
    )
    if best.model_uri is None:
        raise BestConfigError(
            f"the best trial (run {best.run_id}) logged no model: its sweep ran with "
            "tracking.checkpoints: none."
        )
    note = f"arm {best.arm}, best/{best.metric} {best.value:.4g}"
    return Chosen(best.model_uri, best.run_id, note)


def _trial(run_id: str, experiment: str | None, uri: str | None) -> Chosen:
    """The model trial ``run_id`` logged (of ``experiment``, when given)."""
    from sweeps.predictor import trial_model

    found = trial_model(run_id, tracking_uri=uri, experiment=experiment)
    loss = "" if found.valid_loss is None else f", best/valid_loss {found.valid_loss:.4g}"
    note = f"trial of experiment {found.experiment!r}, arm {found.arm}{loss}"
    return Chosen(found.model_uri, found.run_id, note)


def _by_reference(model: str, uri: str | None) -> Chosen:
    """The model a URI or folder names, with the run that logged it (when its MLmodel says)."""
    from sweeps.predictor import model_run_id

    run = model_run_id(model, tracking_uri=uri)
    return Chosen(model, run, f"logged by run {run}" if run else "")


def _ranked(predictor: Predictor, probabilities: Any, top: int) -> list[list[tuple[str, float]]]:
    """Each image's ``top`` classes (as many as there are, at most) and their probabilities."""
    k = min(top, predictor.n_classes)
    ranked = []
    for probs in probabilities:
        values, indices = probs.topk(k)
        ranked.append(
            [(predictor.classes[int(i)], float(p)) for p, i in zip(values, indices, strict=True)]
        )
    return ranked


def _show(
    chosen: Chosen, files: list[Path], ranked: list[list[tuple[str, float]]], output: TextOrJson
) -> None:
    """The predictions on stdout (a line per image, or JSON naming the model); in text, the
    model on stderr, so the lines pipe on alone. A model URI is shown without its user."""
    from sweeps._uri import redact_uri

    model = redact_uri(chosen.model_uri)
    if output is TextOrJson.json:
        rows = [
            {
                "image": str(path),
                "predictions": [{"class": c, "probability": round(p, 4)} for c, p in classes],
            }
            for path, classes in zip(files, ranked, strict=True)
        ]
        payload = {"model_uri": model, "run_id": chosen.run_id, "images": rows}
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(f"model {model}" + (f" ({chosen.note})" if chosen.note else ""), err=True)
    for path, classes in zip(files, ranked, strict=True):
        typer.echo(f"{path}: " + ", ".join(f"{c} {p:.3f}" for c, p in classes))
