"""The report's sweep-level figures, drawn from rows as the report builds them."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import matplotlib.image
import pytest

from sweeps.plots import (
    clipped_limits,
    comparison_figure,
    plot_comparison,
    plot_sweep_curves,
    sweep_curves_figure,
)
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
        best_epoch=3,
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


def test_a_diverged_trial_clips_the_axis_to_the_others_and_no_other_case_does() -> None:
    good, blown = ([2.3, 0.9, 0.5], False), ([2.3, 40.0, 3.1e6], True)
    low, top, peak = clipped_limits([good, blown]) or (math.nan, math.nan, math.nan)
    assert 0.3 < low < 0.5 and 2.3 < top < 2.6 and peak == 3.1e6
    assert clipped_limits([good, ([2.3, 2.0, 1.9], False)]) is None  # nothing diverged
    assert clipped_limits([good, ([2.3, 2.2, 2.25], True)]) is None  # diverged below the rest
    assert clipped_limits([blown]) is None  # nothing left to show beside it
    assert clipped_limits([]) is None
    assert clipped_limits([([1.0], False), ([5.0], True)]) == (0.9, 1.1, 5.0)  # one point


def test_curves_with_a_diverged_trial_draw_without_warnings(tmp_path: Path) -> None:
    trials = [row("grid", "grid", lr, 0.5) for lr in (1e-3, 1e-2)]
    trials[1] = dataclasses.replace(trials[1], stop_reason="diverged")
    curves = {
        trials[0].run_id: [(0, 2.3), (1, 0.9), (2, 0.5)],
        trials[1].run_id: [(0, 2.3), (1, 4e6)],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = plot_sweep_curves(curves, trials, tmp_path / "curves.png")
    assert matplotlib.image.imread(path).std() > 0


def _texts(fig: object) -> str:
    """Every text written on ``fig`` or its axes."""
    inner = [t for ax in fig.axes for t in ax.texts]  # type: ignore[attr-defined]
    return " ".join(t.get_text() for t in [*fig.texts, *inner])  # type: ignore[attr-defined]


def test_a_diverged_trials_huge_best_loss_no_longer_flattens_the_comparison() -> None:
    """A `fixed` arm at lr 10 ended at 428898: the axis ran to 430,000 and every other point
    sat on its zero line."""
    trials = [row("grid", "grid", lr, 0.2 + lr) for lr in (1e-3, 1e-2, 1e-1)]
    trials.append(dataclasses.replace(row("huge", "fixed", 10.0, 428898.4), stop_reason="diverged"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = comparison_figure(trials, {})
    ax = fig.axes[0]
    low, top = ax.get_ylim()
    assert low < 0.2 and 0.3 < top < 0.4  # the grid's points fill the axis
    assert "a diverged trial's best loss reached 4.29e+05" in _texts(fig)
    tops = [c for c in ax.collections if c.get_offsets()[:, 0].tolist() == [10.0]]
    assert len(tops) == 1 and low < tops[0].get_offsets()[0, 1] <= top  # drawn, at the top
    calm = comparison_figure(trials[:3], {})  # nothing diverged: nothing clipped
    assert "clipped" not in _texts(calm) and calm.axes[0].get_ylim()[1] < 1


def test_a_comparison_whose_trials_have_no_finite_loss_says_so() -> None:
    """Every trial diverged in its first epoch (a grid at 1e3 and 1e4): the comparison was an
    empty axis from LR 1 to 10 with no word."""
    trials = [
        dataclasses.replace(row("grid", "grid", lr, math.nan), stop_reason="diverged")
        for lr in (1e3, 1e4)
    ]
    said = "2 trial(s) with no finite best validation loss (diverged, failed or unfinished)"
    assert said in _texts(comparison_figure(trials, {}))
    assert "finite" not in _texts(comparison_figure([row("grid", "grid", 1e-3, 0.5)], {}))


def test_a_panel_whose_trials_have_no_finite_loss_says_they_diverged() -> None:
    """Every loss NaN: the panel was an empty 0..1 axis with no word."""
    nan_arm = dataclasses.replace(row("nanarm", "fixed", 1000.0, math.nan), stop_reason="diverged")
    fine = row("grid", "grid", 1e-3, 0.5)
    curves = {nan_arm.run_id: [(0, math.nan)], fine.run_id: [(0, 2.3), (1, 0.5)]}
    fig = sweep_curves_figure(curves, [fine, nan_arm])
    texts = {ax.get_title(): " ".join(t.get_text() for t in ax.texts) for ax in fig.axes}
    assert texts["nanarm"] == "1 trial(s) diverged with no finite validation loss"
    assert texts["grid"] == ""
