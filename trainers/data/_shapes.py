"""``shapes``: coloured geometric shapes on noisy backgrounds, generated on the fly."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from trainers.data._base import ImageSource

Mask = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

_MASKS: dict[str, Mask] = {
    "circle": lambda dx, dy, r: dx**2 + dy**2 <= r**2,
    "square": lambda dx, dy, r: np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r,
    "triangle": lambda dx, dy, r: (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) / 1.8),
    "cross": lambda dx, dy, r: (
        ((np.abs(dx) <= 0.3 * r) & (np.abs(dy) <= r))
        | ((np.abs(dy) <= 0.3 * r) & (np.abs(dx) <= r))
    ),
    "ring": lambda dx, dy, r: ((dx**2 + dy**2) <= r**2) & ((dx**2 + dy**2) >= (0.55 * r) ** 2),
    "diamond": lambda dx, dy, r: np.abs(dx) + np.abs(dy) <= r,
}
SHAPE_NAMES = tuple(_MASKS)
_NOISE_STD = 12.0  # grey levels


class Shapes(ImageSource):
    """One shape per RGB image: circle, square, triangle, cross, ring, diamond (``n_classes``).

    Every image's shape, position, size and colours are drawn from ``seed`` in units relative to
    the image, so the same seed gives the same scene at every ``image_size`` (progressive resizing
    redraws crisply rather than resampling). Each image has a dark background colour and a
    light foreground colour (random per image and channel), so every shape stands out;
    Gaussian noise (std 12 grey levels) covers the image. Drawing is vectorised numpy masks,
    one class at a time.

    Args:
        seed: Fixes the scenes and the noise.
        n_per_class: Images per class (positive integer).
        n_classes: Number of shape kinds, 2 to 6.
    """

    def __init__(self, *, seed: int, n_per_class: int = 100, n_classes: int = 3) -> None:
        if not isinstance(n_per_class, int) or isinstance(n_per_class, bool) or n_per_class < 1:
            raise ValueError(
                f"shapes n_per_class must be a positive integer, but got {n_per_class!r}."
            )
        if (
            not isinstance(n_classes, int)
            or isinstance(n_classes, bool)
            or n_classes not in range(2, len(SHAPE_NAMES) + 1)
        ):
            raise ValueError(
                f"shapes n_classes must be an integer from 2 to {len(SHAPE_NAMES)} "
                f"({', '.join(SHAPE_NAMES)}), but got {n_classes!r}."
            )
        self.seed = seed
        self.n_per_class = n_per_class
        self.classes = list(SHAPE_NAMES[:n_classes])
        self.labels = torch.arange(n_classes).repeat_interleave(n_per_class)
        self.valid_mask = None
        rng = np.random.default_rng([seed, 0])
        n = n_classes * n_per_class
        self._radius = rng.uniform(0.15, 0.3, n)
        margin = self._radius + 0.02
        self._cx = rng.uniform(margin, 1 - margin)
        self._cy = rng.uniform(margin, 1 - margin)
        self._background = rng.uniform(0, 90, (n, 3))
        self._foreground = rng.uniform(150, 255, (n, 3))

    def images(self, image_size: int) -> torch.Tensor:
        n = len(self.labels)
        coords = (np.arange(image_size) + 0.5) / image_size
        noise_rng = np.random.default_rng([self.seed, 1, image_size])
        out = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
        for k, name in enumerate(self.classes):
            sl = slice(k * self.n_per_class, (k + 1) * self.n_per_class)
            dx = coords[None, None, :] - self._cx[sl, None, None]
            dy = coords[None, :, None] - self._cy[sl, None, None]
            mask = _MASKS[name](dx, dy, self._radius[sl, None, None])
            bg = self._background[sl, :, None, None]
            fg = self._foreground[sl, :, None, None]
            pixels = bg + mask[:, None].astype(np.float32) * (fg - bg)
            pixels += _NOISE_STD * noise_rng.standard_normal(pixels.shape, dtype=np.float32)
            out[sl] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        return torch.from_numpy(out)
