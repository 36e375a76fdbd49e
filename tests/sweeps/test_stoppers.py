"""Stoppers: the contract every stopper keeps, then tables of loss sequences -> stop epoch."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from ray.tune.stopper import CombinedStopper, Stopper

from sweeps.spec import load_spec
from sweeps.stoppers import AnyOf, Divergence, MetricStopper, MissingMetricError, RisingValLoss
from sweeps.stoppers import from_spec as stopper_from_spec

NAN = math.nan
INF = math.inf


def _result(metric: str, value: float, epoch: int) -> dict[str, Any]:
    return {metric: value, "training_iteration": epoch, "time_this_iter_s": 0.1}


def _stop_epoch(
    stopper: Stopper,
    metric: str,
    values: Sequence[float],
    trial: str = "t",
    extra: Mapping[str, float] | None = None,
) -> int | None:
    """Feed values as epochs 1, 2, ... (each result with ``extra``'s keys too); the first
    epoch at which the stopper says stop."""
    for epoch, value in enumerate(values, start=1):
        if stopper(trial, {**_result(metric, value, epoch), **(extra or {})}):
            return epoch
    return None


# --- the contract, for every stopper ----------------------------------------------------------
# Each case: a factory taking grace_epochs, the metric, and a sequence that is "bad" from epoch 2.

CONTRACT = [
    pytest.param(
        lambda grace: RisingValLoss("valid_loss", patience=1, grace_epochs=grace),
        "valid_loss",
        [1.0, 5.0, 6.0, 7.0, 8.0],
        "rising_val_loss",
        id="RisingValLoss",
    ),
    pytest.param(
        lambda grace: Divergence("train_loss", factor=2.0, grace_epochs=grace),
        "train_loss",
        [1.0, 5.0, 6.0, 7.0, 8.0],
        "diverged",
        id="Divergence",
    ),
]
Factory = Callable[[int], MetricStopper]


@pytest.mark.parametrize(("make", "metric", "values", "reason"), CONTRACT)
def test_stops_on_a_bad_sequence_with_its_reason(
    make: Factory, metric: str, values: list[float], reason: str
) -> None:
    stopper = make(0)
    assert _stop_epoch(stopper, metric, values) == 2
    assert stopper.stop_reason("t") == reason
    assert stopper.best_epoch("t") == 1
    assert stopper.best_value("t") == 1.0
    assert stopper.stop_all() is False


@pytest.mark.parametrize("grace", [1, 2, 3])
@pytest.mark.parametrize(("make", "metric", "values", "reason"), CONTRACT)
def test_grace_epochs_are_honoured(
    make: Factory, metric: str, values: list[float], reason: str, grace: int
) -> None:
    stopper = make(grace)
    assert _stop_epoch(stopper, metric, values) == grace + 1


@pytest.mark.parametrize(("make", "metric", "values", "reason"), CONTRACT)
def test_pickle_round_trip_keeps_per_trial_state(
    make: Factory, metric: str, values: list[float], reason: str
) -> None:
    stopper = make(2)
    assert _stop_epoch(stopper, metric, values[:2]) is None
    restored = pickle.loads(pickle.dumps(stopper))
    assert restored(trial_id := "t", _result(metric, values[2], 3)) is True
    assert restored.stop_reason(trial_id) == reason
    assert restored.best_epoch(trial_id) == 1
    fresh = make(2)
    assert fresh("t", _result(metric, values[2], 3)) is False


@pytest.mark.parametrize(("make", "metric", "values", "reason"), CONTRACT)
def test_missing_metric_raises_listing_the_present_ones(
    make: Factory, metric: str, values: list[float], reason: str
) -> None:
    stopper = make(0)
    result = {"loss": 1.0, "training_iteration": 1}
    with pytest.raises(
        MissingMetricError, match=rf"watches '{metric}'.*present: loss, training_iteration"
    ):
        stopper("t", result)
    with pytest.raises(KeyError):
        stopper("t", result)


@pytest.mark.parametrize(("make", "metric", "values", "reason"), CONTRACT)
def test_missing_epoch_key_raises(
    make: Factory, metric: str, values: list[float], reason: str
) -> None:
    with pytest.raises(MissingMetricError, match=rf"'training_iteration'.*present: {metric}"):
        make(0)("t", {metric: 1.0})


@pytest.mark.parametrize(("make", "metric", "values", "reason"), CONTRACT)
def test_missing_metric_error_survives_pickling(
    make: Factory, metric: str, values: list[float], reason: str
) -> None:
    with pytest.raises(MissingMetricError) as caught:
        make(0)("t", {"other": 1.0, "training_iteration": 1})
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) and copy.present == ["other", "training_iteration"]


@pytest.mark.parametrize(("make", "metric", "values", "reason"), CONTRACT)
def test_trials_are_tracked_separately(
    make: Factory, metric: str, values: list[float], reason: str
) -> None:
    stopper = make(0)
    assert _stop_epoch(stopper, metric, values, trial="bad") == 2
    assert _stop_epoch(stopper, metric, [1.0, 0.9, 0.8], trial="good") is None
    assert stopper.stop_reason("good") is None
    assert stopper.stop_reason("never-seen") is None and stopper.best_epoch("never-seen") is None


@pytest.mark.parametrize(("make", "metric", "values", "reason"), CONTRACT)
def test_a_stopped_trial_stays_stopped(
    make: Factory, metric: str, values: list[float], reason: str
) -> None:
    stopper = make(0)
    assert _stop_epoch(stopper, metric, values) == 2
    assert stopper("t", _result(metric, 0.1, 3)) is True


@pytest.mark.parametrize(("make", "metric", "values", "reason"), CONTRACT)
def test_replayed_epochs_after_a_restart_are_ignored(
    make: Factory, metric: str, values: list[float], reason: str
) -> None:
    stopper = make(0)
    stopper("t", _result(metric, 1.0, 1))
    stopper("t", _result(metric, 1.0, 2))
    assert stopper("t", _result(metric, values[1], 2)) is False
    assert stopper("t", _result(metric, values[1], 3)) is True


@pytest.mark.parametrize(("make", "metric", "values", "reason"), CONTRACT)
def test_non_numeric_metric_raises(
    make: Factory, metric: str, values: list[float], reason: str
) -> None:
    with pytest.raises(TypeError, match=rf"needs '{metric}' to be a number, but got 'low'"):
        make(0)("t", _result(metric, "low", 1))  # type: ignore[arg-type]


@pytest.mark.parametrize(("make", "metric", "values", "reason"), CONTRACT)
def test_is_a_ray_tune_stopper(
    make: Factory, metric: str, values: list[float], reason: str
) -> None:
    assert isinstance(make(0), Stopper)


# --- RisingValLoss ----------------------------------------------------------------------------

RISING = [
    # kwargs, values, expected stop epoch, expected best epoch
    ({"patience": 2, "grace_epochs": 0}, [1.0, 0.8, 0.9, 1.0], 4, 2),
    ({"patience": 2, "grace_epochs": 0}, [1.0, 0.8, 0.9, 0.7, 0.8, 0.9], 6, 4),
    ({"patience": 1, "grace_epochs": 0}, [1.0, 1.1], 2, 1),
    ({"patience": 2, "grace_epochs": 2}, [1.0, 1.1, 1.2, 1.3], 4, 1),
    ({}, [0.5, 0.9, 1.0], 3, 1),  # defaults: patience 2, grace 1
    ({}, [0.9, 0.5, 0.6, 0.4, 0.5, 0.39], None, 6),
    ({"patience": 1, "grace_epochs": 0, "min_delta": 0.1}, [1.0, 1.05, 1.05, 1.2], 4, 1),
    ({"patience": 2, "grace_epochs": 0, "min_delta": 0.1}, [1.0, 1.2, 1.05, 1.2], None, 1),
    ({"patience": 2, "grace_epochs": 0}, [1.0, 1.0, 1.0, 1.0], None, 1),
    ({"patience": 2, "grace_epochs": 0}, [1.0, 0.9, 0.8, 0.7], None, 4),
    ({"patience": 2, "grace_epochs": 0}, [1.0, NAN, NAN], 3, 1),
    ({"patience": 2, "grace_epochs": 0}, [NAN, 1.0, 2.0, 3.0], 4, 2),
    ({"patience": 1, "grace_epochs": 10}, [1.0, 2.0, 3.0], None, 1),
]


@pytest.mark.parametrize(("kwargs", "values", "stop", "best"), RISING)
def test_rising_val_loss_stop_epoch(
    kwargs: dict[str, Any], values: list[float], stop: int | None, best: int
) -> None:
    stopper = RisingValLoss(**kwargs)
    assert _stop_epoch(stopper, "valid_loss", values) == stop
    assert stopper.best_epoch("t") == best


@pytest.mark.parametrize(
    ("values", "stop"), [([0.5, 0.7, 0.6, 0.65], 4), ([0.5, 0.7, 0.6, 0.8], None)]
)
def test_rising_val_loss_in_max_mode_watches_falling_accuracy(
    values: list[float], stop: int | None
) -> None:
    stopper = RisingValLoss("accuracy", mode="max", patience=2, grace_epochs=0)
    assert _stop_epoch(stopper, "accuracy", values) == stop
    assert stopper.best_value("t") == max(values)


def test_epoch_key_none_counts_results() -> None:
    stopper = RisingValLoss(patience=2, grace_epochs=1, epoch_key=None)
    assert [stopper("t", {"valid_loss": v}) for v in (1.0, 2.0, 3.0)] == [False, False, True]


BAD_ARGUMENTS = [
    (lambda: RisingValLoss(patience=0), r"patience must be a whole number >= 1, but got 0"),
    (lambda: RisingValLoss(patience=True), r"patience must be a whole number >= 1"),
    (lambda: RisingValLoss(min_delta=-1.0), r"min_delta must be a finite number >= 0"),
    (lambda: RisingValLoss(min_delta=NAN), r"min_delta must be a finite number >= 0"),
    (lambda: RisingValLoss(min_delta=True), r"min_delta must be a finite number >= 0"),
    (lambda: RisingValLoss(patience=2.0), r"patience must be a whole number >= 1, but got 2\.0"),  # type: ignore[arg-type]
    (lambda: RisingValLoss(grace_epochs=-1), r"grace_epochs must be a whole number >= 0"),
    (lambda: RisingValLoss(mode="minimize"), r"mode must be 'min' or 'max', but got 'minimize'"),
    (lambda: RisingValLoss(""), r"metric must be a non-empty string"),
    (lambda: Divergence(factor=1.0), r"factor must be a finite number above 1, but got 1\.0"),
    (lambda: Divergence(factor=INF), r"factor must be a finite number above 1"),
    (lambda: Divergence(grace_epochs=1.5), r"grace_epochs must be a whole number >= 0"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("build", "message"), BAD_ARGUMENTS)
def test_bad_stopper_argument_is_refused_naming_it(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    "build",
    [
        lambda: RisingValLoss(patience=np.int64(2), min_delta=np.float32(0.5)),  # type: ignore[arg-type]
        lambda: RisingValLoss(grace_epochs=np.int32(0), min_delta=np.int64(0)),  # type: ignore[arg-type]
        lambda: Divergence(factor=np.float32(2.0), grace_epochs=np.int64(1)),  # type: ignore[arg-type]
    ],
)
def test_numpy_numbers_are_accepted_as_plain_ones(build: Callable[[], MetricStopper]) -> None:
    """A whole number from numpy is a whole number: not refused as 'must be a whole number'."""
    stopper = build()
    for name in ("patience", "grace_epochs"):
        assert type(getattr(stopper, name, 0)) is int
    for name in ("min_delta", "factor"):
        assert type(getattr(stopper, name, 0.0)) is float
    assert stopper("t", _result(stopper.metric, 1.0, 1)) is False
    assert pickle.loads(pickle.dumps(stopper)).stop_reason("t") is None


# --- Divergence -------------------------------------------------------------------------------

DIVERGENCE = [
    # kwargs, values, expected stop epoch
    ({}, [1.0, 0.5, 1.9, 2.1], 4),
    ({}, [1.0, NAN], 2),
    ({}, [INF], 1),
    ({}, [1.0, -INF], 2),
    ({"grace_epochs": 5}, [NAN], 1),
    ({}, [1.0, 3.9], None),
    ({}, [1.0, 4.1], 2),
    ({"grace_epochs": 2}, [1.0, 5.0], None),
    ({"grace_epochs": 2}, [1.0, 5.0, 5.0], 3),
    ({}, [0.0, 5.0], None),
    ({}, [2.0, 1.0, 0.5, 0.25], None),
    ({"factor": 1.5}, [1.0, 1.6], 2),
    # a training loss fallen near zero wobbles by several times without having blown up
    ({}, [2.3, 0.05, 0.002, 0.009, 0.004], None),
    ({}, [2.3, 0.05, 0.002, 0.6], 4),  # back above a quarter of where it started
    ({}, [2.3, 0.05, 0.002, 0.5], None),
]


@pytest.mark.parametrize(("kwargs", "values", "stop"), DIVERGENCE)
def test_divergence_stop_epoch(
    kwargs: dict[str, Any], values: list[float], stop: int | None
) -> None:
    stopper = Divergence(**kwargs)
    assert _stop_epoch(stopper, "train_loss", values) == stop
    assert stopper.stop_reason("t") == ("diverged" if stop else None)


START = [
    # start (the first batch's loss), values, kwargs, expected stop epoch
    (2.3, [1860.0, 1150.0, 787.0, 746.0], {}, 1),  # blown up within epoch 1, then falling
    (2.3, [9.3], {}, 1),
    (2.3, [9.1], {}, None),  # under 4x the start
    (2.3, [1860.0, 1150.0], {"grace_epochs": 1}, 2),  # graced, then still far above the start
    (2.3, [1860.0, 5.0, 2.0], {"grace_epochs": 1}, None),  # graced, then back under 4x the start
    (2.3, [0.7, 0.4, 0.3], {}, None),  # a healthy trial
    (2.3, [0.7, 2.9], {}, 2),  # the best epoch, not the start, sets the bar once lower
    (NAN, [1860.0, 1150.0], {}, None),  # unknown start: the rule as before
    (0.0, [1860.0, 1150.0], {}, None),  # a start of 0 has no meaningful multiple
    (-1.0, [1860.0, 1150.0], {}, None),
]


@pytest.mark.parametrize(("start", "values", "kwargs", "stop"), START)
def test_divergence_compares_epoch_one_with_the_loss_at_start(
    start: float, values: list[float], kwargs: dict[str, Any], stop: int | None
) -> None:
    """``train_loss_at_start`` in the first result (a trial's first batch, before any update)
    is a best too: a constant LR far too high (Adam at 5.0: epoch 1's mean 1860 against 2.3,
    falling after) ran every epoch as ``completed`` before."""
    stopper = Divergence(**kwargs)
    extra = {"train_loss_at_start": start}
    assert _stop_epoch(stopper, "train_loss", values, extra=extra) == stop
    assert stopper.stop_reason("t") == ("diverged" if stop else None)


def test_a_stop_against_the_start_says_so_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    stopper = Divergence()
    with caplog.at_level("INFO", logger="sweeps.stoppers"):
        stopper("t", {"train_loss": 900.0, "train_loss_at_start": 2.3, "training_iteration": 1})
        stopper("u", {"train_loss": 1.0, "train_loss_at_start": 2.3, "training_iteration": 1})
        stopper("u", {"train_loss": 5.0, "training_iteration": 2})
    assert [record.getMessage() for record in caplog.records] == [
        "stopping trial t at training_iteration 1: diverged (train_loss=900.0, train_loss at "
        "the start 2.3)",
        "stopping trial u at training_iteration 2: diverged (train_loss=5.0, best 1.0 at "
        "training_iteration 1)",
    ]


def test_divergence_reads_the_start_only_from_the_first_epoch() -> None:
    """A stopper meeting a trial late (Tune's driver after a restore) learns no start from a
    later result, as it learns no first value: it must never stop a trial before the trial's
    own stopper would."""
    late = Divergence()
    for epoch in (3, 4):
        result = {"train_loss": 900.0, "train_loss_at_start": 2.3, "training_iteration": epoch}
        assert late("t", result) is False
    assert late.stop_reason("t") is None


# --- AnyOf and from_spec ----------------------------------------------------------------------


def _both(rising_patience: int = 1) -> AnyOf:
    return AnyOf(RisingValLoss(patience=rising_patience, grace_epochs=0), Divergence())


def _epoch(valid: float, train: float, epoch: int) -> dict[str, Any]:
    return {"valid_loss": valid, "train_loss": train, "training_iteration": epoch}


def test_any_of_feeds_every_stopper_even_after_one_fires() -> None:
    rising, divergence = RisingValLoss(patience=1, grace_epochs=0), Divergence()
    stopper = AnyOf(rising, divergence)
    stopper("t", _epoch(1.0, 2.0, 1))
    assert stopper("t", _epoch(2.0, 1.0, 2)) is True
    assert divergence.best_epoch("t") == 2
    assert stopper.stop_reason("t") == "rising_val_loss"


def test_any_of_reports_the_more_severe_reason_on_a_tie() -> None:
    stopper = _both()
    stopper("t", _epoch(1.0, 1.0, 1))
    assert stopper("t", _epoch(NAN, NAN, 2)) is True
    assert stopper.stop_reason("t") == "diverged"


def test_any_of_keeps_the_first_reason() -> None:
    stopper = _both()
    stopper("t", _epoch(1.0, 1.0, 1))
    stopper("t", _epoch(1.5, 1.0, 2))
    stopper("t", _epoch(1.5, NAN, 3))
    assert stopper.stop_reason("t") == "rising_val_loss"


def test_any_of_raises_for_a_metric_missing_in_a_later_stopper() -> None:
    stopper = _both()
    with pytest.raises(MissingMetricError, match=r"Divergence watches 'train_loss'"):
        stopper("t", {"valid_loss": 1.0, "training_iteration": 1})


def test_any_of_best_epoch_follows_the_named_metric() -> None:
    stopper = _both(rising_patience=5)
    for epoch, (valid, train) in enumerate([(1.0, 3.0), (0.5, 2.0), (0.7, 1.0)], start=1):
        stopper("t", _epoch(valid, train, epoch))
    assert stopper.best_epoch("t") == 2
    assert stopper.best_epoch("t", metric="train_loss") == 3
    assert stopper.best_epoch("t", metric="accuracy") is None


def test_any_of_pickles_with_its_state_and_is_a_combined_stopper() -> None:
    stopper = _both(rising_patience=2)
    stopper("t", _epoch(1.0, 1.0, 1))
    stopper("t", _epoch(1.5, 1.0, 2))
    restored = pickle.loads(pickle.dumps(stopper))
    assert restored("t", _epoch(1.6, 1.0, 3)) is True
    assert restored.stop_reason("t") == "rising_val_loss"
    assert isinstance(restored, CombinedStopper) and restored.stop_all() is False


SPEC = {
    "name": "s",
    "task": {"dataset": {"name": "digits"}},
    "strategies": [{"kind": "lr_finder"}],
    "early_stop": {"patience": 1, "grace_epochs": 0, "min_delta": 0.05},
    "divergence": {"factor": 2.0},
}


@pytest.mark.parametrize(
    ("results", "stop", "reason"),
    [
        ([(1.0, 1.0), (1.04, 1.0), (1.06, 1.0)], 3, "rising_val_loss"),
        ([(1.0, 1.0), (0.9, 2.5)], 2, "diverged"),
        ([(1.0, 1.0), (0.9, 1.9), (0.8, 1.5)], None, None),
    ],
)
def test_from_spec_builds_the_stoppers_the_spec_asks_for(
    results: list[tuple[float, float]], stop: int | None, reason: str | None
) -> None:
    stopper = stopper_from_spec(load_spec(SPEC))
    decisions = [stopper("t", _epoch(v, tr, i)) for i, (v, tr) in enumerate(results, start=1)]
    assert (decisions.index(True) + 1 if True in decisions else None) == stop
    assert stopper.stop_reason("t") == reason


def test_from_spec_with_both_sections_null_never_stops() -> None:
    stopper = stopper_from_spec(load_spec({**SPEC, "early_stop": None, "divergence": None}))
    assert stopper("t", {"training_iteration": 1}) is False
    assert stopper.stop_reason("t") is None


# --- a stopper meeting a trial late: Ray's driver after Tuner.restore -------------------------
# Tune pickles the stopper when the Tuner is built, so a restored driver's stopper knows no
# trial and meets a resumed one at the epoch it resumes from, while the trial replays its whole
# history into its own stopper. Were the driver's to fire first, Tune would kill the trial
# mid-run (SystemExit in its report) and its MLflow run would end KILLED, unfinished.

LATE = [
    # a training loss near zero, wobbling 6x: the trial's own stopper lets it go on
    pytest.param(
        Divergence, "train_loss", [2.3, 0.01, 0.004, 0.003, 0.002, 0.012], id="Divergence-wobble"
    ),
    pytest.param(Divergence, "train_loss", [2.3, 0.05, 0.002, 0.6, 0.7], id="Divergence-blow-up"),
    pytest.param(Divergence, "train_loss", [2.3, 0.5, 0.4, NAN], id="Divergence-nan"),
    pytest.param(
        lambda: RisingValLoss(patience=2),
        "valid_loss",
        [1.0, 0.5, 0.6, 0.4, 0.45, 0.5, 0.55],
        id="RisingValLoss",
    ),
]


@pytest.mark.parametrize("resumed_at", [2, 3, 4, 5])
@pytest.mark.parametrize(("make", "metric", "values"), LATE)
def test_a_stopper_meeting_a_trial_late_never_stops_it_before_the_trials_own(
    make: Callable[[], MetricStopper], metric: str, values: list[float], resumed_at: int
) -> None:
    own = _stop_epoch(make(), metric, values) or math.inf
    late = make()
    for epoch, value in enumerate(values[resumed_at - 1 :], start=resumed_at):
        if late("t", _result(metric, value, epoch)):
            assert epoch >= own
            assert late.stop_reason("t") == make().reason
            return


def test_divergence_meeting_a_trial_late_still_stops_it_on_a_non_finite_loss() -> None:
    late = Divergence()
    assert late("t", _result("train_loss", 0.002, 4)) is False
    assert late("t", _result("train_loss", 0.012, 5)) is False  # first value unknown: no ratio
    assert late("t", _result("train_loss", NAN, 6)) is True
    assert late.stop_reason("t") == "diverged"


def test_a_trial_with_its_own_stop_rule_is_left_to_it_but_not_when_it_diverges() -> None:
    """A recipe arm (results marked ``OWN_STOP_RULE``) ends by its own SGDR rule: the sweep's
    early_stop cut it in its frozen-body head steps, before it ever unfroze. A divergence
    still stops it."""
    from sweeps.stoppers import OWN_STOP_RULE

    rising = [0.9, 0.5, 0.6, 0.7, 0.8]
    both = AnyOf(RisingValLoss(patience=2, grace_epochs=0), Divergence())
    mine = [
        both("recipe", {"valid_loss": v, "train_loss": 1.0, "training_iteration": i + 1,
                        OWN_STOP_RULE: True})
        for i, v in enumerate(rising)
    ]  # fmt: skip
    theirs = [
        both("grid", {"valid_loss": v, "train_loss": 1.0, "training_iteration": i + 1,
                      OWN_STOP_RULE: False})
        for i, v in enumerate(rising)
    ]  # fmt: skip
    assert not any(mine) and theirs[3] and both.stop_reason("grid") == "rising_val_loss"
    blown = {"valid_loss": 0.9, "train_loss": math.nan, "training_iteration": 6, OWN_STOP_RULE: 1}
    assert both("recipe", blown) and both.stop_reason("recipe") == "diverged"
