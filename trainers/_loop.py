"""The training loop behind ``Learner.fit*``: epochs, batches, events, cancellation.

One batch costs: the schedule (a few float operations per layer group), forward, loss,
backward, optimizer step, one ``.item()`` (the only CPU sync, also the divergence check) and
``zero_grad``; an event no callback defines costs one dict lookup. The accelerator options
(``learn.accelerator``: autocast, channels_last, compile, fp16 gradient scaling) add nothing
but a null context and two no-op calls when they are off.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from trainers import _inference
from trainers._training import check_loss_value, optimizer_step
from trainers.errors import CancelBatch, CancelEpoch, CancelFit, TrainingDiverged

if TYPE_CHECKING:
    from trainers.learner import Learner

__all__ = [
    "Hypers",
    "check_finite_input",
    "check_optimizer",
    "check_training_loss",
    "explain_one_item_batch",
    "fit",
]

Hypers = Callable[[float, float], tuple[list[float], float]]
"""``(pos in [0, 1], position in epochs) -> (rate per layer group, momentum)``."""


def fit(learn: Learner, epochs: int, hypers: Hypers, *, start_epoch: int, precompute: bool) -> None:
    """Run epochs ``start_epoch .. epochs-1`` with ``hypers`` applied before every batch.

    ``before_fit`` ... ``after_fit`` fire around the epochs; ``CancelFit`` from a callback ends
    the fit after ``after_cancel_fit`` (``after_fit`` still runs); raised in ``after_epoch``, it
    waits until every callback has run its ``after_epoch``. Any other error propagates without
    ``after_fit``.

    Raises:
        ValueError: for ``epochs < 1``, ``start_epoch`` outside ``[0, epochs]``, an optimizer
            missing trainable parameters of the model (a replaced model), an empty training
            loader (and the precompute errors of :func:`_inference.fit_loaders`).
        TrainingDiverged: at the first non-finite training loss.
        ValueError: when that loss comes from a batch holding NaN/inf input values, or for a
            training loss that is not one number or has no gradient
            (:func:`check_training_loss`: ``reduction="none"``, a fit inside
            ``torch.no_grad()``, a model with nothing trainable), at its first batch, or for a
            batch of one image that a BatchNorm layer cannot train on
            (:func:`explain_one_item_batch`).
    """
    if not _is_int(epochs) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, but got {epochs!r}.")
    if not _is_int(start_epoch) or not 0 <= start_epoch <= epochs:
        raise ValueError(
            f"start_epoch must be an integer in [0, epochs={epochs}], but got {start_epoch!r}."
        )
    epochs, start_epoch = int(epochs), int(start_epoch)  # NumPy integers too
    check_optimizer(learn)
    train_dl, valid_dl, forward = _inference.fit_loaders(learn, precompute)
    learn.n_epoch, learn.n_iter = epochs, len(train_dl)
    if learn.n_iter == 0:
        raise ValueError(
            "the training loader yields no batches: it holds no items, or (with drop_last) "
            "fewer than one batch_size of them."
        )
    if _sized_empty(valid_dl):  # refused now, not after an epoch of training changed the weights
        raise ValueError(
            "the validation loader yields no batches; there is nothing to evaluate: give the "
            "data a validation set (valid_pct > 0, or a valid/ folder)."
        )
    learn.epoch = learn.resume_epoch = learn._fit_start_epoch = start_epoch
    loaders = _FitLoaders(learn.dls, train_dl, valid_dl, precompute)
    started_with = learn.dls
    try:
        try:
            learn._call("before_fit")
            for epoch in range(start_epoch, epochs):
                learn.epoch = epoch
                _run_epoch(learn, loaders, forward, hypers, precompute)
        except CancelFit:
            learn._call("after_cancel_fit")
        learn._call("after_fit")
    except BaseException:  # no after_fit: the data a callback switched to must not outlive it
        learn.dls = started_with
        raise
    finally:
        if precompute:  # the real loader continues where the feature loader's order stopped
            learn.dls.train.load_state_dict(train_dl.state_dict())


def _sized_empty(loader: Any) -> bool:
    """Whether ``loader`` says it yields no batches (one without ``len`` is not asked)."""
    try:
        return len(loader) == 0
    except TypeError:
        return False


def _is_int(value: Any) -> bool:
    """An integer, Python's or NumPy's, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def check_optimizer(learn: Learner) -> None:
    """Refuse a fit whose optimizer lacks trainable parameters of the model: they would never
    change, and the history would only show a model that does not learn."""
    held = {id(p) for group in learn.opt.param_groups for p in group["params"]}
    missing = [
        n for n, p in learn.model.named_parameters() if p.requires_grad and id(p) not in held
    ]
    if missing:
        raise ValueError(
            f"learn.opt does not hold {len(missing)} trainable parameter(s) of learn.model "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}), which would never "
            "train: learn.model was replaced after the optimizer was made, or the model's "
            "layer_groups() leave them out. Build a new Learner for the new model, or give it an "
            "optimizer (learn.opt = ...)."
        )


class _FitLoaders:
    """The loaders a fit iterates, following ``learn.dls`` when a ``before_epoch`` callback
    replaces it (``ProgressiveResize``: the same split and batch size at another image size)."""

    def __init__(self, dls: Any, train: Iterable[Any], valid: Iterable[Any], precompute: bool):
        self.dls, self.train, self.valid, self.precompute = dls, train, valid, precompute

    def follow(self, learn: Learner) -> None:
        """Take ``learn.dls``' loaders if a callback replaced it since the last epoch.

        Raises:
            ValueError: with ``precompute`` (the cached activations are of the fit's data), or
                for a training loader whose number of batches differs from the schedule's.
        """
        if learn.dls is self.dls:
            return
        if self.precompute:
            raise ValueError(
                "a callback replaced learn.dls during a fit with precompute=True, whose cached "
                "activations are of the fit's own data: fit without precompute to switch data."
            )
        train, valid = learn.dls.train, learn.dls.valid
        if len(train) != learn.n_iter:
            raise ValueError(
                f"a callback replaced learn.dls with a training loader of {len(train)} batches "
                f"an epoch, but the fit's schedule was built for {learn.n_iter}: keep the split "
                "and the batch size (DataLoaders.resize does)."
            )
        self.dls, self.train, self.valid = learn.dls, train, valid


def _run_epoch(
    learn: Learner, loaders: _FitLoaders, forward: nn.Module, hypers: Hypers, precompute: bool
) -> None:
    """One epoch; ``CancelEpoch`` (up to ``after_train``) ends its training early but
    validation still runs; in ``before_validate`` / ``after_validate`` it skips the rest of
    validation. ``after_train`` and ``after_epoch`` always run. A ``before_epoch`` callback
    may replace ``learn.dls`` (see :class:`_FitLoaders`)."""
    learn.metrics_values = {}
    try:
        learn._call("before_epoch")
        loaders.follow(learn)
        learn.training = True
        _set_modes(learn.model, True, precompute)
        learn._call("before_train")  # callbacks see (and may change) the training modes
        _train_batches(learn, loaders.train, forward, hypers)
    except CancelEpoch:
        loaders.follow(learn)  # cancelled in before_epoch, after a callback switched the data
        learn._call("after_cancel_epoch")
    try:  # fastai's after_train is inside the epoch's cancellation scope too
        learn._call("after_train")
    except CancelEpoch:
        learn._call("after_cancel_epoch")
    learn.training = False
    _set_modes(learn.model, False, precompute)
    try:
        learn._call("before_validate")
        learn.metrics_values = _inference.evaluate(learn, loaders.valid, forward)
        learn._call("after_validate")
    except CancelEpoch:
        learn._call("after_cancel_epoch")
    learn.resume_epoch = learn.epoch + 1
    learn._call_all("after_epoch")  # a CancelFit waits until every callback saw the epoch


def _set_modes(model: nn.Module, training: bool, precompute: bool) -> None:
    """``model.train(training)``; with ``precompute`` the body stays in eval mode, as the cached
    activations were computed, and only the head changes (no walk over every body module)."""
    if not precompute:
        model.train(training)
        return
    model.training = training
    model.head.train(training)  # type: ignore[union-attr]
    body: nn.Module = model.body  # type: ignore[assignment]
    if any(m.training for m in body.modules()):  # a callback set part of it training
        body.eval()


def _train_batches(
    learn: Learner, train_dl: Iterable[Any], forward: nn.Module, hypers: Hypers
) -> None:
    n_iter = learn.n_iter
    total = learn.n_epoch * n_iter
    first = learn.epoch * n_iter
    for i, (xb, yb) in enumerate(train_dl):
        learn.iter = i
        lrs, mom = hypers((first + i) / total, (first + i) / n_iter)
        learn.set_lrs(lrs)
        learn.set_mom(mom)
        _train_batch(learn, xb, yb, forward)


def _train_batch(learn: Learner, xb: torch.Tensor, yb: torch.Tensor, forward: nn.Module) -> None:
    learn.loss_value = None
    acc, scaler = learn.accelerator, learn.scaler
    try:
        learn.xb = acc.batch(xb.to(learn.device, non_blocking=True))
        learn.yb = yb.to(learn.device, non_blocking=True)
        learn._call("before_batch")
        acc.check_training_input(forward, learn.xb)  # after callbacks that resize the batch
        with acc.autocast():  # forward and loss (and the callbacks between) in the amp dtype
            try:
                learn.pred = acc.output(forward(learn.xb))
            except ValueError as err:
                explain_one_item_batch(err, learn.xb, f"epoch {learn.epoch}, batch {learn.iter}")
                raise
            learn._call("after_pred")
            learn.loss = learn.loss_func(learn.pred, learn.yb)
        learn._call("after_loss")
        learn._call("before_backward")
        check_training_loss(learn, learn.loss, f"epoch {learn.epoch}, batch {learn.iter}")
        if scaler is None:
            learn.loss.backward()
            learn._call("after_backward")
            learn._call("before_step")
            optimizer_step(learn.opt)
        else:
            _scaled_step(learn, scaler, learn.loss)
        value = learn.loss.item()
        if not math.isfinite(value):
            check_finite_input(learn.xb, value, f"epoch {learn.epoch}, batch {learn.iter}")
            raise TrainingDiverged(learn.epoch, learn.iter, value, _first_batch_cause(learn))
        learn.loss_value = value
        learn._call("after_step")
    except CancelBatch:
        learn._call("after_cancel_batch")
    finally:
        learn.opt.zero_grad(set_to_none=True)
    learn._call("after_batch")


def _first_batch_cause(learn: Learner) -> str | None:
    """Why the loss of a fit's first batch is not finite, or None once the fit has stepped.

    That loss comes from the weights the fit started with: its learning rate cannot be the
    cause, and "lower the rate" would send the user to ``lr_find`` for nothing.
    """
    if learn.epoch != learn._fit_start_epoch or learn.iter != 0:
        return None
    return (
        "That is this fit's first batch, whose loss comes from the weights the fit started "
        "with, so its learning rate is not the cause: check the loss function, the model's "
        "output (a log of 0, a division by 0, an overflow in a custom layer) and its weights "
        "(an earlier fit that diverged, or loaded weights holding NaN)."
    )


def check_training_loss(learn: Learner, loss: Any, where: str) -> None:
    """Refuse a loss ``backward`` cannot start from, before it fails with PyTorch's "grad can
    be implicitly created only for scalar outputs" or "element 0 of tensors does not require
    grad" (no cost but two attribute reads when it can).

    Raises:
        ValueError: naming the batch and the cause: a loss that is not one number
            (:func:`~trainers._training.check_loss_value`), gradients switched off around the
            call (``torch.no_grad()`` / ``torch.inference_mode()``), no trainable parameter in
            the model (every ``requires_grad`` False), or a loss that depends on none of them.
    """
    if isinstance(loss, torch.Tensor) and loss.requires_grad and loss.numel() == 1:
        return
    check_loss_value(loss, where)
    if not torch.is_grad_enabled():
        why = (
            "gradients are switched off here: the call runs inside torch.no_grad() or "
            "torch.inference_mode() (or after torch.set_grad_enabled(False)); call it outside"
        )
    elif not any(p.requires_grad for p in learn.model.parameters()):
        why = (
            "no parameter of learn.model is trainable (requires_grad is False for every one: "
            f"frozen by hand, or freeze_to({learn.n_groups}) on a model without normalization "
            "layers); call learn.unfreeze(), or learn.freeze_to(n) with n < "
            f"{learn.n_groups} to train the last groups"
        )
    else:
        why = (
            "the loss depends on no trainable parameter of learn.model: loss_func must compute "
            "it from the model's output (not a detached copy of it, nor a constant)"
        )
    raise ValueError(f"the training loss at {where} has no gradient to step with: {why}.")


def explain_one_item_batch(err: ValueError, xb: torch.Tensor, where: str) -> None:
    """Turn PyTorch's "Expected more than 1 value per channel when training" (a BatchNorm
    layer training on a batch of one image) into an error naming the batch size; return for
    any other error (the caller re-raises it).

    Raises:
        ValueError: naming the batch, its size and what to change.
    """
    if not str(err).startswith("Expected more than 1 value per channel when training"):
        return
    raise ValueError(
        f"the training batch at {where} holds {len(xb)} image(s), and a BatchNorm layer in "
        "training mode needs more than one value per channel (PyTorch: "
        f"{err}): build the data with a batch_size of at least 2 "
        "(make_dataloaders(..., batch_size=...)) and more than one training image (a final "
        "batch of one image is dropped already)."
    ) from err


def check_finite_input(xb: torch.Tensor | None, loss: float, where: str) -> None:
    """Refuse a batch holding NaN/inf, once its loss came out non-finite (no cost otherwise).

    Such a loss says nothing about the learning rate: raising ``TrainingDiverged`` ("the rate
    is probably too high") would send the user to ``lr_find``, and a sweep would record every
    rate as diverged.

    Raises:
        ValueError: naming the batch and the count of non-finite input values.
    """
    if xb is None or not xb.is_floating_point():
        return
    bad = int((~torch.isfinite(xb)).sum())
    if bad:
        raise ValueError(
            f"the training batch at {where} holds {bad} NaN or inf input value(s) out of "
            f"{xb.numel()}, so its loss is {loss}: the data is at fault, not the learning rate. "
            "Check the training images (and the normalisation: a channel std of 0 gives inf)."
        )


def _scaled_step(learn: Learner, scaler: torch.amp.GradScaler, loss: torch.Tensor) -> None:
    """fp16's backward and step: ``after_backward`` and ``before_step`` see unscaled gradients;
    inf/NaN steps are skipped."""
    scaler.scale(loss).backward()
    scaler.unscale_(learn.opt)
    try:
        learn._call("after_backward")
        learn._call("before_step")
    except BaseException:
        scaler.update()  # close this batch's unscale_, or the next batch's would raise
        raise
    scaler.step(learn.opt)
    scaler.update()
