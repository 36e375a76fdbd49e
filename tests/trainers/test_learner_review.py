"""Review findings: cancellation scopes, before_step, event names, checkpoints, arguments."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from rich.console import Console
from test_callbacks import BATCH_EVENTS, Log, ScriptedLoss, make_learner
from test_callbacks import one_thread as one_thread  # the module's autouse fixture

from trainers import (
    Callback,
    CancelEpoch,
    EarlyStoppingCallback,
    ProgressCallback,
    SaveModelCallback,
)
from trainers.callbacks import EVENTS


def epoch_events(log: Log) -> list[str]:
    return [e for e in log.events if e not in BATCH_EVENTS]


def test_cancel_epoch_from_after_train_still_validates_and_ends_the_epoch() -> None:
    log = Log(event="after_train", error=CancelEpoch(), when=lambda learn: learn.epoch == 0)
    learn = make_learner(callbacks=[log])
    learn.fit(2, 1e-3)  # raised CancelEpoch out of fit before
    assert len(learn.history) == 2
    assert learn.history[0]["cancelled"] is True
    assert learn.history[0]["valid_loss"] == learn.history[0]["valid_loss"]  # validated
    assert epoch_events(log)[:8] == [
        "before_fit",
        "before_epoch",
        "before_train",
        "after_train",
        "after_cancel_epoch",
        "before_validate",
        "after_validate",
        "after_epoch",
    ]


def test_before_step_fires_after_backward_and_before_the_optimizer_step() -> None:
    """fastai's GradientClip uses before_step; it used to be ignored silently."""

    class ZeroGrads(Callback):
        calls = 0

        def before_step(self) -> None:
            ZeroGrads.calls += 1
            for p in self.learn.model.parameters():
                if p.grad is not None:
                    p.grad.zero_()

    learn = make_learner(callbacks=[ZeroGrads()], wd=0.0)
    before = {k: v.clone() for k, v in learn.model.state_dict().items() if "running" not in k}
    learn.fit(1, 1e-2)
    assert ZeroGrads.calls == learn.n_iter
    after = learn.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items() if "num_batches" not in k)
    assert EVENTS.index("after_backward") + 1 == EVENTS.index("before_step")


@pytest.mark.parametrize("name", ["after_create", "before_valid", "after_cancel_train"])
def test_a_method_named_like_an_unknown_event_is_refused(name: str) -> None:
    cb = type("Odd", (Callback,), {name: lambda self: None})()
    with pytest.raises(ValueError, match=rf"callback Odd defines \['{name}'\], which no Learner"):
        make_learner(callbacks=[cb])


def test_cancel_fit_in_after_epoch_lets_every_callback_see_that_epoch(tmp_path: Path) -> None:
    """Early stopping (order 10) used to hide the last epoch from later callbacks."""
    out = io.StringIO()
    stop = EarlyStoppingCallback(patience=2)
    every = SaveModelCallback(tmp_path / "e{epoch}.pt", every_epoch=True)
    progress = ProgressCallback(Console(file=out, width=120))
    log = Log(order=50)
    script = ScriptedLoss([1.0, 0.5, 0.7, 0.8, 0.2, 0.1])
    learn = make_learner(callbacks=[script, stop, every, progress, log])
    learn.fit(6, 1e-3)
    assert len(learn.history) == 4 and stop.stopped_epoch == 3
    rows = [line.split() for line in out.getvalue().splitlines() if line.strip()]
    assert [row[0] for row in rows[1:]] == ["0", "1", "2", "3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"e{i}.pt" for i in range(4)]
    assert log.events.count("after_epoch") == 4
    assert log.events[-2:] == ["after_cancel_fit", "after_fit"]


def test_loading_another_models_checkpoint_names_the_file_and_loads_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ck.pt"
    make_learner().save(path)
    state = torch.load(path, weights_only=True)
    key = next(k for k in reversed(state["model"]) if k.endswith("weight"))
    state["model"][key] = torch.zeros(state["model"][key].shape[0] + 2, 7)
    torch.save(state, path)
    learn = make_learner(seed=1)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"ck\.pt' holds the weights of another model.*{key}"):
        learn.load(path)
    assert all(torch.equal(v, before[k]) for k, v in learn.model.state_dict().items())


def test_an_incomplete_checkpoint_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    make_learner().save(path)
    state = torch.load(path, weights_only=True)
    del state["history"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"ck\.pt' lacks \['history'\]"):
        make_learner().load(path)


def test_checkpoint_files_get_the_umasks_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = make_learner().save(tmp_path / "ck.pt")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)  # mkstemp's 0600 before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metrics": None}, r"metrics must be names from"),
        ({"metrics": "accuracy"}, r"metrics must be names from"),
        ({"callbacks": Log()}, r"callbacks must be a list of Callback instances"),
        ({"wd": True}, r"wd must be a finite number >= 0"),
        ({"loss_func": "cross_entropy"}, r"loss_func must be a function"),
    ],
)
def test_more_bad_learner_arguments_are_explained(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_learner(**kwargs)


@pytest.mark.parametrize("min_delta", [float("inf"), True])
def test_early_stopping_refuses_a_min_delta_that_is_no_finite_number(min_delta) -> None:
    with pytest.raises(ValueError, match=r"min_delta must be a finite number >= 0"):
        EarlyStoppingCallback(min_delta=min_delta)


def test_an_epoch_field_in_the_path_without_every_epoch_is_refused(tmp_path: Path) -> None:
    """It used to write a file literally named 'e{epoch}.pt'."""
    with pytest.raises(ValueError, match=r"has an \{epoch\} field.*every_epoch=True"):
        SaveModelCallback(tmp_path / "e{epoch}.pt")
