"""A trial's training (``sweeps._fitting.train``, as ``sweeps.trial`` builds its Learner) for
every optimizer a spec can name, plain and fine-tuned; no Ray, no MLflow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sweeps import trial
from sweeps._fitting import train
from sweeps.spec import load_spec
from trainers import Learner

DIGITS = Path(__file__).resolve().parents[2] / "sweeps" / "specs" / "digits.yaml"


def _trained(overrides: list[str]) -> Learner:
    """digits.yaml's task, fine-tuned 1 + 1 epochs at 8 px with ``overrides``, trained as a
    trial of seed 0 trains it."""
    fine_tune = ["task.fine_tune.freeze_epochs=1", "task.epochs=2", "task.image_size=8"]
    task = load_spec(DIGITS, overrides=[*fine_tune, *overrides]).task
    learn = trial._learner(task, trial._dataloaders(task, 0), 0)
    train(learn, task, 1e-2)
    return learn


@pytest.mark.parametrize("wd_bn_bias", ["false", "true"])
@pytest.mark.parametrize("opt", ["adamw", "adam", "sgd"])
def test_every_optimizer_fine_tunes_a_spec_task_through_both_phases(
    opt: str, wd_bn_bias: str
) -> None:
    """``task.fine_tune`` trains the body's normalization layers while it is frozen, then
    everything: with ``opt: sgd`` and ``wd_bn_bias: true`` the unfrozen phase used to raise
    PyTorch's ``TypeError`` from its fused SGD (every trial of such a sweep failed)."""
    learn = _trained([f"task.opt={opt}", f"task.wd_bn_bias={wd_bn_bias}"])
    assert [row.get("phase") for row in learn.history] == ["frozen", "unfrozen"]
    assert all(math.isfinite(row["valid_loss"]) for row in learn.history)
    assert all(group["fused"] is True for group in learn.opt.param_groups)


@pytest.mark.parametrize(
    ("overrides", "ratios"),
    [
        ([], "0.1,0.316,1"),  # the spec's lr_mult 10 over simple_cnn's three layer groups
        (["task.fine_tune.lr_mult=100"], "0.01,0.1,1"),  # fastai's fine_tune
        (["task.fine_tune=null"], "1,1,1"),
    ],
)
def test_the_body_rates_a_trial_trained_at_are_given_beside_its_top_groups(
    overrides: list[str], ratios: str
) -> None:
    """The per-step lr is the top group's: nothing on a run showed a fine-tune's discriminative
    rates (a user could not see that lr_mult was 10, not fastai's 100)."""
    assert trial.lr_group_ratios(_trained(overrides)) == ratios
