"""ProgressiveResize: train the first epochs on smaller images, inside one fit's schedule."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from trainers.callbacks._base import Callback

__all__ = ["ProgressiveResize"]


class ProgressiveResize(Callback):
    """Progressive resizing (fastai's practice): ``stages`` of ``(image_size, epochs)`` train
    at smaller sizes first; the epochs after the last stage train on the loaders the fit began
    with (their own, full, image size). Stages count the Learner's epochs (the epoch records of
    ``learn.history``), across fits: a frozen fit's epochs then an unfrozen fit's, or a fit
    resumed from a checkpoint, train each epoch at its stage's size.

    fastai switches sizes between separate fits (``learn.dls = dls_at(224)`` then another
    ``fit_one_cycle``). Here the switch happens between epochs of one fit, so one schedule
    (one-cycle's warm-up and annealing, SGDR's cycles) spans every size: the loaders of every
    size have the same number of batches (same split and batch size), and the training loader
    of each stage draws its order and augmentation from the full-size loader's generators, so
    the streams continue across sizes and a checkpoint restores them whatever the size.

    The loaders of each size are rendered once (``DataLoaders.resize``: images decoded again
    at that size, normalised with the full size's statistics) and kept. ``learn.dls`` is the
    full-size loaders again after the fit (and after a fit that raised: the loop puts back the
    loaders it began with), so what follows (validation, TTA, a confusion matrix, ``predict``)
    sees the image size the model ends at. Loaders another callback assigns to ``learn.dls``
    during the fit become the new full size, resized for the remaining stages. ``lr_find``
    runs on ``learn.dls`` as it is: for the first stage's images, give it
    ``learn.dls = resize.loaders_at(0, learn.dls)`` first (as a sweep's finder arm does).

    Args:
        stages: ``[(16, 2), (24, 2)]``: two epochs at 16 px, two at 24 px, then the full size.
            Sizes are positive integers, epochs at least 1.

    Example:
        >>> with learn.added_cbs(ProgressiveResize([(16, 3)])):  # doctest: +SKIP
        ...     learn.fit_one_cycle(8, 3e-3)  # 3 epochs at 16 px, 5 at the data's size
    """

    order = -20  # first in before_epoch (before the Recorder's -10): all see the epoch's data

    def __init__(self, stages: Sequence[tuple[int, int]]) -> None:
        checked: list[tuple[int, int]] = []
        for index, stage in enumerate(stages):
            size, epochs = _pair(stage, index)
            checked.append((size, epochs))
        if not checked:
            raise ValueError("stages must hold at least one (image_size, epochs) pair.")
        self.stages = checked
        self.full: Any = None
        self._loaders: dict[int, Any] = {}

    def size_at(self, epoch: int) -> int | None:
        """The stage image size of ``epoch`` (from 0), or None for the full size."""
        end = 0
        for size, epochs in self.stages:
            end += epochs
            if epoch < end:
                return size
        return None

    def loaders_at(self, epoch: int, full: Any) -> Any:
        """The loaders epoch ``epoch`` (from 0) trains on, ``full`` being the full-size ones."""
        return self.sized(self.size_at(epoch), full)

    def sized(self, size: int | None, full: Any) -> Any:
        """The loaders of image size ``size`` (``full`` itself for None or its own size)."""
        self._adopt(full)
        if size is None or size == getattr(full, "image_size", None):
            return full
        if size not in self._loaders:
            resized = full.resize(size)
            resized.train.share_rng(full.train)  # one order and augmentation stream
            self._loaders[size] = resized
        return self._loaders[size]

    def _adopt(self, full: Any) -> None:
        if full is not self.full:  # other data: the stage loaders of the old ones are stale
            if not callable(getattr(full, "resize", None)):
                raise ValueError(
                    "ProgressiveResize needs loaders with resize(image_size) (make_dataloaders'), "
                    f"but learn.dls is {type(full).__name__}."
                )
            self.full, self._loaders = full, {}

    def before_fit(self) -> None:
        dls = self.learn.dls
        left_at_a_stage = any(dls is held for held in self._loaders.values())  # a fit raised
        self._adopt(self.full if left_at_a_stage else dls)

    def before_epoch(self) -> None:
        dls = self.learn.dls
        if dls is not self.full and not any(dls is held for held in self._loaders.values()):
            self._adopt(dls)  # another callback gave the learner new data: its stages now
        done = sum(1 for row in self.learn.history if row.get("epoch") is not None)
        self.learn.dls = self.loaders_at(done, self.full)

    def after_fit(self) -> None:
        self.learn.dls = self.full


def _pair(stage: Any, index: int) -> tuple[int, int]:
    try:
        size, epochs = stage
    except (TypeError, ValueError):
        raise ValueError(
            f"stages[{index}] must be an (image_size, epochs) pair, but got {stage!r}."
        ) from None
    for name, value in (("image_size", size), ("epochs", epochs)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"stages[{index}]'s {name} must be an integer >= 1, but got {value!r}."
            )
    return int(size), int(epochs)
