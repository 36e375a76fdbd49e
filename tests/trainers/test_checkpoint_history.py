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


def test_a_checkpoint_loaded_into_other_data_is_warned_about(tmp_path: Path) -> None:
    """A sweep's checkpoint loaded silently into 16 px data (error 88%) or another split (its
    validation images partly ones the model trained on: 0.6% error against the trial's 3.3%)."""
    import warnings

    import torch

    from trainers import build_model, make_dataloaders

    learn = shapes_learner()
    learn.fit(1, 1e-3)
    path = learn.save(tmp_path / "ck.pt")

    def load_into(**data: object) -> list[str]:
        args = {"image_size": 16, "batch_size": 32, "n_per_class": 10} | data
        dls = make_dataloaders("shapes", **args)  # type: ignore[arg-type]
        other = Learner(build_model("simple_cnn", dls.n_classes, in_channels=3), dls, seed=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            other.load(path)
        assert all(w.filename == __file__ for w in caught)  # said at the user's call
        return [str(w.message) for w in caught]

    assert load_into() == []  # the same data, rebuilt: nothing to say
    (bigger,) = load_into(image_size=32)
    assert "was trained on 16 px images (this data: 32 px)" in bigger
    (split,) = load_into(seed=7)
    assert "another train/valid split (24/6 images; this data: 24/6" in split
    assert "continued metrics would read too good" in split
    torch.save(learn.model.state_dict(), tmp_path / "best_model.pt")  # a sweep's bare weights
    with pytest.raises(
        ValueError, match=r"holds model weights alone .*model\.load_state_dict\(torch"
    ):
        learn.load(tmp_path / "best_model.pt")
