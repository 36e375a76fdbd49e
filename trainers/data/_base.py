"""The one interface every dataset implements: labels up front, pixels at any size."""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

_RESIZE_CHUNK = 2048  # images per interpolate call: bounds the float32 scratch memory


class ImageSource(ABC):
    """An in-memory image classification dataset that can render itself at any square size.

    Subclasses set the attributes in ``__init__`` (loading labels, and caching the native pixels
    where that is cheap) and implement :meth:`images`. ``make_dataloaders`` calls :meth:`images`
    once per image size, so progressive resizing re-renders from the source instead of resampling
    an already resized copy.

    Attributes:
        classes: Class names; label ``i`` means ``classes[i]``.
        labels: int64 tensor ``(N,)`` of class indices.
        valid_mask: bool tensor ``(N,)`` marking a validation split that the dataset itself
            defines (``image_folder`` with ``train/`` + ``valid/``), or None to split by
            ``valid_pct``.
        channels: Channels of the images :meth:`images` returns (3 unless the source sets it),
            known before any pixel is read: the preflight builds a model for them.
    """

    classes: list[str]
    labels: torch.Tensor
    valid_mask: torch.Tensor | None = None
    channels: int = 3

    @abstractmethod
    def images(self, image_size: int) -> torch.Tensor:
        """All images as a uint8 tensor ``(N, C, image_size, image_size)``, in label order."""


def resize_uint8(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize uint8 ``(N, C, H, W)`` images to square ``image_size`` with bilinear interpolation.

    Downscaling is antialiased. Works in chunks so a large dataset never needs a full float copy.
    Returns the input unchanged when it already has that size.
    """
    if images.shape[-2:] == (image_size, image_size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], image_size, image_size), dtype=torch.uint8)
    antialias = image_size < max(images.shape[-2:])
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK].float()
        resized = F.interpolate(
            chunk,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=antialias,
        )
        out[start : start + _RESIZE_CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def check_channels(channels: object, *, dataset: str) -> int:
    """Validate the ``channels`` keyword of a greyscale dataset (1, or 3 to repeat to RGB)."""
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"{dataset} channels must be 1 or 3, but got {channels!r}.")
    return int(channels)  # type: ignore[call-overload]


def repeat_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat single-channel ``(N, 1, H, W)`` images to ``channels`` channels."""
    return images if channels == images.shape[1] else images.expand(-1, channels, -1, -1).clone()


def is_count(value: object) -> bool:
    """An integer, Python's or a NumPy scalar (``np.int64``), not a bool (nor ``np.bool_``)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
