"""The training loop behind ``Learner.fit*``: epochs, batches, events, cancellation.

One batch costs: the schedule (a few float operations per layer group), forward, loss,
backward, optimizer step, one ``.item()`` (the only CPU sync, also the divergence check) and
``zero_grad``; an event no callback defines costs one dict lookup. The accelerator options
(``learn.accelerator``: autocast, channels_last, compile, fp16 gradient scaling) add nothing
but a null context and two no-op calls when they are off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trainers import _inference
from trainers.errors import CancelBatch, CancelEpoch, CancelFit, TrainingDiverged

if TYPE_CHECKING:
    from trainers.learner import Learner

__all__ = ["Hypers", "fit"]

Hypers = Callable[[float, float], tuple[list[float], float]]
"""``(pos in [0, 1], position in epochs) -> (rate per layer group, momentum)``."""


def fit(learn: Learner, epochs: int, hypers: Hypers, *, start_epoch: int, precompute: bool) -> None:
    """Run epochs ``start_epoch .. epochs-1`` with ``hypers`` applied before every batch.

    ``before_fit`` ... ``after_fit`` fire around the epochs; ``CancelFit`` from a callback ends
    the fit after ``after_cancel_fit`` (``after_fit`` still runs); raised in ``after_epoch``, it
    waits until every callback has run its ``after_epoch``. Any other error propagates without
    ``after_fit``.

    Raises:
        ValueError: for ``epochs < 1``, ``start_epoch`` outside ``[0, epochs]`` or an empty
            training loader (and the precompute errors of :func:`_inference.fit_loaders`).
        TrainingDiverged: at the first non-finite training loss.
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, but got {epochs!r}.")
    bad_type = not isinstance(start_epoch, int) or isinstance(start_epoch, bool)
    if bad_type or not 0 <= start_epoch <= epochs:
        raise ValueError(
            f"start_epoch must be an integer in [0, epochs={epochs}], but got {start_epoch!r}."
        )
    train_dl, valid_dl, forward = _inference.fit_loaders(learn, precompute)
    learn.n_epoch, learn.n_iter = epochs, len(train_dl)
    if learn.n_iter == 0:
        raise ValueError("the training loader yields no batches; use a smaller batch_size.")
    learn.epoch = learn.resume_epoch = start_epoch
    try:
        try:
            learn._call("before_fit")
            for epoch in range(start_epoch, epochs):
                learn.epoch = epoch
                _run_epoch(learn, train_dl, valid_dl, forward, hypers, precompute)
        except CancelFit:
            learn._call("after_cancel_fit")
        learn._call("after_fit")
    finally:
        if precompute:  # the real loader continues where the feature loader's order stopped
            learn.dls.train.load_state_dict(train_dl.state_dict())


def _run_epoch(
    learn: Learner,
    train_dl: Iterable[Any],
    valid_dl: Iterable[Any],
    forward: nn.Module,
    hypers: Hypers,
    precompute: bool,
) -> None:
    """One epoch; ``CancelEpoch`` (up to ``after_train``) ends its training early but
    validation still runs; in ``before_validate`` / ``after_validate`` it skips the rest of
    validation. ``after_train`` and ``after_epoch`` always run."""
    learn.metrics_values = {}
    try:
        learn._call("before_epoch")
        learn.training = True
        _set_modes(learn.model, True, precompute)
        learn._call("before_train")  # callbacks see (and may change) the training modes
        _train_batches(learn, train_dl, forward, hypers)
    except CancelEpoch:
        learn._call("after_cancel_epoch")
    try:  # fastai's after_train is inside the epoch's cancellation scope too
        learn._call("after_train")
    except CancelEpoch:
        learn._call("after_cancel_epoch")
    learn.training = False
    _set_modes(learn.model, False, precompute)
    try:
        learn._call("before_validate")
        learn.metrics_values = _inference.evaluate(learn, valid_dl, forward)
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
            learn.pred = acc.output(forward(learn.xb))
            learn._call("after_pred")
            learn.loss = learn.loss_func(learn.pred, learn.yb)
        learn._call("after_loss")
        learn._call("before_backward")
        if scaler is None:
            learn.loss.backward()
            learn._call("after_backward")
            learn._call("before_step")
            learn.opt.step()
        else:
            _scaled_step(learn, scaler, learn.loss)
        value = learn.loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(learn.epoch, learn.iter, value)
        learn.loss_value = value
        learn._call("after_step")
    except CancelBatch:
        learn._call("after_cancel_batch")
    finally:
        learn.opt.zero_grad(set_to_none=True)
    learn._call("after_batch")


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
