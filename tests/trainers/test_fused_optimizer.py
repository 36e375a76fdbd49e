"""The Learner's optimizer takes PyTorch's fused step where the parameters allow it: the same
maths as PyTorch's default implementation (to float rounding), the same curves for a seed, and
checkpoints that resume with the step they were saved with."""

from __future__ import annotations

import pytest
import torch
from _shapes import shapes_learner

from trainers import Learner, _loop
from trainers._training import fused_supported, layer_groups, make_optimizer, optimizer_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _trained(*, fused: bool | None, opt: str) -> Learner:
    learn = shapes_learner(n_per_class=60, opt=opt, fused_step=fused)
    learn.fit_one_cycle(3, 1e-2)
    return learn


@pytest.mark.parametrize("opt", ["adamw", "adam", "sgd"])
def test_every_parameter_group_is_fused_on_the_cpu(opt: str) -> None:
    learn = shapes_learner(opt=opt)
    assert len(learn.opt.param_groups) > 1  # layer groups, with and without weight decay
    assert all(group["fused"] is True for group in learn.opt.param_groups)


@pytest.mark.parametrize("opt", ["adamw", "adam", "sgd"])
def test_the_fused_step_trains_as_pytorchs_default_to_float_rounding(opt: str) -> None:
    fused = _trained(fused=None, opt=opt)
    default = _trained(fused=False, opt=opt)
    assert all(group["fused"] is None for group in default.opt.param_groups)
    a, b = fused.recorder.losses, default.recorder.losses
    assert len(a) == len(b) >= 10
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4
    for name, value in fused.model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, default.model.state_dict()[name], atol=1e-4, rtol=0)


def test_a_seed_gives_the_same_curves_twice_with_either_step() -> None:
    first = _trained(fused=True, opt="adamw")
    assert first.recorder.losses == _trained(fused=None, opt="adamw").recorder.losses
    default = _trained(fused=False, opt="adamw")
    assert default.recorder.losses == _trained(fused=False, opt="adamw").recorder.losses
    assert default.recorder.losses != first.recorder.losses  # the option reaches the optimizer


def test_a_checkpoint_resumes_with_the_step_it_was_saved_with(tmp_path) -> None:
    learn = shapes_learner()
    learn.fit(1, 1e-3)
    path = learn.save(tmp_path / "learner.pth")
    resumed = shapes_learner()
    resumed.load(path)
    assert all(group["fused"] is True for group in resumed.opt.param_groups)
    # a checkpoint written before the fused step (fused unset) resumes with PyTorch's default
    state = torch.load(path, weights_only=True)
    for group in state["opt"]["param_groups"]:
        group["fused"] = None
    torch.save(state, tmp_path / "old.pth")
    old = shapes_learner()
    old.load(tmp_path / "old.pth")
    assert all(group["fused"] is None for group in old.opt.param_groups)
    old.fit(1, 1e-3)  # and trains
    assert len(old.history) == 2


def test_parameters_the_fused_step_cannot_take_fall_back_to_the_default() -> None:
    assert fused_supported([torch.zeros(2, requires_grad=True)]) is True
    assert fused_supported([torch.zeros(2, dtype=torch.complex64, requires_grad=True)]) is None
    assert fused_supported([]) is None
    module = torch.nn.Linear(2, 2)
    module.weight = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.complex64))
    opt = make_optimizer("adamw", layer_groups(module), wd=0.01)
    assert all(group["fused"] is None for group in opt.param_groups)


def test_fused_step_false_is_pytorchs_default_and_true_refuses_what_it_cannot_run() -> None:
    assert all(g["fused"] is None for g in shapes_learner(fused_step=False).opt.param_groups)
    assert all(g["fused"] is True for g in shapes_learner(fused_step=True).opt.param_groups)
    module = torch.nn.Linear(2, 2)
    module.weight = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"fused_step=True needs .* torch\.complex64 on cpu"):
        make_optimizer("adamw", layer_groups(module), wd=0.01, fused=True)
    with pytest.raises(ValueError, match=r"fused_step must be None .* but got 'yes'"):
        shapes_learner(fused_step="yes")


# --- parameter groups that share every setting step as one ---------------------------------


def _groups_at_each_step(learn: Learner) -> list[list[float]]:
    """The weight decay of every parameter group ``opt.step()`` sees, step by step."""
    seen: list[list[float]] = []
    learn.opt.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append([g["weight_decay"] for g in opt.param_groups])
    )
    return seen


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "default-step"])
@pytest.mark.parametrize("opt", ["adamw", "adam", "sgd"])
def test_merged_groups_train_bit_for_bit_as_pytorchs_per_group_step(
    opt: str, fused: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    merged = shapes_learner(n_per_class=30, opt=opt, fused_step=fused)
    seen = _groups_at_each_step(merged)
    merged.fit_one_cycle(2, 1e-2)
    assert seen and all(len(groups) == 2 for groups in seen)  # with and without weight decay
    monkeypatch.setattr(_loop, "optimizer_step", lambda o: o.step())  # PyTorch's, per group
    per_group = shapes_learner(n_per_class=30, opt=opt, fused_step=fused)
    seen = _groups_at_each_step(per_group)
    per_group.fit_one_cycle(2, 1e-2)
    assert seen and all(len(groups) == len(per_group.opt.param_groups) > 2 for groups in seen)
    assert merged.recorder.losses == per_group.recorder.losses
    for name, value in merged.model.state_dict().items():
        assert torch.equal(value, per_group.model.state_dict()[name]), name
    a, b = merged.opt.state_dict(), per_group.opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for index, state in a["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["state"][index][key]), (index, key)


def test_the_step_sees_one_group_per_distinct_setting_and_the_real_groups_after() -> None:
    learn = shapes_learner(wd_bn_bias=True)
    groups = learn.opt.param_groups
    kept = [(group["layer_group"], list(group["params"])) for group in groups]
    seen = _groups_at_each_step(learn)
    learn.fit(1, 1e-3)
    assert seen and all(len(step) == 1 for step in seen)  # every group at the same settings
    assert learn.opt.param_groups is groups and len(groups) == learn.n_groups > 1
    assert [(g["layer_group"], g["params"]) for g in groups] == kept
    seen.clear()
    learn.fit(1, slice(1e-4, 1e-3))  # discriminative rates: every group its own step
    assert seen and all(len(step) == learn.n_groups for step in seen)
    seen.clear()
    learn.one_batch(*next(iter(learn.dls.train)))  # lr_find's step merges too
    assert len(seen) == 1 and len(seen[0]) == learn.n_groups  # the rates set by the fit stay


def test_a_failing_step_leaves_the_real_groups_and_another_optimizer_steps_as_it_is() -> None:
    learn = shapes_learner(wd_bn_bias=True)
    groups = learn.opt.param_groups

    def refuse(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        assert len(opt.param_groups) == 1
        raise RuntimeError("refused by a step hook")

    handle = learn.opt.register_step_pre_hook(refuse)
    with pytest.raises(RuntimeError, match="refused by a step hook"):
        optimizer_step(learn.opt)
    assert learn.opt.param_groups is groups
    handle.remove()

    class MyAdamW(torch.optim.AdamW):  # a subclass may keep settings per group: not merged
        pass

    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    mine = MyAdamW([{"params": m.parameters()} for m in module], lr=1e-3)
    sizes: list[int] = []
    mine.register_step_pre_hook(lambda opt, args, kwargs: sizes.append(len(opt.param_groups)))
    module(torch.ones(1, 2)).sum().backward()
    optimizer_step(mine)
    plain = torch.optim.AdamW([{"params": m.parameters()} for m in module], lr=1e-3)
    plain.register_step_pre_hook(lambda opt, args, kwargs: sizes.append(len(opt.param_groups)))
    optimizer_step(plain)
    assert sizes == [2, 1]


@pytest.mark.parametrize("wd_bn_bias", [False, True])
def test_fused_sgd_steps_a_layer_group_unfrozen_after_its_norm_layers_trained(
    wd_bn_bias: bool,
) -> None:
    """PyTorch's fused SGD refuses a group where some parameters have a momentum buffer and
    some not (``TypeError: expected Tensor ... but got NoneType``): after ``freeze`` trained
    only the body's normalization layers, ``unfreeze`` gives their group's other parameters
    their first step. It used to raise with ``wd_bn_bias=True``; merging the groups would
    raise with the default too."""

    def fine_tuned(fused: bool | None) -> Learner:
        learn = shapes_learner(n_per_class=20, opt="sgd", wd_bn_bias=wd_bn_bias, fused_step=fused)
        learn.freeze()
        learn.fit(1, 1e-2)
        learn.unfreeze()
        learn.fit(2, 1e-2)
        return learn

    fused, default = fine_tuned(None), fine_tuned(False)
    assert all(group["fused"] is True for group in fused.opt.param_groups)
    assert len(fused.recorder.losses) == len(default.recorder.losses) >= 4  # the last fit
    pairs = zip(fused.recorder.losses, default.recorder.losses, strict=True)
    assert max(abs(a - b) for a, b in pairs) < 1e-4
    assert all(fused.opt.state[p]["momentum_buffer"] is not None for p in fused.model.parameters())
