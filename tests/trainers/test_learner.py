"""Learner: schedules per step, layer groups, freezing, state, resume, precompute, errors."""

from __future__ import annotations

import inspect
import math
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from trainers import (
    Callback,
    CancelFit,
    GroupedModel,
    Learner,
    TrainingDiverged,
    build_model,
    make_dataloaders,
)
from trainers.callbacks import SaveModelCallback
from trainers.data import TensorLoader
from trainers.seeding import seed_everything


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Two shared cores: one intra-op thread avoids oversubscription (10x faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_learner(seed: int = 0, *, augment=None, **kwargs) -> Learner:
    """A simple_cnn on 'shapes' at 16 px: 240 train images in 8 batches, 60 valid."""
    dls = make_dataloaders("shapes", image_size=16, batch_size=32, augment=augment)
    seed_everything(seed)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    return Learner(model, dls, seed=seed, device="cpu", progress=False, **kwargs)


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in history]


def closed_one_cycle(pos: float, lr_max: float, pct: float, div: float, div_final: float) -> float:
    if pos < pct:
        return lr_max / div + (lr_max - lr_max / div) * (1 - math.cos(math.pi * pos / pct)) / 2
    p = (pos - pct) / (1 - pct)
    return lr_max + (lr_max / div_final - lr_max) * (1 - math.cos(math.pi * p)) / 2


class StopAfter(Callback):
    order = 20  # after SaveModelCallback (10) has saved the epoch

    def __init__(self, n_epochs: int) -> None:
        self.n_epochs = n_epochs

    def after_epoch(self) -> None:
        if self.learn.epoch + 1 >= self.n_epochs:
            raise CancelFit


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_fit_one_cycle_lr_and_momentum_traces_match_the_closed_form(opt: str) -> None:
    learn = make_learner(opt=opt)
    learn.fit_one_cycle(2, 1e-2, pct_start=0.3, div=20.0, div_final=1e4, moms=(0.95, 0.85, 0.9))
    total = 2 * learn.n_iter
    assert len(learn.recorder.lrs) == total == 16
    for i, (lr, mom) in enumerate(zip(learn.recorder.lrs, learn.recorder.moms, strict=True)):
        pos = i / total
        assert lr == pytest.approx(closed_one_cycle(pos, 1e-2, 0.3, 20.0, 1e4), rel=1e-12)
        warm = pos < 0.3
        start, end = (0.95, 0.85) if warm else (0.85, 0.9)
        p = pos / 0.3 if warm else (pos - 0.3) / 0.7
        assert mom == pytest.approx(
            start + (end - start) * (1 - math.cos(math.pi * p)) / 2, rel=1e-12
        )
    assert learn.history[-1]["lr"] == learn.recorder.lrs[-1]
    group = learn.opt.param_groups[0]  # every group cycles, not only the recorded top one
    assert (group["betas"][0] if opt == "adamw" else group["momentum"]) == learn.recorder.moms[-1]


def test_fit_sgdr_lr_trace_restarts_like_the_closed_form() -> None:
    learn = make_learner()
    learn.fit_sgdr(2, 1, 1e-2)  # fastai's default cycle_mult=2: 1 + 2 = 3 epochs
    n = learn.n_iter
    assert len(learn.history) == 3 and len(learn.recorder.lrs) == 3 * n
    for i, lr in enumerate(learn.recorder.lrs):
        epoch_pos = i / n
        start, length = (0.0, 1.0) if epoch_pos < 1 else (1.0, 2.0)
        expected = 1e-2 * (1 + math.cos(math.pi * (epoch_pos - start) / length)) / 2
        assert lr == pytest.approx(expected, rel=1e-12)
    assert learn.recorder.lrs[n] == pytest.approx(1e-2)  # the restart
    assert set(learn.recorder.moms) == {0.9}


def test_fit_flat_cos_holds_the_rate_then_anneals_each_group_like_fastai() -> None:
    learn = make_learner()
    learn.fit_flat_cos(2, slice(1e-3, 1e-2), pct_start=0.5, div_final=100.0)
    total = 2 * learn.n_iter
    assert len(learn.recorder.lrs) == total == 16
    for i, lr in enumerate(learn.recorder.lrs):
        pos = i / total
        p = max(0.0, (pos - 0.5) / 0.5)
        assert lr == pytest.approx(1e-2 + (1e-4 - 1e-2) * (1 - math.cos(math.pi * p)) / 2)
    assert learn.recorder.lrs[: total // 2] == [1e-2] * (total // 2)
    assert set(learn.recorder.moms) == {0.9}
    ratios = [g["lr"] / learn.opt.param_groups[-1]["lr"] for g in learn.opt.param_groups]
    assert ratios[0] == pytest.approx(0.1) and ratios[-1] == 1.0  # slice over the groups
    with pytest.raises(ValueError, match="div_final must be a finite number > 0"):
        learn.fit_flat_cos(1, 1e-3, div_final=0)
    with pytest.raises(ValueError, match=r"pct_start must be a number in \[0, 1\]"):
        learn.fit_flat_cos(1, 1e-3, pct_start=1.5)
    assert len(learn.history) == 2  # refused before any epoch


@pytest.mark.parametrize("fit", ["fit", "fit_sgdr", "fit_flat_cos"])
@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_fits_without_a_momentum_schedule_use_0_9_not_what_one_cycle_left(opt, fit) -> None:
    learn = make_learner(opt=opt)
    learn.fit_one_cycle(1, 1e-3, moms=(0.95, 0.85, 0.8))
    assert learn.recorder.moms[-1] < 0.81  # one-cycle left beta1 / momentum near 0.8
    getattr(learn, fit)(1, 1, 1e-3) if fit == "fit_sgdr" else getattr(learn, fit)(1, 1e-3)
    assert learn.recorder.moms == [0.9] * learn.n_iter
    for group in learn.opt.param_groups:  # every group, not only the recorded top one
        assert (group["betas"] if opt == "adamw" else (group["momentum"],))[0] == 0.9


def test_fine_tunes_cycles_follow_the_default_momenta_after_another_cycle() -> None:
    learn = make_learner()
    learn.fit_one_cycle(1, 1e-3, moms=(0.95, 0.85, 0.8))
    learn.fine_tune(1, 1e-3, freeze_epochs=0)  # its one cycle: pct_start 0.3
    n = learn.n_iter
    expected = [closed_one_cycle(i / n, 0.85, 0.3, 0.85 / 0.95, 0.85 / 0.95) for i in range(n)]
    assert learn.recorder.moms[0] == 0.95
    assert learn.recorder.moms == pytest.approx(expected, rel=1e-12)


def test_fit_keeps_a_constant_rate() -> None:
    learn = make_learner(opt="sgd")
    learn.fit(1, 0.05)
    assert learn.recorder.lrs == [0.05] * learn.n_iter
    assert learn.recorder.moms == [0.9] * learn.n_iter


@pytest.mark.parametrize(
    ("lr", "expected"),
    [
        (slice(1e-4, 1e-2), [1e-4, 1e-3, 1e-2]),
        ((1e-4, 1e-2), [1e-4, 1e-3, 1e-2]),
        (slice(1e-2), [1e-3, 1e-3, 1e-2]),
        (3e-3, [3e-3, 3e-3, 3e-3]),
        ([1e-5, 2e-4, 1e-2], [1e-5, 2e-4, 1e-2]),  # fastai's one rate per group
        (np.array([1e-5, 2e-4, 1e-2]), [1e-5, 2e-4, 1e-2]),
    ],
)
def test_discriminative_rates_per_param_group(lr, expected: list[float]) -> None:
    learn = make_learner()
    learn.fit(1, lr)
    assert learn.group_lrs == pytest.approx(expected, rel=1e-12)
    learn.fit_one_cycle(1, lr)
    ratios = [g / learn.group_lrs[-1] for g in learn.group_lrs]
    assert ratios == pytest.approx([e / expected[-1] for e in expected], rel=1e-9)


@pytest.mark.parametrize(
    "lr",
    [
        0,
        -1e-3,
        float("nan"),
        float("inf"),
        (1e-2, 1e-4),
        slice(1e-2, 1e-4),
        slice(1e-4, 1e-2, 2),
        "fast",
        [1e-4, 1e-3],  # the model has 3 groups
        [1e-4, 0.0, 1e-2],
        [1e-4, float("nan"), 1e-2],
    ],
)
def test_invalid_lr_is_rejected_naming_the_argument(lr) -> None:
    learn = make_learner()
    with pytest.raises(ValueError, match=r"^lr[ \[]"):
        learn.fit(1, lr)
    with pytest.raises(ValueError, match=r"^lr_max[ \[]"):
        learn.fit_one_cycle(1, lr)
    assert learn.history == []


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda learn: learn.fit(0, 1e-3), "epochs must be an integer >= 1"),
        (
            lambda learn: learn.fit_one_cycle(2, 1e-3, start_epoch=3),
            r"start_epoch must be an integer in \[0, epochs=2\]",
        ),
        (
            lambda learn: learn.fit_one_cycle(2, 1e-3, pct_start=2.0),
            r"pct_start must be a number in \[0, 1\]",
        ),
        (lambda learn: learn.fit_sgdr(2, 0, 1e-3), "cycle_len must be an integer >= 1"),
        (
            lambda learn: learn.fit_one_cycle(2, 1e-3, start_epoch=True),
            r"start_epoch must be an integer in \[0, epochs=2\]",
        ),
        (
            lambda learn: learn.fit_sgdr(2, 1, 1e-3, start_epoch=-1),
            r"start_epoch must be an integer in \[0, epochs=3\]",
        ),
        (
            lambda learn: learn.fine_tune(1, freeze_epochs=-1),
            "freeze_epochs must be an integer >= 0",
        ),
        (lambda learn: learn.freeze_to(5), r"n must be an integer in \[-3, 3\]"),
        (lambda learn: learn.set_lrs([1e-3]), r"lrs must have one rate per layer group \(3\)"),
    ],
)
def test_bad_fit_arguments_are_explained(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(make_learner())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # each used to fail only after the frozen phase had trained (or with the model left
        # frozen), naming lr_max or nothing
        ({"base_lr": slice(1e-3)}, "base_lr must be a finite number > 0"),
        ({"base_lr": (1e-4, 1e-3)}, "base_lr must be a finite number > 0"),
        ({"base_lr": -1e-3}, "base_lr must be a finite number > 0"),
        ({"pct_start": 2.0}, r"pct_start must be a number in \[0, 1\]"),
        ({"div": 0}, "div must be a finite number > 0"),
        ({"lr_mult": math.inf}, "lr_mult must be a finite number >= 1"),
        ({"lr_mult": 0.5}, "lr_mult must be a finite number >= 1"),
        ({"base_lr": 1e-300, "lr_mult": 1e300}, "base_lr / 2 / lr_mult"),
    ],
)
def test_fine_tune_checks_its_arguments_before_training(kwargs: dict, match: str) -> None:
    learn = make_learner()
    with pytest.raises(ValueError, match=match):
        learn.fine_tune(1, **kwargs)
    assert learn.history == [] and learn.frozen_groups == 0 and learn.phase is None


@pytest.mark.parametrize(
    "moms",
    [(0.95, 0.85), (0.95, 0.85, 0.95, 0.9), (0.95, 1.5, 0.95), (0.95, math.nan, 0.95), (-0.1,) * 3],
)
def test_fit_one_cycle_rejects_bad_moms_naming_the_argument(moms: tuple) -> None:
    learn = make_learner()
    with pytest.raises(ValueError, match=r"^moms must be three numbers in \[0, 1\)"):
        learn.fit_one_cycle(1, 1e-2, moms=moms)
    assert learn.history == []


def test_numpy_scalar_rates_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    learn = make_learner()
    learn.fit(1, np.float32(1e-2))
    assert learn.group_lrs == pytest.approx([1e-2] * 3)
    learn.fit_one_cycle(1, slice(np.float32(1e-4), np.float32(1e-2)))
    assert learn.group_lrs[0] / learn.group_lrs[-1] == pytest.approx(1e-2, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"opt": "rmsprop"}, r"opt must be one of \['adamw', 'adam', 'sgd'\]"),
        ({"metrics": ["f1"]}, r"metrics must be names from \['error_rate', 'accuracy'\]"),
        ({"wd": -0.1}, "wd must be a finite number >= 0"),
        ({"callbacks": [object()]}, "callbacks must be Callback instances"),
    ],
)
def test_bad_learner_arguments_are_explained(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_learner(**kwargs)


# ----------------------------------------------------------------------------- freezing
def test_freeze_keeps_the_body_fixed_but_batchnorm_trainable() -> None:
    learn = make_learner()
    learn.freeze()
    assert learn.frozen_groups == 2
    conv, bn = learn.model.body[0][0], learn.model.body[0][1]
    conv_before, bn_before = conv.weight.detach().clone(), bn.weight.detach().clone()
    head_before = learn.model.head[-1].weight.detach().clone()
    learn.fit(1, 1e-2)
    assert torch.equal(conv.weight, conv_before)
    assert conv.weight.grad is None and not conv.weight.requires_grad
    assert bn.weight.requires_grad and not torch.equal(bn.weight, bn_before)
    assert not torch.equal(learn.model.head[-1].weight, head_before)
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())
    learn.fit(1, 1e-2)
    assert not torch.equal(conv.weight, conv_before)


@pytest.mark.parametrize(
    ("norm", "trainable"),
    [
        # fastai's train_bn keeps its norm_types trainable in frozen groups (Learner.create_opt:
        # force_train on norm_bias_params(model, with_bias=False)); GroupNorm is not one of them
        (nn.BatchNorm1d(4), True),
        (nn.InstanceNorm1d(4, affine=True), True),
        (nn.LayerNorm(4), True),
        (nn.GroupNorm(2, 4), False),
    ],
)
def test_freeze_keeps_fastais_norm_layers_trainable(norm: nn.Module, trainable: bool) -> None:
    first, second = nn.Linear(3, 4), nn.Linear(4, 4)
    body = nn.Sequential(nn.Sequential(first, norm), second)
    model = GroupedModel(body, nn.Linear(4, 3), group_starts=(0, 1))
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    learn = Learner(model, dls, device="cpu", progress=False)
    learn.freeze()
    assert [p.requires_grad for p in norm.parameters()] == [trainable, trainable]
    assert not any(p.requires_grad for p in [*first.parameters(), *second.parameters()])
    assert all(p.requires_grad for p in model.head.parameters())


def test_freezing_a_model_of_one_layer_group_warns_at_the_users_call() -> None:
    """Nothing can be frozen (as with fastai), but fine_tune's "frozen" epochs then trained
    the whole model without a word."""
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, dls.n_classes))
    learn = Learner(model, dls, device="cpu", progress=False)
    with pytest.warns(UserWarning, match="Sequential is one layer group") as caught:
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        learn.freeze()
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]
    with pytest.warns(UserWarning, match="Sequential is one layer group") as caught:
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        learn.fine_tune(1, 1e-3)
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]
    assert all(p.requires_grad for p in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learn.fine_tune(1, 1e-3, freeze_epochs=0)  # no frozen epochs: nothing to warn about
        make_learner().freeze()  # a model with a body


@pytest.mark.parametrize(
    ("norm", "decayed"),
    [
        # fastai's norm_bias_params: its norm_types' weights and every bias skip weight decay
        (nn.BatchNorm1d(4), False),
        (nn.InstanceNorm1d(4, affine=True), False),
        (nn.LayerNorm(4), False),
        (nn.GroupNorm(2, 4), True),
    ],
)
def test_weight_decay_skips_fastais_norm_layers_and_biases(norm: nn.Module, decayed: bool) -> None:
    from trainers._training import no_decay_params

    model = nn.Sequential(nn.Linear(3, 4), norm)
    skipped = no_decay_params(model)
    assert (id(norm.weight) not in skipped) is decayed
    assert id(norm.bias) in skipped and id(model[0].bias) in skipped
    assert id(model[0].weight) not in skipped


class _RatesPerBatch(Callback):
    def __init__(self) -> None:
        self.rates: list[tuple[str | None, list[float]]] = []

    def before_batch(self) -> None:
        if self.learn.training:
            self.rates.append((self.learn.phase, self.learn.group_lrs))


def test_fine_tune_runs_frozen_then_unfrozen_with_fastais_discriminative_cycle() -> None:
    rates = _RatesPerBatch()
    learn = make_learner(callbacks=[rates])
    learn.fine_tune(2, 4e-3, freeze_epochs=1, lr_mult=100)
    assert [r["phase"] for r in learn.history] == ["frozen", "unfrozen", "unfrozen"]
    assert learn.frozen_groups == 0 and learn.phase is None
    assert learn.group_lrs[0] / learn.group_lrs[-1] == pytest.approx(1 / 100)
    # fastai's fine_tune: the unfrozen cycle (base_lr halved) has pct_start 0.3 and div 5.
    unfrozen = [lrs[-1] for phase, lrs in rates.rates if phase == "unfrozen"]
    assert len(unfrozen) == 2 * learn.n_iter
    assert unfrozen[0] == pytest.approx(2e-3 / 5)
    expected = [
        closed_one_cycle(i / len(unfrozen), 2e-3, 0.3, 5, 1e5) for i in range(len(unfrozen))
    ]
    assert unfrozen == pytest.approx(expected)


@pytest.mark.parametrize("wd_bn_bias", [False, True])
def test_norm_layers_and_biases_get_no_weight_decay_unless_asked(wd_bn_bias: bool) -> None:
    zero_loss = lambda logits, targets: (logits * 0).sum()  # noqa: E731 - no gradient: decay only
    learn = make_learner(wd=0.5, wd_bn_bias=wd_bn_bias, loss_func=zero_loss)
    named = dict(learn.model.named_parameters())
    bn, bias, conv = named["body.0.1.weight"], named["head.4.bias"], named["body.0.0.weight"]
    before = {name: p.detach().clone() for name, p in named.items()}
    groups = learn.opt.param_groups
    assert learn.n_groups == 3 and len(groups) == (3 if wd_bn_bias else 6)
    learn.set_lrs([1e-3, 1e-2, 1e-1])
    assert learn.group_lrs == [1e-3, 1e-2, 1e-1]
    assert sorted({(g["layer_group"], g["lr"]) for g in groups}) == [
        (0, 1e-3),
        (1, 1e-2),
        (2, 1e-1),
    ]
    learn.fit(1, 1e-1)
    assert not torch.equal(conv, before["body.0.0.weight"])  # decoupled decay shrinks it
    for p, name in ((bn, "body.0.1.weight"), (bias, "head.4.bias")):
        assert torch.equal(p, before[name]) is not wd_bn_bias, name


# ----------------------------------------------------------------------------- state
def test_two_runs_with_the_same_seed_have_identical_histories() -> None:
    histories = []
    for _ in range(2):
        learn = make_learner(seed=3)
        learn.fit_one_cycle(2, 1e-2)
        histories.append(without_time(learn.history))
    assert histories[0] == histories[1]
    assert set(histories[0][0]) == {
        "epoch",
        "train_loss",
        "valid_loss",
        "error_rate",
        "accuracy",
        "lr",
    }


def test_save_then_load_gives_identical_predictions_and_history(tmp_path: Path) -> None:
    learn = make_learner()
    learn.fit_one_cycle(1, 1e-2)
    path = learn.save(tmp_path / "ckpt" / "model.pt")
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left
    other = make_learner(seed=9).load(path)
    images = learn.dls.valid_images[:8]
    assert torch.equal(other.predict(images), learn.predict(images))
    assert other.history == learn.history and other.resume_epoch == 1


def test_optimizer_state_of_another_layout_is_refused_before_anything_loads(
    tmp_path: Path,
) -> None:
    learn = make_learner()
    learn.fit(1, 1e-2)
    path = learn.save(tmp_path / "model.pt")
    other = make_learner(seed=9, wd_bn_bias=True)  # one parameter group per layer group
    weights = {k: v.clone() for k, v in other.model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"{path}.*optimizer layout.*with_opt=False"):
        other.load(path)
    assert all(torch.equal(v, other.model.state_dict()[k]) for k, v in weights.items())
    assert other.history == []
    other.load(path, with_opt=False)
    assert other.history == learn.history


@pytest.mark.parametrize(
    ("saved", "loading"), [("adamw", "sgd"), ("adamw", "adam"), ("sgd", "adamw")]
)
def test_optimizer_state_of_another_optimizer_is_refused_before_anything_loads(
    tmp_path: Path, saved: str, loading: str
) -> None:
    """The parameter groups had the same sizes, so the state loaded: SGD's groups then held
    Adam's settings and its first step failed with ``KeyError: 'momentum'``, and Adam's groups
    took AdamW's ``decoupled_weight_decay`` and ran AdamW while ``opt_name`` said adam."""
    learn = make_learner(opt=saved)
    learn.fit(1, 1e-3)
    path = learn.save(tmp_path / "model.pt")
    other = make_learner(seed=9, opt=loading)
    weights = {k: v.clone() for k, v in other.model.state_dict().items()}
    match = rf"{path}.*holds {saved} optimizer state.*is {loading}: .*opt='{saved}'.*with_opt=False"
    with pytest.raises(ValueError, match=match):
        other.load(path)
    assert all(torch.equal(v, other.model.state_dict()[k]) for k, v in weights.items())
    assert other.history == []
    other.load(path, with_opt=False)
    other.fit(1, 1e-3)  # its own optimizer, untouched, trains
    assert len(other.history) == 2


def test_a_folder_given_as_a_checkpoint_path_is_named_as_one(tmp_path: Path) -> None:
    learn = make_learner()
    with pytest.raises(IsADirectoryError, match=rf"'{tmp_path}' is a folder; give a file name"):
        learn.save(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    with pytest.raises(IsADirectoryError, match=rf"'{tmp_path}' is a folder; pass the checkpoint"):
        learn.load(tmp_path)


def test_fit_one_cycle_resumed_from_a_checkpoint_matches_the_uninterrupted_run(
    tmp_path: Path,
) -> None:
    full = make_learner()
    full.fit_one_cycle(4, 1e-2)
    ckpt = tmp_path / "epoch_{epoch}.pt"
    first = make_learner(callbacks=[SaveModelCallback(ckpt, every_epoch=True), StopAfter(2)])
    first.fit_one_cycle(4, 1e-2)
    assert len(first.history) == 2
    resumed = make_learner(seed=5).load(tmp_path / "epoch_1.pt")
    assert resumed.resume_epoch == 2
    resumed.fit_one_cycle(4, 1e-2, start_epoch=resumed.resume_epoch)
    n = full.n_iter
    assert resumed.recorder.lrs == full.recorder.lrs[2 * n :]
    assert without_time(resumed.history) == without_time(full.history)
    for name, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def namespace_learner(loader_seed: int = 0, **kwargs) -> Learner:
    """simple_cnn on data of one's own: a namespace of two TensorLoaders (no state_dict of its
    own), the training one shuffled and augmented from ``loader_seed``."""
    dls = make_dataloaders("shapes", image_size=16, batch_size=32, augment="light")
    train = TensorLoader(
        dls.train.images,
        dls.train.labels,
        batch_size=32,
        shuffle=True,
        augment=dls.augment,
        seed=loader_seed,
    )
    valid = TensorLoader(dls.valid.images, dls.valid.labels, batch_size=32)
    seed_everything(0)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    return Learner(model, SimpleNamespace(train=train, valid=valid), device="cpu", **kwargs)


def test_lr_find_and_checkpoints_restore_the_loaders_of_data_of_ones_own(tmp_path: Path) -> None:
    """With a namespace of TensorLoaders, lr_find drew from the training loader's shuffle and
    augmentation generators without putting them back (the fit after it saw other batches), and
    a checkpoint saved no loader state (a resumed fit saw other batches than the whole one)."""
    full = namespace_learner(progress=False)
    full.fit_one_cycle(2, 1e-2)
    after_find = namespace_learner(progress=False)
    after_find.lr_find(num_it=20)
    after_find.fit_one_cycle(2, 1e-2)
    assert without_time(after_find.history) == without_time(full.history)
    ckpt = tmp_path / "epoch_{epoch}.pt"
    first = namespace_learner(
        progress=False, callbacks=[SaveModelCallback(ckpt, every_epoch=True), StopAfter(1)]
    )
    first.fit_one_cycle(2, 1e-2)
    resumed = namespace_learner(loader_seed=7, progress=False).load(tmp_path / "epoch_0.pt")
    resumed.fit_one_cycle(2, 1e-2, start_epoch=resumed.resume_epoch)
    assert without_time(resumed.history) == without_time(full.history)


def test_snapshot_restore_puts_everything_back() -> None:
    learn = make_learner()
    learn.fit(1, 1e-2)
    snap = learn.snapshot()
    weights = {k: v.clone() for k, v in learn.model.state_dict().items()}
    rng = torch.get_rng_state()
    learn.freeze()
    learn.set_lrs([1.0, 1.0, 1.0])
    for xb, yb in learn.dls.train:
        learn.one_batch(xb, yb)
    learn.restore(snap)
    assert all(torch.equal(v, weights[k]) for k, v in learn.model.state_dict().items())
    assert learn.group_lrs == [1e-2] * 3 and learn.frozen_groups == 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert not learn.model.training  # fit ended in validation (eval mode)


# ----------------------------------------------------------------------------- device
# The meta device enforces CUDA's same-device rule without a GPU: a tensor left on the CPU
# fails there as it would on CUDA.
def make_meta_learner(**kwargs) -> Learner:
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    return Learner(model, dls, device="meta", progress=False, **kwargs)


def test_a_replacement_model_moves_to_the_learner_device() -> None:
    learn = make_meta_learner()
    new = build_model("simple_cnn", 3, in_channels=3)
    learn.model = new
    xb, _ = next(iter(learn.dls.train))
    assert learn.model is new and {p.device.type for p in new.parameters()} == {"meta"}
    assert learn.forward_model(xb).device.type == "meta"


@pytest.mark.parametrize("replaced", [False, True])
def test_a_loss_module_with_class_weights_moves_to_the_learner_device(replaced: bool) -> None:
    loss_func = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0]))
    learn = make_meta_learner(**({} if replaced else {"loss_func": loss_func}))
    if replaced:
        learn.loss_func = loss_func
    xb, yb = next(iter(learn.dls.train))
    loss = learn.loss_func(learn.forward_model(xb), yb)
    assert learn.loss_func is loss_func and loss.device.type == "meta"


# ----------------------------------------------------------------------------- precompute
class BodyInEval(Callback):
    """Makes a full-forward run comparable with precompute: the body never changes."""

    order = 5

    def before_train(self) -> None:
        self.learn.model.body.eval()


def test_precompute_trains_the_head_like_the_full_forward_on_a_frozen_body() -> None:
    results = []
    for precompute in (False, True):
        learn = make_learner(seed=1, callbacks=[] if precompute else [BodyInEval()])
        learn.freeze()
        for p in learn.model.body.parameters():
            p.requires_grad_(False)  # BatchNorm too: precompute never trains the body
        learn.fit_one_cycle(2, 1e-2, precompute=precompute)
        results.append(learn)
    full, cached = results
    for (name, a), b in zip(
        full.model.head.state_dict().items(), cached.model.head.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name
    for a, b in zip(full.history, cached.history, strict=True):
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], rel=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert cached.validate()["valid_loss"] == pytest.approx(
        cached.history[-1]["valid_loss"], rel=1e-5
    )


class Modes(Callback):
    """Records the body's and the head's modes in training; flips the body to train mode
    after each validation, as a careless callback might."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool, bool]] = []

    def before_batch(self) -> None:
        if self.learn.training:
            model = self.learn.model
            body_training = any(m.training for m in model.body.modules())
            self.seen.append((model.training, body_training, model.head.training))

    def after_validate(self) -> None:
        self.learn.model.body.train()


def test_precompute_caches_the_heads_pooling_and_keeps_the_body_in_eval_mode() -> None:
    """The concat pooling and flatten before the head's first parameter are cached with the
    body's outputs: fastai's resnet head trains on (N, 2 x 512) features, not 1x1 maps."""
    from trainers._inference import fit_loaders

    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    seed_everything(0)
    modes = Modes()
    learn = Learner(
        build_model("resnet18", dls.n_classes), dls, device="cpu", progress=False, callbacks=[modes]
    )
    learn.freeze()
    train, valid, forward = fit_loaders(learn, precompute=True)
    assert train.images.shape == (len(dls.train.labels), 1024, 1, 1)
    assert valid.images.shape == (len(dls.valid.labels), 1024, 1, 1)
    assert [type(m).__name__ for m in forward][:3] == ["Flatten", "BatchNorm1d", "Dropout"]
    assert forward[1] is learn.model.head[2]  # the head's own layers, trained in place
    learn.fit(2, 1e-3, precompute=True)
    assert modes.seen and set(modes.seen) == {(True, False, True)}


class CountBodyCalls:
    """Counts the forward calls of a module (a forward hook)."""

    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self._count)

    def _count(self, *_: object) -> None:
        self.calls += 1


def test_precompute_reuses_a_loaders_activations_while_body_and_images_are_the_same() -> None:
    # A sweep's trials on one worker start from one pretrained body on the same loaders:
    # each computed the body's outputs over the whole data again (fastai kept them on disk).
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    trained = []
    for attempt in range(3):
        dls.train.reseed(0)  # as a sweep's trial does
        seed_everything(0)
        learn = Learner(build_model("simple_cnn", dls.n_classes), dls, progress=False)
        learn.freeze()
        calls = CountBodyCalls(learn.model.body)
        if attempt == 2:  # the cache dropped: the same fit from freshly computed activations
            dls.train._activations = dls.valid._activations = None
        learn.fit_one_cycle(2, 1e-2, precompute=True)
        trained.append((learn, calls.calls))  # the fit itself never runs the body
    batches = -(-len(dls.train.labels) // 32) + -(-len(dls.valid.labels) // 32)
    assert [calls for _, calls in trained] == [batches, 0, batches]
    first, reused, fresh = (learn for learn, _ in trained)
    curves = [[{**row, "epoch_time_s": 0} for row in learn.history] for learn in (first, reused)]
    assert curves[0] == curves[1] == [{**row, "epoch_time_s": 0} for row in fresh.history]
    weights = [learn.model.state_dict().values() for learn in (reused, fresh)]
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))
    # other body weights, or images edited in place, compute them anew
    seed_everything(1)
    other = Learner(build_model("simple_cnn", dls.n_classes), dls, progress=False)
    other.freeze()
    calls = CountBodyCalls(other.model.body)
    other.fit(1, 1e-2, precompute=True)
    assert calls.calls == batches
    dls.valid.images[0].zero_()
    calls.calls = 0
    other.fit(1, 1e-2, precompute=True)
    assert calls.calls == -(-len(dls.valid.labels) // 32)  # the valid loader's alone
    for edit in ("data", "numpy"):  # weights count by their bytes: edits outside autograd too
        weight = next(other.model.body.parameters())
        if edit == "data":
            weight.data.mul_(2)
        else:
            weight.detach().numpy()[...] *= 0.5
        calls.calls = 0
        other.fit(1, 1e-2, precompute=True)
        assert calls.calls == batches, edit
    dls.to("cpu")  # already there: kept (a Learner moves its data to its device)
    assert dls.train._activations is not None
    moved = make_dataloaders("shapes", image_size=16, batch_size=32)
    moved.train._activations = dls.train._activations
    moved.train.to("meta")  # a move drops them (they lie on the old device)
    assert moved.train._activations is None
    replaced = dls.valid.images
    dls.valid.images = replaced.clone()  # the cache does not keep replaced images alive
    gone = weakref.ref(replaced)
    del replaced
    assert gone() is None
    with torch.inference_mode():  # such images keep no version count: computed, not cached
        dls.valid.images = dls.valid.images.clone()
    calls.calls = 0
    other.fit(1, 1e-2, precompute=True)
    other.fit(1, 1e-2, precompute=True)
    assert calls.calls == 2 * -(-len(dls.valid.labels) // 32)


def test_precompute_with_augmentation_is_refused_with_the_reason() -> None:
    learn = make_learner(augment={"rotate": 10})
    learn.freeze()
    with pytest.raises(
        ValueError, match="cached body activations would be those of the unaugmented images"
    ):
        learn.fit_one_cycle(1, 1e-2, precompute=True)


def test_precompute_with_a_trainable_body_asks_to_freeze_first() -> None:
    with pytest.raises(ValueError, match=r"call learn\.freeze\(\) first"):
        make_learner().fit(1, 1e-2, precompute=True)


# ----------------------------------------------------------------------------- faults
@pytest.mark.parametrize(
    ("n_classes", "in_channels", "message"),
    [
        (2, 3, r"the model has 2 outputs but the data has n_classes=3"),
        (5, 3, r"the model has 5 outputs but the data has n_classes=3"),
        (3, 1, r"the model has 1 input channels but the data has in_channels=3"),
    ],
)
@pytest.mark.parametrize("arch", ["simple_cnn", "resnet18"])
def test_a_model_built_for_other_data_is_refused_naming_both_counts(
    arch: str, n_classes: int, in_channels: int, message: str
) -> None:
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    assert (dls.n_classes, dls.in_channels) == (3, 3)
    model = build_model(arch, n_classes, in_channels=in_channels)
    with pytest.raises(ValueError, match=message + r".*build_model\('" + arch):
        Learner(model, dls, device="cpu", progress=False)


def test_a_loss_of_ones_own_may_take_another_number_of_outputs() -> None:
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    model = build_model("simple_cnn", 1, in_channels=3)  # one logit against a loss of the user's

    def one_logit_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(pred[:, 0], (target == 0).float())

    learn = Learner(model, dls, loss_func=one_logit_loss, metrics=(), device="cpu", progress=False)
    learn.fit(1, 1e-3)
    assert math.isfinite(learn.history[-1]["valid_loss"])


def test_huge_lr_raises_training_diverged_with_epoch_and_batch() -> None:
    learn = make_learner(opt="sgd")
    with pytest.raises(TrainingDiverged, match="at epoch 0, batch 1") as info:
        learn.fit(1, 1e30)
    assert (info.value.epoch, info.value.batch) == (0, 1)
    assert math.isnan(info.value.loss)


# ----------------------------------------------------------------------------- evaluation
def test_validate_get_preds_and_predict_agree() -> None:
    learn = make_learner()
    learn.fit(1, 1e-2)
    metrics = learn.validate()
    assert metrics == {k: learn.history[-1][k] for k in ("valid_loss", "error_rate", "accuracy")}
    probs, targets, losses = learn.get_preds()
    assert probs.shape == (60, 3) and targets.shape == losses.shape == (60,)
    assert losses.mean().item() == pytest.approx(metrics["valid_loss"], rel=1e-5)
    assert (probs.argmax(1) == targets).float().mean().item() == pytest.approx(metrics["accuracy"])
    single = learn.predict(learn.dls.valid_images[0])
    assert single.shape == (3,) and single.sum().item() == pytest.approx(1.0, rel=1e-6)
    assert torch.allclose(single, probs[0], atol=1e-6)
    with pytest.raises(ValueError, match=r"x must be an image \(C, H, W\) or a batch"):
        learn.predict(torch.zeros(16, 16))


def test_tta_averages_augmented_passes_reproducibly_without_touching_the_rng() -> None:
    learn = make_learner(augment={"rotate": 15, "zoom": 1.2})
    learn.fit(1, 1e-2)
    rng = torch.get_rng_state()
    first, second = learn.tta(n=2), learn.tta(n=2)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(first["probs"], second["probs"])
    assert first["probs"].shape == (60, 3)
    assert first["probs"].sum(1) == pytest.approx(torch.ones(60), rel=1e-5)
    assert first["accuracy"] == pytest.approx(1 - first["error_rate"])
    with pytest.raises(ValueError, match=r"tta needs dls\.augment"):
        make_learner().tta()


def test_tta_blends_the_plain_pass_with_the_augmented_mean_as_fastai() -> None:
    learn = make_learner(augment={"rotate": 15, "zoom": 1.2})
    learn.fit(1, 1e-2)
    plain = learn.tta(n=3, beta=1.0)["probs"]
    augmented = learn.tta(n=3, beta=0.0)["probs"]
    assert not torch.allclose(plain, augmented)
    assert torch.allclose(plain, learn.get_preds()[0], atol=1e-6)
    blended = learn.tta(n=3)  # beta=0.25
    assert torch.allclose(blended["probs"], 0.25 * plain + 0.75 * augmented, atol=1e-6)
    with pytest.raises(ValueError, match=r"beta must be a number in \[0, 1\], but got 1\.5"):
        learn.tta(beta=1.5)
