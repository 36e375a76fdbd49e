"""Suggestion rules on synthetic curves whose answers are worked out by hand."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from trainers.suggestions import (
    SUGGESTIONS,
    CurveTooShort,
    get_suggestion,
    minimum,
    slide,
    steep,
    valley,
)

# A short curve, no trimming: flat to index 2, falling to index 8, then rising.
SHORT_LRS = [10.0 ** (k - 9) for k in range(12)]
SHORT_LOSSES = [3, 3, 3, 2.6, 1.8, 1.3, 1.0, 0.9, 0.8, 1.5, 4, 9]
NO_TRIM = {"skip_start": 0, "skip_end": 0}


def _realistic_curve() -> tuple[np.ndarray, np.ndarray]:
    """81 points, log10(lr) from -7 to 1: flat 2.3, a cosine fall to 0.3 at 0.1, then blow-up."""
    x = -7 + np.arange(81) / 10
    fall = 1.3 + np.cos(np.pi * (x + 4) / 3)
    rise = 0.3 + 10 ** (x + 1) - 1
    return 10**x, np.where(x <= -4, 2.3, np.where(x <= -1, fall, rise))


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # longest run: flat point 2 .. index 8; fastai's start = 8 - 7 = 1, sections = 7/3,
        # idx = 1 + 2 + 1 = 4
        (valley, 1e-5),
        # slopes per decade: 0, 0, -.4, -.8, -.5, ... steepest starts at index 3
        (steep, 1e-6),
        # lowest loss at index 8 (0.1), divided by 10
        (minimum, 1e-2),
    ],
)
def test_rule_on_clean_short_curve_picks_hand_computed_rate(rule, expected):
    assert rule(SHORT_LRS, SHORT_LOSSES, **NO_TRIM) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # gradient: 0 0 -.2 -.6 -.65 -.4 -.2 -.1 .3 1.6 3.75 5; pairs 3 apart differ by
        # 4.7, 3.85, 1.8, .7, .55 (> .5: walk on), then .4 stops the walk at index 4
        ({"lr_diff": 3, "thresh": 0.5}, 1e-5),
        ({"lr_diff": 3, "thresh": 10.0}, 1e-1),  # never walks: lrs[-1 - lr_diff]
        ({"lr_diff": 3, "thresh": 0.5, "adjust_value": 0.5}, 5e-6),
        ({"lr_diff": 3, "thresh": 0.05}, 1e-9),  # walks back to the first point
    ],
)
def test_slide_walks_back_until_gradients_agree(kwargs, expected):
    assert slide(SHORT_LRS, SHORT_LOSSES, **NO_TRIM, **kwargs) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # trimmed to points 8..75: flat to 30, falling to 60; start 29, sections 31/3,
        # idx = 29 + 10 + 5 = 44 -> x = -2.6
        ("valley", 10**-2.6),
        ("steep", 10**-2.6),  # steepest fall of the cosine, at its middle (-2.5) minus a step
        ("minimum", 10**-2),  # bottom at lr = 0.1
    ],
)
def test_rule_on_realistic_curve_with_default_trim(name, expected):
    lrs, losses = _realistic_curve()
    assert get_suggestion(name)(lrs, losses) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", sorted(SUGGESTIONS))
def test_early_spike_is_ignored_like_fastai(name):
    lrs, losses = _realistic_curve()
    spiked = losses.copy()
    spiked[:8] = [50.0, 0.01, 40.0, 0.02, 30.0, 0.03, 20.0, 0.04]  # inside the first num_it//10
    rule = get_suggestion(name)
    assert rule(lrs, spiked) == rule(lrs, losses)


@pytest.mark.parametrize("name", sorted(SUGGESTIONS))
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_tail_cuts_the_curve(name, bad):
    lrs, losses = _realistic_curve()
    broken = losses.copy()
    broken[70:] = bad
    rule = get_suggestion(name)
    # same as the curve ending just before the first bad point (the trailing 5 already cut)
    expected = rule(lrs[:70], losses[:70], skip_start=8, skip_end=0)
    assert rule(lrs, broken) == expected


def test_noisy_curve_valley_stays_in_the_falling_stretch():
    lrs, losses = _realistic_curve()
    noisy = losses + np.random.default_rng(0).normal(0, 0.05, size=losses.shape)
    pick = valley(lrs, noisy)
    assert 1e-4 < pick < 1e-1  # the loss falls between 1e-4 and 1e-1
    assert math.log10(pick) == pytest.approx(-2.6, abs=0.5)


def test_noisy_curve_minimum_stays_near_the_bottom():
    lrs, losses = _realistic_curve()
    noisy = losses + np.random.default_rng(0).normal(0, 0.05, size=losses.shape)
    assert math.log10(minimum(lrs, noisy)) == pytest.approx(-2.0, abs=0.35)


def test_valley_on_a_rising_curve_picks_its_start_not_the_highest_rate():
    # fastai's index is -1 here, which Python would wrap to the last (highest) rate
    assert valley([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [2.0, 1.0, 3.0, 4.0, 5.0], **NO_TRIM) == 1e-4


@pytest.mark.parametrize(
    ("name", "n_points", "message"),
    [
        ("valley", 7, r"'valley' needs at least 3 usable points, but the curve has 7 points"),
        ("steep", 6, r"'steep' needs at least 2 usable points, but the curve has 6 points"),
        ("minimum", 6, r"'minimum' needs at least 2 usable points, .* only 1 are usable"),
        ("slide", 20, r"'slide' needs at least 16 usable points, .* only 13 are usable"),
    ],
)
def test_too_short_curve_raises_naming_rule_and_counts(name, n_points, message):
    lrs = np.geomspace(1e-5, 1, n_points)
    losses = np.linspace(2, 1, n_points)
    with pytest.raises(CurveTooShort, match=message) as info:
        get_suggestion(name)(lrs, losses)
    assert info.value.n_points == n_points
    assert pickle.loads(pickle.dumps(info.value)).needed == info.value.needed


@pytest.mark.parametrize("name", sorted(SUGGESTIONS))
@pytest.mark.parametrize("n_points", [1, 2, 3, 4, 5])
def test_curve_of_at_most_skip_end_points_keeps_nothing_like_fastais_slice(name, n_points):
    # fastai keeps recorder.lrs[num_it//10:-5]: of 5 points or fewer, nothing. The end of the
    # cut must not wrap around (4 points cut at 4 - 5 = -1 would keep 3).
    lrs = np.geomspace(1e-3, 1, n_points)
    losses = np.linspace(3, 1, n_points)
    assert list(lrs[0:-5]) == []  # fastai's slice of such a curve
    with pytest.raises(CurveTooShort, match=r"only 0 are usable") as info:
        get_suggestion(name)(lrs, losses, skip_start=0)
    assert info.value.n_usable == 0


def test_curve_that_is_all_nan_after_trim_is_too_short():
    lrs = np.geomspace(1e-5, 1, 30)
    losses = np.full(30, np.nan)
    with pytest.raises(
        CurveTooShort,
        match=r"0 are usable .*first 3 \(a tenth of the points\) and the last 5, and 22 from the "
        r"first non-finite",
    ):
        valley(lrs, losses)


@pytest.mark.parametrize(
    ("lrs", "losses", "message"),
    [
        ([1e-3, 1e-2], [1.0], r"same length, but got 2 and 1"),
        ([1e-3, -1e-2, 1e-1], [1.0, 1.0, 1.0], r"positive and finite"),
        ([1e-3, 1e-3, 1e-1], [1.0, 1.0, 1.0], r"strictly increasing"),
        ([[1e-3, 1e-2]], [[1.0, 1.0]], r"1-D"),
    ],
)
def test_bad_curve_input_raises(lrs, losses, message):
    with pytest.raises(ValueError, match=message):
        minimum(lrs, losses, **NO_TRIM)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr_diff": 0}, r"lr_diff must be an integer >= 1"),
        ({"thresh": -1.0}, r"thresh must be >= 0"),
        ({"adjust_value": 0.0}, r"adjust_value must be > 0"),
        ({"skip_end": -1}, r"skip_start and skip_end must be >= 0"),
    ],
)
def test_bad_slide_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        slide(SHORT_LRS, SHORT_LOSSES, lr_diff=kwargs.pop("lr_diff", 3), **kwargs)


def test_unknown_rule_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"'valey'.*valley, steep, minimum, slide"):
        get_suggestion("valey")
    with pytest.raises(ValueError, match=r"\['valley'\]; choose one of valley"):
        get_suggestion(["valley"])  # type: ignore[arg-type]  # was TypeError: unhashable


def test_registry_holds_the_four_fastai_rules():
    assert SUGGESTIONS == {"valley": valley, "steep": steep, "minimum": minimum, "slide": slide}
