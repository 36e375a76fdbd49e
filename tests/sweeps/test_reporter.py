"""The trial reporter against a real MLflow store: a trial run again logs each step once."""

from __future__ import annotations

import math

import pytest

from sweeps._reporter import EpochReporter, TrialRecord, training_rows
from sweeps.spec import validate_spec
from sweeps.stoppers import from_spec
from sweeps.tracking import Tracker
from trainers import Learner, TrainingDiverged, build_model, make_dataloaders, seed_everything

SPEC = {
    "name": "reporter",
    "task": {"dataset": {"name": "digits"}, "image_size": 8, "batch_size": 64, "epochs": 2},
    "strategies": [{"kind": "fixed", "name": "blowup", "lr": 1.0e30}],
    "early_stop": None,
    "tracking": {"checkpoints": "best", "flush_every_s": 0, "checkpoint_every_s": 0},
}


def _attempt(tracker: Tracker, run_id: str, *, reopened: bool) -> EpochReporter:
    """One try of a trial whose loss turns NaN in its first epoch, as ``sweeps.trial`` runs it."""
    spec = validate_spec(SPEC)
    dls = make_dataloaders("digits", image_size=8, batch_size=64, seed=0)
    seed_everything(0)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    learn = Learner(model, dls, opt="sgd", progress=False)
    reporter = EpochReporter(
        tracker,
        TrialRecord(run_id=run_id, lr=1.0e30),
        spec=spec,
        stopper=from_spec(spec),
        checkpoint=lambda learn, best: pytest.fail("a trial that diverged mid-epoch checkpoints"),
        max_epochs=spec.task.epochs,
    )
    reporter.attach(learn, reopened=reopened)
    with pytest.raises(TrainingDiverged) as info:
        learn.fit(spec.task.epochs, 1.0e30)
    reporter.diverged(learn, info.value)
    return reporter


def test_a_diverged_trial_run_again_in_its_reopened_run_logs_each_step_once(
    tracking_uri: str,
) -> None:
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("reporter"), run_name="blowup")
    _attempt(tracker, run_id, reopened=False)  # its points sent; then killed before closing
    first = tracker.metric_history(run_id, "train_loss")
    assert len(first) >= 2 and math.isnan(first[-1][1])  # the last step is the NaN marker

    _attempt(tracker, run_id, reopened=True)  # Tune starts it again; it reopens the same run

    again = tracker.metric_history(run_id, "train_loss")
    assert [step for step, _ in again] == list(range(len(first)))
    assert [step for step, _ in tracker.metric_history(run_id, "lr")] == list(range(len(first) - 1))


def test_a_trial_finalized_again_in_its_reopened_run_keeps_one_summary_point_and_one_model(
    tracking_uri: str,
) -> None:
    from sweeps.trial import _finalize

    spec = validate_spec(SPEC)
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("reporter"), run_name="finalized")
    dls = make_dataloaders("digits", image_size=8, batch_size=64, seed=0)
    seed_everything(0)
    learn = Learner(build_model("simple_cnn", dls.n_classes, in_channels=1), dls, progress=False)
    learn.fit(1, 1e-3)
    record = TrialRecord(run_id=run_id, lr=1e-3)
    record.best = {"valid_loss": learn.history[-1]["valid_loss"], "error_rate": 0.5}
    record.best_epoch = 0
    record.best_state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    _finalize(learn, record, tracker, spec)  # then killed before the run was closed
    record.best = {"valid_loss": 9.0, "error_rate": 0.25}  # the try again (values may differ)

    _finalize(learn, record, tracker, spec, reopened=True)

    for key in ("best/valid_loss", "best/error_rate", "compute_s", "lr_find_s", "epochs_run"):
        assert len(tracker.metric_history(run_id, key)) == 1, key
    assert tracker.metric_history(run_id, "best/error_rate") == [(0, 0.5)]  # the first kept
    assert tracker.get_run(run_id).data.tags["sweeps.best_epoch"] == "0"
    assert tracker.get_run(run_id).data.params["lr_group_ratios"] == "1,1,1"  # logged once
    experiment_id = tracker.get_run(run_id).info.experiment_id
    models = tracker.client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    assert [model.name for model in models] == ["model"]  # logged once, by the first finalize


def test_the_steps_of_the_epoch_a_trial_diverged_in_count_in_its_compute(
    tracking_uri: str,
) -> None:
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("reporter"), run_name="blowup")
    reporter = _attempt(tracker, run_id, reopened=False)
    assert len(reporter.learn.recorder.losses) >= 1  # steps ran, no epoch finished
    assert training_rows(reporter.learn.history) == []
    assert reporter.record.compute_s([]) > 0  # was 0: no epoch_time_s for the unfinished epoch


def test_a_trial_that_had_diverged_in_its_first_epoch_is_reported_again_without_a_crash(
    tracking_uri: str,
) -> None:
    """Restored after a driver crash, a trial whose run had ended reports what its run holds;
    one that diverged in its first epoch holds no ``valid_loss``, and the stoppers need one."""
    from pathlib import Path

    from sweeps.spec import load_spec
    from sweeps.trial import ended_result

    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("reporter"), run_name="blowup")
    tracker.log_metrics(run_id, [("train_loss", math.nan, 3), ("compute_s", 0.4, 0)])
    tracker.set_tags(run_id, {"sweeps.stop_reason": "diverged", "sweeps.best_epoch": ""})
    assert ended_result(tracker.get_run(run_id)) is None  # still RUNNING: train it again
    tracker.end_run(run_id, "FINISHED")

    result = ended_result(tracker.get_run(run_id))
    assert result is not None and math.isnan(result["valid_loss"])
    assert result["stop_reason"] == "diverged" and result["compute_s"] == 0.4
    spec = load_spec(Path(__file__).resolve().parents[2] / "sweeps/specs/digits.yaml")
    stopper = from_spec(spec)  # Ray Tune's driver runs these on every result
    # was MissingMetricError (no valid_loss); epoch 0 leaves the stoppers nothing to judge, and
    # the trial function returns right after this report
    assert stopper("trial", result) is False


def test_a_trial_whose_model_build_model_did_not_build_logs_it_and_warns_on_its_logger(
    tracking_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No export for such a model (nothing could rebuild it): the trial logs the pickled model
    all the same, says so on ``sweeps.trial`` (where it always said what its model lacked, a
    name users' logging configurations select), and ``load_predictor`` refuses the model."""
    from torch import nn

    from sweeps.best import BestConfigError
    from sweeps.predictor import load_predictor
    from sweeps.trial import _finalize

    spec = validate_spec(SPEC)
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(tracker.ensure_experiment("reporter"), run_name="own-model")
    dls = make_dataloaders("digits", image_size=8, batch_size=64, seed=0)
    seed_everything(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, dls.n_classes))
    learn = Learner(model, dls, progress=False, device="cpu")
    learn.fit(1, 1e-3)
    record = TrialRecord(run_id=run_id, lr=1e-3)
    record.best = {"valid_loss": learn.history[-1]["valid_loss"], "error_rate": 0.5}
    record.best_epoch = 0
    record.best_state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with caplog.at_level("WARNING"):
        _finalize(learn, record, tracker, spec)
    said = [r.name for r in caplog.records if "holds no weights-only export" in r.getMessage()]
    assert said == ["sweeps.trial"]
    assert tracker.has_model(run_id)
    with pytest.raises(BestConfigError, match="holds no weights-only export"):
        load_predictor(f"runs:/{run_id}/model", tracking_uri=tracking_uri, device="cpu")
