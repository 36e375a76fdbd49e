"""Learner: a model, its data, an optimizer and the fastai training loop with explicit events.

Example:
    >>> from trainers import Learner, build_model, make_dataloaders
    >>> dls = make_dataloaders("digits", image_size=16, batch_size=64)
    >>> model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    >>> learn = Learner(model, dls, seed=0)
    >>> learn.fit_one_cycle(2, 1e-2)  # doctest: +SKIP
    >>> learn.history[-1]["error_rate"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from trainers import _checkpoint, _inference, _loop
from trainers._accel import Accelerator, CompileOption
from trainers._numbers import is_finite_real as _is_real
from trainers._training import (
    DEFAULT_MOM,
    METRICS,
    NORM_TYPES,
    OPTIMIZERS,
    LRSpec,
    layer_groups,
    make_optimizer,
    optimizer_step,
    resolve_lrs,
)
from trainers.callbacks import EVENTS, Callback, ProgressCallback, Recorder
from trainers.errors import CallbackError, CancelBatch, CancelEpoch, CancelFit, TrainingDiverged
from trainers.models import GroupedModel
from trainers.schedules import (
    flat_cos_lr,
    one_cycle_lr,
    one_cycle_mom,
    sgdr_lr,
    sgdr_total_epochs,
)
from trainers.seeding import seed_everything

if TYPE_CHECKING:
    from trainers.lr_finder import Suggest

__all__ = ["Learner"]


class _Unset:
    """The default of an argument whose None means something (``lr_find``'s ``suggest``)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()

logger = logging.getLogger(__name__)

_PASS_THROUGH = (CancelBatch, CancelEpoch, CancelFit, CallbackError, TrainingDiverged)


def _check_int(name: str, value: Any, *, low: int) -> int:
    """``value`` as an ``int`` (Python's or NumPy's integers, not bools) of at least ``low``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, but got {value!r}.")
    return int(value)


def _check_moms(moms: Any) -> tuple[float, float, float]:
    """``moms`` as three momenta in ``[0, 1)`` (Adam's beta1 or SGD's momentum)."""
    ok = isinstance(moms, tuple | list) and len(moms) == 3
    if not (ok and all(_is_real(m) and 0 <= m < 1 for m in moms)):
        raise ValueError(
            "moms must be three numbers in [0, 1) (start, at the peak rate, end), "
            f"but got {moms!r}."
        )
    return float(moms[0]), float(moms[1]), float(moms[2])


def _checked_device(device: str | torch.device | None) -> torch.device:
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


class Learner:
    """Trains ``model`` on ``dls`` with fastai's schedules, callbacks and layer groups.

    Args:
        model: Usually a :class:`~trainers.models.GroupedModel`; any module works (one group).
        dls: Data with ``train`` and ``valid`` loaders of ``(images, labels)`` batches
            (:func:`trainers.data.make_dataloaders`); moved to ``device`` when it has ``to``.
        loss_func: ``f(logits, targets) -> batch mean loss``; cross-entropy when None. An
            ``nn.Module`` loss (class weights, say) is moved to ``device``, here and when
            :attr:`loss_func` is replaced.
        opt: ``"adamw"`` (decoupled weight decay, betas ``(mom, 0.99)``), ``"adam"`` or
            ``"sgd"`` (momentum); one rate per layer group.
        wd: Weight decay, ``>= 0``.
        wd_bn_bias: Also decay normalization-layer parameters and biases. False (fastai's
            default): they get no weight decay (a second parameter group per layer group,
            at the layer group's rate).
        fused_step: The optimizer's step: None (PyTorch's fused kernel wherever every
            parameter allows it: one pass per parameter group, 3-4x faster on the CPU), False
            (PyTorch's default implementation, as before 2026-12-05: the same maths, another
            float rounding) or True (the fused kernel, an error where it cannot run).
        metrics: Names from ``trainers._training.METRICS`` computed after every epoch.
        callbacks: Extra :class:`~trainers.callbacks.Callback` instances.
        seed: When given, seeds Python, NumPy and torch now (build the model after
            ``seed_everything`` too for reproducible initial weights; the data order comes from
            the loaders' own seed).
        device: Where to train; CUDA when available, else CPU, when None.
        progress: Show a progress bar: True, False, or None (only when stdout is a terminal).
        amp: Mixed precision: ``"bf16"`` (CPU and Ampere or newer GPUs), ``"fp16"`` (CUDA only,
            with a ``torch.amp.GradScaler``) or None (float32). Autocast covers forward passes
            and losses in training, ``lr_find``, validation, ``get_preds``, ``predict`` and
            ``tta``; outputs, losses and metrics are float32 afterwards.
        channels_last: Keep the model and every 4-D batch in ``torch.channels_last`` (NHWC)
            memory format; callbacks see ``xb`` in that format from ``before_batch`` on.
        compile: ``torch.compile`` the model for speed: False, True, a mode name
            (``"default"``, ``"reduce-overhead"``, ``"max-autotune"``) or a dict of
            ``torch.compile`` keyword arguments (``{"backend": "aot_eager"}``). ``model`` stays
            the original module (same parameters, ``state_dict`` keys without ``_orig_mod.``);
            :attr:`forward_model` is the compiled wrapper, rebuilt when ``model`` is replaced.
            ``predict`` and the head trained with ``precompute`` run uncompiled.

    Raises:
        ValueError: for an unknown ``opt`` or metric, a negative ``wd``, a ``loss_func`` that
            is not callable, data without ``train`` / ``valid``, ``callbacks`` that is not a
            list of ``Callback`` instances (or holds one defining a ``before_*`` / ``after_*``
            method that is not an event), or a bad accelerator option (unknown ``amp``,
            ``"fp16"`` off CUDA, an unknown compile mode or key, ``fused_step=True`` with a
            parameter the fused kernel cannot take).

    State that callbacks read: ``model, dls, opt, loss_func, epoch, n_epoch, iter, n_iter,
    training, xb, yb, pred, loss, loss_value, metrics_values, history, recorder, phase,
    accelerator, scaler``; after each validation (an epoch's or :meth:`validate`'s)
    ``valid_preds`` and ``valid_targets`` hold its predicted and actual class per item, on the
    device (None for outputs that are not class scores).
    """

    def __init__(
        self,
        model: nn.Module,
        dls: Any,
        *,
        loss_func: Callable[..., torch.Tensor] | None = None,
        opt: str = "adamw",
        wd: float = 0.01,
        wd_bn_bias: bool = False,
        fused_step: bool | None = None,
        metrics: Sequence[str] = ("error_rate", "accuracy"),
        callbacks: Iterable[Callback] = (),
        seed: int | None = None,
        device: str | torch.device | None = None,
        progress: bool | None = None,
        amp: str | None = None,
        channels_last: bool = False,
        compile: CompileOption = False,
    ) -> None:
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
        if not (hasattr(dls, "train") and hasattr(dls, "valid")):
            raise ValueError(
                f"dls must have train and valid loaders, but got {type(dls).__name__}."
            )
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, but got {type(model).__name__}.")
        if next(model.parameters(), None) is None:
            raise ValueError(
                f"model ({type(model).__name__}) has no parameters: there is nothing to train."
            )
        _check_model_fits_data(model, dls, classifies=_classifies(loss_func))
        if seed is not None:
            seed_everything(seed)
        self.device = _checked_device(device)
        self.accelerator = Accelerator.resolve(
            self.device, amp=amp, channels_last=channels_last, compile=compile
        )
        self.scaler = self.accelerator.grad_scaler()
        self.model = model
        self.loss_func = loss_func if loss_func is not None else nn.CrossEntropyLoss()
        self._dls = self._on_device(dls)  # checked above, before the model moved
        self.metric_names: tuple[str, ...] = tuple(metrics)
        self.opt_name, self.wd, self.wd_bn_bias = opt, float(wd), wd_bn_bias
        groups = layer_groups(self.model)
        self.opt = make_optimizer(opt, groups, wd=self.wd, wd_bn_bias=wd_bn_bias, fused=fused_step)
        self.history: list[dict[str, Any]] = []
        self.phase: str | None = None
        self.epoch = self.n_epoch = self.iter = self.n_iter = self.resume_epoch = 0
        self._fit_start_epoch = 0  # the epoch the running fit began at (its first batch)
        self.training = False
        self.xb: torch.Tensor | None = None
        self.yb: torch.Tensor | None = None
        self.pred: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None
        self.loss_value: float | None = None
        self.metrics_values: dict[str, float] = {}
        self.valid_preds: torch.Tensor | None = None
        self.valid_targets: torch.Tensor | None = None
        self._frozen = 0
        self._cbs: list[Callback] = []
        self._handlers: dict[str, list[tuple[Callback, Callable[[], Any]]]] = {}
        self.recorder = Recorder()
        self.add_cb(self.recorder)
        if progress or (progress is None and sys.stdout.isatty()):
            self.add_cb(ProgressCallback())
        for cb in callbacks:
            self.add_cb(cb)

    # ----------------------------------------------------------------- model
    @property
    def model(self) -> nn.Module:
        """The module being trained (never the compiled wrapper: save, load and freeze use it)."""
        return self._model

    @model.setter
    def model(self, model: nn.Module) -> None:
        """Replace the model: moved in place to :attr:`device` (its parameters stay the same
        objects), channels_last applied, compiled wrapper rebuilt; the optimizer is not (give
        the new model one, ``learn.opt = ...``: ``fit`` refuses an optimizer lacking its
        trainable parameters)."""
        self._model = self.accelerator.prepare(model.to(self.device))
        self._forward_model = self.accelerator.compiled(self._model)

    @property
    def dls(self) -> Any:
        """The data (``train`` and ``valid`` loaders; ``make_dataloaders``' knows more)."""
        return self._dls

    @dls.setter
    def dls(self, dls: Any) -> None:
        """Replace the data (``learn.dls = learn.dls.resize(64)``): moved to :attr:`device`;
        data of other classes or channels than the model's is refused, as in ``__init__``."""
        if not (hasattr(dls, "train") and hasattr(dls, "valid")):
            raise ValueError(
                f"dls must have train and valid loaders, but got {type(dls).__name__}."
            )
        _check_model_fits_data(self._model, dls, classifies=_classifies(self.loss_func))
        self._dls = self._on_device(dls)

    def _on_device(self, dls: Any) -> Any:
        return dls.to(self.device) if hasattr(dls, "to") else dls

    @property
    def loss_func(self) -> Callable[..., torch.Tensor]:
        """``f(logits, targets) -> batch mean loss``, run on :attr:`device`."""
        return self._loss_func

    @loss_func.setter
    def loss_func(self, loss_func: Callable[..., torch.Tensor]) -> None:
        """Replace the loss; an ``nn.Module`` (its weight buffers) is moved to :attr:`device`."""
        self._loss_func = (
            loss_func.to(self.device) if isinstance(loss_func, nn.Module) else loss_func
        )

    @property
    def forward_model(self) -> nn.Module:
        """What forward passes run: the ``torch.compile`` wrapper of :attr:`model`, or it."""
        return self._forward_model

    # ----------------------------------------------------------------- callbacks
    @property
    def cbs(self) -> tuple[Callback, ...]:
        """Installed callbacks in dispatch order."""
        return tuple(self._cbs)

    def add_cb(self, cb: Callback) -> Learner:
        """Install ``cb`` (sets ``cb.learn``).

        Raises:
            ValueError: for a non-Callback, a repeat, or a callback with a public
                ``before_*`` / ``after_*`` method that is no event (a misspelt or fastai-only
                event such as ``after_create``), which would otherwise never run.
        """
        if not isinstance(cb, Callback):
            raise ValueError(f"callbacks must be Callback instances, but got {cb!r}.")
        if any(c is cb for c in self._cbs):
            raise ValueError(f"callback {cb.name} is already installed.")
        unknown = sorted(
            name
            for name in dir(cb)
            if name.startswith(("before_", "after_"))
            and name not in EVENTS
            and callable(getattr(cb, name, None))
        )
        if unknown:
            raise ValueError(
                f"callback {cb.name} defines {unknown}, which no Learner event calls; rename "
                f"them to events from {list(EVENTS)} (or to names not starting with "
                "before_/after_)."
            )
        cb.learn = self
        self._cbs.append(cb)
        self._cbs.sort(key=lambda c: c.order)
        self._rebuild_handlers()
        return self

    def remove_cb(self, cb: Callback) -> Learner:
        """Uninstall ``cb``; the Recorder cannot be removed (it builds ``history``)."""
        if cb is self.recorder:
            raise ValueError("the Recorder cannot be removed: it builds learn.history.")
        if not any(c is cb for c in self._cbs):
            raise ValueError(f"callback {cb!r} is not installed; installed: {self._cbs}.")
        self._cbs = [c for c in self._cbs if c is not cb]
        self._rebuild_handlers()
        return self

    @contextlib.contextmanager
    def added_cbs(self, *cbs: Callback) -> Iterator[Learner]:
        """Install ``cbs`` for the duration of a ``with`` block."""
        for cb in cbs:
            self.add_cb(cb)
        try:
            yield self
        finally:
            for cb in cbs:
                self.remove_cb(cb)

    @contextlib.contextmanager
    def removed_cbs(self, *cbs: Callback) -> Iterator[Learner]:
        """Uninstall ``cbs`` for the duration of a ``with`` block, then put them back."""
        for cb in cbs:
            self.remove_cb(cb)
        try:
            yield self
        finally:
            for cb in cbs:
                self.add_cb(cb)

    def _rebuild_handlers(self) -> None:
        """Map each event to the callbacks defining it, so unused events cost one lookup."""
        self._handlers = {
            event: [
                (cb, getattr(cb, event)) for cb in self._cbs if callable(getattr(cb, event, None))
            ]
            for event in EVENTS
        }

    def _call(self, event: str) -> None:
        for cb, method in self._handlers[event]:
            try:
                method()
            except _PASS_THROUGH:
                raise
            except Exception as err:
                raise CallbackError(cb.name, event, err) from err

    def _call_all(self, event: str) -> None:
        """:meth:`_call`, but a ``CancelFit`` is raised only after every callback ran."""
        cancel: CancelFit | None = None
        for cb, method in self._handlers[event]:
            try:
                method()
            except CancelFit as err:
                cancel = cancel or err
            except _PASS_THROUGH:
                raise
            except Exception as err:
                raise CallbackError(cb.name, event, err) from err
        if cancel is not None:
            raise cancel

    # ----------------------------------------------------------------- layer groups
    @property
    def n_groups(self) -> int:
        """Number of layer groups (each one or two optimizer parameter groups)."""
        return 1 + max(self._layer_group_index())

    @property
    def frozen_groups(self) -> int:
        """How many leading layer groups are frozen (0 when unfrozen)."""
        return self._frozen

    def freeze_to(self, n: int) -> None:
        """Freeze the first ``n`` layer groups (negative counts from the end, as fastai).

        Parameters of frozen groups get ``requires_grad=False`` and their gradients are
        dropped, except those of normalization layers, which stay trainable as with fastai's
        ``train_bn=True``: BatchNorm, InstanceNorm and LayerNorm (fastai's ``norm_types``; not
        GroupNorm).

        Raises:
            ValueError: unless ``-n_groups <= n <= n_groups``.
        """
        groups = layer_groups(self.model)
        ok = isinstance(n, numbers.Integral) and not isinstance(n, bool)
        if not ok or not -len(groups) <= n <= len(groups):
            raise ValueError(
                f"n must be an integer in [{-len(groups)}, {len(groups)}], but got {n!r}."
            )
        n = int(n)
        n = n % len(groups) if n < 0 else n
        for i, group in enumerate(groups):
            for module in group.modules():
                trainable = i >= n or isinstance(module, NORM_TYPES)
                for p in module.parameters(recurse=False):
                    p.requires_grad_(trainable)
                    if not trainable:
                        p.grad = None
        self._frozen = n

    def freeze(self) -> None:
        """Freeze every layer group but the head (fastai's norm layers stay trainable).

        A model of one layer group (no ``layer_groups()`` method) has no body to freeze: it is
        left trainable, as fastai leaves it, with a warning, since ``fine_tune``'s "frozen"
        epochs would then train the whole model.
        """
        self._warn_if_one_group(stacklevel=3)
        self.freeze_to(-1)

    def _warn_if_one_group(self, stacklevel: int) -> None:
        """Warn (at the user's call) that freezing a model of one layer group freezes nothing."""
        if len(layer_groups(self.model)) == 1:
            warnings.warn(
                f"{type(self.model).__name__} is one layer group (it has no layer_groups() "
                "method), so freezing leaves every parameter trainable. Give the model "
                "layer_groups() returning its body's groups and its head, or build it with "
                "trainers.build_model.",
                stacklevel=stacklevel,
            )

    def unfreeze(self) -> None:
        """Make every parameter trainable."""
        self.freeze_to(0)

    @property
    def group_lrs(self) -> list[float]:
        """The optimizer's current learning rate per layer group, earliest first."""
        lrs: dict[int, float] = {}
        for index, group in zip(self._layer_group_index(), self.opt.param_groups, strict=True):
            lrs.setdefault(index, float(group["lr"]))
        return [lrs[i] for i in range(self.n_groups)]

    def _layer_group_index(self) -> list[int]:
        """The layer group of each optimizer parameter group (its own index in an optimizer
        assigned by hand, whose groups carry no ``layer_group``)."""
        return [g.get("layer_group", i) for i, g in enumerate(self.opt.param_groups)]

    def set_lrs(self, lrs: Sequence[float]) -> None:
        """Set the learning rate of every layer group (earliest first); lr_find uses this.

        Raises:
            ValueError: for a length other than :attr:`n_groups`.
        """
        if len(lrs) != self.n_groups:
            raise ValueError(
                f"lrs must have one rate per layer group ({self.n_groups}), but got {list(lrs)}."
            )
        for index, group in zip(self._layer_group_index(), self.opt.param_groups, strict=True):
            group["lr"] = lrs[index]

    def set_mom(self, mom: float) -> None:
        """Set Adam's beta1 or SGD's momentum in every parameter group."""
        for group in self.opt.param_groups:
            if "betas" in group:
                group["betas"] = (mom, group["betas"][1])
            else:
                group["momentum"] = mom

    # ----------------------------------------------------------------- fitting
    def fit(
        self, epochs: int, lr: LRSpec = 1e-3, *, start_epoch: int = 0, precompute: bool = False
    ) -> None:
        """Train ``epochs`` epochs at a constant rate (momentum / beta1 0.9).

        Args:
            epochs: Number of epochs, ``>= 1``.
            lr: A rate, ``(lo, hi)`` / ``slice(lo, hi)`` spread geometrically over the layer
                groups, or ``slice(hi)`` (``hi/10`` for all but the last group).
            start_epoch: Skip the first epochs (resume after :meth:`load`).
            precompute: Train the head on cached body outputs (frozen body, no augmentation).

        Raises:
            ValueError: for a bad ``epochs``, ``start_epoch`` or ``lr`` (see :meth:`fit_one_cycle`).
            TrainingDiverged: when a training loss is not finite (ValueError when the batch
                itself holds NaN/inf inputs).
        """
        lrs = resolve_lrs(lr, self.n_groups, name="lr")
        _loop.fit(
            self,
            epochs,
            lambda pos, epoch_pos: (lrs, DEFAULT_MOM),
            start_epoch=start_epoch,
            precompute=precompute,
        )

    def fit_one_cycle(
        self,
        epochs: int,
        lr_max: LRSpec = 3e-3,
        *,
        pct_start: float = 0.25,
        div: float = 25.0,
        div_final: float = 1e5,
        moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
        start_epoch: int = 0,
        precompute: bool = False,
    ) -> None:
        """Train with the one-cycle policy, updated every batch (see :mod:`trainers.schedules`).

        The rate of each group follows ``one_cycle_lr(pos, lr_max=<group's rate>, ...)`` with
        ``pos = iteration / (epochs * batches_per_epoch)``; momentum (beta1 for Adam) goes
        ``moms[0] -> moms[1] -> moms[2]`` inversely.

        Args:
            epochs: Total epochs of the cycle, ``>= 1``.
            lr_max: Peak rate: a number, ``(lo, hi)``, ``slice(lo, hi)`` or ``slice(hi)``.
            pct_start: Warm-up fraction in ``[0, 1]``.
            div: Start rate is ``lr_max / div``.
            div_final: Final rate is ``lr_max / div_final``.
            moms: Momentum at the start, the peak rate and the end.
            start_epoch: Resume the cycle at this epoch (the schedule continues where an
                interrupted ``fit_one_cycle(epochs)`` stopped).
            precompute: Train the head on cached body outputs.

        Raises:
            ValueError: for ``lr_max`` <= 0, NaN or ``lo > hi`` (the message names ``lr_max``),
                ``pct_start`` outside ``[0, 1]``, ``div`` / ``div_final`` not a finite number
                > 0, ``moms`` not three numbers in ``[0, 1)``, or bad ``epochs`` /
                ``start_epoch``.
        """
        lrs = resolve_lrs(lr_max, self.n_groups, name="lr_max")
        mom_max, mom_min, mom_end = _check_moms(moms)

        def hypers(pos: float, epoch_pos: float) -> tuple[list[float], float]:
            rates = [
                one_cycle_lr(pos, lr_max=m, pct_start=pct_start, div=div, div_final=div_final)
                for m in lrs
            ]
            mom = one_cycle_mom(
                pos, pct_start=pct_start, mom_max=mom_max, mom_min=mom_min, mom_end=mom_end
            )
            return rates, mom

        hypers(0.0, 0.0)  # validate the schedule's arguments before training
        _loop.fit(self, epochs, hypers, start_epoch=start_epoch, precompute=precompute)

    def fit_flat_cos(
        self,
        epochs: int,
        lr: LRSpec = 1e-3,
        *,
        pct_start: float = 0.75,
        div_final: float = 1e5,
        start_epoch: int = 0,
        precompute: bool = False,
    ) -> None:
        """fastai's ``fit_flat_cos``: each group's rate flat at ``lr`` for the first
        ``pct_start`` of training, then half a cosine down to ``lr / div_final``, updated every
        batch (:func:`~trainers.schedules.flat_cos_lr`); momentum stays 0.9.

        Args:
            epochs: Number of epochs, ``>= 1``.
            lr: The flat rate: a number, ``(lo, hi)``, ``slice(lo, hi)`` or ``slice(hi)``
                (default 1e-3, as ``fit``'s and fastai's ``learn.lr``).
            pct_start: Fraction of training at the flat rate, in ``[0, 1]``.
            div_final: The rate ends at ``lr / div_final``.
            start_epoch: Resume the schedule at this epoch (after :meth:`load`).
            precompute: Train the head on cached body outputs.

        Raises:
            ValueError: for a bad ``lr`` (named), ``pct_start`` outside ``[0, 1]``, a
                ``div_final`` that is not a finite number > 0, or bad ``epochs`` /
                ``start_epoch``.
        """
        lrs = resolve_lrs(lr, self.n_groups, name="lr")

        def hypers(pos: float, epoch_pos: float) -> tuple[list[float], float]:
            rates = [flat_cos_lr(pos, lr=m, pct_start=pct_start, div_final=div_final) for m in lrs]
            return rates, DEFAULT_MOM

        hypers(0.0, 0.0)  # validate the schedule's arguments before training
        _loop.fit(self, epochs, hypers, start_epoch=start_epoch, precompute=precompute)

    def fit_sgdr(
        self,
        n_cycles: int,
        cycle_len: int,
        lr_max: LRSpec,
        *,
        cycle_mult: int = 2,
        start_epoch: int = 0,
        precompute: bool = False,
    ) -> None:
        """Cosine annealing with warm restarts for ``sgdr_total_epochs(n_cycles, ...)`` epochs.

        ``cycle_mult`` defaults to 2, as fastai's ``fit_sgdr``: each cycle twice the last
        (``cycle_mult=1`` restarts every ``cycle_len`` epochs).

        Each group's rate is ``sgdr_lr(epoch + batch / n_batches, lr_max=<group's rate>,
        cycle_len=cycle_len, cycle_mult=cycle_mult)``; momentum stays 0.9.

        Raises:
            ValueError: for non-integer or < 1 ``n_cycles``, ``cycle_len``, ``cycle_mult``, or a
                bad ``lr_max``.
        """
        epochs = sgdr_total_epochs(n_cycles, cycle_len, cycle_mult)
        lrs = resolve_lrs(lr_max, self.n_groups, name="lr_max")

        def hypers(pos: float, epoch_pos: float) -> tuple[list[float], float]:
            return [
                sgdr_lr(epoch_pos, lr_max=m, cycle_len=cycle_len, cycle_mult=cycle_mult)
                for m in lrs
            ], DEFAULT_MOM

        _loop.fit(self, epochs, hypers, start_epoch=start_epoch, precompute=precompute)

    def fine_tune(
        self,
        epochs: int,
        base_lr: float = 2e-3,
        *,
        freeze_epochs: int = 1,
        lr_mult: float = 100,
        pct_start: float = 0.3,
        div: float = 5.0,
    ) -> None:
        """fastai's transfer-learning recipe, with fastai's defaults.

        Freeze, ``fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99)``, halve
        ``base_lr``, unfreeze, ``fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr),
        pct_start=pct_start, div=div)``: the unfrozen cycle starts at a fifth of its peak, not
        ``fit_one_cycle``'s 1/25, since the body already holds trained weights. History records
        carry ``phase`` ``"frozen"`` / ``"unfrozen"``.

        Every argument is checked before anything is frozen or trained.

        Raises:
            ValueError: for a ``base_lr`` that is not a finite number > 0, ``epochs < 1``,
                ``freeze_epochs < 0``, ``lr_mult`` not a finite number >= 1, ``pct_start``
                outside ``[0, 1]`` or ``div`` not a finite number > 0.
        """
        if isinstance(base_lr, slice | tuple | list | np.ndarray):  # resolve_lrs takes them
            raise ValueError(
                f"base_lr must be a finite number > 0, but got {base_lr!r}: fine_tune spreads "
                "its own rates, slice(base_lr / 2 / lr_mult, base_lr / 2), over the groups."
            )
        resolve_lrs(base_lr, 1, name="base_lr")
        epochs = _check_int("epochs", epochs, low=1)
        freeze_epochs = _check_int("freeze_epochs", freeze_epochs, low=0)
        if not (_is_real(lr_mult) and lr_mult >= 1):
            raise ValueError(f"lr_mult must be a finite number >= 1, but got {lr_mult!r}.")
        lo, hi = base_lr / 2 / lr_mult, base_lr / 2
        if not lo > 0:
            raise ValueError(
                f"base_lr / 2 / lr_mult must be > 0, but base_lr={base_lr!r} and "
                f"lr_mult={lr_mult!r} give {lo!r}."
            )
        for rate in resolve_lrs(slice(lo, hi), self.n_groups, name="base_lr"):
            one_cycle_lr(0.0, lr_max=rate, pct_start=pct_start, div=div)
        previous = self.phase
        try:
            if freeze_epochs:
                self._warn_if_one_group(stacklevel=4)
            self.freeze_to(-1)
            if freeze_epochs:
                self.phase = "frozen"
                self.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99)
            self.unfreeze()
            self.phase = "unfrozen"
            self.fit_one_cycle(epochs, slice(lo, hi), pct_start=pct_start, div=div)
        finally:
            self.phase = previous

    def lr_find(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10,
        num_it: int = 100,
        *,
        stop_div: bool = True,
        div_factor: float = 4.0,
        beta: float = 0.98,
        suggest: Suggest | _Unset = _UNSET,
        suggest_funcs: Suggest | _Unset = _UNSET,
    ) -> Any:
        """Run the LR range test; see :func:`trainers.lr_finder.lr_find` (leaves no trace).

        ``suggest_funcs`` is fastai's name for ``suggest``: ``lr_find(suggest_funcs=(valley,
        steep))`` runs as ``lr_find(suggest=(valley, steep))``; give one or the other (neither:
        ``("valley",)``; None: no rule, as fastai's ``suggest_funcs=None``).

        Raises:
            ValueError: as ``lr_find`` does, and (as ``fit``) for an optimizer lacking trainable
                parameters of the model (a replaced model), whose curve would be flat.
        """
        from trainers.callbacks import ProgressiveResize
        from trainers.lr_finder import lr_find

        _loop.check_optimizer(self)
        size = getattr(self.dls, "image_size", None)
        for cb in self._cbs:
            first = cb.size_at(0) if isinstance(cb, ProgressiveResize) else None
            if first is not None and size is not None and first != size:
                warnings.warn(
                    f"lr_find runs on learn.dls's {size} px images, but ProgressiveResize trains "
                    f"the first epochs at {first} px; to test at that size, first set "
                    "learn.dls = resize.loaders_at(0, learn.dls) (a sweep's finder arm does).",
                    stacklevel=2,
                )
        if not isinstance(suggest, _Unset) and not isinstance(suggest_funcs, _Unset):
            raise ValueError(
                "give suggest or suggest_funcs (fastai's name for it), not both: got "
                f"suggest={suggest!r} and suggest_funcs={suggest_funcs!r}."
            )
        if not isinstance(suggest_funcs, _Unset):
            suggest = suggest_funcs
        if isinstance(suggest, _Unset):
            suggest = ("valley",)
        return lr_find(
            self,
            start_lr,
            end_lr,
            num_it,
            stop_div=stop_div,
            div_factor=div_factor,
            beta=beta,
            suggest=suggest,
        )

    def fit_recipe(self, **kwargs: Any) -> Any:
        """Run fastai's eight-step recipe; see :func:`trainers.recipe.fit_recipe`."""
        from trainers.recipe import fit_recipe

        return fit_recipe(self, **kwargs)

    def one_batch(self, xb: torch.Tensor, yb: torch.Tensor, *, where: str = "one_batch") -> float:
        """One training step without callbacks, schedules or records: forward, backward, step.

        Puts the model in training mode and uses the optimizer's current rates (set them with
        :meth:`set_lrs`); runs :attr:`forward_model` under the accelerator options (autocast,
        channels_last, fp16 gradient scaling). For tools such as ``lr_find`` that drive the
        optimizer themselves; pair with :meth:`snapshot` / :meth:`restore` to leave no trace.

        Args:
            xb, yb: The batch.
            where: How an error names this batch (``lr_find`` passes its iteration).

        Returns:
            The batch loss as a float (may be NaN or inf: that is not an error here).

        Raises:
            ValueError: for a batch that bf16 on the CPU cannot train (see
                :meth:`~trainers._accel.Accelerator.check_training_input`), before any step;
                for a non-finite loss from a batch holding NaN/inf input values (the data is
                at fault, not the rate), after the step.
        """
        self.model.train()
        acc = self.accelerator
        xb = acc.batch(xb.to(self.device))
        acc.check_training_input(self.forward_model, xb)
        with acc.autocast():
            loss = self.loss_func(acc.output(self.forward_model(xb)), yb.to(self.device))
        if self.scaler is None:
            loss.backward()
            optimizer_step(self.opt)
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        value = loss.item()
        if not math.isfinite(value):
            _loop.check_finite_input(xb, value, where)
        return value

    # ----------------------------------------------------------------- evaluation
    def validate(self) -> dict[str, float]:
        """``{"valid_loss", <metrics>}`` of the current model on ``dls.valid``, in eval mode;
        every module's mode and ``training`` are put back afterwards (a callback may call it
        mid-fit, as ``get_preds`` and ``tta``)."""
        training = self.training
        try:
            with _inference.eval_mode(self.model):
                self.training = False
                return _inference.evaluate(self, self.dls.valid, self.forward_model)
        finally:
            self.training = training

    def get_preds(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(probs, targets, losses)`` over ``dls.valid`` in its order, on the CPU."""
        return _inference.get_preds(self)

    def predict(self, x: Any) -> torch.Tensor:
        """Class probabilities of one image or a batch: a normalised float tensor ``(C, H, W)``
        / ``(N, C, H, W)``, uint8 pixels (resized to the data's size and normalised with its
        statistics), an image file's path, a PIL image, or a list of them; the channels and
        size are checked against the data's; see :func:`trainers._inference.predict`."""
        return _inference.predict(self, x)

    def tta(self, n: int = 4, *, beta: float = 0.25) -> dict[str, Any]:
        """Test-time augmentation (fastai's blend); see :func:`trainers._inference.tta`."""
        return _inference.tta(self, n, beta=beta)

    # ----------------------------------------------------------------- state
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write model, optimizer, history, epoch, freezing and RNG states atomically.

        See :func:`trainers._checkpoint.save`. Returns the path written.
        """
        return _checkpoint.save(self, path)

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Write the model and what predicting needs (classes, statistics, image size) for
        :func:`trainers.load_learner`, which needs no data; see :func:`trainers.export.export`.
        Returns the path written."""
        from trainers.export import export

        return export(self, path)

    def load(
        self, path: str | os.PathLike[str], *, with_opt: bool = True, with_rng: bool = True
    ) -> Learner:
        """Restore a :meth:`save` file; see :func:`trainers._checkpoint.load`."""
        _checkpoint.load(self, path, with_opt=with_opt, with_rng=with_rng)
        return self

    def snapshot(self) -> dict[str, Any]:
        """A deep in-memory copy of the state; see :func:`trainers._checkpoint.snapshot`."""
        return _checkpoint.snapshot(self)

    def restore(self, snap: dict[str, Any]) -> None:
        """Put back a :meth:`snapshot` exactly (weights, optimizer, modes, flags, grads, RNG)."""
        _checkpoint.restore(self, snap)


def _classifies(loss_func: Any) -> bool:
    """Whether ``loss_func`` is cross-entropy (the default, PyTorch's module or function),
    which wants one output per class."""
    return (
        loss_func is None
        or isinstance(loss_func, nn.CrossEntropyLoss)
        or loss_func is nn.functional.cross_entropy
    )


def _check_model_fits_data(model: nn.Module, dls: Any, *, classifies: bool) -> None:
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
