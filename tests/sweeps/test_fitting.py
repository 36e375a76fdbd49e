"""A trial's training (``sweeps._fitting.train``, as ``sweeps.trial`` builds its Learner) for
every optimizer a spec can name, plain and fine-tuned; no Ray, no MLflow."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest

from sweeps import _fitting, trial
from sweeps._fitting import train
from sweeps.spec import load_spec
from trainers import Callback, CancelFit, Learner
from trainers.schedules import flat_cos_lr

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


def test_a_flat_cos_schedule_trains_the_unfrozen_phase_flat_then_annealed() -> None:
    learn = _trained(["task.schedule={kind: flat_cos, pct_start: 0.5, div_final: 100}"])
    lrs = learn.recorder.lrs  # the unfrozen phase's steps (the recorder restarts per fit)
    half = len(lrs) // 2
    assert lrs[:half] == [lrs[0]] * half and lrs[0] == pytest.approx(1e-2 / 2)
    last = flat_cos_lr((len(lrs) - 1) / len(lrs), lr=1e-2 / 2, pct_start=0.5, div_final=100)
    assert lrs[-1] == pytest.approx(last) and last < 1e-2 / 2 / 10
    assert all(a >= b for a, b in itertools.pairwise(lrs))


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


class _Sizes(Callback):
    """Each training epoch's image side, by the trial's epoch count."""

    order = 5

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def before_train(self) -> None:
        self.sizes.append(int(self.learn.dls.train.images.shape[-1]))


class _StopAfter(Callback):
    """Ends the fit after ``n`` epochs of the trial, as a killed worker (after its checkpoint)."""

    order = 20

    def __init__(self, n: int) -> None:
        self.n = n

    def after_epoch(self) -> None:
        if len(self.learn.history) >= self.n:
            raise CancelFit


def _resizing_task(*extra: str) -> Any:
    overrides = [
        "task.image_size=12",
        "task.epochs=4",
        "task.progressive_resizing=[{size: 8, epochs: 2}]",
        *extra,
    ]
    return load_spec(DIGITS, overrides=overrides).task


@pytest.mark.parametrize("fine_tune", [False, True])
def test_progressive_resizing_trains_the_trials_first_epochs_on_smaller_images(
    fine_tune: bool,
) -> None:
    """The stages count the trial's epochs, frozen ones included; the range test before them
    sees the first stage's images; the end of the trial sees the task's size again."""
    task = _resizing_task(*(["task.fine_tune.freeze_epochs=1"] if fine_tune else []))
    dls = trial._dataloaders(task, 0)
    learn = trial._learner(task, dls, 0)
    _fitting.at_stage(learn, task, dls)
    assert learn.dls.image_size == 8 and learn.dls is not dls
    sizes = _Sizes()
    learn.add_cb(sizes)
    train(learn, task, 1e-2)
    assert sizes.sizes == [8, 8, 12, 12]
    assert learn.dls is dls and len(learn.history) == 4


def test_a_trial_resumed_inside_a_stage_trains_on_as_the_uninterrupted_one(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    """The checkpoint's meta names the image size it was taken on: the restore loads it onto
    loaders of that size (no "other image size" warning), and training continues bit for bit."""
    from sweeps._reporter import TrialRecord

    task = _resizing_task()

    def fresh() -> Learner:
        dls = trial._dataloaders(task, 0)
        learn = trial._learner(task, dls, 0)
        _fitting.at_stage(learn, task, dls)
        return learn

    whole = fresh()
    train(whole, task, 1e-2)

    first = fresh()
    stop = _StopAfter(1)
    first.add_cb(stop)
    train(first, task, 1e-2)
    first.remove_cb(stop)
    first.dls = _fitting.resizer(task).loaders_at(0, first.dls)  # as after_epoch saw it
    folder = trial._checkpointer(TrialRecord(run_id="r"))(first, None)
    assert json.loads((folder / trial.META_FILE).read_text())["image_size"] == 8

    dls = trial._dataloaders(task, 0)  # as train_trial: restored before at_stage
    second = trial._learner(task, dls, 0)
    trial._restore(second, folder, task)
    assert second.dls.image_size == 8
    _fitting.at_stage(second, task, dls)
    train(second, task, 1e-2)
    assert [r["valid_loss"] for r in second.history] == [r["valid_loss"] for r in whole.history]
    assert not [w for w in recwarn if "image" in str(w.message)]


class _BodyNorms(Callback):
    """The body's BatchNorm running means at the end of the frozen phase."""

    def __init__(self) -> None:
        self.means: list[Any] = []

    def after_fit(self) -> None:
        if self.learn.phase == "frozen":
            body = self.learn.model.body
            self.means = [
                m.running_mean.clone() for m in body.modules() if hasattr(m, "running_mean")
            ]


@pytest.mark.parametrize("precompute", [False, True])
def test_fine_tune_precompute_trains_the_frozen_head_on_cached_activations(
    tmp_path: Path, precompute: bool
) -> None:
    """``fine_tune.precompute``: the frozen epochs run on the body's cached outputs, body in
    eval mode (its BatchNorm statistics stay the pretrained ones); without it a frozen fit
    updates them, as fastai's ``train_bn``."""
    import torch

    from trainers import build_model

    weights = tmp_path / "body.pt"
    base = load_spec(DIGITS, overrides=["task.image_size=8", "task.augment=null"]).task
    dls = trial._dataloaders(base, 0)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    model.train()
    with torch.no_grad():  # "pretraining": statistics that have seen data
        for images, _ in dls.train:
            model(images)
    torch.save(model.state_dict(), weights)
    pretrained = [
        m.running_mean.clone() for m in model.body.modules() if hasattr(m, "running_mean")
    ]

    task = load_spec(
        DIGITS,
        overrides=[
            "task.image_size=8",
            "task.augment=null",
            "task.epochs=2",
            f"task.model.pretrained={weights}",
            "task.fine_tune.freeze_epochs=1",
            f"task.fine_tune.precompute={str(precompute).lower()}",
        ],
    ).task
    learn = trial._learner(task, trial._dataloaders(task, 0), 0)
    norms = _BodyNorms()
    learn.add_cb(norms)
    train(learn, task, 1e-2)
    assert [row.get("phase") for row in learn.history] == ["frozen", "unfrozen"]
    assert all(math.isfinite(row["valid_loss"]) for row in learn.history)
    kept = all(torch.equal(a, b) for a, b in zip(norms.means, pretrained, strict=True))
    assert kept is precompute
    if precompute:  # the worker's next trial, another seed: the body's outputs are reused
        again = trial._learner(task, trial._dataloaders(task, 1), 1)
        calls = []
        again.model.body.register_forward_hook(lambda *_: calls.append(1))
        train(again, task, 1e-2)
        frozen_epoch = len(again.dls.train) + len(again.dls.valid)  # the unfrozen one runs it
        assert len(calls) == frozen_epoch and again.history[0]["phase"] == "frozen"


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ([], "task.model.pretrained is null"),
        (["task.fine_tune.freeze_epochs=0"], "no frozen epochs"),
        (["task.model.pretrained=WEIGHTS", "task.augment=light"], "task.augment is set"),
        (
            [
                "task.model.pretrained=WEIGHTS",
                "task.augment=null",
                "task.progressive_resizing=[{size: 8, epochs: 1}]",
            ],
            "the cache is of one size",
        ),
    ],
)
def test_fine_tune_precompute_is_refused_where_it_cannot_work(
    tmp_path: Path, overrides: list[str], why: str
) -> None:
    import torch

    from sweeps.spec import SpecError
    from trainers import build_model

    weights = tmp_path / "w.pt"
    torch.save(build_model("simple_cnn", 10, in_channels=1).state_dict(), weights)
    overrides = [o.replace("WEIGHTS", str(weights)) for o in overrides]
    base = ["task.fine_tune.freeze_epochs=1", "task.fine_tune.precompute=true"]
    refused = rf"task\.fine_tune\.precompute: cannot be true here: .*{why}"
    with pytest.raises(SpecError, match=refused):
        load_spec(DIGITS, overrides=[*base, *overrides])
