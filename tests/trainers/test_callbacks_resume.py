"""Trackers on a fit resumed from a checkpoint: they carry on as the uninterrupted fit would."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from _shapes import Interrupt, shapes_learner

from trainers import (
    Callback,
    CancelFit,
    EarlyStoppingCallback,
    Learner,
    SaveModelCallback,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class ScriptedLoss(Callback):
    """Overwrites each epoch's valid_loss with a script (before the trackers, order 10) and
    keeps each epoch's weights."""

    order = 0

    def __init__(self, losses: list[float]) -> None:
        self.losses = losses
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def after_epoch(self) -> None:
        self.learn.history[-1]["valid_loss"] = self.losses[self.learn.epoch]
        state = self.learn.model.state_dict()
        self.weights[self.learn.epoch] = {k: v.clone() for k, v in state.items()}


def make_learner(callbacks: list[Callback]) -> Learner:
    return shapes_learner(n_per_class=20, callbacks=callbacks)


def same_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def interrupted_run(tmp_path: Path, losses: list[float], n_done: int, *extra: Callback):
    """Fit ``len(losses)`` epochs with a best-model saver and a last-epoch checkpoint, killed
    after ``n_done`` epochs; returns the script (its weights per epoch)."""
    script = ScriptedLoss(losses)
    learn = make_learner(
        [
            script,
            SaveModelCallback(tmp_path / "best.pt", reload_best=False),
            SaveModelCallback(tmp_path / "last.pt", every_epoch=True),
            Interrupt(n_done),
            *extra,
        ]
    )
    learn.fit(len(losses), 1e-2)
    return script


def test_a_resumed_fit_does_not_overwrite_the_best_checkpoint_with_a_worse_epoch(
    tmp_path: Path,
) -> None:
    losses = [1.0, 0.5, 0.7, 0.8, 0.6, 0.9]
    first = interrupted_run(tmp_path, losses, 3)
    saver = SaveModelCallback(tmp_path / "best.pt")
    learn = make_learner([ScriptedLoss(losses), saver])
    learn.load(tmp_path / "last.pt")
    learn.fit(len(losses), 1e-2, start_epoch=learn.resume_epoch)
    assert (saver.best, saver.best_epoch) == (0.5, 1)  # as the uninterrupted fit
    on_disk = make_learner([]).load(tmp_path / "best.pt")
    assert same_weights(on_disk.model, first.weights[1])
    assert same_weights(learn.model, first.weights[1])  # reloaded at the end, as fastai


def test_a_resumed_fit_that_beats_the_old_best_saves_and_reloads_the_new_one(
    tmp_path: Path,
) -> None:
    losses = [1.0, 0.5, 0.7, 0.4, 0.6]
    interrupted_run(tmp_path, losses, 3)
    script = ScriptedLoss(losses)
    saver = SaveModelCallback(tmp_path / "best.pt")
    learn = make_learner([script, saver])
    learn.load(tmp_path / "last.pt")
    learn.fit(len(losses), 1e-2, start_epoch=learn.resume_epoch)
    assert (saver.best, saver.best_epoch) == (0.4, 3)
    assert same_weights(learn.model, script.weights[3])


def test_early_stopping_counts_the_epochs_before_the_resume_towards_patience(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    losses = [1.0, 0.5, 0.7, 0.8, 0.2, 0.1]  # uninterrupted, patience 2: stops after epoch 3
    interrupted_run(tmp_path, losses, 3)
    stopper = EarlyStoppingCallback(patience=2)
    learn = make_learner([ScriptedLoss(losses), stopper])
    learn.load(tmp_path / "last.pt")
    with caplog.at_level(logging.WARNING, logger="trainers.callbacks._early_stopping"):
        learn.fit(len(losses), 1e-2, start_epoch=learn.resume_epoch)
    assert (stopper.best, stopper.best_epoch, stopper.stopped_epoch) == (0.5, 1, 3)
    assert [r["epoch"] for r in learn.history] == [0, 1, 2, 3]
    assert "came before this resumed fit" in caplog.text  # epoch 1's weights are not in memory


@pytest.mark.parametrize("patience", [1, 2])
def test_a_fit_resumed_from_the_epoch_early_stopping_ended_it_on_trains_no_more(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, patience: int
) -> None:
    """The last every-epoch checkpoint of a fit the stopper ended (a job restarted from its last
    checkpoint): the patience is spent, so the resumed fit stops before another epoch."""
    losses = [1.0, 0.5, 0.7, 0.8, 0.2, 0.1]  # patience 1 stops after epoch 2, patience 2 after 3
    script = ScriptedLoss(losses)
    first = EarlyStoppingCallback(patience=patience)
    saver = SaveModelCallback(tmp_path / "last.pt", every_epoch=True)
    uninterrupted = make_learner([script, saver, first])
    uninterrupted.fit(len(losses), 1e-2)
    stopped = first.stopped_epoch
    assert stopped == patience + 1 and len(uninterrupted.history) == stopped + 1

    stopper = EarlyStoppingCallback(patience=patience)
    learn = make_learner([ScriptedLoss(losses), stopper])
    learn.load(tmp_path / "last.pt")
    assert learn.resume_epoch == stopped + 1
    with caplog.at_level(logging.INFO, logger="trainers.callbacks._early_stopping"):
        learn.fit(len(losses), 1e-2, start_epoch=learn.resume_epoch)
    assert [r["epoch"] for r in learn.history] == [r["epoch"] for r in uninterrupted.history]
    assert (stopper.best, stopper.best_epoch, stopper.stopped_epoch) == (0.5, 1, stopped)
    assert f"early stop before epoch {stopped + 1} of a resumed fit" in caplog.text
    assert "came before this resumed fit" in caplog.text  # epoch 1's weights are not in memory
    assert same_weights(learn.model, script.weights[stopped])  # no epoch trained after the load
    learn.fit(2, 1e-2)  # the next fit, not resumed, trains as usual
    assert [r["epoch"] for r in learn.history[-2:]] == [0, 1]


def test_early_stopping_restores_the_loaded_epoch_when_it_was_the_best(tmp_path: Path) -> None:
    losses = [1.0, 0.9, 0.5, 0.7, 0.8, 0.3]
    first = interrupted_run(tmp_path, losses, 3)
    stopper = EarlyStoppingCallback(patience=2)
    learn = make_learner([ScriptedLoss(losses), stopper])
    learn.load(tmp_path / "last.pt")
    learn.fit(len(losses), 1e-2, start_epoch=learn.resume_epoch)
    assert (stopper.best_epoch, stopper.stopped_epoch) == (2, 4)
    assert same_weights(learn.model, first.weights[2])


class CancelAtStart(Callback):
    """Cancels a fit in before_fit (a spent budget, say), before the trackers' own before_fit."""

    order = 0

    def __init__(self) -> None:
        self.active = False

    def before_fit(self) -> None:
        if self.active:
            raise CancelFit


@pytest.mark.parametrize("kind", ["early_stopping", "save_model"])
def test_a_fit_cancelled_in_before_fit_does_not_restore_the_previous_fits_best(
    tmp_path: Path, kind: str
) -> None:
    tracker = (
        EarlyStoppingCallback(patience=5)
        if kind == "early_stopping"
        else SaveModelCallback(tmp_path / "best.pt")
    )
    gate = CancelAtStart()
    learn = make_learner([gate, ScriptedLoss([0.5, 0.9, 0.9, 0.9]), tracker])
    learn.fit(2, 1e-2)  # ends on epoch 0's weights
    with torch.no_grad():  # the user goes on (another fit, a hand edit): away from that best
        for p in learn.model.parameters():
            p.add_(0.01)
    current = {k: v.clone() for k, v in learn.model.state_dict().items()}
    gate.active = True
    learn.fit(2, 1e-2)  # cancelled before the trackers start: nothing to restore
    assert same_weights(learn.model, current)
