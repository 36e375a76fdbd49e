"""trainers.schedules against the closed-form one-cycle, momentum and SGDR formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainers.schedules import (
    constant,
    cos_anneal,
    one_cycle_lr,
    one_cycle_mom,
    sgdr_lr,
    sgdr_total_epochs,
)


def closed_one_cycle(pos: float, lr_max: float, pct: float, div: float, div_final: float) -> float:
    """fastai's one-cycle written out: cosine warm-up then cosine annealing."""
    if pos < pct:
        lo = lr_max / div
        return lo + (lr_max - lo) * (1 - math.cos(math.pi * pos / pct)) / 2
    p = (pos - pct) / (1 - pct)
    return lr_max + (lr_max / div_final - lr_max) * (1 - math.cos(math.pi * p)) / 2


@pytest.mark.parametrize(
    ("start", "end", "pos", "expected"),
    [
        (1.0, 0.0, 0.0, 1.0),
        (1.0, 0.0, 0.5, 0.5),
        (1.0, 0.0, 1.0, 0.0),
        (0.2, 1.0, 0.25, 0.2 + 0.8 * (1 - math.sqrt(0.5)) / 2),
    ],
)
def test_cos_anneal_is_half_a_cosine(start: float, end: float, pos: float, expected: float) -> None:
    assert cos_anneal(start, end, pos) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("pos", "expected"),
    [
        (0.0, 1e-2 / 25),
        (0.125, (1e-2 / 25 + 1e-2) / 2),
        (0.25, 1e-2),
        (0.625, (1e-2 + 1e-7) / 2),
        (1.0, 1e-7),
    ],
)
def test_one_cycle_lr_landmarks(pos: float, expected: float) -> None:
    assert one_cycle_lr(pos, lr_max=1e-2) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("pct_start", [0.0, 0.1, 0.25, 0.5, 0.99, 1.0])
@pytest.mark.parametrize("pos", [0.0, 0.03, 0.2, 0.5, 0.77, 0.999, 1.0])
def test_one_cycle_lr_matches_closed_form(pct_start: float, pos: float) -> None:
    got = one_cycle_lr(pos, lr_max=3e-3, pct_start=pct_start, div=10.0, div_final=1e4)
    if pct_start == 1.0 and pos == 1.0:  # all warm-up: the end of it is the peak
        expected = 3e-3
    else:
        expected = closed_one_cycle(pos, 3e-3, pct_start, 10.0, 1e4)
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("pos", "expected"), [(0.0, 0.95), (0.125, 0.90), (0.25, 0.85), (0.625, 0.90), (1.0, 0.95)]
)
def test_one_cycle_mom_moves_inversely(pos: float, expected: float) -> None:
    assert one_cycle_mom(pos) == pytest.approx(expected, rel=1e-12)


def test_one_cycle_mom_can_end_elsewhere() -> None:
    assert one_cycle_mom(1.0, mom_max=0.9, mom_min=0.8, mom_end=0.85) == pytest.approx(0.85)


def closed_sgdr(epoch_pos: float, lr_max: float, cycle_len: float, mult: float) -> float:
    start, length = 0.0, cycle_len
    while epoch_pos >= start + length:
        start, length = start + length, length * mult
    return lr_max * (1 + math.cos(math.pi * (epoch_pos - start) / length)) / 2


@pytest.mark.parametrize(
    ("epoch_pos", "cycle_len", "mult", "expected"),
    [
        (0.0, 1, 1, 0.1),
        (0.5, 1, 1, 0.05),
        (1.0, 1, 1, 0.1),  # restart
        (1.5, 1, 2, 0.1 * (1 + math.cos(math.pi * 0.25)) / 2),
        (3.0, 1, 2, 0.1),  # third cycle starts at 1 + 2
        (5.0, 1, 2, 0.05),
        (2.0, 2, 1, 0.1),
    ],
)
def test_sgdr_lr_restarts_on_cycle_boundaries(
    epoch_pos: float, cycle_len: int, mult: int, expected: float
) -> None:
    got = sgdr_lr(epoch_pos, lr_max=0.1, cycle_len=cycle_len, cycle_mult=mult)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(closed_sgdr(epoch_pos, 0.1, cycle_len, mult), rel=1e-12)


@pytest.mark.parametrize(
    ("epoch_pos", "cycle_len", "mult"),
    [(0.3, 0.1, 1), (0.7, 0.1, 1), (0.7, 0.1, 2), (0.9, 0.3, 2)],  # 0.1+0.1+0.1 != 0.3
)
def test_sgdr_lr_restarts_on_float_cycle_boundaries(
    epoch_pos: float, cycle_len: float, mult: int
) -> None:
    # each position is a cycle start: 3 x 0.1, 7 x 0.1, 0.1 + 0.2 + 0.4, 0.3 + 0.6
    assert sgdr_lr(epoch_pos, lr_max=0.1, cycle_len=cycle_len, cycle_mult=mult) == pytest.approx(
        0.1, rel=1e-9
    )
    # a position just before a boundary is still the end of the cycle, not a restart
    before = sgdr_lr(epoch_pos - 1e-3, lr_max=0.1, cycle_len=cycle_len, cycle_mult=mult)
    assert before < 1e-3


def test_sgdr_lr_far_into_training_keeps_the_pattern() -> None:
    assert sgdr_lr(1e12 + 0.5, lr_max=0.1, cycle_len=1) == pytest.approx(0.05, rel=1e-3)
    assert sgdr_lr(2.0**40 - 1, lr_max=0.1, cycle_len=1, cycle_mult=2) == pytest.approx(0.1)


def test_sgdr_lr_respects_lr_min() -> None:
    assert sgdr_lr(0.5, lr_max=0.1, cycle_len=1, lr_min=0.02) == pytest.approx(0.06)


@pytest.mark.parametrize(
    ("n_cycles", "cycle_len", "mult", "expected"),
    [(3, 1, 1, 3), (3, 1, 2, 7), (4, 2, 2, 30), (2, 3, 3, 12)],
)
def test_sgdr_total_epochs(n_cycles: int, cycle_len: int, mult: int, expected: int) -> None:
    assert sgdr_total_epochs(n_cycles, cycle_len, mult) == expected
    if mult > 1:
        assert expected == cycle_len * (mult**n_cycles - 1) / (mult - 1)


def test_constant_is_flat() -> None:
    assert [constant(p, value=0.3) for p in (0.0, 0.5, 1.0)] == [0.3, 0.3, 0.3]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: one_cycle_lr(1.5, lr_max=1e-2), r"pos must be a number in \[0, 1\]"),
        (lambda: one_cycle_lr(float("nan"), lr_max=1e-2), "pos must be"),
        (lambda: one_cycle_lr(0.5, lr_max=0.0), "lr_max must be a finite number > 0"),
        (lambda: one_cycle_lr(0.5, lr_max=1e-2, pct_start=1.2), "pct_start must be"),
        (lambda: one_cycle_lr(0.5, lr_max=1e-2, div=-1), "div must be"),
        (lambda: sgdr_lr(-1, lr_max=0.1, cycle_len=1), "epoch_pos must be"),
        (lambda: sgdr_lr(0.5, lr_max=0.1, cycle_len=0), "cycle_len must be"),
        (lambda: sgdr_lr(0.5, lr_max=0.1, cycle_len=1, cycle_mult=0.5), "cycle_mult must be"),
        # an infinite position used to loop forever looking for its cycle
        (lambda: sgdr_lr(math.inf, lr_max=0.1, cycle_len=1), "epoch_pos must be a finite"),
        (lambda: sgdr_lr(math.nan, lr_max=0.1, cycle_len=1), "epoch_pos must be a finite"),
        (lambda: sgdr_lr(0.5, lr_max=-0.1, cycle_len=1), "lr_max must be a finite number > 0"),
        (lambda: sgdr_lr(0.5, lr_max=math.inf, cycle_len=1), "lr_max must be a finite"),
        (lambda: sgdr_lr(0.5, lr_max=0.1, cycle_len=1, lr_min=-0.01), "lr_min must be"),
        (lambda: sgdr_lr(0.5, lr_max=0.1, cycle_len=1, lr_min=math.nan), "lr_min must be"),
        (lambda: sgdr_lr(0.5, lr_max=0.1, cycle_len=1, lr_min=0.2), r"lr_min must be .*lr_max"),
        (lambda: sgdr_total_epochs(0, 1, 1), "n_cycles must be an integer >= 1"),
        (lambda: sgdr_total_epochs(2, 1.5, 1), "cycle_len must be an integer >= 1"),
        (lambda: constant(2.0, value=1.0), "pos must be"),
    ],
)
def test_schedules_reject_bad_arguments(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        # NumPy scalars are numbers, as resolve_lrs takes them; they used to be refused with
        # "pos must be a number in [0, 1], but got np.float32(0.5)"
        (lambda: one_cycle_lr(np.float32(0.5), lr_max=1e-2), one_cycle_lr(0.5, lr_max=1e-2)),
        (lambda: one_cycle_lr(0.5, lr_max=np.float32(0.25)), one_cycle_lr(0.5, lr_max=0.25)),
        (
            lambda: one_cycle_lr(0.1, lr_max=1e-2, pct_start=np.float32(0.5), div=np.int64(5)),
            one_cycle_lr(0.1, lr_max=1e-2, pct_start=0.5, div=5),
        ),
        (lambda: one_cycle_mom(np.float32(0.125)), one_cycle_mom(0.125)),
        (lambda: cos_anneal(1.0, 0.0, np.float32(0.5)), 0.5),
        (
            lambda: sgdr_lr(np.float32(1.5), lr_max=np.float32(0.5), cycle_len=np.int64(1)),
            sgdr_lr(1.5, lr_max=0.5, cycle_len=1),
        ),
        (lambda: sgdr_total_epochs(np.int64(3), np.int64(1), np.int64(2)), 7),
        (lambda: constant(np.float32(0.5), value=0.3), 0.3),
    ],
)
def test_schedules_take_numpy_scalars(call, expected: float) -> None:
    assert call() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mom_max": math.nan}, r"mom_max must be a finite number in \[0, 1\), but got nan"),
        ({"mom_min": 1.5}, r"mom_min must be a finite number in \[0, 1\), but got 1.5"),
        ({"mom_end": -0.1}, r"mom_end must be a finite number in \[0, 1\), but got -0.1"),
    ],
)
def test_one_cycle_mom_rejects_momenta_outside_0_1(kwargs, match: str) -> None:
    # used to return nan (or a momentum of 1.5) without a word
    with pytest.raises(ValueError, match=match):
        one_cycle_mom(0.5, **kwargs)


@pytest.mark.parametrize("value", [True, np.bool_(True), "0.5"])
def test_schedules_refuse_bools_and_strings_as_positions(value) -> None:
    with pytest.raises(ValueError, match=r"pos must be a number in \[0, 1\]"):
        one_cycle_lr(value, lr_max=1e-2)
