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

import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trainers import (
    _callback_table,
    _checkpoint,
    _fit_schedules,
    _freezing,
    _inference,
    _range_test,
)
from trainers._accel import Accelerator, CompileOption
from trainers._learner_checks import (
    check_arguments,
    check_loaders,
    check_model_fits_data,
    checked_device,
    is_cross_entropy,
)
from trainers._range_test import UNSET as _UNSET
from trainers._range_test import Unset as _Unset
from trainers._training import LRSpec, layer_groups, make_optimizer
from trainers.callbacks import Callback, ProgressCallback, Recorder
from trainers.errors import CallbackError, CancelBatch, CancelEpoch, CancelFit, TrainingDiverged
from trainers.seeding import seed_everything

if TYPE_CHECKING:
    from trainers.lr_finder import Suggest

__all__ = ["Learner"]

logger = logging.getLogger(__name__)

_PASS_THROUGH = (CancelBatch, CancelEpoch, CancelFit, CallbackError, TrainingDiverged)


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
        check_arguments(
            model,
            dls,
            loss_func=loss_func,
            opt=opt,
            wd=wd,
            wd_bn_bias=wd_bn_bias,
            fused_step=fused_step,
            metrics=metrics,
            callbacks=callbacks,
        )
        if seed is not None:
            seed_everything(seed)
        self.device = checked_device(device)
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
        check_loaders(dls)
        check_model_fits_data(self._model, dls, classifies=is_cross_entropy(self.loss_func))
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
        _callback_table.check_new_callback(cb, self._cbs)
        cb.learn = self
        self._cbs.append(cb)
        self._cbs.sort(key=lambda c: c.order)
        self._handlers = _callback_table.handlers_by_event(self._cbs)
        return self

    def remove_cb(self, cb: Callback) -> Learner:
        """Uninstall ``cb``; the Recorder cannot be removed (it builds ``history``)."""
        _callback_table.check_removable(cb, self._cbs, recorder=self.recorder)
        self._cbs = [c for c in self._cbs if c is not cb]
        self._handlers = _callback_table.handlers_by_event(self._cbs)
        return self

    def added_cbs(self, *cbs: Callback) -> AbstractContextManager[Learner]:
        """Install ``cbs`` for the duration of a ``with`` block."""
        return _callback_table.added(self, cbs)

    def removed_cbs(self, *cbs: Callback) -> AbstractContextManager[Learner]:
        """Uninstall ``cbs`` for the duration of a ``with`` block, then put them back."""
        return _callback_table.removed(self, cbs)

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
        """Freeze the first ``n`` layer groups (negative counts from the end, as fastai); norm
        layers stay trainable. See :func:`trainers._freezing.freeze_to`.

        Raises:
            ValueError: unless ``-n_groups <= n <= n_groups``.
        """
        _freezing.freeze_to(self, n)

    def freeze(self) -> None:
        """Freeze every layer group but the head (fastai's norm layers stay trainable).

        A model of one layer group (no ``layer_groups()`` method) has no body to freeze: it is
        left trainable, as fastai leaves it, with a warning, since ``fine_tune``'s "frozen"
        epochs would then train the whole model.
        """
        _freezing.warn_if_one_group(self.model, stacklevel=3)
        self.freeze_to(-1)

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
        """Train ``epochs`` epochs at a constant rate (momentum / beta1 0.9); see
        :func:`trainers._fit_schedules.fit`."""
        _fit_schedules.fit(self, epochs, lr, start_epoch=start_epoch, precompute=precompute)

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
        """Train with the one-cycle policy, updated every batch (momentum ``moms``, inversely);
        see :func:`trainers._fit_schedules.fit_one_cycle`."""
        _fit_schedules.fit_one_cycle(
            self,
            epochs,
            lr_max,
            pct_start=pct_start,
            div=div,
            div_final=div_final,
            moms=moms,
            start_epoch=start_epoch,
            precompute=precompute,
        )

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
        """fastai's ``fit_flat_cos``: flat at ``lr`` for ``pct_start`` of training, then half a
        cosine down to ``lr / div_final``; see :func:`trainers._fit_schedules.fit_flat_cos`."""
        _fit_schedules.fit_flat_cos(
            self,
            epochs,
            lr,
            pct_start=pct_start,
            div_final=div_final,
            start_epoch=start_epoch,
            precompute=precompute,
        )

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
        """Cosine annealing with warm restarts (each cycle ``cycle_mult`` times the last); see
        :func:`trainers._fit_schedules.fit_sgdr`."""
        _fit_schedules.fit_sgdr(
            self,
            n_cycles,
            cycle_len,
            lr_max,
            cycle_mult=cycle_mult,
            start_epoch=start_epoch,
            precompute=precompute,
        )

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
        """fastai's transfer-learning recipe, with fastai's defaults: a frozen one-cycle fit,
        then an unfrozen one; see :func:`trainers._fit_schedules.fine_tune`."""
        _fit_schedules.fine_tune(
            self,
            epochs,
            base_lr,
            freeze_epochs=freeze_epochs,
            lr_mult=lr_mult,
            pct_start=pct_start,
            div=div,
        )

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
        """Run the LR range test (leaves no trace): :func:`trainers.lr_finder.lr_find` after
        :func:`trainers._range_test.check_before_lr_find`; ``suggest_funcs`` is fastai's name
        for ``suggest`` (:func:`trainers._range_test.chosen_suggest`)."""
        from trainers.lr_finder import lr_find

        _range_test.check_before_lr_find(self)
        return lr_find(
            self,
            start_lr,
            end_lr,
            num_it,
            stop_div=stop_div,
            div_factor=div_factor,
            beta=beta,
            suggest=_range_test.chosen_suggest(suggest, suggest_funcs),
        )

    def fit_recipe(self, **kwargs: Any) -> Any:
        """Run fastai's eight-step recipe; see :func:`trainers.recipe.fit_recipe`."""
        from trainers.recipe import fit_recipe

        return fit_recipe(self, **kwargs)

    def one_batch(self, xb: torch.Tensor, yb: torch.Tensor, *, where: str = "one_batch") -> float:
        """One training step without callbacks, schedules or records: forward, backward, step
        (for tools such as ``lr_find`` that drive the optimizer themselves); returns the batch
        loss. See :func:`trainers._range_test.one_batch`."""
        return _range_test.one_batch(self, xb, yb, where=where)

    # ----------------------------------------------------------------- evaluation
    def validate(self) -> dict[str, float]:
        """``{"valid_loss", <metrics>}`` of the current model on ``dls.valid``, in eval mode;
        every module's mode and ``training`` are put back afterwards (a callback may call it
        mid-fit, as ``get_preds`` and ``tta``)."""
        return _inference.validate(self)

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
