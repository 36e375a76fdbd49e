"""fastai's ``valley`` rule: the middle of the longest stretch of falling loss."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trainers.suggestions._base import SKIP_END, prepare_curve

VALLEY_MIN_POINTS = 3
"""Fewest usable points: with fewer the "longest falling stretch" has no middle."""


def valley(
    lrs: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    skip_start: int | None = None,
    skip_end: int = SKIP_END,
) -> float:
    """Suggest the rate in the longest valley of the loss curve (fastai's default rule).

    Follows ``fastai.callback.schedule.valley`` (fastai 2.x) line for line: an O(n^2) dynamic
    programme finds the longest strictly decreasing subsequence of the losses (``lds[i]`` is the
    length of the longest one ending at ``i``), its end ``max_end`` and start
    ``max_start = max_end - lds[max_end]`` (fastai updates the pair inside the inner loop, so the
    start can lag; kept as is), then picks
    ``idx = max_start + int(sections) + int(sections / 2)`` with
    ``sections = (max_end - max_start) / 3``: half-way through the middle third.

    One deviation: when the longest run is the first two points fastai's ``idx`` is ``-1``, which
    Python wraps to the *highest* rate of the curve; here that index is ``0``, the start of the run.

    Args:
        lrs: Learning rates of the range test (top layer group), strictly increasing.
        losses: Smoothed losses at those rates; the curve is cut at the first NaN/inf.
        skip_start: Leading points ignored (default ``len(lrs) // 10``; fastai: ``num_it // 10``).
        skip_end: Trailing points ignored (fastai: 5).

    Returns:
        The suggested learning rate.

    Raises:
        CurveTooShort: If fewer than 3 usable points remain.

    Example:
        >>> lrs = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
        >>> valley(lrs, [3.0, 3.0, 3.0, 2.0, 1.0, 0.5, 9.0], skip_end=0)
        0.0001
    """
    lr_arr, loss_arr = prepare_curve(
        lrs,
        losses,
        rule="valley",
        needed=VALLEY_MIN_POINTS,
        skip_start=skip_start,
        skip_end=skip_end,
    )
    n = len(loss_arr)
    lds = [1] * n
    max_start, max_end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if loss_arr[i] < loss_arr[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max(max_start + int(sections) + int(sections / 2), 0)
    return float(lr_arr[idx])
