"""Interpretation: where a trained classifier goes wrong on its validation set.

Example:
    >>> interp = Interpretation.from_learner(learn)  # doctest: +SKIP
    >>> interp.most_confused(min_val=2)  # doctest: +SKIP
    [('7', '1', 4), ('9', '4', 3)]
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from trainers import plots

if TYPE_CHECKING:
    from trainers.learner import Learner

__all__ = ["Interpretation", "confusion_counts"]


def confusion_counts(targets: torch.Tensor, preds: torch.Tensor, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts of class indices; row = actual, column = predicted.

    Example:
        >>> confusion_counts(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2).tolist()
        [[1, 0], [1, 1]]
    """
    flat = targets.long().cpu() * n_classes + preds.long().cpu()
    return (
        torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes).numpy()
    )


@dataclass(frozen=True)
class Interpretation:
    """Validation predictions of one model, viewed as fastai's ClassificationInterpretation.

    The parts must agree (``N`` items, ``len(classes)`` columns of ``probs``); a
    ``ValueError`` naming the part says which does not.

    Attributes:
        probs: ``(N, n_classes)`` class probabilities.
        targets: ``(N,)`` actual class indices.
        losses: ``(N,)`` loss of each item.
        classes: Class names.
        images: ``(N, C, H, W)`` validation images scaled to ``[0, 1]`` for display.
    """

    probs: torch.Tensor
    targets: torch.Tensor
    losses: torch.Tensor
    classes: list[str]
    images: torch.Tensor

    def __post_init__(self) -> None:
        """Refuse parts that disagree; a stray class index would land in another's cell."""
        if self.probs.ndim != 2:
            raise ValueError(
                f"probs must be (N, n_classes), but got shape {tuple(self.probs.shape)}."
            )
        n, n_classes = self.probs.shape
        if len(self.classes) != n_classes:
            raise ValueError(
                f"classes has {len(self.classes)} names but probs has {n_classes} columns; the "
                "model's outputs must match the data's classes."
            )
        for name, value in (("targets", self.targets), ("losses", self.losses)):
            if tuple(value.shape) != (n,):
                raise ValueError(
                    f"{name} must be ({n},), one per row of probs, but got shape "
                    f"{tuple(value.shape)}."
                )
        if n and not 0 <= int(self.targets.min()) <= int(self.targets.max()) < n_classes:
            raise ValueError(
                f"targets must be class indices in [0, {n_classes}), but got values from "
                f"{int(self.targets.min())} to {int(self.targets.max())}."
            )
        if self.images.ndim != 4 or len(self.images) != n:
            raise ValueError(
                f"images must be ({n}, C, H, W), one per row of probs, but got shape "
                f"{tuple(self.images.shape)}."
            )

    @classmethod
    def from_learner(cls, learn: Learner) -> Interpretation:
        """Predict ``learn.dls.valid`` with ``learn.model`` (eval mode) and keep the results.

        The images shown are ``dls.valid_images`` where the data has them (``make_dataloaders``),
        else the valid loader's batches in its order (data of one's own, such as a namespace of
        :class:`~trainers.data.TensorLoader`).
        """
        probs, targets, losses = learn.get_preds()
        dls = learn.dls
        valid_images = getattr(dls, "valid_images", None)
        if valid_images is None:
            valid_images = torch.cat([xb.detach().cpu() for xb, _ in dls.valid])
        images = valid_images.detach().float().cpu()
        mean, std = getattr(dls, "mean", None), getattr(dls, "std", None)
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1)
            images = images * torch.as_tensor(std).float().view(shape) + torch.as_tensor(
                mean
            ).float().view(shape)
        else:
            low = images.amin(dim=(1, 2, 3), keepdim=True)
            high = images.amax(dim=(1, 2, 3), keepdim=True)
            images = (images - low) / (high - low).clamp_min(1e-12)
        classes = list(getattr(dls, "classes", [str(i) for i in range(probs.shape[1])]))
        return cls(
            probs=probs, targets=targets, losses=losses, classes=classes, images=images.clamp(0, 1)
        )

    @property
    def preds(self) -> torch.Tensor:
        """``(N,)`` predicted class indices (arg-max of :attr:`probs`)."""
        return self.probs.argmax(dim=1)

    def confusion_matrix(self) -> np.ndarray:
        """``(n_classes, n_classes)`` int64 counts; row = actual class, column = predicted."""
        return confusion_counts(self.targets, self.preds, len(self.classes))

    def most_confused(self, min_val: int = 1) -> list[tuple[str, str, int]]:
        """``(actual, predicted, count)`` for off-diagonal cells with ``count >= min_val``.

        Sorted by count, largest first (ties: by actual then predicted class index).

        Raises:
            ValueError: for ``min_val < 1``.
        """
        if not _is_count(min_val) or min_val < 1:
            raise ValueError(f"min_val must be an integer >= 1, but got {min_val!r}.")
        cm = self.confusion_matrix()
        cells = [
            (int(cm[a, p]), a, p)
            for a in range(len(cm))
            for p in range(len(cm))
            if a != p and cm[a, p] >= min_val
        ]
        cells.sort(key=lambda c: (-c[0], c[1], c[2]))
        return [(self.classes[a], self.classes[p], count) for count, a, p in cells]

    def top_losses(self, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` largest item losses (all when None) and their indices, largest first.

        Ties keep the items' order (lowest index first), so the list and ``plot_top_losses``
        are the same on every run and device (``torch.topk`` leaves tied items in any order).
        A NaN loss counts as the largest: such items come first.

        Raises:
            ValueError: unless ``1 <= k <= N``.
        """
        n = len(self.losses)
        k = n if k is None else k
        if not _is_count(k) or not 1 <= k <= n:
            raise ValueError(f"k must be an integer in [1, {n}], but got {k!r}.")
        values, indices = torch.sort(self.losses, descending=True, stable=True)
        return values[: int(k)], indices[: int(k)]

    def plot_confusion_matrix(self, path: str | os.PathLike[str]) -> Path:
        """Save the confusion matrix as an image (e.g. ``confusion_matrix.png``)."""
        return plots.plot_confusion_matrix(self.confusion_matrix(), self.classes, path)

    def plot_top_losses(self, k: int, path: str | os.PathLike[str]) -> Path:
        """Save the ``k`` worst-predicted images titled ``predicted/actual/loss/probability``."""
        losses, indices = self.top_losses(k)
        preds = self.preds
        titles = []
        for loss, i in zip(losses.tolist(), indices.tolist(), strict=True):
            predicted, actual = self.classes[preds[i]], self.classes[self.targets[i]]
            titles.append(f"{predicted}/{actual}/{loss:.2f}/{self.probs[i, preds[i]]:.2f}")
        return plots.plot_top_losses(self.images[indices], titles, path)


def _is_count(value: object) -> bool:
    """An integer, Python's or NumPy's (``np.int64(3)``), never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
