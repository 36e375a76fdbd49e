"""A trial's training (``sweeps._fitting.train``, as ``sweeps.trial`` builds its Learner) for
every optimizer a spec can name, plain and fine-tuned; no Ray, no MLflow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sweeps import trial
from sweeps._fitting import train
from sweeps.spec import load_spec

DIGITS = Path(__file__).resolve().parents[2] / "sweeps" / "specs" / "digits.yaml"


@pytest.mark.parametrize("wd_bn_bias", ["false", "true"])
@pytest.mark.parametrize("opt", ["adamw", "adam", "sgd"])
def test_every_optimizer_fine_tunes_a_spec_task_through_both_phases(
    opt: str, wd_bn_bias: str
) -> None:
    """``task.fine_tune`` trains the body's normalization layers while it is frozen, then
    everything: with ``opt: sgd`` and ``wd_bn_bias: true`` the unfrozen phase used to raise
    PyTorch's ``TypeError`` from its fused SGD (every trial of such a sweep failed)."""
    task = load_spec(
        DIGITS,
        overrides=[
            f"task.opt={opt}",
            f"task.wd_bn_bias={wd_bn_bias}",
            "task.fine_tune.freeze_epochs=1",
            "task.epochs=2",
            "task.image_size=8",
        ],
    ).task
    learn = trial._learner(task, trial._dataloaders(task, 0), 0)
    train(learn, task, 1e-2)
    assert [row.get("phase") for row in learn.history] == ["frozen", "unfrozen"]
    assert all(math.isfinite(row["valid_loss"]) for row in learn.history)
    assert all(group["fused"] is True for group in learn.opt.param_groups)
