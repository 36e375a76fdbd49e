"""fit_recipe: fast.ai's eight steps on a model the test pretrains on shapes, tuned on digits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from trainers import (
    Callback,
    CallbackError,
    Learner,
    build_model,
    diagnose,
    make_dataloaders,
    seed_everything,
)
from trainers.recipe import RecipeResult, fit_recipe
from trainers.suggestions import slide

STEPS = [
    "lr_find_frozen",
    "head",
    "head_augment",
    "unfreeze",
    "lr_find_unfrozen",
    "discriminative",
    "sgdr",
]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simple_cnn trained one epoch on shapes (3 classes, RGB), saved as a state dict."""
    dls = make_dataloaders("shapes", image_size=8, batch_size=64, seed=0)
    seed_everything(0)
    model = build_model("simple_cnn", dls.n_classes, in_channels=3)
    Learner(model, dls, seed=0, progress=False).fit_one_cycle(1, 3e-3)
    path = tmp_path_factory.mktemp("pretrained") / "shapes_simple_cnn.pt"
    torch.save(model.state_dict(), path)
    return path


def _digits_learner(pretrained: Path) -> Learner:
    dls = make_dataloaders("digits", image_size=8, batch_size=64, seed=0, channels=3)
    seed_everything(0)
    model = build_model("simple_cnn", dls.n_classes, pretrained=pretrained, in_channels=3)
    return Learner(model, dls, seed=0, progress=False)


@pytest.fixture(scope="module")
def run(pretrained: Path) -> tuple[Learner, RecipeResult, dict[str, torch.Tensor]]:
    learn = _digits_learner(pretrained)
    body_before = {k: v.clone() for k, v in learn.model.body.state_dict().items()}
    result = learn.fit_recipe(max_epochs=10, head_epochs=1, augment_epochs=2, num_it=60)
    return learn, result, body_before


def test_recipe_runs_every_step_in_order(run):
    learn, result, _ = run
    assert [s.name for s in result.steps] == STEPS
    assert [r["phase"] for r in learn.history if r["epoch"] is None] == [
        "lr_find_frozen",
        "unfreeze",
        "lr_find_unfrozen",
        "discriminative",
    ]
    phases = [r["phase"] for r in learn.history if r["epoch"] is not None]
    assert phases[:3] == ["head", "head_augment", "head_augment"]
    assert set(phases[3:]) == {"sgdr"}


def test_pretrained_body_was_loaded_and_then_fine_tuned(pretrained, run):
    _, _, body_before = run
    shapes_body = {
        k.removeprefix("body."): v
        for k, v in torch.load(pretrained, weights_only=True).items()
        if k.startswith("body.")
    }
    assert all(torch.equal(shapes_body[k], v) for k, v in body_before.items())
    learn = run[0]
    assert any(not torch.equal(v, learn.model.body.state_dict()[k]) for k, v in body_before.items())


def test_head_uses_precomputed_activations_and_the_frozen_suggestion(run):
    _, result, _ = run
    head = result.step("head")
    assert head.precompute and head.epochs == 1
    assert head.lrs[-1] == result.lr_find_frozen.suggestions["valley"]
    assert result.step("head_augment").epochs == 2
    assert not result.step("head_augment").precompute


def test_discriminative_rates_are_a_slice_topped_by_the_unfrozen_suggestion(run):
    _, result, _ = run
    lrs = result.step("discriminative").lrs
    assert lrs[-1] == result.lr_find_unfrozen.suggestions["valley"]
    assert [lrs[i + 1] / lrs[i] for i in range(len(lrs) - 1)] == pytest.approx([3.0, 3.0])
    assert result.step("sgdr").lrs == pytest.approx(lrs, rel=1e-12)


def test_sgdr_stays_within_budget_and_ends_at_its_best_epoch(run):
    learn, result, _ = run
    sgdr = [r for r in learn.history if r.get("phase") == "sgdr"]
    assert 1 <= len(sgdr) <= 7  # 10 - 1 - 2 epochs leave cycles of 1, 2 and 4
    assert result.step("sgdr").epochs == len(sgdr)
    best = min(sgdr, key=lambda r: r["valid_loss"])
    assert (result.best_epoch, result.best_valid_loss) == (best["epoch"], best["valid_loss"])
    assert learn.validate()["valid_loss"] == pytest.approx(result.best_valid_loss, rel=1e-6)
    assert result.best_valid_loss < 0.5  # tuned: far below chance (ln 10 = 2.3)


def test_recipe_leaves_phase_and_augmentation_as_it_found_them(run):
    learn, _, _ = run
    assert learn.phase is None
    assert learn.dls.augment is None and learn.dls.train.augment is None
    assert learn.frozen_groups == 0


def test_recipe_history_can_be_diagnosed(run):
    learn, _, _ = run
    assert diagnose(learn.history).label in {"ok", "too_few_epochs"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_epochs": 3}, r"max_epochs must leave at least 1 epoch for SGDR .* = 3"),
        ({"suggest": "valey"}, r"'valey'; choose one of valley"),
        # a list raised TypeError: unhashable type: 'list'
        ({"suggest": ["valley"]}, r"suggest must be one rule, .* but got \['valley'\]"),
        ({"suggest": ("valley", "steep")}, r"suggest must be one rule, .*\('valley', 'steep'\)"),
        ({"head_epochs": 0}, r"head_epochs must be an integer >= 1, but got 0"),
        ({"patience": 1.5}, r"patience must be an integer >= 1"),
        ({"group_factor": 0.5}, r"group_factor must be a finite number >= 1"),
        ({"augment": "sideways"}, r"augment preset must be one of"),
    ],
)
def test_bad_arguments_raise_before_training(pretrained, kwargs, message):
    learn = _digits_learner(pretrained)
    with pytest.raises(ValueError, match=message):
        fit_recipe(learn, **kwargs)
    assert learn.history == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_it": 5}, r"num_it=5 is too few for suggestion rule 'valley'"),
        ({"num_it": 1}, r"num_it must be an integer >= 2"),
        # a rule function, as lr_find takes it, is its name ('Unknown suggestion rule <fn>')
        ({"num_it": 20, "suggest": slide}, r"num_it=20 is too few for suggestion rule 'slide'"),
        ({"suggest": lambda lrs, losses: 1e-3}, r"suggest must hold rule names"),
    ],
)
def test_bad_num_it_raises_before_anything_is_frozen(pretrained, kwargs, message):
    learn = _digits_learner(pretrained)
    lrs = learn.group_lrs
    with pytest.raises(ValueError, match=message):
        fit_recipe(learn, **kwargs)
    assert learn.frozen_groups == 0
    assert learn.group_lrs == lrs


def test_bad_augment_preset_raises_even_when_the_data_is_augmented(pretrained):
    learn = _digits_learner(pretrained)
    learn.dls = make_dataloaders(
        "digits", image_size=8, batch_size=64, seed=0, channels=3, augment="light"
    )
    with pytest.raises(ValueError, match=r"augment preset must be one of"):
        fit_recipe(learn, augment="sideways")
    assert learn.history == []


class _FailIn(Callback):
    """Raise in ``before_fit`` of the fit whose phase is ``phase``."""

    def __init__(self, phase: str) -> None:
        self.phase = phase

    def before_fit(self) -> None:
        if self.learn.phase == self.phase:
            raise RuntimeError(f"boom in {self.phase}")


@pytest.mark.parametrize("phase", ["head", "head_augment", "sgdr"])
def test_an_error_mid_recipe_restores_phase_augmentation_and_freezing(pretrained, phase):
    learn = _digits_learner(pretrained)
    learn.phase = "mine"
    lrs = learn.group_lrs
    with learn.added_cbs(_FailIn(phase)), pytest.raises(CallbackError, match=f"boom in {phase}"):
        fit_recipe(learn, max_epochs=4, head_epochs=1, augment_epochs=1, num_it=20)
    assert learn.phase == "mine"
    assert learn.dls.augment is None and learn.dls.train.augment is None
    assert learn.frozen_groups == 0
    assert learn.group_lrs == lrs


class _NaNValidation(Callback):
    """The first SGDR epoch's validation loss is NaN (as an overflow in evaluation gives)."""

    def after_validate(self) -> None:
        if self.learn.phase == "sgdr" and self.learn.epoch == 0:
            self.learn.metrics_values["valid_loss"] = math.nan


def test_sgdr_best_epoch_is_the_restored_one_when_a_valid_loss_is_nan(pretrained):
    learn = _digits_learner(pretrained)
    with learn.added_cbs(_NaNValidation()):
        result = fit_recipe(learn, max_epochs=6, head_epochs=1, augment_epochs=2, num_it=30)
    sgdr = [r for r in learn.history if r.get("phase") == "sgdr"]
    assert math.isnan(sgdr[0]["valid_loss"]) and len(sgdr) > 1
    assert result.best_epoch != 0
    assert math.isfinite(result.best_valid_loss)
    assert learn.validate()["valid_loss"] == pytest.approx(result.best_valid_loss, rel=1e-6)


def test_a_random_body_trains_its_head_on_the_batches_not_on_cached_features(caplog):
    """precompute keeps the body's BatchNorm layers in eval mode: on a body that never saw data
    they normalise nothing, and the head trained on its cached features is far worse."""
    dls = make_dataloaders("digits", image_size=8, batch_size=64, seed=0)
    seed_everything(0)
    learn = Learner(build_model("simple_cnn", dls.n_classes, in_channels=1), dls, progress=False)
    with caplog.at_level("WARNING", logger="trainers"):
        result = learn.fit_recipe(max_epochs=3, head_epochs=1, augment_epochs=1, num_it=30)
    assert not result.step("head").precompute
    assert "never saw data" not in caplog.text
