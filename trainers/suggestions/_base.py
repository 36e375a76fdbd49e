"""What every suggestion rule shares: input checks, fastai's trimming, NaN/inf policy.

A suggestion rule is a pure function ``(lrs, losses) -> float``. It takes the learning rates of
a range test (top layer group) and the smoothed losses recorded at them, and returns the rate it
recommends. Every rule starts with :func:`prepare_curve`, so all of them trim and validate alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

SKIP_END = 5
"""Points dropped from the end of the curve, as fastai's ``lr_find`` does (``[:-5]``)."""


class SuggestionRule(Protocol):
    """The signature shared by every rule (extra tuning arguments are keyword-only)."""

    def __call__(
        self,
        lrs: Sequence[float] | np.ndarray,
        losses: Sequence[float] | np.ndarray,
        *,
        skip_start: int | None = None,
        skip_end: int = SKIP_END,
    ) -> float: ...


class CurveTooShort(ValueError):
    """A range-test curve has too few usable points for a rule to judge it.

    Attributes:
        rule: Name of the rule that needed more points.
        n_points: Points in the curve as given (iterations run).
        n_usable: Points left after trimming and dropping non-finite losses.
        needed: Points the rule needs.
        curve: The measured curve (an ``LRFindResult`` without suggestions) when
            :func:`trainers.lr_finder.lr_find` raised it, for a caller to plot or save; None
            otherwise (and after pickling).
        advice: What to do, ending the message; None for the default (more iterations, a
            lower ``end_lr`` or a higher ``div_factor``), which ``lr_find`` replaces when no
            setting of the test is the cause (a loss not finite before the test's first step).
    """

    curve: Any = None

    def __init__(
        self,
        rule: str,
        n_points: int,
        n_usable: int,
        needed: int,
        why: str,
        advice: str | None = None,
    ) -> None:
        self.rule = rule
        self.n_points = n_points
        self.n_usable = n_usable
        self.needed = needed
        self.why = why
        self.advice = advice
        if advice is None:
            advice = (
                "Run the range test for more iterations (num_it), or with a lower end_lr or a "
                "higher div_factor if it stopped early."
            )
        super().__init__(
            f"Suggestion rule {rule!r} needs at least {needed} usable points, but the curve has "
            f"{n_points} points and only {n_usable} are usable ({why}). {advice}"
        )

    def __reduce__(self):  # keep picklable across Ray processes
        args = (self.rule, self.n_points, self.n_usable, self.needed, self.why, self.advice)
        return (type(self), args)


def prepare_curve(
    lrs: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    rule: str,
    needed: int,
    skip_start: int | None = None,
    skip_end: int = SKIP_END,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a curve and cut it the way fastai's ``lr_find`` does before suggesting.

    fastai keeps ``recorder.lrs[num_it//10:-5]`` and then everything before the first NaN loss.
    Here the leading cut is ``skip_start`` (default ``len(lrs) // 10``; ``lr_find`` passes
    ``num_it // 10`` exactly as fastai), the trailing cut is ``skip_end``, and the curve is cut at
    the first non-finite loss, ``inf`` as well as NaN (fastai only looks for NaN).

    Args:
        lrs: Learning rates, positive and finite, one per iteration.
        losses: Loss (smoothed) at each rate; NaN/inf allowed, they end the usable curve.
        rule: Name of the calling rule, for error messages.
        needed: Minimum number of usable points the rule needs.
        skip_start: Points to drop from the start; ``None`` means ``len(lrs) // 10``.
        skip_end: Points to drop from the end.

    Returns:
        ``(lrs, losses)`` as float64 arrays, trimmed and all finite.

    Raises:
        ValueError: If the inputs are not 1-D, differ in length, hold a rate that is not
            positive and finite, are not strictly increasing, or a skip count is negative.
        CurveTooShort: If fewer than ``needed`` points remain.
    """
    lr_arr = np.asarray(lrs, dtype=np.float64)
    loss_arr = np.asarray(losses, dtype=np.float64)
    if lr_arr.ndim != 1 or loss_arr.ndim != 1:
        raise ValueError(
            f"lrs and losses must be 1-D sequences, but got shapes {lr_arr.shape} and "
            f"{loss_arr.shape}."
        )
    if len(lr_arr) != len(loss_arr):
        raise ValueError(
            f"lrs and losses must have the same length, but got {len(lr_arr)} and {len(loss_arr)}."
        )
    if not np.all(np.isfinite(lr_arr) & (lr_arr > 0)):
        raise ValueError("lrs must all be positive and finite (they are plotted on a log axis).")
    if np.any(np.diff(lr_arr) <= 0):
        raise ValueError("lrs must be strictly increasing, as a range test's rates are.")
    n_points = len(lr_arr)
    start = n_points // 10 if skip_start is None else skip_start
    if start < 0 or skip_end < 0:
        raise ValueError(
            f"skip_start and skip_end must be >= 0, but got {skip_start=} and {skip_end=}."
        )
    end = max(n_points - skip_end, 0)  # as fastai's [:-5], never wrapping round to the start
    lr_arr = lr_arr[start:end]
    loss_arr = loss_arr[start:end]
    bad = np.flatnonzero(~np.isfinite(loss_arr))
    first = "a tenth of the points" if skip_start is None else "num_it // 10, as fastai"
    why = f"dropped the first {start} ({first}) and the last {skip_end}"
    if len(bad):
        why += f", and {len(loss_arr) - bad[0]} from the first non-finite loss on"
        lr_arr, loss_arr = lr_arr[: bad[0]], loss_arr[: bad[0]]
        logger.debug("%s: curve cut at its first non-finite loss (point %d)", rule, start + bad[0])
    if len(loss_arr) < needed:
        raise CurveTooShort(rule, n_points, len(loss_arr), needed, why)
    return lr_arr, loss_arr
