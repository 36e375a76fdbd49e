"""Epoch counts and layer-group counts take NumPy integers, as the rates take NumPy floats."""

from __future__ import annotations

import numpy as np
import pytest
from _shapes import shapes_learner

from trainers import Learner

pytestmark = pytest.mark.usefixtures("one_thread")


def make_learner() -> Learner:
    return shapes_learner()


def test_numpy_epoch_counts_train_as_python_ones() -> None:
    reference = make_learner()
    reference.fit_one_cycle(2, 1e-2)
    learn = make_learner()
    learn.fit_one_cycle(np.int64(2), 1e-2, start_epoch=np.int32(0))
    assert learn.history == [
        {**r, "epoch_time_s": h["epoch_time_s"]}
        for r, h in zip(reference.history, learn.history, strict=True)
    ]
    assert type(learn.n_epoch) is int
    learn.fine_tune(np.int64(1), freeze_epochs=np.int64(0))
    assert [r["phase"] for r in learn.history[2:]] == ["unfrozen"]


def test_freeze_to_takes_numpy_integers_and_refuses_bools() -> None:
    learn = make_learner()
    learn.freeze_to(np.int64(2))
    assert learn.frozen_groups == 2 and type(learn.frozen_groups) is int
    with pytest.raises(ValueError, match=r"n must be an integer in \[-3, 3\], but got True"):
        learn.freeze_to(True)
