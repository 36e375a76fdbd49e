"""Review findings in the stoppers, the strategies and the live progress table, each pinned by
the behaviour that was wrong (pure unit tests: fake Tune trials, no Ray started)."""

from __future__ import annotations

import logging
import math
import pickle
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest

from sweeps.progress import SweepProgress
from sweeps.spec import load_spec
from sweeps.stoppers import AnyOf, Divergence, RisingValLoss
from sweeps.strategies import make_strategy

NAN = math.nan


@dataclass
class FakeTrial:
    """What ``SweepProgress`` reads of a Ray Tune ``Trial``."""

    trial_id: str
    arm: str = "grid"
    status: str = "PENDING"
    last_result: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return {"arm": self.arm, "strategy": self.arm}


def _counts(progress: SweepProgress, arm: str = "grid") -> tuple[int, int, int, int, int]:
    a = progress.arms[arm]
    return a.running, a.done, a.stopped, a.failed, a.total


def _result(valid: float, *, lr: Any = 1e-3, stop_reason: str = "") -> dict[str, Any]:
    return {"best_valid_loss": valid, "trial_lr": lr, "stop_reason": stop_reason}


# --- progress: a trial Tune restarts after a crash is one running trial, not two --------------


def test_a_trial_restarted_from_its_checkpoint_counts_once_as_running() -> None:
    progress = SweepProgress(live=False)
    progress.expect("grid", 2)
    trial = FakeTrial("a")
    progress.on_trial_start(0, [trial], trial)
    progress.on_trial_recover(0, [trial], trial)  # crashed; Tune requeues it ...
    assert _counts(progress)[0] == 0
    progress.on_trial_start(0, [trial], trial)  # ... and starts it again
    assert _counts(progress)[0] == 1
    progress.on_trial_complete(0, [trial], trial)
    assert _counts(progress) == (0, 1, 0, 0, 2)  # was: 1 running forever


def test_ending_events_of_one_trial_are_counted_once() -> None:
    progress = SweepProgress(live=False)
    progress.expect("grid", 2)
    a, b = FakeTrial("a"), FakeTrial("b")
    progress.on_trial_start(0, [a, b], a)
    progress.on_trial_start(0, [a, b], b)
    progress.on_trial_complete(0, [a, b], a)
    progress.on_trial_complete(0, [a, b], a)  # told twice: still one trial done
    assert _counts(progress) == (1, 1, 0, 0, 2)  # b still runs


def test_a_pending_trial_stopped_by_tune_does_not_end_a_running_one() -> None:
    """Tune's ``stop_trial`` calls ``on_trial_complete`` for a PENDING trial too."""
    progress = SweepProgress(live=False)
    progress.expect("grid", 2)
    running, pending = FakeTrial("a"), FakeTrial("b")
    progress.on_trial_start(0, [running, pending], running)
    progress.on_trial_complete(0, [running, pending], pending)
    assert _counts(progress)[0] == 1


# --- progress: after ``lrsweep resume`` the table drawn is the one Tune feeds -----------------


def test_the_copy_tune_restores_from_its_state_feeds_the_table_on_screen() -> None:
    """``Tuner.restore`` brings back the callbacks pickled when the sweep started, not the
    ``SweepProgress`` the resumed sweep shows: the events must reach the one on screen."""
    first = SweepProgress(live=False)
    first.expect("grid", 2)
    restored_by_tune = pickle.loads(pickle.dumps(first))
    shown = SweepProgress(live=False)
    shown.expect("grid", 2)
    trial = FakeTrial("a")
    with shown:
        restored_by_tune.on_trial_start(0, [trial], trial)
        restored_by_tune.on_trial_result(0, [trial], trial, _result(0.25))
        restored_by_tune.on_trial_complete(0, [trial], trial)
    assert _counts(shown) == (0, 1, 0, 0, 2)
    assert shown.arms["grid"].best_valid_loss == 0.25


def test_trials_finished_before_a_resume_count_as_done() -> None:
    progress = SweepProgress(live=False)
    progress.expect("grid", 3)
    done = FakeTrial("a", status="TERMINATED", last_result=_result(0.5, stop_reason="diverged"))
    pending = FakeTrial("b")
    progress.on_step_begin(0, [done, pending])
    progress.on_step_begin(1, [done, pending])  # every step: still counted once
    assert _counts(progress) == (0, 1, 1, 0, 3)
    assert progress.arms["grid"].best_valid_loss == 0.5


# --- progress: NaN and odd values never crash the driver, never hide the best -----------------


@pytest.mark.parametrize(
    "result",
    [
        _result(NAN),
        _result(-math.inf),
        {"trial_lr": 1e-3},
        _result("0.1"),  # type: ignore[arg-type]
    ],
)
def test_an_odd_best_is_ignored_and_a_later_finite_one_shows(result: dict[str, Any]) -> None:
    progress = SweepProgress(live=False)
    trial = FakeTrial("a")
    progress.on_trial_start(0, [trial], trial)
    progress.on_trial_result(0, [trial], trial, result)
    progress.on_trial_result(0, [trial], trial, _result(0.4, lr=3e-3))
    assert progress.arms["grid"].best_valid_loss == 0.4
    assert progress.arms["grid"].best_lr == 3e-3


def test_a_best_without_a_usable_lr_shows_with_no_lr() -> None:
    progress = SweepProgress(live=False)
    trial = FakeTrial("a", arm="recipe")  # a recipe reports trial_lr NaN; None must not crash
    progress.on_trial_result(0, [trial], trial, _result(0.3, lr=None))
    assert progress.arms["recipe"].best_valid_loss == 0.3
    assert math.isnan(progress.arms["recipe"].best_lr)
    progress.on_trial_result(0, [trial], trial, _result(0.2, lr=NAN))
    assert progress.arms["recipe"].best_valid_loss == 0.2


def test_a_piped_sweep_logs_one_line_per_finished_trial(caplog: pytest.LogCaptureFixture) -> None:
    progress = SweepProgress(live=False)
    trial = FakeTrial("a")
    with caplog.at_level(logging.INFO, logger="sweeps.progress"):
        progress.on_trial_start(0, [trial], trial)
        progress.on_trial_result(0, [trial], trial, _result(0.4, stop_reason="rising_val_loss"))
        progress.on_trial_complete(0, [trial], trial)
    assert [r.getMessage() for r in caplog.records if "finished" in r.getMessage()] == [
        "trial a (grid) finished: rising_val_loss"
    ]


# --- stoppers and strategies: bad arguments are refused naming them ---------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RisingValLoss(epoch_key=""), r"epoch_key must be None or a non-empty string"),
        (lambda: Divergence(epoch_key=3), r"epoch_key must be None or a non-empty string"),  # type: ignore[arg-type]
        (lambda: AnyOf(RisingValLoss(), "diverged"), r"stoppers\[1\] must be a Ray Tune Stopper"),  # type: ignore[arg-type]
    ],
)
def test_bad_stopper_arguments_name_themselves(build: Any, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        build()


@pytest.mark.parametrize("epoch", [NAN, math.inf, 1.5])
@pytest.mark.parametrize("make", [RisingValLoss, Divergence])
def test_an_epoch_counter_that_is_no_whole_number_is_refused_naming_it(
    make: Any, epoch: float
) -> None:
    stopper = make()
    result = {stopper.metric: 1.0, "training_iteration": epoch}
    with pytest.raises(TypeError, match=r"needs 'training_iteration' to be a whole number"):
        stopper("t", result)  # was: int(nan) -> "cannot convert float NaN to integer"
    assert stopper("t", {stopper.metric: 1.0, "training_iteration": 1.0}) is False


def _grid_arm() -> Any:
    spec = load_spec(
        {
            "name": "s",
            "task": {"dataset": {"name": "shapes"}},
            "strategies": [{"kind": "grid", "lr": {"min": 1e-4, "max": 1.0, "points": 3}}],
        }
    )
    return spec.strategies[0]


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ([0, 0], r"seeds must not repeat, but these do: \[0\]"),
        ([-1], r"seeds must be whole numbers >= 0, but got -1"),
        ([1.5], r"seeds must be whole numbers >= 0, but got 1\.5"),
        (["0"], r"seeds must be whole numbers >= 0, but got '0'"),
        ([True], r"seeds must be whole numbers >= 0, but got True"),
    ],
)
def test_bad_seeds_are_refused_naming_them(seeds: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_strategy(_grid_arm(), seeds=seeds)


@pytest.mark.parametrize(("ci", "live"), [("true", False), ("1", False), ("false", True)])
def test_a_ci_job_gets_no_live_table_even_on_a_pseudo_terminal(
    monkeypatch: pytest.MonkeyPatch, ci: str, live: bool
) -> None:
    """A CI runner's pty logged every redraw: ~90 KB for a 45 s sweep."""

    from sweeps import progress as progress_module

    monkeypatch.setattr(sys, "stdout", type("Tty", (), {"isatty": lambda self: True})())
    monkeypatch.setenv("CI", ci)
    assert progress_module._is_terminal() is live
    monkeypatch.delenv("CI")
    assert progress_module._is_terminal() is True


def test_tunes_trial_failure_is_one_line_and_its_summary_line_is_dropped() -> None:
    """~50 lines of Ray's traceback per failed attempt (300 for a failing arm) tore the live
    table; lrsweep's own summary names every failure when the sweep ends."""
    from sweeps._ray_logs import _TRIAL_ERRORS_FILTER

    class Remote(Exception):  # as Ray's RayTaskError: the trial's own error in ``cause``
        cause = ValueError("the loss diverged after 2 of num_it=30 iterations\n  Traceback ...")

    try:
        raise Remote("ray::ImplicitFunc.train()\nTraceback (most recent call last): ...")
    except Remote:
        failed = logging.LogRecord(
            "ray.tune.execution.tune_controller", logging.ERROR, __file__, 1,
            "Trial task failed for trial %s", ("train_trial_ab12",), sys.exc_info(),
        )  # fmt: skip
    assert _TRIAL_ERRORS_FILTER.filter(failed)
    assert failed.exc_info is None and failed.getMessage() == (
        "Trial task failed for trial train_trial_ab12: ValueError: the loss diverged after 2 of "
        "num_it=30 iterations (the sweep's summary lists every failure)"
    )
    summary = logging.LogRecord(
        "ray.tune.tune", logging.ERROR, __file__, 1, "Trials did not complete: %s", (["a"],), None
    )
    assert not _TRIAL_ERRORS_FILTER.filter(summary)


def test_rays_note_that_token_auth_is_on_is_dropped_and_its_warning_that_it_is_off_kept() -> None:
    from sweeps._ray_logs import AUTH_NOTE_FILTER

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray", logging.WARNING, __file__, 1, message, None, None)

    assert not AUTH_NOTE_FILTER.filter(record("Token authentication is enabled for this Ray"))
    assert AUTH_NOTE_FILTER.filter(record("Token authentication is disabled for this Ray"))
