"""Callbacks: event order, cancellation, errors, early stopping, best-model saving, progress."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from rich.console import Console

from trainers import (
    Callback,
    CallbackError,
    CancelBatch,
    CancelEpoch,
    CancelFit,
    EarlyStoppingCallback,
    Learner,
    ProgressCallback,
    SaveModelCallback,
    build_model,
    make_dataloaders,
)
from trainers.callbacks import EVENTS
from trainers.seeding import seed_everything

BATCH_EVENTS = [
    "before_batch",
    "after_pred",
    "after_loss",
    "before_backward",
    "after_backward",
    "before_step",
    "after_step",
    "after_batch",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Two shared cores: one intra-op thread avoids oversubscription (10x faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_learner(seed: int = 0, **kwargs) -> Learner:
    """A simple_cnn on 'shapes' at 16 px: 8 training batches, 60 valid images."""
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    seed_everything(seed)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    return Learner(model, dls, seed=seed, device="cpu", **{"progress": False, **kwargs})


class Log(Callback):
    """Records every event it sees; optionally raises ``error`` at ``event`` when ``when`` holds."""

    def __init__(
        self, order: int = 0, *, event: str = "", error: BaseException | None = None, when=None
    ) -> None:
        self.order = order
        self.events: list[str] = []
        self._trigger = (event, error, when or (lambda learn: True))
        for name in EVENTS:
            setattr(self, name, self._recorder(name))

    def _recorder(self, name: str):
        def method() -> None:
            self.events.append(name)
            event, error, when = self._trigger
            if name == event and error is not None and when(self.learn):
                raise error

        return method


class ScriptedLoss(Callback):
    """Overwrites each epoch's ``metric`` (valid_loss) with a script, between the Recorder and
    the trackers."""

    order = 0

    def __init__(self, losses: list[float], metric: str = "valid_loss") -> None:
        self.losses, self.metric = losses, metric
        self.weights: list[dict[str, torch.Tensor]] = []

    def after_epoch(self) -> None:
        self.learn.history[-1][self.metric] = self.losses[self.learn.epoch]
        self.weights.append({k: v.clone() for k, v in self.learn.model.state_dict().items()})


def same_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_events_fire_in_the_documented_order() -> None:
    log = Log()
    learn = make_learner(callbacks=[log])
    learn.fit(1, 1e-3)
    expected = ["before_fit", "before_epoch", "before_train"]
    expected += BATCH_EVENTS * learn.n_iter
    expected += ["after_train", "before_validate", "after_validate", "after_epoch", "after_fit"]
    assert log.events == expected


def test_callbacks_run_in_order_then_insertion_order() -> None:
    calls: list[str] = []

    class Named(Callback):
        def __init__(self, name: str, order: int) -> None:
            self.tag, self.order = name, order

        def before_fit(self) -> None:
            calls.append(self.tag)

    learn = make_learner(callbacks=[Named("c", 5), Named("a", -1), Named("b", 5)])
    learn.fit(1, 1e-3)
    assert calls == ["a", "c", "b"]


def test_callback_error_names_the_callback_and_event_and_keeps_the_cause() -> None:
    class Boom(Log):
        pass

    learn = make_learner(callbacks=[Boom(event="after_loss", error=KeyError("missing"))])
    with pytest.raises(
        CallbackError, match=r"Exception in callback Boom during after_loss: KeyError"
    ) as info:
        learn.fit(1, 1e-3)
    assert isinstance(info.value.__cause__, KeyError)
    assert (info.value.callback, info.value.event) == ("Boom", "after_loss")


def test_cancel_fit_stops_training_and_still_runs_after_fit() -> None:
    log = Log(event="before_epoch", error=CancelFit(), when=lambda learn: learn.epoch == 1)
    learn = make_learner(callbacks=[log])
    learn.fit(3, 1e-3)
    assert len(learn.history) == 1
    assert log.events[-2:] == ["after_cancel_fit", "after_fit"]


def test_cancel_epoch_ends_training_early_but_validation_still_runs() -> None:
    log = Log(event="before_batch", error=CancelEpoch(), when=lambda learn: learn.iter == 2)
    learn = make_learner(callbacks=[log])
    learn.fit(2, 1e-3)
    assert len(learn.history) == 2
    assert len(learn.recorder.losses) == 2 * 2  # two finished batches per epoch
    assert log.events.count("after_cancel_epoch") == 2
    assert log.events.count("after_validate") == 2
    assert all(r["valid_loss"] == r["valid_loss"] for r in learn.history)  # not NaN
    assert all(r["cancelled"] is True for r in learn.history)


def test_an_epoch_cancelled_before_its_first_step_is_not_read_as_a_blow_up() -> None:
    """Its training loss is NaN because nothing was measured; diagnose skips it."""
    from trainers.diagnose import diagnose

    log = Log(event="before_batch", error=CancelEpoch(), when=lambda learn: learn.epoch == 3)
    learn = make_learner(callbacks=[log])
    learn.fit(4, 1e-3)
    assert [r.get("cancelled", False) for r in learn.history] == [False, False, False, True]
    assert math.isnan(learn.history[-1]["train_loss"])
    found = diagnose(learn.history)
    assert found.label != "lr_too_high" and found.evidence["n_epochs"] == 3, found
    assert diagnose([*learn.history[:3], {**learn.history[3], "cancelled": False}]).label == (
        "lr_too_high"  # the same NaN, not marked cancelled: a loss that blew up
    )


def test_cancel_batch_skips_the_step_but_fires_after_batch() -> None:
    log = Log(event="after_loss", error=CancelBatch(), when=lambda learn: learn.iter == 0)
    learn = make_learner(callbacks=[log])
    learn.fit(1, 1e-3)
    assert log.events.count("after_cancel_batch") == 1
    assert log.events.count("after_step") == learn.n_iter - 1
    assert log.events.count("after_batch") == learn.n_iter
    assert len(learn.recorder.losses) == learn.n_iter - 1


def test_early_stopping_stops_on_patience_and_restores_the_best_epoch() -> None:
    script = ScriptedLoss([1.0, 0.5, 0.7, 0.8, 0.2, 0.1])
    stop = EarlyStoppingCallback(patience=2)
    learn = make_learner(callbacks=[script, stop])
    learn.fit(6, 1e-2)
    assert len(learn.history) == 4
    assert (stop.best, stop.best_epoch, stop.stopped_epoch) == (0.5, 1, 3)
    assert same_weights(learn.model, script.weights[1])
    assert not same_weights(learn.model, script.weights[3])


@pytest.mark.parametrize(
    ("losses", "kwargs", "n_epochs", "best_epoch"),
    [
        ([1.0, 0.99, 0.98, 0.5], {"patience": 2, "min_delta": 0.05}, 3, 0),
        ([1.0, 0.9, 0.8], {"patience": 1}, 3, 2),  # ran to the end, best is last
        ([1.0, float("nan"), 0.9], {"patience": 2}, 3, 2),  # NaN never improves
    ],
)
def test_early_stopping_table(
    losses: list[float], kwargs: dict, n_epochs: int, best_epoch: int
) -> None:
    script = ScriptedLoss(losses)
    stop = EarlyStoppingCallback(**kwargs)
    learn = make_learner(callbacks=[script, stop])
    learn.fit(len(losses), 1e-2)
    assert len(learn.history) == n_epochs
    assert stop.best_epoch == best_epoch
    assert same_weights(learn.model, script.weights[best_epoch])


def test_early_stopping_on_accuracy_maximises() -> None:
    # the best is neither the first nor the last value: a rule that minimised, or kept the
    # latest, would pick another epoch and stop elsewhere
    script = ScriptedLoss([0.5, 0.9, 0.7, 0.6, 0.95], metric="accuracy")
    stop = EarlyStoppingCallback(monitor="accuracy", patience=2)
    learn = make_learner(callbacks=[script, stop])
    learn.fit(5, 1e-2)
    assert stop.maximise is True
    assert len(learn.history) == 4
    assert (stop.best, stop.best_epoch, stop.stopped_epoch) == (0.9, 1, 3)
    assert same_weights(learn.model, script.weights[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patience": 0}, "patience must be an integer >= 1"),
        ({"min_delta": -1.0}, "min_delta must be a finite number >= 0"),
        ({"mode": "up"}, r"mode must be one of \['auto', 'min', 'max'\]"),
    ],
)
def test_early_stopping_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EarlyStoppingCallback(**kwargs)


def test_a_monitor_missing_from_the_history_is_named_with_the_keys() -> None:
    learn = make_learner(callbacks=[EarlyStoppingCallback(monitor="f1")])
    with pytest.raises(
        CallbackError,
        match=r"monitor='f1' is not in the history records; the keys are \['train_loss'",
    ):
        learn.fit(1, 1e-3)


def test_save_model_callback_saves_only_improvements(tmp_path: Path) -> None:
    script = ScriptedLoss([1.0, 0.5, 0.7])
    saver = SaveModelCallback(tmp_path / "best.pt")
    learn = make_learner(callbacks=[script, saver])
    learn.fit(3, 1e-2)
    assert saver.best_epoch == 1
    best = make_learner(seed=4).load(tmp_path / "best.pt")
    assert same_weights(best.model, script.weights[1])
    assert len(best.history) == 2 and best.resume_epoch == 2
    assert same_weights(learn.model, script.weights[1])  # fastai: the fit ends on the best
    assert len(learn.history) == 3  # the history is the whole fit's


def test_save_model_callback_reloads_the_best_after_early_stopping_unless_told(
    tmp_path: Path,
) -> None:
    for reload_best in (True, False):
        script = ScriptedLoss([1.0, 0.5, 0.7, 0.8])
        saver = SaveModelCallback(tmp_path / "best.pt", reload_best=reload_best)
        stopper = EarlyStoppingCallback(patience=1, restore_best=False)  # the saver alone
        learn = make_learner(callbacks=[script, saver, stopper])
        learn.fit(4, 1e-2)
        assert len(learn.history) == 3 and saver.best_epoch == 1
        assert same_weights(learn.model, script.weights[1]) is reload_best
        assert same_weights(learn.model, script.weights[2]) is not reload_best


def test_save_model_callback_every_epoch_keeps_one_file_per_epoch(tmp_path: Path) -> None:
    learn = make_learner(callbacks=[SaveModelCallback(tmp_path / "e{epoch}.pt", every_epoch=True)])
    learn.fit(3, 1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e0.pt", "e1.pt", "e2.pt"]


def test_recorder_cannot_be_removed_and_context_managers_restore_callbacks() -> None:
    learn = make_learner()
    with pytest.raises(ValueError, match="the Recorder cannot be removed"):
        learn.remove_cb(learn.recorder)
    log = Log()
    with learn.added_cbs(log):
        learn.fit(1, 1e-3)
    assert log not in learn.cbs and log.events
    learn.add_cb(log)
    with learn.removed_cbs(log):
        assert log not in learn.cbs
    assert log in learn.cbs
    with pytest.raises(ValueError, match="already installed"):
        learn.add_cb(log)


def test_progress_callback_prints_one_row_per_epoch() -> None:
    out = io.StringIO()
    learn = make_learner(callbacks=[ProgressCallback(Console(file=out, width=120))])
    learn.fit(2, 1e-3)
    lines = [line.split() for line in out.getvalue().splitlines() if line.strip()]
    assert lines[0] == ["epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time"]
    assert [row[0] for row in lines[1:]] == ["0", "1"]
    assert float(lines[2][2]) == pytest.approx(learn.history[1]["valid_loss"], abs=1e-6)


def test_progress_is_off_when_stdout_is_not_a_terminal() -> None:
    learn = make_learner(progress=None)  # pytest captures stdout: not a terminal
    assert not any(isinstance(cb, ProgressCallback) for cb in learn.cbs)
    assert any(isinstance(cb, ProgressCallback) for cb in make_learner(progress=True).cbs)
