"""fastai's ``steep`` rule: where the loss falls fastest against log LR."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trainers.suggestions._base import SKIP_END, prepare_curve

STEEP_MIN_POINTS = 2
"""Fewest usable points: a slope needs two."""


def steep(
    lrs: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    skip_start: int | None = None,
    skip_end: int = SKIP_END,
) -> float:
    """Suggest the rate where the smoothed loss falls steepest against ``log(lr)``.

    Follows ``fastai.callback.schedule.steep`` (fastai 2.x): slopes
    ``(losses[1:] - losses[:-1]) / (log lrs[1:] - log lrs[:-1])``, and the rate at the *start*
    of the most negative slope, ``lrs[argmin(slopes)]`` (first one on ties).

    Args:
        lrs: Learning rates of the range test (top layer group), strictly increasing.
        losses: Smoothed losses at those rates; the curve is cut at the first NaN/inf.
        skip_start: Leading points ignored (default ``len(lrs) // 10``; fastai: ``num_it // 10``).
        skip_end: Trailing points ignored (fastai: 5).

    Returns:
        The suggested learning rate.

    Raises:
        CurveTooShort: If fewer than 2 usable points remain.

    Example:
        >>> steep([1e-3, 1e-2, 1e-1, 1.0], [2.0, 1.9, 1.0, 0.9], skip_end=0)
        0.01
    """
    lr_arr, loss_arr = prepare_curve(
        lrs,
        losses,
        rule="steep",
        needed=STEEP_MIN_POINTS,
        skip_start=skip_start,
        skip_end=skip_end,
    )
    slopes = np.diff(loss_arr) / np.diff(np.log(lr_arr))
    return float(lr_arr[int(np.argmin(slopes))])
