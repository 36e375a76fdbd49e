"""A checkpoint always loads back with weights_only=True, whatever callbacks put in history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _shapes import shapes_learner

from trainers import Callback, Learner, SaveModelCallback

pytestmark = pytest.mark.usefixtures("one_thread")


class NumpyMetric(Callback):
    """Adds a metric as scikit-learn returns them (NumPy scalars), before the savers run."""

    order = 0

    def after_epoch(self) -> None:
        self.learn.history[-1]["f1"] = np.float64(0.25 + self.learn.epoch)
        self.learn.history[-1]["support"] = [np.int64(3), np.float32(0.5)]


def make_learner(*callbacks: Callback) -> Learner:
    return shapes_learner(callbacks=list(callbacks))


def test_numpy_scalars_in_history_round_trip_as_python_numbers(tmp_path: Path) -> None:
    # the best-model saver reloads its own file at the end of the fit: it must read back
    saver = SaveModelCallback(tmp_path / "best.pt")
    learn = make_learner(NumpyMetric(), saver)
    learn.fit(2, 1e-3)
    learn.save(tmp_path / "last.pt")
    loaded = make_learner().load(tmp_path / "last.pt")
    assert [r["f1"] for r in loaded.history] == [0.25, 1.25]
    assert type(loaded.history[0]["f1"]) is float
    assert loaded.history[1]["support"] == [3, 0.5]


def test_an_object_a_checkpoint_cannot_hold_is_named_at_save(tmp_path: Path) -> None:
    learn = make_learner()
    learn.fit(1, 1e-3)
    learn.history[-1]["note"] = {"when": object()}
    with pytest.raises(ValueError, match=r"learn\.history\[0\]\['note'\]\['when'\] holds a object"):
        learn.save(tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()
