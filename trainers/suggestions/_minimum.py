"""fastai's ``minimum`` rule: a tenth of the rate at the lowest loss."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trainers.suggestions._base import SKIP_END, prepare_curve

MINIMUM_MIN_POINTS = 2
"""Fewest usable points: a minimum over one point says nothing."""


def minimum(
    lrs: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    skip_start: int | None = None,
    skip_end: int = SKIP_END,
) -> float:
    """Suggest one tenth of the rate at which the smoothed loss is lowest.

    Follows ``fastai.callback.schedule.minimum`` (fastai 2.x): ``lrs[argmin(losses)] / 10``
    (the first minimum on ties), the rule of thumb from Leslie Smith's range test.

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
        >>> minimum([1e-3, 1e-2, 1e-1, 1.0], [2.0, 1.5, 1.0, 4.0], skip_end=0)
        0.01
    """
    lr_arr, loss_arr = prepare_curve(
        lrs,
        losses,
        rule="minimum",
        needed=MINIMUM_MIN_POINTS,
        skip_start=skip_start,
        skip_end=skip_end,
    )
    return float(lr_arr[int(np.argmin(loss_arr))]) / 10
