"""Regenerate the experiments behind ``trainers.diagnose``'s default thresholds.

Trains the small CNN on ``digits`` and ``shapes`` at learning rates from 1e-5 to 3 and for 1 to
30 epochs, each run set up to show one fast.ai failure (or none), and writes every run's
per-epoch history with its label to ``tests/trainers/data/diagnose_thresholds.json``.
``tests/trainers/test_diagnose.py`` checks that ``diagnose``'s defaults label every recorded
run as the experiment intended.

How the labels are set: the valley suggestion of an ``lr_find`` on these models is about 2e-3.
``lr_too_high`` runs use 50-1500x that; ``lr_too_low`` runs 60-200x less, for many epochs;
``too_few_epochs`` runs use a good rate for 1-3 epochs (the same runs continued reach a far lower
validation loss); ``overfitting`` runs train long without weight decay on a small training split
(their validation loss rises while the training loss falls); ``ok`` runs are one-cycle at a good
rate for enough epochs, or a long constant-rate run that converged to a flat validation loss.
The file also records the thresholds and each run's measurements at generation time, to show
the margins. Runtime: about 3.5 CPU-minutes (8 minutes of wall time on 2 shared cores).

Usage:
    python scripts/diagnose_evidence.py [--out tests/trainers/data/diagnose_thresholds.json]
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers.data import make_dataloaders
from trainers.diagnose import diagnose
from trainers.learner import Learner
from trainers.models import build_model
from trainers.seeding import seed_everything

logger = logging.getLogger("diagnose_evidence")

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests/trainers/data/diagnose_thresholds.json"
KEYS = ("epoch", "train_loss", "valid_loss", "error_rate")


@dataclass(frozen=True)
class Experiment:
    """One training run and the label it was designed to show."""

    name: str
    label: str
    dataset: str
    schedule: str  # "fit" (constant rate) or "one_cycle"
    lr: float
    epochs: int
    wd: float = 0.01
    valid_pct: float = 0.2
    data_kwargs: dict[str, Any] = field(default_factory=dict)


SHAPES = {"n_per_class": 100, "n_classes": 3}
EXPERIMENTS = (
    Experiment("digits_fit_lr1", "lr_too_high", "digits", "fit", 1.0, 6),
    Experiment("digits_fit_lr0.3", "lr_too_high", "digits", "fit", 0.3, 6),
    Experiment("digits_fit_lr0.1", "lr_too_high", "digits", "fit", 0.1, 5),
    Experiment("digits_one_cycle_lr3", "lr_too_high", "digits", "one_cycle", 3.0, 6),
    Experiment("digits_one_cycle_lr0.3", "lr_too_high", "digits", "one_cycle", 0.3, 5),
    Experiment("shapes_fit_lr1", "lr_too_high", "shapes", "fit", 1.0, 6, data_kwargs=SHAPES),
    Experiment("digits_fit_lr1e-5", "lr_too_low", "digits", "fit", 1e-5, 12),
    Experiment("digits_fit_lr3e-5", "lr_too_low", "digits", "fit", 3e-5, 8),
    Experiment("digits_one_cycle_lr3e-5", "lr_too_low", "digits", "one_cycle", 3e-5, 12),
    Experiment("digits_fit_1ep", "too_few_epochs", "digits", "fit", 2e-3, 1),
    Experiment("digits_fit_2ep", "too_few_epochs", "digits", "fit", 1e-3, 2),
    Experiment("digits_fit_3ep_lr3e-4", "too_few_epochs", "digits", "fit", 3e-4, 3),
    Experiment("digits_one_cycle_2ep", "too_few_epochs", "digits", "one_cycle", 2e-3, 2),
    # 25 constant-rate epochs on 30% of digits: best valid loss at epoch 20, then +32%
    Experiment(
        "digits_fit_25ep_small", "overfitting", "digits", "fit", 3e-3, 25, wd=0.0, valid_pct=0.7
    ),
    # simple_cnn memorises 240 shapes images at 16 px and never generalises: valid loss rises
    Experiment(
        "shapes_fit_30ep", "overfitting", "shapes", "fit", 3e-3, 30, wd=0.0, data_kwargs=SHAPES
    ),
    Experiment(
        "shapes_one_cycle_10ep", "overfitting", "shapes", "one_cycle", 3e-3, 10, data_kwargs=SHAPES
    ),
    Experiment("digits_one_cycle_8ep", "ok", "digits", "one_cycle", 2e-3, 8),
    Experiment("digits_one_cycle_5ep_lr1e-2", "ok", "digits", "one_cycle", 1e-2, 5),
    # 180 training images, 3 batches an epoch: converges to a flat validation loss
    Experiment("digits_fit_tiny_30ep", "ok", "digits", "fit", 1e-3, 30, wd=0.0, valid_pct=0.9),
)


def run(exp: Experiment, *, seed: int = 0) -> list[dict[str, Any]]:
    """Train one experiment and return its history (rounded, only the keys diagnose reads)."""
    dls = make_dataloaders(
        exp.dataset,
        image_size=16,
        batch_size=64,
        valid_pct=exp.valid_pct,
        seed=seed,
        **exp.data_kwargs,
    )
    seed_everything(seed)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    learn = Learner(model, dls, wd=exp.wd, seed=seed, progress=False)
    if exp.schedule == "fit":
        learn.fit(exp.epochs, exp.lr)
    else:
        learn.fit_one_cycle(exp.epochs, exp.lr)
    return [{k: _round(rec[k]) for k in KEYS} for rec in learn.history]


def _round(value: Any) -> Any:
    """Six decimals for finite floats; None for NaN/inf (strict JSON)."""
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def _rounded(evidence: dict[str, Any]) -> dict[str, Any]:
    return {k: _round(v) for k, v in evidence.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = []
    mismatches = 0
    for exp in EXPERIMENTS:
        start = time.perf_counter()
        history = run(exp)
        found = diagnose(history)
        logger.info(
            "%-28s %-15s -> %-15s %5.1fs  %s",
            exp.name,
            exp.label,
            found.label,
            time.perf_counter() - start,
            found.reason,
        )
        mismatches += found.label != exp.label
        runs.append({**exp.__dict__, "history": history, "evidence": _rounded(found.evidence)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    thresholds = {
        name: p.default
        for name, p in inspect.signature(diagnose).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not None  # not start_loss
    }
    payload = {"generated_by": "scripts/diagnose_evidence.py", "thresholds": thresholds}
    text = json.dumps({**payload, "runs": runs}, indent=1, allow_nan=False)
    args.out.write_text(text + "\n", encoding="utf-8")
    logger.info(
        "wrote %d runs to %s; %d labelled otherwise by the defaults",
        len(runs),
        args.out,
        mismatches,
    )


if __name__ == "__main__":
    main()
