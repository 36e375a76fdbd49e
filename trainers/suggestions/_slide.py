"""fastai's ``slide`` rule: walk back from the end until the slope stops changing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trainers.suggestions._base import SKIP_END, prepare_curve


def slide(
    lrs: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    skip_start: int | None = None,
    skip_end: int = SKIP_END,
    lr_diff: int = 15,
    thresh: float = 0.005,
    adjust_value: float = 1.0,
) -> float:
    """Suggest a rate with fastai's interval slide rule.

    Follows ``fastai.callback.schedule.slide`` (fastai 2.x, after Kaggle user "aychang"'s rule):
    take ``g = numpy.gradient(losses)`` (per point, not per log LR); start with a right index at
    the last point and a left index ``lr_diff`` points before it; while the left index is inside
    the curve and ``|g[right] - g[left]| > thresh``, remember ``lrs[left]`` and move both one
    point left. The suggestion is the last remembered rate (``lrs[-1 - lr_diff]`` if the loop
    never runs) times ``adjust_value``.

    Args:
        lrs: Learning rates of the range test (top layer group), strictly increasing.
        losses: Smoothed losses at those rates; the curve is cut at the first NaN/inf.
        skip_start: Leading points ignored (default ``len(lrs) // 10``; fastai: ``num_it // 10``).
        skip_end: Trailing points ignored (fastai: 5).
        lr_diff: Distance in points between the two indices; at least 1.
        thresh: Gradient difference below which the walk stops; at least 0.
        adjust_value: Factor applied to the rate found; positive.

    Returns:
        The suggested learning rate.

    Raises:
        ValueError: If a tuning argument is out of range.
        CurveTooShort: If fewer than ``lr_diff + 1`` usable points remain.
    """
    if isinstance(lr_diff, bool) or not isinstance(lr_diff, int) or lr_diff < 1:
        raise ValueError(f"lr_diff must be an integer >= 1, but got {lr_diff=}.")
    if not thresh >= 0:
        raise ValueError(f"thresh must be >= 0, but got {thresh=}.")
    if not adjust_value > 0:
        raise ValueError(f"adjust_value must be > 0, but got {adjust_value=}.")
    lr_arr, loss_arr = prepare_curve(
        lrs, losses, rule="slide", needed=lr_diff + 1, skip_start=skip_start, skip_end=skip_end
    )
    loss_grad = np.gradient(loss_arr)
    r_idx = -1
    l_idx = r_idx - lr_diff
    local_min_lr = lr_arr[l_idx]
    while l_idx >= -len(loss_arr) and abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh:
        local_min_lr = lr_arr[l_idx]
        r_idx -= 1
        l_idx -= 1
    return float(local_min_lr) * adjust_value
