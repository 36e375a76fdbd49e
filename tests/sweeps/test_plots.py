"""The report's sweep-level figures, drawn from rows as the report builds them."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib.image
import pytest

from sweeps.plots import plot_comparison
from sweeps.report import TrialRow


def row(group: str, kind: str, lr: float, loss: float, seed: int = 0) -> TrialRow:
    return TrialRow(
        run_id=f"{group}-{seed}-{lr}",
        group=group,
        kind=kind,
        arm=kind,
        rule="valley" if kind == "lr_finder" else "",
        seed=seed,
        lr=lr,
        status="FINISHED",
        stop_reason="completed",
        best_epoch="3",
        diagnosis="good",
        best_valid_loss=loss,
        best_error_rate=0.1,
        epochs_run=4,
        compute_s=1.0,
    )


@pytest.mark.parametrize(
    ("trials", "curves"),
    [
        ([row("grid", "grid", 3e-3, 0.4, seed) for seed in range(3)], {}),  # one LR, every seed
        ([row("lr_finder:valley", "lr_finder", 1e-3, 0.5)], {}),
        (
            [row("grid", "grid", lr, 1.0 - lr) for lr in (1e-4, 1e-3, 1e-2)]
            + [row("lr_finder:valley", "lr_finder", 2e-3, 0.3)],
            {"seed 0": ([1e-7, 1e-5, 1e-3, 1e-1], [2.3, 2.2, 1.0, math.nan])},
        ),
        ([], {}),
    ],
    ids=["one-lr", "one-pick", "grid-and-finder", "empty"],
)
def test_comparison_figure_draws_without_warnings(
    trials: list[TrialRow], curves: dict[str, tuple[list[float], list[float]]], tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's singular-limits warning included
        path = plot_comparison(trials, curves, tmp_path / "comparison.png")
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (500, 800) and image.std() > 0  # 8 x 5 in at 100 dpi, not blank
