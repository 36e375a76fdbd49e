"""The images ``predict`` takes, fitted to what the model was trained on.

:class:`ImageFormat` holds the data's channels, image size, resize method and statistics;
:func:`model_input` turns a tensor, a NumPy array, an image file, a PIL image or a list of them
into the model's normalised float batch, refusing (with what to do instead) what does not fit.
Called by :func:`trainers._inference.predict` (``Learner.predict``) and by
:class:`trainers.export.Predictor`; :mod:`trainers._inference` re-exports ``ImageFormat``,
``ImageInput`` and ``model_input``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from trainers.data._base import resize_uint8
from trainers.data._image_folder import fit_rgb

__all__ = [
    "NOT_NORMALISED",
    "PREDICT_BATCH",
    "ImageFormat",
    "ImageInput",
    "chunked_probabilities",
    "fit_uint8",
    "model_input",
    "normalised_bound",
]


ImageInput = Any
"""What :func:`trainers._inference.predict` takes: a tensor or NumPy array (one image
``(C, H, W)`` or a batch ``(N, C, H, W)``, uint8 pixels or normalised floats), an image file's
path, a PIL image, or a list of paths / PIL images."""


@dataclass(frozen=True)
class ImageFormat:
    """The images a model was trained on, as :func:`model_input` fits new ones to it.

    Attributes:
        in_channels: Channels (None: not known, not checked).
        image_size: Side of the square images (None: not known, not checked or resized).
        resize_method: How an image of another size is fitted: ``"squish"`` or ``"crop"``.
        normalise: uint8 ``(N, C, H, W)`` pixels -> the model's float input (None: uint8 input
            is refused).
    """

    in_channels: int | None
    image_size: int | None
    resize_method: str = "squish"
    normalise: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def of(cls, dls: Any) -> ImageFormat:
        """The format of a Learner's data (``make_dataloaders``' knows every field)."""
        valid: Any = getattr(dls, "valid", None)
        normalise = None
        if callable(getattr(valid, "normalise", None)):  # on the loader's device, as it is kept

            def normalise(images: torch.Tensor) -> torch.Tensor:
                return valid.normalise(images.to(getattr(valid, "device", images.device)))

        channels, size = getattr(dls, "in_channels", None), getattr(dls, "image_size", None)
        return cls(
            in_channels=channels if isinstance(channels, int) else None,
            image_size=size if isinstance(size, int) else None,
            resize_method=str(getattr(dls, "resize_method", "squish")),
            normalise=normalise,
        )


NOT_NORMALISED = 30.0
"""A float input with values beyond this is taken for 0..255 pixels given as floats (a
normalised image stays within a few units of 0), and :func:`model_input` warns, when the
format does not know its statistics (else beyond three times :func:`normalised_bound`)."""


PREDICT_BATCH = 64
"""At most this many images go through the model at once in ``Learner.predict`` and
:meth:`~trainers.export.Predictor.predict`: a long list of files, or a large batch, is decoded
and run in chunks of this size, so memory does not grow with the number of images (512 images
of 128 px in one resnet18 pass took 1.1 GB more)."""


def normalised_bound(fmt: ImageFormat) -> float | None:
    """The largest ``|value|`` an image normalised by ``fmt`` can hold: black or white pixels
    in its most extreme channel (None when ``fmt`` does not normalise)."""
    if fmt.normalise is None or fmt.in_channels is None:
        return None
    edges = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    normalised = fmt.normalise(edges.expand(2, fmt.in_channels, 1, 1))
    return float(normalised.abs().amax())


def model_input(
    x: ImageInput, fmt: ImageFormat, *, stacklevel: int = 2
) -> tuple[torch.Tensor, bool]:
    """``x`` as the float batch the model takes, and whether it was one image.

    The raw-pixels warning names the frame ``stacklevel`` above this call (1: its caller; 2,
    the default: the caller's caller).

    Image files and PIL images are decoded as ``image_folder`` decodes them (8-bit RGB, or
    greyscale for a 1-channel model), fitted to ``fmt.image_size`` by ``fmt.resize_method`` and
    normalised. A uint8 tensor holds raw pixels: fitted the same way when it has another size
    (``crop``: the largest centred square first; then resized bilinearly), then normalised. A
    float tensor is taken as already normalised, and must have the model's size. A list holds
    files / PIL images, or images ``(C, H, W)`` of any size each (uint8, or float of the size).

    Raises:
        ValueError: for a tensor of another rank, channel count or (float) size than the
            model's (an (H, W, C) array is named), an integer dtype other than uint8 or bool,
            uint8 pixels or files where ``fmt`` cannot normalise them, a list mixing kinds, or
            a file that cannot be decoded (naming it).
        FileNotFoundError: for a path that does not exist.
    """
    if _is_image_item(x):
        return _decoded([x], fmt), True
    if isinstance(x, list | tuple):
        if not x:
            raise ValueError("x is an empty list: pass at least one image.")
        if all(_is_image_item(item) for item in x):
            return _decoded(list(x), fmt), False
        if all(isinstance(item, torch.Tensor | np.ndarray) for item in x):
            parts = []
            for i, item in enumerate(x):
                image = torch.as_tensor(item)
                if image.ndim == 2 and fmt.in_channels == 1:  # (H, W): its one channel
                    image = image.unsqueeze(0)
                if image.ndim != 3:
                    raise ValueError(
                        f"x[{i}] must be one image (C, H, W) in a list of images, but got shape "
                        f"{tuple(image.shape)}."
                    )
                parts.append(_tensor_input(image, fmt, stacklevel + 2)[0])
            return torch.cat(parts), False
        kinds = sorted({type(item).__name__ for item in x})
        raise ValueError(
            "x as a list must hold image files / PIL images, or tensors / arrays (C, H, W), "
            f"one kind throughout, but it holds {kinds}."
        )
    if not isinstance(x, torch.Tensor | np.ndarray):
        raise ValueError(
            "x must be a tensor or NumPy array (C, H, W) / (N, C, H, W), an image file's path, "
            f"a PIL image or a list of them, but got a {type(x).__name__}."
        )
    return _tensor_input(torch.as_tensor(x), fmt, stacklevel + 2)


def chunked_probabilities(
    x: ImageInput,
    fmt: ImageFormat,
    forward: Callable[[torch.Tensor], torch.Tensor],
    *,
    stacklevel: int,
) -> torch.Tensor:
    """``forward``'s class probabilities of ``x``, fitted to ``fmt`` by
    :func:`~trainers._image_input.model_input`: a list or batch of more than
    :data:`PREDICT_BATCH` images is decoded and run in chunks of that many, so memory does not
    grow with the number of images. ``stacklevel``: as ``model_input``'s, from this function's
    caller."""
    many = isinstance(x, list | tuple) or (isinstance(x, torch.Tensor | np.ndarray) and x.ndim == 4)
    step = PREDICT_BATCH
    chunks = [x[i : i + step] for i in range(0, len(x), step)] if many and len(x) else [x]
    parts = []
    single = False
    for chunk in chunks:
        batch, single = model_input(chunk, fmt, stacklevel=stacklevel + 1)
        parts.append(forward(batch))
    probs = torch.cat(parts)
    return probs[0] if single else probs


def _tensor_input(x: torch.Tensor, fmt: ImageFormat, stacklevel: int) -> tuple[torch.Tensor, bool]:
    """One image ``(C, H, W)`` or a batch as the model's float batch; see :func:`model_input`
    (``stacklevel``: the warning's, counted from here).

    A 2-D ``(H, W)`` image (what ``np.array`` of a greyscale PIL image, or scikit-learn's
    digits, give) is one channel: taken as ``(1, H, W)`` for a one-channel model.
    """
    if x.ndim == 2 and fmt.in_channels == 1:
        x = x.unsqueeze(0)
    if x.ndim not in (3, 4):
        raise ValueError(
            f"x must be an image (C, H, W) or a batch (N, C, H, W), an image file or a PIL "
            f"image, but got shape {tuple(x.shape)}."
        )
    if x.dtype == torch.bool or not (x.dtype == torch.uint8 or x.is_floating_point()):
        raise ValueError(
            f"x holds {str(x.dtype).removeprefix('torch.')} values, which are neither pixels "
            "nor a normalised image: pass uint8 pixels 0..255 (x.to(torch.uint8)) or a float "
            "image normalised as the model was trained on."
        )
    batch = x if x.ndim == 4 else x.unsqueeze(0)
    layout = "(C, H, W)" if x.ndim == 3 else "(N, C, H, W)"
    if fmt.in_channels is not None and batch.shape[1] != fmt.in_channels:
        raise ValueError(
            f"x must be {layout} with C={fmt.in_channels} channels, as the data has, but got "
            f"shape {tuple(x.shape)}; {_layout_hint(x, fmt.in_channels)}"
        )
    size = fmt.image_size
    if batch.dtype == torch.uint8:  # raw pixels: fitted and normalised as the loaders do
        if size is not None:
            batch = fit_uint8(batch, size, fmt.resize_method)
        return _normalised(batch, fmt), x.ndim == 3
    if size is not None and tuple(batch.shape[-2:]) != (size, size):
        raise ValueError(
            f"x is {batch.shape[-2]}x{batch.shape[-1]} but the model was trained on "
            f"{size}x{size} images: pass uint8 pixels (0..255) or an image file, which are "
            f"resized for you, or a normalised float image of {size}x{size}."
        )
    peak = float(batch.detach().abs().amax()) if batch.numel() else 0.0
    bound = normalised_bound(fmt)
    # 0..255 pixels normalised reach `bound` at most; augmentation (contrast, brightness) can
    # take a training batch past it, so only three times as far reads as raw pixels
    if peak > (NOT_NORMALISED if bound is None else 3 * bound):
        reach = (
            "a normalised image stays within a few units of 0"
            if bound is None
            else f"an image normalised as the training data were reaches {bound:.3g} at most"
        )
        warnings.warn(
            f"x reaches {peak:.4g}, but {reach}: that looks like raw pixels (0..255, or "
            "scikit-learn's digits' 0..16); pass 0..255 pixels as uint8 (x.to(torch.uint8)) to "
            "have them normalised as the loaders do.",
            stacklevel=stacklevel,
        )
    return batch.float(), x.ndim == 3


def _layout_hint(x: torch.Tensor, channels: int) -> str:
    """What to do with a tensor whose channel axis does not hold ``channels``: a channels-last
    array's permutation, a greyscale batch's missing axis, or the conversion between colour
    and greyscale (which a PIL image or an image file gets without asking)."""
    converted = "(a PIL image or an image file is converted for you)"
    channels_last = x.shape[-1] in (1, 3, 4) and x.shape[-3] not in (1, 3, 4)
    if channels_last:
        order = "permute(2, 0, 1)" if x.ndim == 3 else "permute(0, 3, 1, 2)"
        have = x.shape[-1]
    elif x.ndim == 3 and x.shape[0] not in (1, 3, 4):  # (N, H, W): greyscale without its axis
        order, have = "", 1
    else:
        order, have = "", x.shape[-3]
    steps = []
    if channels_last:
        steps.append(f"an array from PIL or NumPy is channels-last: {order} it")
    elif x.ndim == 3 and have == 1 and x.shape[0] not in (1, 3, 4):
        steps.append("a batch of greyscale images (N, H, W) needs its channel axis: x[:, None]")
    if have == 1 and channels > 1:
        steps.append(f"the model takes {channels} channels: repeat the one (expand to {channels})")
    elif have > 1 and channels == 1:
        steps.append(
            "the model takes greyscale images: average uint8 pixels over the colour channels"
        )
    elif have != channels:
        steps.append(f"the model takes {channels} channels")
    return "; ".join(steps) + f" {converted}."


def fit_uint8(images: torch.Tensor, image_size: int, resize_method: str) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` images fitted to square ``image_size`` as ``image_folder`` fits a
    file: ``"crop"`` takes the largest centred square first (PIL's ``ImageOps.fit``), then
    both resize bilinearly (antialiased when shrinking)."""
    height, width = images.shape[-2:]
    if resize_method == "crop" and height != width:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        images = images[..., top : top + side, left : left + side]
    return resize_uint8(images, image_size)


def _is_image_item(x: Any) -> bool:
    return isinstance(x, str | os.PathLike | Image.Image)


def _normalised(batch: torch.Tensor, fmt: ImageFormat) -> torch.Tensor:
    if fmt.normalise is None:
        raise ValueError(
            "x holds uint8 pixels (or image files) but the data has no normalise() to scale "
            "them; pass the image normalised as the model was trained on (float)."
        )
    return fmt.normalise(batch)


def _decoded(items: list[Any], fmt: ImageFormat) -> torch.Tensor:
    """Image files / PIL images as a uint8 batch at the model's size, normalised."""
    if fmt.image_size is None or fmt.in_channels not in (1, 3):
        raise ValueError(
            "image files and PIL images need data of 1 or 3 channels with an image_size "
            f"(make_dataloaders'), but the data has in_channels={fmt.in_channels}, "
            f"image_size={fmt.image_size}; pass a tensor."
        )
    arrays = []
    for item in items:
        if isinstance(item, Image.Image):
            rgb = fit_rgb(item, fmt.image_size, fmt.resize_method)
        else:
            path = Path(item).expanduser()
            if path.is_dir():
                raise ValueError(f"{str(path)!r} is a folder: pass the image files in it.")
            if not path.is_file():
                raise FileNotFoundError(f"image file {str(path)!r} does not exist.")
            try:
                with Image.open(path) as image:
                    rgb = fit_rgb(image, fmt.image_size, fmt.resize_method)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
                raise ValueError(f"cannot read image file {str(path)!r}: {error}.") from None
        if fmt.in_channels == 1:
            arrays.append(np.asarray(Image.fromarray(rgb).convert("L"))[None])
        else:
            arrays.append(rgb.transpose(2, 0, 1))
    return _normalised(torch.from_numpy(np.stack(arrays)), fmt)
