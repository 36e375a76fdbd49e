"""Freezing layer groups: which parameters of a Learner's model train.

:meth:`Learner.freeze_to <trainers.learner.Learner.freeze_to>` (and so ``freeze``,
``unfreeze``, ``fine_tune``, ``load`` and ``restore``) runs :func:`freeze_to`;
``Learner.freeze`` and :func:`trainers._fit_schedules.fine_tune` warn through
:func:`warn_if_one_group` when the model has no body to freeze.
"""

from __future__ import annotations

import numbers
import warnings
from typing import TYPE_CHECKING

from torch import nn

from trainers._training import NORM_TYPES, layer_groups

if TYPE_CHECKING:
    from trainers.learner import Learner

__all__ = ["freeze_to", "warn_if_one_group"]


def freeze_to(learn: Learner, n: int) -> None:
    """Freeze the first ``n`` layer groups of ``learn.model`` (negative counts from the end, as
    fastai).

    Parameters of frozen groups get ``requires_grad=False`` and their gradients are
    dropped, except those of normalization layers, which stay trainable as with fastai's
    ``train_bn=True``: BatchNorm, InstanceNorm and LayerNorm (fastai's ``norm_types``; not
    GroupNorm).

    Raises:
        ValueError: unless ``-n_groups <= n <= n_groups``.
    """
    groups = layer_groups(learn.model)
    ok = isinstance(n, numbers.Integral) and not isinstance(n, bool)
    if not ok or not -len(groups) <= n <= len(groups):
        raise ValueError(f"n must be an integer in [{-len(groups)}, {len(groups)}], but got {n!r}.")
    n = int(n)
    n = n % len(groups) if n < 0 else n
    for i, group in enumerate(groups):
        for module in group.modules():
            trainable = i >= n or isinstance(module, NORM_TYPES)
            for p in module.parameters(recurse=False):
                p.requires_grad_(trainable)
                if not trainable:
                    p.grad = None
    learn._frozen = n


def warn_if_one_group(model: nn.Module, stacklevel: int) -> None:
    """Warn (at the user's call) that freezing a model of one layer group freezes nothing."""
    if len(layer_groups(model)) == 1:
        warnings.warn(
            f"{type(model).__name__} is one layer group (it has no layer_groups() "
            "method), so freezing leaves every parameter trainable. Give the model "
            "layer_groups() returning its body's groups and its head, or build it with "
            "trainers.build_model.",
            stacklevel=stacklevel,
        )
