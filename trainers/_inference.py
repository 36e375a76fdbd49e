"""Validation, predictions, test-time augmentation and precomputed activations for Learner.

What ``predict`` takes, and how it is fitted to the model's input, is in
:mod:`trainers._image_input` (``ImageFormat``, ``ImageInput`` and ``model_input`` are
re-exported here).
"""

from __future__ import annotations

import hashlib
import logging
import numbers
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers._image_input import ImageFormat as ImageFormat  # re-exported, as each `X as X`
from trainers._image_input import ImageInput as ImageInput
from trainers._image_input import chunked_probabilities
from trainers._image_input import model_input as model_input
from trainers._numbers import is_real
from trainers._training import METRICS, check_loss_value, per_item_loss
from trainers.models._base import AdaptiveConcatPool2d

if TYPE_CHECKING:
    from trainers.learner import Learner

__all__ = [
    "ImageFormat",
    "evaluate",
    "fit_loaders",
    "get_preds",
    "model_input",
    "predict",
    "tta",
    "validate",
]

logger = logging.getLogger(__name__)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside; every module's own mode restored on the way out.

    Inference may run between training steps (a callback calling ``tta`` or ``get_preds``
    mid-fit): the rest of the fit must still see dropout and batch statistics, and a frozen body
    kept in eval mode must stay there, so each module gets its own flag back.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@torch.no_grad()
def _logits(
    learn: Learner,
    loader: Iterable[Any],
    forward: nn.Module,
    augment: Any = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs (float32 under amp) and targets over ``loader`` in eval mode, on the device.

    Every module's train/eval mode is restored afterwards.
    """
    acc = learn.accelerator
    outs, targets = [], []
    with eval_mode(learn.model):
        for xb, yb in loader:
            xb = xb.to(learn.device, non_blocking=True)
            if augment is not None:
                xb = augment(xb, generator=generator)
            with acc.autocast():
                outs.append(acc.output(forward(acc.batch(xb))))
            targets.append(yb.to(learn.device, non_blocking=True))
    if not outs:
        raise ValueError("the validation loader yields no batches; there is nothing to evaluate.")
    return torch.cat(outs), torch.cat(targets)


def _metrics(
    learn: Learner, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
) -> dict[str, float]:
    values = {"valid_loss": loss.item()}
    for name in learn.metric_names:
        values[name] = METRICS[name](logits, targets)
    return values


def evaluate(learn: Learner, loader: Iterable[Any], forward: nn.Module) -> dict[str, float]:
    """``{"valid_loss", <metrics>}`` over ``loader``; the loss is the item-weighted batch mean.

    Runs in whatever mode the model is in (the caller puts it in eval mode); forward and loss
    under ``learn.accelerator``'s autocast, outputs float32.
    """
    acc = learn.accelerator
    total = torch.zeros((), device=learn.device)
    outs, targets = [], []
    with torch.no_grad():
        for i, (xb, yb) in enumerate(loader):
            xb = acc.batch(xb.to(learn.device, non_blocking=True))
            yb = yb.to(learn.device, non_blocking=True)
            with acc.autocast():
                out = acc.output(forward(xb))
                loss = learn.loss_func(out, yb)
            check_loss_value(loss, f"validation batch {i}")
            total += loss.float() * len(yb)
            outs.append(out)
            targets.append(yb)
    if not outs:
        raise ValueError("the validation loader yields no batches; there is nothing to evaluate.")
    logits, target = torch.cat(outs), torch.cat(targets)
    _keep_predictions(learn, logits, target)
    return _metrics(learn, logits, target, total / len(target))


def validate(learn: Learner) -> dict[str, float]:
    """``{"valid_loss", <metrics>}`` of the current model on ``learn.dls.valid``, in eval mode;
    every module's mode and ``learn.training`` are put back afterwards (a callback may call it
    mid-fit, as ``get_preds`` and ``tta``)."""
    training = learn.training
    try:
        with eval_mode(learn.model):
            learn.training = False
            return evaluate(learn, learn.dls.valid, learn.forward_model)
    finally:
        learn.training = training


def _keep_predictions(learn: Learner, logits: torch.Tensor, targets: torch.Tensor) -> None:
    """``learn.valid_preds`` / ``valid_targets``: this evaluation's predicted and actual classes.

    What a confusion matrix of this epoch needs, without a second pass over the data (a sweep's
    trial draws its best epoch's). None for outputs that are not one row of class scores per
    item with integer targets (soft labels, regression).
    """
    if logits.ndim == 2 and targets.ndim == 1 and not targets.is_floating_point():
        learn.valid_preds, learn.valid_targets = logits.argmax(dim=1), targets
    else:
        learn.valid_preds = learn.valid_targets = None


def get_preds(learn: Learner) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(probs, targets, losses)`` over ``learn.dls.valid`` in its order, on the CPU.

    Runs in eval mode and gives every module its own mode back (as :func:`predict` and
    :func:`tta` do).
    """
    logits, targets = _logits(learn, learn.dls.valid, learn.forward_model)
    with torch.no_grad():
        losses = per_item_loss(learn.loss_func, logits, targets)
    return logits.softmax(dim=1).cpu(), targets.cpu(), losses.float().cpu()


def predict(learn: Learner, x: ImageInput) -> torch.Tensor:
    """Class probabilities of one image or a batch, on the CPU: ``(n_classes,)`` or
    ``(N, n_classes)``.

    ``x`` is fitted to the data's format by :func:`~trainers._image_input.model_input`: a
    normalised float tensor ``(C, H, W)`` / ``(N, C, H, W)`` as the loaders yield it; uint8
    pixels (0..255, as a dataset stores them), resized to the data's ``image_size`` and
    normalised with its statistics; an image file's path, a PIL image, or a list of them,
    decoded as ``image_folder`` does.

    Raises:
        ValueError: see :func:`~trainers._image_input.model_input`.
        FileNotFoundError: for a path that does not exist.
    """
    acc = learn.accelerator

    def forward(batch: torch.Tensor) -> torch.Tensor:
        # uncompiled: one-off calls of any batch size; each module's mode is restored afterwards
        with eval_mode(learn.model), torch.no_grad(), acc.autocast():
            out = acc.output(learn.model(acc.batch(batch.to(learn.device))))
        return out.float().softmax(dim=1).cpu()

    # a warning names the user's call of Learner.predict, which calls this
    return chunked_probabilities(x, ImageFormat.of(learn.dls), forward, stacklevel=3)


def tta(learn: Learner, n: int = 4, *, beta: float = 0.25, seed: int = 0) -> dict[str, Any]:
    """Test-time augmentation over ``learn.dls.valid``, as fastai's ``tta(n=4, beta=0.25)``.

    The class probabilities of ``n`` passes with ``learn.dls.augment`` (drawn from a generator
    seeded with ``seed``, so repeated calls agree and the training RNG is untouched) are
    averaged, then blended with one plain pass: ``beta * plain + (1 - beta) * augmented``
    (fastai's ``torch.lerp(aug, plain, beta)``; ``beta=0`` uses the augmented passes alone,
    ``beta=1 / (n + 1)`` weighs all ``n + 1`` passes equally).

    Returns:
        ``{"probs": (N, n_classes) CPU tensor, "valid_loss": NLL of the blended probabilities,
        "error_rate": ..., "accuracy": ...}``.

    Raises:
        ValueError: for ``n < 1``, ``beta`` outside ``[0, 1]`` (NumPy scalars are numbers too) or
            data without augmentation.
    """
    if not (isinstance(n, numbers.Integral) and is_real(n) and n >= 1):
        raise ValueError(f"n must be an integer >= 1, but got {n!r}.")
    if not (is_real(beta) and 0 <= beta <= 1):
        raise ValueError(f"beta must be a number in [0, 1], but got {beta!r}.")
    n = int(n)
    augment = getattr(learn.dls, "augment", None)
    if augment is None:
        raise ValueError(
            "tta needs dls.augment: build the data with make_dataloaders(..., augment=...)."
        )
    logits, targets = _logits(learn, learn.dls.valid, learn.forward_model)
    plain = logits.softmax(dim=1)
    generator = torch.Generator().manual_seed(seed)
    augmented = torch.zeros_like(plain)
    for _ in range(n):
        aug_logits, _ = _logits(learn, learn.dls.valid, learn.forward_model, augment, generator)
        augmented = augmented + aug_logits.softmax(dim=1)
    probs = torch.lerp(augmented / n, plain, float(beta))
    with torch.no_grad():
        loss = F.nll_loss(probs.clamp_min(1e-12).log(), targets)
    result: dict[str, Any] = {"probs": probs.cpu(), "valid_loss": loss.item()}
    result["error_rate"] = METRICS["error_rate"](probs, targets)
    result["accuracy"] = METRICS["accuracy"](probs, targets)
    return result


# ----------------------------------------------------------------------------- precompute
def fit_loaders(learn: Learner, precompute: bool) -> tuple[Any, Any, nn.Module]:
    """``(train loader, valid loader, forward module)`` for a fit.

    Without ``precompute``: the data's own loaders and the whole model (compiled when
    ``compile`` is on). With it: loaders over the body's outputs (computed once, body in eval
    mode, same labels, batch size and shuffling as ``dls.train``, drawing from its very RNG
    generators) and the head (never compiled: it is small and only trained for a few epochs).
    The body's norm layers are neither trained nor updated, unlike a plain frozen fit's
    (fastai's ``train_bn``): the head matches the full forward's only with the body in eval mode;
    a warning is logged when every BatchNorm of the body still holds its initial statistics.

    Raises:
        ValueError: with ``precompute`` when the body is not frozen, the data is augmented, or
            the model or loaders do not support it.
    """
    dls = learn.dls
    if not precompute:
        return dls.train, dls.valid, learn.forward_model
    if not (hasattr(learn.model, "body") and hasattr(learn.model, "head")):
        raise ValueError(
            "precompute=True needs a model with body and head (build_model's GroupedModel)."
        )
    if learn.frozen_groups < learn.n_groups - 1:
        raise ValueError(
            "precompute=True needs a frozen body, but the body is trainable; call learn.freeze() "
            "first (or pass precompute=False)."
        )
    if getattr(dls, "augment", None) is not None or getattr(dls.train, "augment", None) is not None:
        raise ValueError(
            "precompute=True cannot be used with augmentation: the cached body activations "
            "would be those of the unaugmented images, not of the augmented batches training "
            "should see. Use precompute=False, or data built with augment=None."
        )
    from trainers.data import TensorLoader

    if not (isinstance(dls.train, TensorLoader) and isinstance(dls.valid, TensorLoader)):
        raise ValueError(
            "precompute=True needs trainers.data TensorLoader loaders (make_dataloaders)."
        )
    body: nn.Module = learn.model.body  # type: ignore[assignment]
    head: nn.Module = learn.model.head  # type: ignore[assignment]
    _warn_untouched_norms(body)
    fixed, rest = _fixed_prefix(head)
    train = _feature_loader(learn, body, fixed, dls.train)
    # Shared, not copied: each cached epoch advances dls.train's RNG as well, so a checkpoint or
    # snapshot taken after an epoch of this fit (they read learn.dls) resumes at the right order.
    train.share_rng(dls.train)
    return train, _feature_loader(learn, body, fixed, dls.valid), rest


def untouched_norms(body: nn.Module) -> int:
    """How many BatchNorm layers ``body`` has when every one still holds its initial statistics
    (running mean 0, variance 1: a randomly initialised body that never saw data), else 0.

    In eval mode such layers normalise nothing: cached features of such a body (``precompute``)
    train a far worse head than a plain frozen fit, whose BatchNorm layers learn the data's
    statistics.
    """
    stats = [
        (m.running_mean, m.running_var)
        for m in body.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    norms = [(mean, var) for mean, var in stats if mean is not None and var is not None]
    fresh = [1 for mean, var in norms if bool(torch.all(mean == 0)) and bool(torch.all(var == 1))]
    return len(norms) if norms and len(fresh) == len(norms) else 0


def _warn_untouched_norms(body: nn.Module) -> None:
    """Warn when the body's BatchNorm layers still hold their initial statistics."""
    count = untouched_norms(body)
    if count:
        logger.warning(
            "precompute=True caches the body's outputs through %d BatchNorm layers that never "
            "saw data (running mean 0, variance 1: a randomly initialised body); the head then "
            "trains on unnormalised features and ends far worse than with precompute=False, "
            "which trains those layers. Use precompute on a pretrained body.",
            count,
        )


_FIXED_LAYERS = (AdaptiveConcatPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
"""Layers that hold no parameters or randomness and treat each image alone: a head's leading
run of them computes the same on every epoch, so it is cached with the body's outputs."""


def _fixed_prefix(head: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    """``(leading pooling / flatten layers of head, the module that trains on their output)``."""
    if not isinstance(head, nn.Sequential):
        return [], head
    layers = list(head)
    n = 0
    while n < len(layers) and type(layers[n]) in _FIXED_LAYERS:
        n += 1
    if n == 0:
        return [], head
    return layers[:n], nn.Sequential(nn.Flatten(), *layers[n:])  # cached as (N, F, 1, 1)


def _activations_key(learn: Learner, body: nn.Module, fixed: list[nn.Module], loader: Any) -> str:
    """What a loader's cached activations depend on, but for the images tensor itself (the
    cache refers to it, compared by identity): the body's layers (their ``repr``) and its
    weights and buffers (a digest of their bytes), the pooling after it, the images' in-place
    version, the loader's batch size and statistics, and the accelerator's options and device.
    A change the key cannot see (a forward hook, the images edited through ``.data`` or NumPy,
    which keeps their version count) needs ``loader._activations = None`` first."""
    digest = hashlib.blake2b(digest_size=16)
    scaling = [(name, getattr(loader, name, None)) for name in ("_gain", "_bias")]
    for name, tensor in [*body.state_dict().items(), *scaling, ("images", loader.images)]:
        if not isinstance(tensor, torch.Tensor):
            digest.update(f"{name}:{tensor!r}".encode())
            continue
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        if name != "images":  # the images count by identity and version (below), not bytes
            raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
            digest.update(raw.data)  # the array's buffer, no copy
    acc = learn.accelerator
    parts = [
        digest.hexdigest(),
        repr(body),
        repr(fixed),
        loader.images._version,
        loader.batch_size,
        acc.amp,
        acc.channels_last,
        acc.compile,
        str(learn.device),
    ]
    return repr(parts)


@torch.no_grad()
def _feature_loader(learn: Learner, body: nn.Module, fixed: list[nn.Module], loader: Any) -> Any:
    """A TensorLoader like ``loader`` whose 'images' are the body's outputs, through ``fixed``
    (the head's leading pooling, see :func:`_fixed_prefix`) when there is one.

    The activations are kept on ``loader`` (the last ones only, until it moves to another
    device) and reused by the next fit with ``precompute`` whose body, pooling, images and
    accelerator options are the same (:func:`_activations_key`), as fastai's ``precompute``
    kept them on disk: the trials of a sweep that start from one pretrained body on one
    worker's data compute them once. Images made under ``torch.inference_mode`` (which keep
    no version count) are not cached.
    """
    from trainers.data import TensorLoader

    body.eval()
    n = len(loader.labels)
    if n == 0:
        raise ValueError("precompute=True found an empty loader; there is nothing to cache.")
    images = loader.images
    kept = getattr(loader, "_activations", None)
    loader._activations = None  # stale ones go before new ones are computed
    if images.is_inference():
        features = _activations(learn, body, fixed, loader)
    else:
        key = _activations_key(learn, body, fixed, loader)
        if kept is not None and kept[0] == key and kept[1]() is images:
            features = kept[2]
        else:
            features = _activations(learn, body, fixed, loader)
        # a weak reference: images the loader replaces are not kept alive by the cache
        loader._activations = (key, weakref.ref(images), features)
    return TensorLoader(
        features,
        loader.labels,
        batch_size=loader.batch_size,
        shuffle=loader.shuffle,
        sample_weights=loader.sample_weights,
        seed=loader.seed,
        drop_single=loader.drop_single,
        device=learn.device,
    )


def _activations(learn: Learner, body: nn.Module, fixed: list[nn.Module], loader: Any) -> Any:
    """The body's outputs (through ``fixed``) for every image of ``loader``, in its order."""
    acc = learn.accelerator
    size = loader.batch_size
    n = len(loader.labels)
    chunks = []
    for i in range(0, n, size):
        xb = acc.batch(loader.normalise(loader.images[i : i + size]).to(learn.device))
        with acc.autocast():
            maps = body(xb)
            if maps.ndim != 4:
                raise ValueError(
                    "precompute=True needs a body returning (N, C, H, W) maps, but got "
                    f"{tuple(maps.shape)}."
                )
            for layer in fixed:
                maps = layer(maps)
        chunks.append(acc.output(maps if maps.ndim == 4 else maps.flatten(1)[:, :, None, None]))
    return torch.cat(chunks)
