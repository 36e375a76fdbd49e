"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from trainers.data._base import ImageSource, check_channels, repeat_channels, resize_uint8


class Digits(ImageSource):
    """scikit-learn's ``load_digits``: 8x8 greyscale, 0..16, classes ``"0"``..``"9"``.

    The 0..16 intensities are scaled to 0..255 and the images resized bilinearly to the requested
    size (upscaling from 8x8, so a larger size adds no detail, only pixels).

    Args:
        channels: 1 (default) for greyscale, or 3 to repeat the channel for RGB models.
    """

    def __init__(self, *, channels: int = 1) -> None:
        self.channels = check_channels(channels, dataset="digits")
        images, target = _load_digits()
        pixels = torch.from_numpy(images).float().mul_(255.0 / 16.0).round_()
        self._native = pixels.to(torch.uint8).unsqueeze(1)  # (N, 1, 8, 8)
        self.labels = torch.from_numpy(target).long()
        self.classes = [str(name) for name in range(10)]
        self.valid_mask = None

    def images(self, image_size: int) -> torch.Tensor:
        return repeat_channels(resize_uint8(self._native, image_size), self.channels)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled ``digits.csv.gz`` as (N, 8, 8) images and (N,) labels.

    Reads the file straight from the installed scikit-learn, without importing it (that costs
    about a second in every Ray worker); falls back to ``sklearn.datasets.load_digits`` if the
    file has moved.
    """
    spec = importlib.util.find_spec("sklearn")
    roots = spec.submodule_search_locations if spec is not None else None
    csv = Path(next(iter(roots or [""]))) / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        data = np.loadtxt(csv, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target
