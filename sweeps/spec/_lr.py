"""Log-spaced learning rates: the grid's points, free of Ray so the spec can check them."""

from __future__ import annotations

import itertools
import math

__all__ = ["DRIFT_RTOL", "log_spaced"]

DRIFT_RTOL = 1e-14
"""How far (relative) ``log_spaced`` moves a point to reach a short decimal: float noise only."""


def log_spaced(low: float, high: float, points: int) -> list[float]:
    """``points`` learning rates from ``low`` to ``high`` (both included), evenly spaced in log.

    Values are not rounded for display (rounding to a few digits bends the spacing and merges the
    points of a narrow range); only float drift is removed: a point within :data:`DRIFT_RTOL`
    of a shorter decimal is that decimal, so ``5e-4`` is ``0.0005`` (in MLflow params and
    ``lrsweep best --format spec``), not ``0.0004999999999999999``. Both ends are exactly as given.

    Raises:
        ValueError: for ``points < 2``, ``not 0 < low < high``, or a range too narrow to hold
            ``points`` distinct floats.

    Example:
        >>> log_spaced(5e-5, 0.5, 5)
        [5e-05, 0.0005, 0.005, 0.05, 0.5]
    """
    if points < 2:
        raise ValueError(f"points must be at least 2, but got {points=}.")
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, but got {low=} and {high=}.")
    log_low = math.log10(low)
    step = (math.log10(high) - log_low) / (points - 1)
    values = [_without_drift(10.0 ** (log_low + i * step)) for i in range(points)]
    values[0], values[-1] = float(low), float(high)
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(
            f"{points=} log-spaced values from {low=} to {high=} are not all distinct (the "
            "range is too narrow for that many floats); widen the range or use fewer points."
        )
    return values


def _without_drift(value: float) -> float:
    """The shortest decimal within :data:`DRIFT_RTOL` of ``value`` (``value`` when none is)."""
    for digits in range(1, 18):
        candidate = float(f"{value:.{digits}g}")
        if abs(candidate - value) <= DRIFT_RTOL * abs(value):
            return candidate
    return value
