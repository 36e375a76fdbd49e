"""Pure helpers behind Learner: learning-rate parsing, metrics, optimizers, checkpoint encoding."""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.seeding import rng_state

__all__ = [
    "DEFAULT_MOM",
    "METRICS",
    "OPTIMIZERS",
    "LRSpec",
    "accuracy",
    "check_loss_value",
    "error_rate",
    "layer_groups",
    "make_optimizer",
    "optimizer_step",
    "per_item_loss",
    "resolve_lrs",
    "rng_from_checkpoint",
    "rng_to_checkpoint",
]

LRSpec = float | tuple[float, float] | slice | list[float] | np.ndarray
"""A learning rate: one value, a ``(lo, hi)`` pair or ``slice(lo, hi)``, ``slice(hi)``, or a
list (or 1-d array) of one rate per layer group."""

DEFAULT_MOM = 0.9
"""Momentum (Adam's beta1) used outside one-cycle schedules."""

OPTIMIZERS = ("adamw", "adam", "sgd")


def _is_number(value: Any) -> bool:
    """A real number (Python's, or a NumPy scalar such as ``np.float32``), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _positive_lr(value: Any, name: str) -> float:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, but got {value!r}.")
    return float(value)


def resolve_lrs(lr: LRSpec, n_groups: int, *, name: str = "lr") -> list[float]:
    """One learning rate per layer group, earliest group first.

    Args:
        lr: A number, NumPy scalars included (every group); ``(lo, hi)`` or ``slice(lo, hi)``
            (geometric spread from ``lo`` for the first group to ``hi`` for the last);
            ``slice(hi)`` (``hi`` for the last group, ``hi / 10`` for the others, as fastai);
            a list or 1-d NumPy array of one rate per group, earliest first (as fastai's array).
        n_groups: Number of layer groups, ``>= 1``.
        name: Argument name used in error messages.

    Raises:
        ValueError: for a rate that is not a finite number > 0, ``lo > hi``, a slice step, a
            list of another length than ``n_groups``, or any other type (the message names
            ``name``; for a whole ``LRFindResult``, the suggestions to pass instead).

    Example:
        >>> resolve_lrs(slice(1e-4, 1e-2), 3)
        [0.0001, 0.001, 0.01]
    """
    if isinstance(lr, slice):
        if lr.step is not None:
            raise ValueError(f"{name} as a slice takes no step, but got {lr!r}.")
        if lr.start is None:
            hi = _positive_lr(lr.stop, name)
            return [hi / 10] * (n_groups - 1) + [hi]
        lo, hi = lr.start, lr.stop
    elif isinstance(lr, tuple) and len(lr) == 2:
        lo, hi = lr
    elif _is_number(lr):
        return [_positive_lr(lr, name)] * n_groups
    elif isinstance(lr, list) or (isinstance(lr, np.ndarray) and lr.ndim == 1):
        if len(lr) != n_groups:
            raise ValueError(
                f"{name} as a list gives one rate per layer group, so it needs {n_groups} "
                f"(the model's groups), but got {len(lr)}: {list(lr)!r}; or pass slice(lo, hi) "
                "to spread the rates over the groups."
            )
        return [_positive_lr(value, f"{name}[{i}]") for i, value in enumerate(lr)]
    else:
        _refuse_range_test(lr, name)
        shown = repr(lr)
        raise ValueError(
            f"{name} must be a number, a (lo, hi) tuple, slice(lo, hi), slice(hi) or a list "
            f"of one rate per layer group, but got "
            f"{shown if len(shown) <= 120 else shown[:117] + '...'}."
        )
    lo, hi = _positive_lr(lo, name), _positive_lr(hi, name)
    if lo > hi:
        raise ValueError(f"{name} must have lo <= hi, but got lo={lo!r} and hi={hi!r}.")
    if n_groups == 1:
        return [hi]
    rates = [lo * (hi / lo) ** (i / (n_groups - 1)) for i in range(n_groups)]
    rates[0], rates[-1] = lo, hi
    return rates


def _refuse_range_test(lr: Any, name: str) -> None:
    """Name the rates to take from a whole range test given as a rate (``fit_one_cycle(3,
    learn.lr_find())``), whose repr (every rate and loss of the curve) would fill the screen."""
    suggestions = getattr(lr, "suggestions", None)
    if not (isinstance(suggestions, dict) and hasattr(lr, "lrs")):
        return
    picks = [f"result.{rule} ({rate:.3g})" for rule, rate in suggestions.items()]
    raise ValueError(
        f"{name} got a whole LR range test result ({type(lr).__name__}), not a rate: pass one "
        f"of its suggestions, {', '.join(picks) or 'of which it has none (suggest=())'}; "
        "result.suggestion is the first rule's, result.suggest('valley') reads any rule."
    )


def error_rate(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of wrong arg-max predictions."""
    return (logits.argmax(dim=1) != targets).float().mean().item()


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of right arg-max predictions."""
    return (logits.argmax(dim=1) == targets).float().mean().item()


METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
    "error_rate": error_rate,
    "accuracy": accuracy,
}
"""Metric name -> ``f(logits, targets) -> float`` over the whole validation set."""


def layer_groups(model: nn.Module) -> list[nn.Module]:
    """``model.layer_groups()`` when the model has them, else the model as one group."""
    groups = getattr(model, "layer_groups", None)
    return list(groups()) if callable(groups) else [model]


NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
)
"""fastai's ``norm_types`` (BatchNorm, InstanceNorm, LayerNorm; not GroupNorm): their parameters
get no weight decay unless ``wd_bn_bias``, and stay trainable in frozen layer groups."""


def no_decay_params(module: nn.Module) -> set[int]:
    """``id`` of every normalization-layer parameter and every bias in ``module`` (fastai's
    ``norm_bias_params(module, with_bias=True)``)."""
    found: set[int] = set()
    for sub in module.modules():
        if isinstance(sub, NORM_TYPES):
            found.update(id(p) for p in sub.parameters(recurse=False))
        bias = getattr(sub, "bias", None)
        if isinstance(bias, nn.Parameter):
            found.add(id(bias))
    return found


def make_optimizer(
    name: str,
    groups: Sequence[nn.Module],
    *,
    wd: float,
    wd_bn_bias: bool = False,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """An optimizer over the layer groups (each parameter in one parameter group).

    Every parameter group carries ``layer_group`` (the index of its layer group). With
    ``wd_bn_bias`` each layer group is one parameter group at weight decay ``wd``; without it
    (fastai's default) a layer group's normalization-layer parameters and biases form a second
    parameter group with no weight decay, so ``Learner.set_lrs`` sets both to the group's rate.

    ``adamw``: decoupled weight decay, betas ``(0.9, 0.99)``, eps 1e-5 (fastai's defaults);
    ``adam``: the same with L2 weight decay; ``sgd``: momentum 0.9 and L2 weight decay.

    ``fused``: None (the default) runs PyTorch's fused kernel (one pass per parameter group
    instead of one Python loop over its tensors, 3-4x faster on the CPU) when every parameter
    allows it (:func:`fused_supported`), else PyTorch's default implementation; False always
    runs PyTorch's default; True requires the fused kernel. The maths is the same; the rounding
    is not bit for bit, so curves of the two match to float rounding only (a seed fixes each
    on one machine).

    Raises:
        ValueError: ``fused=True`` with a parameter the fused kernel cannot take.
    """
    seen: set[int] = set()
    param_groups: list[dict[str, Any]] = []
    for index, group in enumerate(groups):
        params = [p for p in group.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        exempt = set() if wd_bn_bias else no_decay_params(group)
        decay = [p for p in params if id(p) not in exempt]
        rest = [p for p in params if id(p) in exempt]
        if decay or not rest:
            param_groups.append({"params": decay, "layer_group": index, "weight_decay": wd})
        if rest:
            param_groups.append({"params": rest, "layer_group": index, "weight_decay": 0.0})
    fused = _fused_option(fused, [p for group in param_groups for p in group["params"]])
    if name == "sgd":
        return torch.optim.SGD(
            param_groups, lr=1e-3, momentum=DEFAULT_MOM, weight_decay=wd, fused=fused
        )
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(
        param_groups, lr=1e-3, betas=(DEFAULT_MOM, 0.99), eps=1e-5, weight_decay=wd, fused=fused
    )


def _fused_devices() -> set[str]:
    try:  # private to PyTorch; CPU and CUDA have had fused Adam/AdamW/SGD since 2.4
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        return set(_get_fused_kernels_supported_devices())
    except (ImportError, AttributeError):
        return {"cpu", "cuda"}


def fused_supported(params: Iterable[torch.Tensor]) -> bool | None:
    """``True`` when PyTorch's fused optimizer step takes every one of ``params`` (floating
    point, on a device with fused kernels: CPU, CUDA and others), else ``None`` (PyTorch's
    default implementation)."""
    devices = _fused_devices()
    params = list(params)
    ok = bool(params) and all(
        p.is_floating_point() and p.device.type in devices and not p.is_sparse for p in params
    )
    return True if ok else None


def _fused_option(fused: bool | None, params: list[torch.Tensor]) -> bool | None:
    """The optimizer's ``fused`` argument for the Learner's ``fused_step`` option."""
    if fused is False:
        return None  # PyTorch's default implementation (``fused=False`` also rules out foreach)
    supported = fused_supported(params)
    if fused and supported is None:
        kinds = sorted({f"{p.dtype} on {p.device.type}" for p in params})
        raise ValueError(
            "fused_step=True needs every parameter floating point and dense on a device with "
            f"fused optimizer kernels ({', '.join(sorted(_fused_devices()))}), but the model "
            f"has {', '.join(kinds) or 'no parameters'}; leave fused_step unset (None) to use "
            "the fused step only where it can run."
        )
    return supported


_GROUP_STEPPED = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
"""PyTorch's optimizers whose step treats every parameter on its own, with its group's
settings: groups that share every setting step alike whether apart or as one."""

_NOT_SETTINGS = frozenset({"params", "layer_group"})


def optimizer_step(opt: torch.optim.Optimizer) -> None:
    """``opt.step()``, stepping the parameter groups that share every setting as one group.

    The Learner's optimizer holds one parameter group per layer group (two with fastai's
    ``wd_bn_bias=False``: with and without weight decay), and PyTorch steps each group on its
    own: one fused kernel (or foreach pass) and its Python around it, ~0.05 ms a group on the
    CPU. Every fit but one at discriminative rates gives the groups the same rate and momentum,
    so for PyTorch's SGD, Adam and AdamW (exactly those types; a subclass or another optimizer
    steps as it is) the groups that agree on every setting but ``layer_group`` step together:
    the same kernels on the same tensors, so the same weights and state bit for bit, in one
    pass per distinct setting (weight decay or none) instead of one per parameter group: a
    small CNN's fit on the CPU 1-3% faster (``bench_fused_step.py``). ``opt.param_groups`` is
    the merged list only during ``opt.step()`` (optimizer step hooks see it), and the real
    list again after it, an error included.

    PyTorch's fused SGD with momentum takes a group either on its first step (no parameter has
    a momentum buffer yet) or on a later one (every parameter has one), and raises a
    ``TypeError`` on a group that mixes both: the parameters of a layer group unfrozen after
    the fit trained its normalization layers, or of groups merged here. Such parameters step
    in a group of their own, as PyTorch steps a group on its first step.
    """
    groups = opt.param_groups
    if type(opt) not in _GROUP_STEPPED:
        opt.step()
        return
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    split = False
    try:
        for group in groups:
            key = tuple([(k, v) for k, v in group.items() if k not in _NOT_SETTINGS])
            parts = _by_first_step(opt, group)
            split = split or len(parts) > 1
            for first, params in parts:
                same = merged.get((key, first))
                if same is None:
                    merged[(key, first)] = {**group, "params": list(params)}
                else:
                    same["params"] += params
    except (TypeError, RuntimeError):  # a setting that cannot be compared (a list, a tensor)
        merged, split = {}, False
    if not merged or (not split and len(merged) == len(groups)):
        opt.step()
        return
    opt.param_groups = list(merged.values())
    try:
        opt.step()
    finally:
        opt.param_groups = groups


def _by_first_step(
    opt: torch.optim.Optimizer, group: dict[str, Any]
) -> list[tuple[bool | None, list[torch.Tensor]]]:
    """``group``'s parameters in one part (``None``: any optimizer but fused SGD with
    momentum), or by whether this is their first step (``True``: no momentum buffer yet), in
    two parts where the group mixes both."""
    params = group["params"]
    if not (type(opt) is torch.optim.SGD and group.get("fused") and group.get("momentum")):
        return [(None, params)]
    state = opt.state
    fresh = [
        p for p in params if p.grad is not None and state.get(p, {}).get("momentum_buffer") is None
    ]
    if not fresh:
        return [(False, params)]
    if len(fresh) == sum(p.grad is not None for p in params):
        return [(True, params)]
    ids = {id(p) for p in fresh}
    return [(True, fresh), (False, [p for p in params if id(p) not in ids])]


def check_loss_value(loss: Any, where: str) -> None:
    """Refuse what ``loss_func`` returned unless it is one number, a tensor of one element (the
    batch's mean loss, as training steps from and validation weighs by batch size).

    Raises:
        ValueError: naming the batch (``where``) and what came back: a tensor of one loss per
            item (``reduction="none"``) or anything but a tensor.
    """
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        return
    if isinstance(loss, torch.Tensor):
        got = f"a tensor of shape {tuple(loss.shape)}"
        hint = (
            "a loss built with reduction='none' gives one per item: use reduction='mean' "
            "(get_preds and Interpretation take each item's loss themselves)"
        )
    else:
        got = f"a {type(loss).__name__}"
        hint = "return a torch tensor computed from the model's output"
    raise ValueError(
        f"loss_func must return the batch's mean loss, a tensor of one number, but at {where} "
        f"it returned {got}: {hint}."
    )


def per_item_loss(
    loss_func: Callable[..., torch.Tensor], logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """The loss of every item: ``reduction="none"`` for torch losses, one call per item else."""
    if isinstance(loss_func, nn.modules.loss._Loss):
        unreduced = copy.copy(loss_func)
        unreduced.reduction = "none"
        return unreduced(logits, targets)
    if loss_func is F.cross_entropy:
        return F.cross_entropy(logits, targets, reduction="none")
    return torch.stack(
        [loss_func(logits[i : i + 1], targets[i : i + 1]) for i in range(len(targets))]
    )


def rng_to_checkpoint() -> dict[str, Any]:
    """:func:`trainers.seeding.rng_state` in types that ``torch.load(weights_only=True)`` reads."""
    state = rng_state()
    kind, keys, pos, has_gauss, cached = state["numpy"]
    state["numpy"] = {
        "kind": kind,
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }
    version, internal, gauss = state["python"]
    state["python"] = {"version": version, "state": list(internal), "gauss": gauss}
    return state


def rng_from_checkpoint(saved: dict[str, Any]) -> dict[str, Any]:
    """Invert :func:`rng_to_checkpoint` into the form :func:`set_rng_state` takes."""
    np_state = saved["numpy"]
    py_state = saved["python"]
    state = dict(saved)
    state["numpy"] = (
        np_state["kind"],
        np_state["keys"].numpy().astype(np.uint32),
        np_state["pos"],
        np_state["has_gauss"],
        np_state["cached"],
    )
    state["python"] = (py_state["version"], tuple(py_state["state"]), py_state["gauss"])
    return state
