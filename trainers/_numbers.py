"""What the trainers accept as a number: Python's or NumPy's reals, never a bool."""

from __future__ import annotations

import math
import numbers
from typing import Any


def is_real(value: Any) -> bool:
    """A real number, Python's or a NumPy scalar (``np.float32``), not a bool; may be NaN/inf."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite_real(value: Any) -> bool:
    """:func:`is_real` and finite."""
    return is_real(value) and math.isfinite(value)
