"""A trial's end on its child run: the best epoch's metrics, the params known only now (the
LR, the layer groups' ratios), the stop reason and the curve's diagnosis as tags, TTA of the best
weights, the figures (curves, confusion matrix) and the logged model with its weights-only export.

Called once per trial through ``EpochReporter.finish`` by :func:`sweeps.trial.train_trial`,
which re-exports ``finalize`` (as ``_finalize``), ``lr_group_ratios``, ``CONFUSION_FILE``,
``TTA_METRICS``, ``diagnose_trial`` (as ``_diagnose``) and ``one_size`` (as ``_one_size``).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sweeps import _fitting, _ray
from sweeps._reporter import TrialRecord, training_rows
from sweeps._trial_lr import recipe_unfrozen_lr
from sweeps._trial_run import log_new_params
from sweeps.predictor import predictor_files
from sweeps.tracking import Tracker
from trainers import Learner

logger = logging.getLogger("sweeps.trial")  # its messages, as before the split

CONFUSION_FILE = "confusion_matrix.json"
"""Child artifact: the best epoch's confusion counts, ``{"classes", "counts", "epoch"}``."""


def finalize(
    learn: Learner, record: TrialRecord, tracker: Tracker, spec: Any, *, reopened: bool = False
) -> None:
    """Best-epoch metrics, the stop reason, diagnosis and artifacts on the child run.

    In a reopened run the summary metrics and the model it holds already are kept, not logged
    again: a try killed after finalizing and before closing its run would otherwise leave two
    points each and a second logged model.
    """
    run_id, history = record.run_id, learn.history
    points = [(f"best/{k}", v, 0) for k, v in record.best.items() if math.isfinite(v)]
    points += [
        ("compute_s", record.compute_s(history), 0),
        ("epochs_run", float(len(training_rows(history))), 0),
    ]
    if record.lr_find is None:  # a finder trial logged its range test's seconds with its curve
        points.append(("lr_find_s", record.lr_find_s, 0))
    if reopened:
        held = tracker.get_run(run_id).data.metrics
        points = [point for point in points if point[0] not in held]
    tracker.log_metrics(run_id, points)
    params: dict[str, Any] = {"lr_group_ratios": lr_group_ratios(learn)}
    if math.isfinite(record.lr):
        params["lr"] = record.lr
    unfrozen = recipe_unfrozen_lr(history)  # a recipe's unfrozen SGDR runs at its second pick
    if math.isfinite(unfrozen):
        params["recipe_unfrozen_lr"] = unfrozen
    log_new_params(tracker, run_id, params)
    diagnosis = diagnose_trial(history, record, spec)
    tags = {
        "sweeps.stop_reason": record.stop_reason,
        "sweeps.best_epoch": "" if record.best_epoch is None else record.best_epoch,
        "sweeps.diagnosis": diagnosis[0],
        "sweeps.diagnosis_reason": diagnosis[1][:500],
        "sweeps.node": _ray.node_name(),
    }
    tracker.set_tags(run_id, tags)
    if record.best_state is not None:  # the figures and the logged model show the best epoch
        learn.model.load_state_dict(dict(record.best_state))
        if spec.task.tta is not None:
            _log_tta(learn, record, tracker, spec.task.tta, reopened=reopened)
    _log_figures(learn, record, tracker)
    best_state = record.best_state if spec.tracking.checkpoints != "none" else None
    if best_state is not None and not (reopened and tracker.has_model(run_id)):
        example = learn.dls.valid_images[:2].detach().cpu()
        with tempfile.TemporaryDirectory(prefix="lrsweep-export-") as folder:
            metadata, files = predictor_files(learn, Path(folder), log=logger)
            model = learn.model.cpu()
            tracker.log_pytorch_model(run_id, model, example, metadata, extra_files=files)


TTA_METRICS = ("valid_loss", "error_rate", "accuracy")
"""``learn.tta``'s results logged as ``best/tta_<name>`` (the best epoch's weights)."""


def _log_tta(
    learn: Learner, record: TrialRecord, tracker: Tracker, tta: Any, *, reopened: bool
) -> None:
    """``best/tta_valid_loss``, ``best/tta_error_rate`` and ``best/tta_accuracy``: the best
    epoch's weights under test-time augmentation (``task.tta``), beside its plain ``best/*``.
    Best effort, as the figures: a failure is a warning, not a failed trial."""
    try:
        result = learn.tta(tta.n, beta=tta.beta)
    except (ValueError, RuntimeError) as error:
        logger.warning("trial %s: TTA could not run: %s", record.run_id, error)
        return
    points = [(f"best/tta_{name}", float(result[name]), 0) for name in TTA_METRICS]
    if reopened:
        held = tracker.get_run(record.run_id).data.metrics
        points = [point for point in points if point[0] not in held]
    tracker.log_metrics(record.run_id, points)


def lr_group_ratios(learn: Learner) -> str:
    """Each layer group's rate over the top group's at the trial's last step, earliest first
    (``"0.1,0.316,1"``: a fine-tune's discriminative rates, ``lr_mult`` 10 over three groups).

    The per-step ``lr`` metric is the top group's; schedules scale every group together, so
    these ratios are what the body trained at, beside it. All 1 without discriminative rates.
    """
    rates = learn.group_lrs
    top = rates[-1]
    return ",".join(f"{rate / top:.3g}" if top > 0 else "nan" for rate in rates)


def diagnose_trial(
    history: list[dict[str, Any]], record: TrialRecord, spec: Any
) -> tuple[str, str]:
    """The trial's curve diagnosis, told what the curve alone cannot show: a trial stopped as
    ``diverged`` had a too high rate (the epoch that blew up may have no record, or the blow-up
    came within the first epoch, which then is no reference); its loss before the first step
    is the reference for an explosion; a trial ``early_stop`` ended has risen for ``patience``
    epochs, which is what ``overfitting`` then asks for (the rule's own 3 would never be met
    by a trial stopped after 2)."""
    from trainers.diagnose import diagnose

    if record.stop_reason == "diverged":
        return "lr_too_high", (
            "the trial diverged (its training loss turned non-finite or passed "
            "divergence.factor times its loss before the first step): lower the learning rate."
        )
    if not training_rows(history):
        return "no_epochs", "the trial ended before its first epoch finished"
    history = one_size(history, spec)
    options: dict[str, Any] = {"start_loss": record.start_loss}
    stop = getattr(spec, "early_stop", None)
    if record.stop_reason == "rising_val_loss" and stop is not None:
        options["rise_epochs"] = max(1, min(3, int(stop.patience)))
    try:
        found = diagnose(history, **options)
    except ValueError as error:  # e.g. every epoch cancelled before its losses were measured
        return "no_epochs", str(error)
    return str(found.label), str(found.reason)


def one_size(history: list[dict[str, Any]], spec: Any) -> list[dict[str, Any]]:
    """The epochs a curve diagnosis compares: with ``task.progressive_resizing``, the last run
    of two or more epochs at one image size (a loss that rises as the images grow is no sign of
    a too low rate or of overfitting); else, or when no size held two epochs, all of them."""
    resize = _fitting.resizer(spec.task) if hasattr(spec, "task") else None
    if resize is None:
        return history
    rows = training_rows(history)
    runs: list[list[dict[str, Any]]] = []
    for epoch, row in enumerate(rows):
        if runs and resize.size_at(epoch) == resize.size_at(epoch - 1):
            runs[-1].append(row)
        else:
            runs.append([row])
    return next((run for run in reversed(runs) if len(run) >= 2), history)


def _log_figures(learn: Learner, record: TrialRecord, tracker: Tracker) -> None:
    """``curves.png``, and the best epoch's confusion matrix (``confusion_matrix.png`` and its
    counts, ``confusion_matrix.json``); best effort.

    The counts are the ones the best epoch's validation produced (kept by the reporter), not a
    second pass over the validation set; a record without them (its best epoch validated
    before a restart from an older checkpoint) predicts again with the best weights, which
    ``finalize`` loaded.
    """
    from trainers import Interpretation
    from trainers.plots import plot_confusion_matrix, plot_curves

    with tempfile.TemporaryDirectory(prefix="lrsweep-") as tmp:
        folder = Path(tmp)
        try:
            if learn.history:
                tracker.log_artifact(
                    record.run_id, plot_curves(learn.history, folder / "curves.png")
                )
            n_classes = learn.dls.n_classes
            classes = [str(c) for c in getattr(learn.dls, "classes", range(n_classes))]
            if record.best_confusion is not None:
                counts = np.asarray(record.best_confusion, dtype=np.int64)
            elif record.best_state is not None:
                counts = Interpretation.from_learner(learn).confusion_matrix()
            else:
                return
            path = plot_confusion_matrix(counts, classes, folder / "confusion_matrix.png")
            tracker.log_artifact(record.run_id, path)
            table = {"classes": classes, "counts": counts.tolist(), "epoch": record.best_epoch}
            tracker.log_text(record.run_id, json.dumps(table), CONFUSION_FILE)
        except (ValueError, RuntimeError, OSError) as error:
            logger.warning("trial %s: a figure could not be drawn: %s", record.run_id, error)
