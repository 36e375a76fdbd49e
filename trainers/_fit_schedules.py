"""The fit variants behind ``Learner.fit``, ``fit_one_cycle``, ``fit_flat_cos``, ``fit_sgdr``
and ``fine_tune``.

Each checks its arguments, turns them into a ``hypers(pos, epoch_pos) -> (rates, momentum)``
schedule (:data:`trainers._loop.Hypers`, built from :mod:`trainers.schedules`) and hands it to
:func:`trainers._loop.fit`; ``fine_tune`` is two one-cycle fits around freezing. The
:class:`~trainers.learner.Learner` methods of the same names delegate here.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from trainers import _loop
from trainers._freezing import warn_if_one_group
from trainers._numbers import is_finite_real as _is_real
from trainers._training import DEFAULT_MOM, LRSpec, resolve_lrs
from trainers.schedules import (
    flat_cos_lr,
    one_cycle_lr,
    one_cycle_mom,
    sgdr_lr,
    sgdr_total_epochs,
)

if TYPE_CHECKING:
    from trainers.learner import Learner

__all__ = ["fine_tune", "fit", "fit_flat_cos", "fit_one_cycle", "fit_sgdr"]


def _check_int(name: str, value: Any, *, low: int) -> int:
    """``value`` as an ``int`` (Python's or NumPy's integers, not bools) of at least ``low``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, but got {value!r}.")
    return int(value)


def _check_moms(moms: Any) -> tuple[float, float, float]:
    """``moms`` as three momenta in ``[0, 1)`` (Adam's beta1 or SGD's momentum)."""
    ok = isinstance(moms, tuple | list) and len(moms) == 3
    if not (ok and all(_is_real(m) and 0 <= m < 1 for m in moms)):
        raise ValueError(
            "moms must be three numbers in [0, 1) (start, at the peak rate, end), "
            f"but got {moms!r}."
        )
    return float(moms[0]), float(moms[1]), float(moms[2])


def fit(learn: Learner, epochs: int, lr: LRSpec, *, start_epoch: int, precompute: bool) -> None:
    """Train ``epochs`` epochs at a constant rate (momentum / beta1 0.9).

    Args:
        epochs: Number of epochs, ``>= 1``.
        lr: A rate, ``(lo, hi)`` / ``slice(lo, hi)`` spread geometrically over the layer
            groups, or ``slice(hi)`` (``hi/10`` for all but the last group).
        start_epoch: Skip the first epochs (resume after :meth:`Learner.load`).
        precompute: Train the head on cached body outputs (frozen body, no augmentation).

    Raises:
        ValueError: for a bad ``epochs``, ``start_epoch`` or ``lr`` (see :func:`fit_one_cycle`).
        TrainingDiverged: when a training loss is not finite (ValueError when the batch
            itself holds NaN/inf inputs).
    """
    lrs = resolve_lrs(lr, learn.n_groups, name="lr")
    _loop.fit(
        learn,
        epochs,
        lambda pos, epoch_pos: (lrs, DEFAULT_MOM),
        start_epoch=start_epoch,
        precompute=precompute,
    )


def fit_one_cycle(
    learn: Learner,
    epochs: int,
    lr_max: LRSpec,
    *,
    pct_start: float,
    div: float,
    div_final: float,
    moms: tuple[float, float, float],
    start_epoch: int,
    precompute: bool,
) -> None:
    """Train with the one-cycle policy, updated every batch (see :mod:`trainers.schedules`).

    The rate of each group follows ``one_cycle_lr(pos, lr_max=<group's rate>, ...)`` with
    ``pos = iteration / (epochs * batches_per_epoch)``; momentum (beta1 for Adam) goes
    ``moms[0] -> moms[1] -> moms[2]`` inversely.

    Args:
        epochs: Total epochs of the cycle, ``>= 1``.
        lr_max: Peak rate: a number, ``(lo, hi)``, ``slice(lo, hi)`` or ``slice(hi)``.
        pct_start: Warm-up fraction in ``[0, 1]``.
        div: Start rate is ``lr_max / div``.
        div_final: Final rate is ``lr_max / div_final``.
        moms: Momentum at the start, the peak rate and the end.
        start_epoch: Resume the cycle at this epoch (the schedule continues where an
            interrupted ``fit_one_cycle(epochs)`` stopped).
        precompute: Train the head on cached body outputs.

    Raises:
        ValueError: for ``lr_max`` <= 0, NaN or ``lo > hi`` (the message names ``lr_max``),
            ``pct_start`` outside ``[0, 1]``, ``div`` / ``div_final`` not a finite number
            > 0, ``moms`` not three numbers in ``[0, 1)``, or bad ``epochs`` /
            ``start_epoch``.
    """
    lrs = resolve_lrs(lr_max, learn.n_groups, name="lr_max")
    mom_max, mom_min, mom_end = _check_moms(moms)

    def hypers(pos: float, epoch_pos: float) -> tuple[list[float], float]:
        rates = [
            one_cycle_lr(pos, lr_max=m, pct_start=pct_start, div=div, div_final=div_final)
            for m in lrs
        ]
        mom = one_cycle_mom(
            pos, pct_start=pct_start, mom_max=mom_max, mom_min=mom_min, mom_end=mom_end
        )
        return rates, mom

    hypers(0.0, 0.0)  # validate the schedule's arguments before training
    _loop.fit(learn, epochs, hypers, start_epoch=start_epoch, precompute=precompute)


def fit_flat_cos(
    learn: Learner,
    epochs: int,
    lr: LRSpec,
    *,
    pct_start: float,
    div_final: float,
    start_epoch: int,
    precompute: bool,
) -> None:
    """fastai's ``fit_flat_cos``: each group's rate flat at ``lr`` for the first
    ``pct_start`` of training, then half a cosine down to ``lr / div_final``, updated every
    batch (:func:`~trainers.schedules.flat_cos_lr`); momentum stays 0.9.

    Args:
        epochs: Number of epochs, ``>= 1``.
        lr: The flat rate: a number, ``(lo, hi)``, ``slice(lo, hi)`` or ``slice(hi)``
            (default 1e-3, as ``fit``'s and fastai's ``learn.lr``).
        pct_start: Fraction of training at the flat rate, in ``[0, 1]``.
        div_final: The rate ends at ``lr / div_final``.
        start_epoch: Resume the schedule at this epoch (after :meth:`Learner.load`).
        precompute: Train the head on cached body outputs.

    Raises:
        ValueError: for a bad ``lr`` (named), ``pct_start`` outside ``[0, 1]``, a
            ``div_final`` that is not a finite number > 0, or bad ``epochs`` /
            ``start_epoch``.
    """
    lrs = resolve_lrs(lr, learn.n_groups, name="lr")

    def hypers(pos: float, epoch_pos: float) -> tuple[list[float], float]:
        rates = [flat_cos_lr(pos, lr=m, pct_start=pct_start, div_final=div_final) for m in lrs]
        return rates, DEFAULT_MOM

    hypers(0.0, 0.0)  # validate the schedule's arguments before training
    _loop.fit(learn, epochs, hypers, start_epoch=start_epoch, precompute=precompute)


def fit_sgdr(
    learn: Learner,
    n_cycles: int,
    cycle_len: int,
    lr_max: LRSpec,
    *,
    cycle_mult: int,
    start_epoch: int,
    precompute: bool,
) -> None:
    """Cosine annealing with warm restarts for ``sgdr_total_epochs(n_cycles, ...)`` epochs.

    ``cycle_mult`` defaults to 2, as fastai's ``fit_sgdr``: each cycle twice the last
    (``cycle_mult=1`` restarts every ``cycle_len`` epochs).

    Each group's rate is ``sgdr_lr(epoch + batch / n_batches, lr_max=<group's rate>,
    cycle_len=cycle_len, cycle_mult=cycle_mult)``; momentum stays 0.9.

    Raises:
        ValueError: for non-integer or < 1 ``n_cycles``, ``cycle_len``, ``cycle_mult``, or a
            bad ``lr_max``.
    """
    epochs = sgdr_total_epochs(n_cycles, cycle_len, cycle_mult)
    lrs = resolve_lrs(lr_max, learn.n_groups, name="lr_max")

    def hypers(pos: float, epoch_pos: float) -> tuple[list[float], float]:
        return [
            sgdr_lr(epoch_pos, lr_max=m, cycle_len=cycle_len, cycle_mult=cycle_mult) for m in lrs
        ], DEFAULT_MOM

    _loop.fit(learn, epochs, hypers, start_epoch=start_epoch, precompute=precompute)


def fine_tune(
    learn: Learner,
    epochs: int,
    base_lr: float,
    *,
    freeze_epochs: int,
    lr_mult: float,
    pct_start: float,
    div: float,
) -> None:
    """fastai's transfer-learning recipe, with fastai's defaults.

    Freeze, ``fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99)``, halve
    ``base_lr``, unfreeze, ``fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr),
    pct_start=pct_start, div=div)``: the unfrozen cycle starts at a fifth of its peak, not
    ``fit_one_cycle``'s 1/25, since the body already holds trained weights. History records
    carry ``phase`` ``"frozen"`` / ``"unfrozen"``.

    Every argument is checked before anything is frozen or trained.

    Raises:
        ValueError: for a ``base_lr`` that is not a finite number > 0, ``epochs < 1``,
            ``freeze_epochs < 0``, ``lr_mult`` not a finite number >= 1, ``pct_start``
            outside ``[0, 1]`` or ``div`` not a finite number > 0.
    """
    if isinstance(base_lr, slice | tuple | list | np.ndarray):  # resolve_lrs takes them
        raise ValueError(
            f"base_lr must be a finite number > 0, but got {base_lr!r}: fine_tune spreads "
            "its own rates, slice(base_lr / 2 / lr_mult, base_lr / 2), over the groups."
        )
    resolve_lrs(base_lr, 1, name="base_lr")
    epochs = _check_int("epochs", epochs, low=1)
    freeze_epochs = _check_int("freeze_epochs", freeze_epochs, low=0)
    if not (_is_real(lr_mult) and lr_mult >= 1):
        raise ValueError(f"lr_mult must be a finite number >= 1, but got {lr_mult!r}.")
    lo, hi = base_lr / 2 / lr_mult, base_lr / 2
    if not lo > 0:
        raise ValueError(
            f"base_lr / 2 / lr_mult must be > 0, but base_lr={base_lr!r} and "
            f"lr_mult={lr_mult!r} give {lo!r}."
        )
    for rate in resolve_lrs(slice(lo, hi), learn.n_groups, name="base_lr"):
        one_cycle_lr(0.0, lr_max=rate, pct_start=pct_start, div=div)
    previous = learn.phase
    try:
        if freeze_epochs:
            # the user's call of Learner.fine_tune, which calls this
            warn_if_one_group(learn.model, stacklevel=4)
        learn.freeze_to(-1)
        if freeze_epochs:
            learn.phase = "frozen"
            learn.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99)
        learn.unfreeze()
        learn.phase = "unfrozen"
        learn.fit_one_cycle(epochs, slice(lo, hi), pct_start=pct_start, div=div)
    finally:
        learn.phase = previous
