"""Batch augmentation in torch: flip, rotate, zoom (random resized crop) and colour jitter.

An :class:`Augment` transforms a whole batch of normalised images at once, on whatever device the
batch lives on: one ``affine_grid`` / ``grid_sample`` call per batch for flip, rotation and zoom,
and one fused multiply-add for brightness and contrast. Nothing goes through PIL and nothing
loops over images in Python.

Random parameters are drawn from the ``generator`` passed in (on the generator's device, then moved
to the batch's device), so a batch is augmented identically on CPU and on CUDA for the same
generator state.

Example:
    >>> import torch
    >>> aug = Augment(rotate=10, zoom=1.1)
    >>> x = torch.randn(4, 1, 16, 16)
    >>> aug(x, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 1, 16, 16])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainers._numbers import is_real

__all__ = ["PRESETS", "Augment", "as_augment"]


@dataclass(frozen=True)
class Augment:
    """Train-time batch augmentation; every field off by default.

    Args:
        flip: Mirror each image left-right with probability 0.5. Off by default, because digits
            and text must not be mirrored.
        rotate: Maximum rotation in degrees; each image turns by an angle uniform in
            ``[-rotate, rotate]``. In ``[0, 180]``.
        zoom: Maximum zoom factor (``>= 1``); each image is scaled by a factor uniform in
            ``[1, zoom]`` and a random window of the zoomed image is kept, i.e. a random resized
            crop covering ``1/zoom**2`` to all of the area.
        jitter: Colour jitter strength in ``[0, 1)``, for normalised images (dataset mean 0,
            std 1 per channel): each image is multiplied by a contrast factor uniform in
            ``[1 - jitter, 1 + jitter]`` (about the dataset's mean colour) and shifted by a
            brightness uniform in ``[-jitter, jitter]`` dataset standard deviations.

    Geometry is resampled bilinearly with reflection padding, so rotated corners show mirrored
    content rather than a flat fill.
    """

    flip: bool = False
    rotate: float = 0.0
    zoom: float = 1.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.flip, bool | np.bool_):
            raise ValueError(f"augment flip must be True or False, but got {self.flip!r}.")
        object.__setattr__(self, "flip", bool(self.flip))
        _check_number("rotate", self.rotate, low=0.0, high=180.0, high_open=False)
        _check_number("zoom", self.zoom, low=1.0, high=math.inf, high_open=True)
        _check_number("jitter", self.jitter, low=0.0, high=1.0, high_open=True)
        for name in ("rotate", "zoom", "jitter"):  # NumPy scalars kept as Python floats
            value = getattr(self, name)
            if not isinstance(value, int | float):
                object.__setattr__(self, name, float(value))

    @property
    def is_identity(self) -> bool:
        """True when no field is switched on (calling it returns the batch unchanged)."""
        return not self.flip and self.rotate == 0 and self.zoom == 1 and self.jitter == 0

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, e.g. for logging as run parameters."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __call__(
        self, images: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Augment a batch.

        Args:
            images: Float tensor ``(N, C, H, W)``, on any device.
            generator: Source of randomness (any device); the global torch RNG when None.

        Returns:
            A new tensor of the same shape, dtype and device. An empty batch is returned as is.

        Raises:
            ValueError: if ``images`` is not a 4-d floating-point tensor.
        """
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(
                "images must be a float tensor of shape (N, C, H, W), but got "
                f"dtype {images.dtype} and shape {tuple(images.shape)}."
            )
        n = images.shape[0]
        if n == 0 or self.is_identity:
            return images
        rand = _Uniform(n, generator)
        out = images
        if self.rotate or self.zoom != 1:
            out = self._warp(out, rand)
        elif self.flip:
            flip = (rand() < 0.5).view(n, 1, 1, 1).to(out.device)  # drawn on the CPU
            out = torch.where(flip, out.flip(-1), out)
        if self.jitter:
            out = self._jitter(out, rand)
        return out

    def _warp(self, images: torch.Tensor, rand: _Uniform) -> torch.Tensor:
        """Flip, rotate and zoom every image with one affine_grid / grid_sample call."""
        n = images.shape[0]
        flip_sign = torch.where(rand() < 0.5, -1.0, 1.0) if self.flip else torch.ones(n)
        angle = (rand() * 2 - 1) * math.radians(self.rotate)
        scale = 1 + rand() * (self.zoom - 1)  # zoom factor; the window is 1/scale of the image
        slack = 1 - 1 / scale  # how far the window may move in normalised coordinates
        tx, ty = (rand() * 2 - 1) * slack, (rand() * 2 - 1) * slack
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos * flip_sign, -sin, tx], dim=1),
                torch.stack([sin * flip_sign, cos, ty], dim=1),
            ],
            dim=1,
        ).to(device=images.device, dtype=images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )

    def _jitter(self, images: torch.Tensor, rand: _Uniform) -> torch.Tensor:
        """``x * contrast + brightness``: contrast about the dataset mean, brightness in its std.

        On normalised images (dataset mean 0 and std 1 per channel, as DataLoaders yield them)
        this scales contrast about the dataset's mean colour and shifts brightness by up to
        ``jitter`` dataset standard deviations, in one fused pass with no per-image reduction.
        """
        shape = (images.shape[0], 1, 1, 1)
        contrast = (1 + (rand() * 2 - 1) * self.jitter).view(shape).to(images)
        brightness = ((rand() * 2 - 1) * self.jitter).view(shape).to(images)
        return torch.addcmul(brightness, images, contrast)


class _Uniform:
    """Draws ``n`` uniform numbers per call from one generator, returned on the CPU."""

    def __init__(self, n: int, generator: torch.Generator | None) -> None:
        self.n = n
        self.generator = generator
        self.device = generator.device if generator is not None else torch.device("cpu")

    def __call__(self) -> torch.Tensor:
        return torch.rand(self.n, generator=self.generator, device=self.device).cpu()


def _check_number(name: str, value: Any, *, low: float, high: float, high_open: bool) -> None:
    ok_type = is_real(value)  # Python's or NumPy's (np.float32(10), np.int64(2)), never a bool
    in_range = ok_type and low <= value and (value < high if high_open else value <= high)
    if not in_range or (ok_type and math.isnan(value)):
        bracket = ")" if high_open else "]"
        raise ValueError(
            f"augment {name} must be a number in [{low:g}, {high:g}{bracket}, but got {value!r}."
        )


PRESETS: dict[str, Augment] = {
    "none": Augment(),
    "light": Augment(rotate=10.0, zoom=1.1),
    "standard": Augment(flip=True, rotate=10.0, zoom=1.2, jitter=0.2),
}
"""Named presets: ``light`` suits digits and other orientation-sensitive images (no flip),
``standard`` suits photos (fastai's ``aug_transforms`` in spirit)."""


def as_augment(augment: Augment | Mapping[str, Any] | str | None) -> Augment | None:
    """Normalise the ``augment`` argument of ``make_dataloaders``.

    Args:
        augment: None (no augmentation), an :class:`Augment`, a dict of its fields such as
            ``{"rotate": 10, "zoom": 1.1, "flip": False, "jitter": 0.1}``, or a preset name
            from :data:`PRESETS`.

    Returns:
        An :class:`Augment`, or None when nothing would change (None, ``"none"``, ``{}``).

    Raises:
        ValueError: for an unknown dict key or preset name (the message lists the accepted ones),
            or an out-of-range value.
    """
    if augment is None:
        return None
    if isinstance(augment, Augment):
        result = augment
    elif isinstance(augment, str):
        if augment not in PRESETS:
            raise ValueError(
                f"augment preset must be one of {sorted(PRESETS)}, but got {augment!r}."
            )
        result = PRESETS[augment]
    elif isinstance(augment, Mapping):
        accepted = [f.name for f in fields(Augment)]
        for key in augment:
            if key not in accepted:
                raise ValueError(
                    f"augment has an unknown key {key!r}; the accepted keys are {accepted}."
                )
        result = Augment(**augment)
    else:
        raise ValueError(
            "augment must be None, an Augment, a dict of its fields or a preset name "
            f"({sorted(PRESETS)}), but got {type(augment).__name__}."
        )
    return None if result.is_identity else result
