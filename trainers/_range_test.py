"""What ``Learner.lr_find`` and ``Learner.one_batch`` run besides the range test itself.

``Learner.lr_find`` runs :func:`check_before_lr_find` (an optimizer holding the model's
trainable parameters; a ``ProgressiveResize`` whose first size is not the data's), resolves
``suggest`` / fastai's ``suggest_funcs`` with :func:`chosen_suggest` and calls
:func:`trainers.lr_finder.lr_find`, whose iterations step with :func:`one_batch` (through
``Learner.one_batch``, which delegates here).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import torch

from trainers import _loop
from trainers._training import optimizer_step

if TYPE_CHECKING:
    from trainers.learner import Learner
    from trainers.lr_finder import Suggest

__all__ = ["UNSET", "Unset", "check_before_lr_find", "chosen_suggest", "one_batch"]


class Unset:
    """The default of an argument whose None means something (``lr_find``'s ``suggest``)."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET = Unset()


def check_before_lr_find(learn: Learner) -> None:
    """What ``Learner.lr_find`` checks before the range test: an optimizer holding the model's
    trainable parameters, and a ``ProgressiveResize`` whose first size is not the data's (a
    warning at the user's call: the test would run at another size than training starts at).

    Raises:
        ValueError: (as ``fit``) for an optimizer lacking trainable parameters of the model (a
            replaced model), whose curve would be flat.
    """
    from trainers.callbacks import ProgressiveResize

    _loop.check_optimizer(learn)
    size = getattr(learn.dls, "image_size", None)
    for cb in learn.cbs:
        first = cb.size_at(0) if isinstance(cb, ProgressiveResize) else None
        if first is not None and size is not None and first != size:
            warnings.warn(
                f"lr_find runs on learn.dls's {size} px images, but ProgressiveResize trains "
                f"the first epochs at {first} px; to test at that size, first set "
                "learn.dls = resize.loaders_at(0, learn.dls) (a sweep's finder arm does).",
                stacklevel=3,  # the user's call of Learner.lr_find, which calls this
            )


def chosen_suggest(suggest: Suggest | Unset, suggest_funcs: Suggest | Unset) -> Suggest:
    """The rules ``Learner.lr_find`` passes on: ``suggest_funcs`` is fastai's name for
    ``suggest``: ``lr_find(suggest_funcs=(valley, steep))`` runs as ``lr_find(suggest=(valley,
    steep))``; give one or the other (neither: ``("valley",)``; None: no rule, as fastai's
    ``suggest_funcs=None``).

    Raises:
        ValueError: when both are given.
    """
    if not isinstance(suggest, Unset) and not isinstance(suggest_funcs, Unset):
        raise ValueError(
            "give suggest or suggest_funcs (fastai's name for it), not both: got "
            f"suggest={suggest!r} and suggest_funcs={suggest_funcs!r}."
        )
    if not isinstance(suggest_funcs, Unset):
        suggest = suggest_funcs
    if isinstance(suggest, Unset):
        suggest = ("valley",)
    return suggest


def one_batch(learn: Learner, xb: torch.Tensor, yb: torch.Tensor, *, where: str) -> float:
    """One training step without callbacks, schedules or records: forward, backward, step.

    Puts the model in training mode and uses the optimizer's current rates (set them with
    :meth:`Learner.set_lrs`); runs :attr:`Learner.forward_model` under the accelerator options
    (autocast, channels_last, fp16 gradient scaling). For tools such as ``lr_find`` that drive
    the optimizer themselves; pair with :meth:`Learner.snapshot` / :meth:`Learner.restore` to
    leave no trace.

    Args:
        xb, yb: The batch.
        where: How an error names this batch (``lr_find`` passes its iteration).

    Returns:
        The batch loss as a float (may be NaN or inf: that is not an error here).

    Raises:
        ValueError: for a batch that bf16 on the CPU cannot train (see
            :meth:`~trainers._accel.Accelerator.check_training_input`), or a loss that is not
            one number or has no gradient (:func:`trainers._loop.check_training_loss`), or a
            batch of one image a BatchNorm layer cannot train on, before any step;
            for a non-finite loss from a batch holding NaN/inf input values (the data is
            at fault, not the rate), after the step.
    """
    learn.model.train()
    acc = learn.accelerator
    xb = acc.batch(xb.to(learn.device))
    acc.check_training_input(learn.forward_model, xb)
    with acc.autocast():
        try:
            out = acc.output(learn.forward_model(xb))
        except ValueError as err:
            _loop.explain_one_item_batch(err, xb, where)
            raise
        loss = learn.loss_func(out, yb.to(learn.device))
    _loop.check_training_loss(learn, loss, where)
    if learn.scaler is None:
        loss.backward()
        optimizer_step(learn.opt)
    else:
        learn.scaler.scale(loss).backward()
        learn.scaler.step(learn.opt)
        learn.scaler.update()
    learn.opt.zero_grad(set_to_none=True)
    value = loss.item()
    if not math.isfinite(value):
        _loop.check_finite_input(xb, value, where)
    return value
