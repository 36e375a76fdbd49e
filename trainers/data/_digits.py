"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download)."""

from __future__ import annotations

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
        from sklearn.datasets import load_digits  # lazy: sklearn costs ~1 s to import

        bunch = load_digits()
        pixels = torch.from_numpy(bunch.images).float().mul_(255.0 / 16.0).round_()
        self._native = pixels.to(torch.uint8).unsqueeze(1)  # (N, 1, 8, 8)
        self.labels = torch.from_numpy(bunch.target).long()
        self.classes = [str(name) for name in bunch.target_names]
        self.valid_mask = None

    def images(self, image_size: int) -> torch.Tensor:
        return repeat_channels(resize_uint8(self._native, image_size), self.channels)
