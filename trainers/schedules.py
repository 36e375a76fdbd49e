"""Learning-rate and momentum schedules as pure functions of the training position.

Every schedule maps a position to a value and keeps no state, so a trace can be checked against
its closed form and a run can resume at any position (``start_epoch``). ``pos`` is the fraction
of training done, in ``[0, 1]``; :func:`sgdr_lr` takes the position in epochs instead, because
its restarts fall on epoch boundaries.

The one-cycle policy follows fastai: the learning rate warms up from ``lr_max / div`` to
``lr_max`` along half a cosine during the first ``pct_start`` of training, then anneals to
``lr_max / div_final``; momentum moves the opposite way (high, low, high).

Example:
    >>> one_cycle_lr(0.25, lr_max=1e-2)
    0.01
    >>> round(one_cycle_mom(0.25), 4)
    0.85
    >>> sgdr_lr(1.0, lr_max=0.1, cycle_len=1)  # a restart
    0.1
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from trainers._numbers import is_finite_real as _is_real

__all__ = [
    "constant",
    "cos_anneal",
    "flat_cos_lr",
    "one_cycle_lr",
    "one_cycle_mom",
    "sgdr_lr",
    "sgdr_total_epochs",
]


def _is_whole(value: Any) -> bool:
    """An integer, Python's or a NumPy one (``np.int64``), not a bool."""
    return isinstance(value, numbers.Integral) and _is_real(value)


def _check_pos(pos: float, *, name: str = "pos") -> float:
    if not (_is_real(pos) and 0.0 <= pos <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], but got {pos!r}.")
    return float(pos)


def _check_positive(name: str, value: float) -> float:
    if not (_is_real(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, but got {value!r}.")
    return float(value)


def _check_mom(name: str, value: float) -> float:
    if not (_is_real(value) and 0 <= value < 1):
        raise ValueError(f"{name} must be a finite number in [0, 1), but got {value!r}.")
    return float(value)


def cos_anneal(start: float, end: float, pos: float) -> float:
    """Half a cosine from ``start`` (at ``pos=0``) to ``end`` (at ``pos=1``).

    Args:
        start: Value at the beginning.
        end: Value at the end.
        pos: Position in ``[0, 1]``.

    Returns:
        ``start + (end - start) * (1 - cos(pi * pos)) / 2``.

    Raises:
        ValueError: if ``pos`` is outside ``[0, 1]`` or NaN.
    """
    pos = _check_pos(pos)
    return start + (end - start) * (1.0 - math.cos(math.pi * pos)) / 2.0


def _two_phase(
    pos: float, pct_start: float, first: tuple[float, float], second: tuple[float, float]
) -> float:
    """fastai's ``combine_scheds`` for two cosine phases split at ``pct_start``."""
    pos = _check_pos(pos)
    pct_start = _check_pos(pct_start, name="pct_start")
    if pos < pct_start:
        return cos_anneal(first[0], first[1], pos / pct_start)
    if pct_start >= 1.0:  # pos == pct_start == 1: the end of the warm-up
        return first[1]
    return cos_anneal(second[0], second[1], (pos - pct_start) / (1.0 - pct_start))


def one_cycle_lr(
    pos: float,
    *,
    lr_max: float,
    pct_start: float = 0.25,
    div: float = 25.0,
    div_final: float = 1e5,
) -> float:
    """The one-cycle learning rate at ``pos``.

    Args:
        pos: Fraction of training done, in ``[0, 1]``.
        lr_max: Peak learning rate, reached at ``pos == pct_start``.
        pct_start: Fraction of training spent warming up, in ``[0, 1]``.
        div: The rate starts at ``lr_max / div``.
        div_final: The rate ends at ``lr_max / div_final``.

    Returns:
        ``cos_anneal(lr_max/div, lr_max, pos/pct_start)`` during the warm-up, then
        ``cos_anneal(lr_max, lr_max/div_final, (pos-pct_start)/(1-pct_start))``.

    Raises:
        ValueError: for ``pos`` or ``pct_start`` outside ``[0, 1]``, or a non-positive
            ``lr_max``, ``div`` or ``div_final``.
    """
    lr_max = _check_positive("lr_max", lr_max)
    div = _check_positive("div", div)
    div_final = _check_positive("div_final", div_final)
    return _two_phase(pos, pct_start, (lr_max / div, lr_max), (lr_max, lr_max / div_final))


def flat_cos_lr(pos: float, *, lr: float, pct_start: float = 0.75, div_final: float = 1e5) -> float:
    """fastai's ``fit_flat_cos`` rate at ``pos``: flat at ``lr`` for the first ``pct_start``
    of training, then half a cosine down to ``lr / div_final`` (fastai's ``combined_cos(
    pct_start, lr, lr, lr / div_final)``; the schedule fastai pairs with its ranger optimizer).

    >>> flat_cos_lr(0.5, lr=1e-3), round(flat_cos_lr(1.0, lr=1e-3, div_final=10), 12)
    (0.001, 0.0001)

    Raises:
        ValueError: for ``pos`` or ``pct_start`` outside ``[0, 1]``, or a non-positive ``lr``
            or ``div_final``.
    """
    lr = _check_positive("lr", lr)
    div_final = _check_positive("div_final", div_final)
    return _two_phase(pos, pct_start, (lr, lr), (lr, lr / div_final))


def one_cycle_mom(
    pos: float,
    *,
    pct_start: float = 0.25,
    mom_max: float = 0.95,
    mom_min: float = 0.85,
    mom_end: float | None = None,
) -> float:
    """The one-cycle momentum (Adam's beta1 or SGD's momentum) at ``pos``.

    Moves inversely to :func:`one_cycle_lr`: from ``mom_max`` down to ``mom_min`` during the
    warm-up, then back up to ``mom_end`` (``mom_max`` when None).

    Args:
        pos: Fraction of training done, in ``[0, 1]``.
        pct_start: Fraction of training spent warming up, in ``[0, 1]``.
        mom_max: Momentum at the start.
        mom_min: Momentum at the peak learning rate.
        mom_end: Momentum at the end; ``mom_max`` when None.

    Raises:
        ValueError: for ``pos`` or ``pct_start`` outside ``[0, 1]``, or a momentum that is not
            a finite number in ``[0, 1)``.
    """
    mom_max = _check_mom("mom_max", mom_max)
    mom_min = _check_mom("mom_min", mom_min)
    end = mom_max if mom_end is None else _check_mom("mom_end", mom_end)
    return _two_phase(pos, pct_start, (mom_max, mom_min), (mom_min, end))


def sgdr_lr(
    epoch_pos: float,
    *,
    lr_max: float,
    cycle_len: float,
    cycle_mult: float = 1,
    lr_min: float = 0.0,
) -> float:
    """Cosine annealing with warm restarts (SGDR) at ``epoch_pos`` epochs into training.

    Cycle ``k`` (from 0) lasts ``cycle_len * cycle_mult**k`` epochs; within a cycle the rate
    falls from ``lr_max`` to ``lr_min`` along half a cosine, and jumps back to ``lr_max`` at the
    start of the next cycle. Past the last planned cycle the pattern simply continues.

    Args:
        epoch_pos: Position in epochs (``epoch + batch / n_batches``), ``>= 0``.
        lr_max: Rate at the start of every cycle.
        cycle_len: Length of the first cycle in epochs, ``> 0``.
        cycle_mult: Each cycle is this many times longer than the one before, ``>= 1``.
        lr_min: Floor of the cosine, ``>= 0``.

    Raises:
        ValueError: for a negative or non-finite ``epoch_pos``, ``lr_max`` that is not a finite
            number > 0, ``lr_min`` outside ``[0, lr_max]``, ``cycle_len <= 0`` or
            ``cycle_mult < 1``.
    """
    if not (_is_real(epoch_pos) and epoch_pos >= 0):
        raise ValueError(f"epoch_pos must be a finite number >= 0, but got {epoch_pos!r}.")
    lr_max = _check_positive("lr_max", lr_max)
    if not (_is_real(lr_min) and 0 <= lr_min <= lr_max):
        raise ValueError(
            f"lr_min must be a finite number in [0, lr_max={lr_max!r}], but got {lr_min!r}."
        )
    cycle_len = _check_positive("cycle_len", cycle_len)
    if not (_is_real(cycle_mult) and cycle_mult >= 1):
        raise ValueError(f"cycle_mult must be a finite number >= 1, but got {cycle_mult!r}.")
    epoch_pos, lr_min = float(epoch_pos), float(lr_min)
    start, length = _sgdr_cycle(epoch_pos, cycle_len, float(cycle_mult))
    frac = min(max((epoch_pos - start) / length, 0.0), 1.0)
    return lr_min + (lr_max - lr_min) * (1.0 + math.cos(math.pi * frac)) / 2


def _sgdr_cycle(epoch_pos: float, cycle_len: float, cycle_mult: float) -> tuple[float, float]:
    """``(start, length)`` of the SGDR cycle holding ``epoch_pos``.

    Closed form when the cycles are all alike (no loop over a long run), then a walk over the
    (geometrically growing) cycles. A boundary missed by rounding (``0.1 + 0.1 + 0.1`` is not
    ``0.3``) still counts as the restart it stands for.
    """
    start, length = 0.0, cycle_len
    if cycle_mult == 1:
        start = math.floor(epoch_pos / cycle_len) * cycle_len
    while epoch_pos >= start + length - 1e-9 * length:
        start += length
        length *= cycle_mult
    while start > 0 and epoch_pos < start - 1e-9 * length:  # floor's rounding overshot
        length /= cycle_mult
        start -= length
    return start, length


def sgdr_total_epochs(n_cycles: int, cycle_len: int, cycle_mult: int = 1) -> int:
    """Epochs taken by ``n_cycles`` SGDR cycles.

    ``cycle_len * n_cycles`` when ``cycle_mult == 1``, else
    ``cycle_len * (cycle_mult**n_cycles - 1) / (cycle_mult - 1)``.

    Raises:
        ValueError: unless ``n_cycles >= 1``, ``cycle_len >= 1`` and ``cycle_mult >= 1`` are
            integers.
    """
    for name, value in (
        ("n_cycles", n_cycles),
        ("cycle_len", cycle_len),
        ("cycle_mult", cycle_mult),
    ):
        if not (_is_whole(value) and value >= 1):
            raise ValueError(f"{name} must be an integer >= 1, but got {value!r}.")
    n_cycles, cycle_len, cycle_mult = int(n_cycles), int(cycle_len), int(cycle_mult)
    if cycle_mult == 1:
        return cycle_len * n_cycles
    return cycle_len * (cycle_mult**n_cycles - 1) // (cycle_mult - 1)


def constant(pos: float, *, value: float) -> float:
    """A flat schedule: ``value`` at every position in ``[0, 1]``."""
    _check_pos(pos)
    return value
