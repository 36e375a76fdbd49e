"""The checks of what a Learner is given: its arguments, the device, data that fits the
model.

``Learner.__init__`` runs :func:`check_arguments` and :func:`checked_device`, the ``dls``
setter :func:`check_loaders` and :func:`check_model_fits_data` (the callbacks' own checks are
in :mod:`trainers._callback_table`). Each raises ``ValueError`` saying what to pass instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from trainers._numbers import is_finite_real as _is_real
from trainers._training import METRICS, OPTIMIZERS
from trainers.callbacks import Callback
from trainers.models import GroupedModel

__all__ = [
    "check_arguments",
    "check_loaders",
    "check_model_fits_data",
    "checked_device",
    "is_cross_entropy",
]


def check_arguments(
    model: Any,
    dls: Any,
    *,
    loss_func: Any,
    opt: Any,
    wd: Any,
    wd_bn_bias: Any,
    fused_step: Any,
    metrics: Any,
    callbacks: Any,
) -> None:
    """Refuse ``Learner(...)`` arguments it cannot train with, in this order (the first wrong
    one is named): ``opt``, ``wd``, ``wd_bn_bias``, ``fused_step``, ``metrics``,
    ``loss_func``, ``callbacks``, ``dls``, ``model``, then a model built for other data.

    Raises:
        ValueError: see :class:`~trainers.learner.Learner`.
    """
    if opt not in OPTIMIZERS:
        raise ValueError(f"opt must be one of {list(OPTIMIZERS)}, but got {opt!r}.")
    if not (_is_real(wd) and wd >= 0):
        raise ValueError(f"wd must be a finite number >= 0, but got {wd!r}.")
    if not isinstance(wd_bn_bias, bool):
        raise ValueError(f"wd_bn_bias must be True or False, but got {wd_bn_bias!r}.")
    if fused_step is not None and not isinstance(fused_step, bool):
        raise ValueError(
            f"fused_step must be None (where supported), True or False, but got {fused_step!r}."
        )
    bad_type = isinstance(metrics, str) or not isinstance(metrics, Iterable)
    if bad_type or any(not isinstance(m, str) or m not in METRICS for m in metrics):
        raise ValueError(
            f"metrics must be names from {list(METRICS)} (a list), but got {metrics!r}."
        )
    if loss_func is not None and not callable(loss_func):
        raise ValueError(
            "loss_func must be a function f(logits, targets) -> batch mean loss (or None "
            f"for cross-entropy), but got {loss_func!r}."
        )
    if isinstance(callbacks, Callback) or not isinstance(callbacks, Iterable):
        raise ValueError(
            f"callbacks must be a list of Callback instances, but got {callbacks!r}; "
            "wrap a single callback in a list."
        )
    check_loaders(dls)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, but got {type(model).__name__}.")
    if next(model.parameters(), None) is None:
        raise ValueError(
            f"model ({type(model).__name__}) has no parameters: there is nothing to train."
        )
    check_model_fits_data(model, dls, classifies=is_cross_entropy(loss_func))


def check_loaders(dls: Any) -> None:
    """Refuse data without ``train`` and ``valid`` loaders."""
    if not (hasattr(dls, "train") and hasattr(dls, "valid")):
        raise ValueError(f"dls must have train and valid loaders, but got {type(dls).__name__}.")


def checked_device(device: str | torch.device | None) -> torch.device:
    """``device`` (default: CUDA when there is one, else the CPU), refused when unusable here.

    Raises:
        ValueError: naming ``device``, for a string torch does not parse as a device or a
            CUDA / MPS device this machine does not have.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', but got "
            f"{device!r} ({error})."
        ) from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = chosen.index or 0
        if index >= count:
            found = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ValueError(
                f"device={device!r}, but this machine has {found}; pass device='cpu' (or None "
                "for CUDA when there is one)."
            )
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}, but MPS is not available here; pass device='cpu'.")
    return chosen


def is_cross_entropy(loss_func: Any) -> bool:
    """Whether ``loss_func`` is cross-entropy (the default, PyTorch's module or function),
    which wants one output per class."""
    return (
        loss_func is None
        or isinstance(loss_func, nn.CrossEntropyLoss)
        or loss_func is nn.functional.cross_entropy
    )


def check_model_fits_data(model: nn.Module, dls: Any, *, classifies: bool) -> None:
    """Refuse a :class:`~trainers.models.GroupedModel` built for other images or classes than
    ``dls`` holds, before a fit meets it as a bare PyTorch error (a channel count) or, with
    more outputs than classes, trains without a word and fails only in the interpretation.
    The outputs are checked only with cross-entropy (``classifies``: it wants one score per
    class; a loss of the user's own may want another count).

    Raises:
        ValueError: naming both counts and the ``build_model`` call that fits the data.
    """
    if not isinstance(model, GroupedModel):  # a model of the user's own: its layers unknown
        return
    pairs = (
        ("input channels", model.in_channels, "in_channels"),
        ("outputs", model.n_outputs, "n_classes"),
    )
    for what, has, name in pairs:
        wanted = getattr(dls, name, None)
        if name == "n_classes" and not classifies:
            continue
        if isinstance(has, int) and isinstance(wanted, int) and has != wanted:
            arch = model.arch or "<arch>"
            raise ValueError(
                f"the model has {has} {what} but the data has {name}={wanted}: build it for "
                f"the data, build_model({arch!r}, dls.n_classes, in_channels=dls.in_channels)."
            )
