"""diagnose: synthetic histories of each kind, and the recorded experiments behind its defaults."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import pytest

from trainers.diagnose import LABELS, Diagnosis, diagnose

EVIDENCE = json.loads(
    (Path(__file__).parent / "data" / "diagnose_thresholds.json").read_text(encoding="utf-8")
)


def _history(train: list[float], valid: list[float]) -> list[dict[str, float]]:
    return [
        {"epoch": i, "train_loss": t, "valid_loss": v, "error_rate": 0.1}
        for i, (t, v) in enumerate(zip(train, valid, strict=True))
    ]


SYNTHETIC = [
    ("nan_valid", [2.0, 1.0, 0.8], [1.5, math.nan, 0.7], "lr_too_high"),
    ("inf_train", [2.0, math.inf], [1.5, 1.4], "lr_too_high"),
    ("explodes_late", [2.0, 1.0, 1.5, 1.8], [1.5, 0.9, 4.0, 9.0], "lr_too_high"),
    ("explodes_first", [50.0, 30.0, 20.0], [900.0, 80.0, 40.0], "lr_too_high"),
    ("overfits", [2.0, 1.0, 0.5, 0.3, 0.2, 0.1], [1.5, 0.8, 0.7, 0.8, 0.9, 1.0], "overfitting"),
    # memorised: the training loss is flat near zero (its noise is +10% of itself), valid doubles
    (
        "overfits_memorised",
        [1.0, 0.1, 0.01, 0.002, 0.002, 0.0021, 0.0022],
        [0.9, 0.3, 0.2, 0.15, 0.2, 0.25, 0.3],
        "overfitting",
    ),
    # a steady climb past 3x the first training loss while the training loss keeps falling
    (
        "overfits_from_a_low_start",
        [0.3, 0.25, 0.2, 0.18, 0.15, 0.12],
        [0.25, 0.22, 0.3, 0.5, 0.8, 1.0],
        "overfitting",
    ),
    ("jumps_in_one_epoch", [2.0, 1.0, 0.9], [1.5, 0.9, 50.0], "lr_too_high"),
    # training loss creeping up while validation loss explodes after its best: unstable, not overfit
    ("explodes_after_best", [2.0, 1.0, 1.1, 1.15, 1.19], [1.5, 0.9, 2.0, 4.0, 9.0], "lr_too_high"),
    ("one_epoch", [2.0], [1.0], "too_few_epochs"),
    ("cut_short", [2.0, 1.0, 0.6], [1.5, 0.9, 0.5], "too_few_epochs"),
    ("crawls", [2.4, 2.3, 2.2, 2.1, 2.0, 1.9], [2.3, 2.2, 2.1, 2.0, 1.9, 1.8], "lr_too_low"),
    ("converged", [1.5, 0.3, 0.1, 0.05, 0.04], [1.2, 0.2, 0.1, 0.09, 0.088], "ok"),
    # a fine-tune of 3 epochs whose validation loss rose every epoch (a user's run, called ok)
    ("rises_from_the_start", [1.2, 0.9, 0.7], [1.5838, 1.9696, 2.3919], "overfitting"),
    ("rises_then_settles", [1.2, 0.9, 0.7], [1.50, 1.70, 1.65], "ok"),  # not every epoch
]


@pytest.mark.parametrize(
    ("train", "valid", "label"), [s[1:] for s in SYNTHETIC], ids=[s[0] for s in SYNTHETIC]
)
def test_synthetic_history_gets_its_label(train, valid, label):
    result = diagnose(_history(train, valid))
    assert result.label == label
    assert result.reason


@pytest.mark.parametrize("scale", [1e-3, 1e3])
@pytest.mark.parametrize(
    ("train", "valid", "label"), [s[1:] for s in SYNTHETIC], ids=[s[0] for s in SYNTHETIC]
)
def test_labels_do_not_depend_on_the_loss_scale(train, valid, label, scale):
    scaled = _history([t * scale for t in train], [v * scale for v in valid])
    assert diagnose(scaled).label == label


@pytest.mark.parametrize("run", EVIDENCE["runs"], ids=[r["name"] for r in EVIDENCE["runs"]])
def test_defaults_label_every_recorded_experiment_as_intended(run):
    assert diagnose(run["history"]).label == run["label"]


def test_evidence_file_records_the_current_defaults():
    defaults = {
        name: p.default
        for name, p in inspect.signature(diagnose).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not None  # not start_loss
    }
    assert EVIDENCE["thresholds"] == defaults
    assert {r["label"] for r in EVIDENCE["runs"]} == set(LABELS)


@pytest.mark.parametrize(
    ("kwargs", "label"),
    [
        ({}, "overfitting"),  # 3 epochs since the best, +25%
        ({"rise_epochs": 4}, "ok"),
        ({"min_rise": 0.3}, "ok"),
    ],
)
def test_overfitting_thresholds_are_honoured(kwargs, label):
    history = _history([1.0, 0.5, 0.3, 0.2, 0.1], [0.9, 0.4, 0.42, 0.45, 0.5])
    assert diagnose(history, **kwargs).label == label


@pytest.mark.parametrize(
    ("kwargs", "label"),
    [
        ({}, "lr_too_low"),  # best 3-epoch rate 5% per epoch
        ({"slow_improvement": 0.04}, "ok"),
        ({"min_epochs_too_low": 7}, "ok"),
    ],
)
def test_lr_too_low_thresholds_are_honoured(kwargs, label):
    history = _history([2.4, 2.3, 2.2, 2.1, 2.0, 1.9], [2.3, 2.2, 2.1, 2.0, 1.9, 1.8])
    assert diagnose(history, **kwargs).label == label


def test_explosion_needs_the_training_loss_not_to_have_fallen_as_far():
    # valid loss ends at 4x the first train loss, but train fell 20x: overfitting, not high lr
    history = _history([1.0, 0.3, 0.1, 0.05, 0.05], [0.9, 0.6, 1.5, 3.0, 4.0])
    assert diagnose(history).label == "overfitting"
    assert diagnose(history, explode_ratio=25.0).label == "overfitting"


def test_overfitting_needs_the_training_loss_not_to_rise_with_the_validation_loss():
    # both losses climb from epoch 2 on, validation by 53%, training by 15% of its first value
    history = _history([2.0, 1.0, 0.8, 0.9, 1.0, 1.1], [1.5, 0.9, 0.85, 1.0, 1.1, 1.3])
    result = diagnose(history)
    assert result.label != "overfitting"
    assert result.evidence["train_rise_since_best"] == pytest.approx(0.15)


def test_evidence_holds_the_numbers_used():
    result = diagnose(_history([2.0, 1.0, 0.6], [1.5, 0.9, 0.5]))
    assert isinstance(result, Diagnosis)
    assert result.evidence["n_epochs"] == 3
    assert result.evidence["best_epoch"] == 2
    assert result.evidence["last_improvement"] == pytest.approx(0.4 / 0.9)
    assert result.evidence["explosion_ratio"] == pytest.approx(0.75)
    assert result.evidence["train_minus_valid"] == pytest.approx(0.1)
    assert "44%" in result.reason


@pytest.mark.parametrize(
    ("valid", "improvement"),
    [
        ([1.0, 0.9, 0.8, 0.7, -0.1, -0.12], 1 - 0.7 ** (1 / 3)),  # only epochs 0..3 rate
        ([1.0, 0.9, 0.8, -0.1, -0.12], math.nan),
        ([1.0, 0.9, -0.1], math.nan),
    ],
)
def test_a_negative_validation_loss_gives_real_evidence(valid, improvement):
    # a custom loss may go below 0: was a TypeError comparing complex rates, or a complex
    # best_improvement in evidence documented as floats
    result = diagnose(_history([2.0] + [1.0] * (len(valid) - 1), valid))
    assert all(isinstance(v, int | float) for v in result.evidence.values())
    assert result.evidence["best_improvement"] == pytest.approx(improvement, nan_ok=True)


def test_recipe_step_markers_are_skipped():
    marker = {"epoch": None, "phase": "lr_find_frozen", "lrs": [1e-3]}
    history = [marker, *_history([2.0, 1.0, 0.6], [1.5, 0.9, 0.5]), marker]
    result = diagnose(history)
    assert result.label == "too_few_epochs"
    assert result.evidence["n_epochs"] == 3


def test_an_iterator_of_records_is_read_whole():
    records = _history([2.0, 1.0, 0.6], [1.5, 0.9, 0.5])
    result = diagnose(iter(records))
    assert result.evidence["n_epochs"] == 3
    assert result == diagnose(records)


def test_non_finite_evidence_names_the_epoch():
    result = diagnose(_history([2.0, 1.0, 0.8], [1.5, 1.0, math.nan]))
    assert result.evidence["first_non_finite_epoch"] == 2
    assert "epoch 2" in result.reason


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([], r"history has no epoch record"),
        ([{"epoch": None, "phase": "unfreeze", "lrs": []}], r"history has no epoch record"),
        ([{"train_loss": 1.0}], r"history\[0\] lacks \['valid_loss'\].*has \['train_loss'\]"),
        ({"train_loss": 1.0, "valid_loss": 1.0}, r"history must be a sequence of .*records.*dict"),
        ([1.0, 2.0], r"history\[0\] must be a mapping .*but got float"),
        (
            [{"epoch": 0, "train_loss": None, "valid_loss": 1.0}],
            r"history\[0\]\['train_loss'\] must be a number, but got None",
        ),
        (
            [{"epoch": 0, "train_loss": 1.0, "valid_loss": "0.5"}],
            r"history\[0\]\['valid_loss'\] must be a number, but got '0.5'",
        ),
    ],
)
def test_bad_history_raises(history, message):
    with pytest.raises(ValueError, match=message):
        diagnose(history)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"explode_ratio": 1.0}, r"explode_ratio must be > 1"),
        ({"min_rise": -0.1}, r"min_rise must be >= 0"),
        ({"fast_improvement": 1.0}, r"fast_improvement must be in \(0, 1\)"),
        ({"slow_improvement": 0.0}, r"slow_improvement must be in \(0, 1\)"),
        ({"rise_epochs": 0}, r"rise_epochs must be an integer >= 1"),
        ({"min_epochs_too_low": 1}, r"min_epochs_too_low must be an integer >= 2"),
        ({"window": 1.5}, r"window must be an integer >= 1"),
    ],
)
def test_bad_threshold_raises_naming_it(kwargs, message):
    with pytest.raises(ValueError, match=message):
        diagnose(_history([1.0], [1.0]), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"explode_ratio": "3"}, r"explode_ratio must be > 1, but got explode_ratio='3'"),
        ({"min_rise": None}, r"min_rise must be >= 0, but got min_rise=None"),
        ({"fast_improvement": "0.2"}, r"fast_improvement must be in \(0, 1\), but got '0.2'"),
        ({"explode_ratio": True}, r"explode_ratio must be > 1"),
    ],
)
def test_threshold_that_is_no_number_raises_naming_it(kwargs, message):
    with pytest.raises(ValueError, match=message):
        diagnose(_history([1.0], [1.0]), **kwargs)


def test_history_that_is_no_sequence_raises_naming_it():
    with pytest.raises(ValueError, match=r"history must be a sequence of .*records.*NoneType"):
        diagnose(None)  # type: ignore[arg-type]


def test_history_of_cancelled_epochs_only_says_so():
    cancelled = {"epoch": 0, "train_loss": math.nan, "valid_loss": math.nan, "cancelled": True}
    with pytest.raises(ValueError, match=r"every epoch record .* was cancelled"):
        diagnose([cancelled, {**cancelled, "epoch": 1}])


def test_the_loss_before_the_first_step_is_the_reference_once_the_first_epoch_blew_up() -> None:
    blown = _history([9459.3, 3944.0, 3417.6, 2962.0], [24158.4, 10453.8, 4133.8, 3824.2])
    assert diagnose(blown).label == "ok"  # from the curve alone, the blow-up is invisible
    found = diagnose(blown, start_loss=2.31)
    assert found.label == "lr_too_high"
    assert "rose to 4.09e+03x its value before the first step (2.31" in found.reason
    assert found.evidence["start_loss"] == 2.31
    # a healthy run's first epoch is below its start: nothing changes for it
    for _name, train, valid, label in SYNTHETIC:
        assert diagnose(_history(train, valid), start_loss=max(train[0], 2.5)).label == label
    assert diagnose(blown, start_loss=math.nan).label == "ok"  # unknown, as a trial may hold
    with pytest.raises(ValueError, match=r"start_loss must be a number or None, but got 'x'"):
        diagnose(blown, start_loss="x")  # type: ignore[arg-type]


def test_a_run_too_short_to_judge_a_low_rate_says_so() -> None:
    flat = _history([2.30, 2.29], [2.301, 2.299])  # chance level on 10 classes after 2 epochs
    found = diagnose(flat)
    assert found.label == "ok"
    assert "2 epochs are too few to judge a too low rate (it takes 3)" in found.reason
    assert "too few" not in diagnose(_history([2.3, 1.0, 0.6], [2.0, 0.9, 0.62])).reason
