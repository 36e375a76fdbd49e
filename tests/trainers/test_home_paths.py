"""``~`` in a checkpoint or weights path means the home folder, not a folder named ``~``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _shapes import shapes_learner

from trainers import Learner, SaveModelCallback, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home folder, and a working folder apart from it."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path / "home"


def make_learner(**kwargs) -> Learner:
    return shapes_learner(**kwargs)


def test_save_load_and_pretrained_expand_the_home_folder(home: Path) -> None:
    saver = SaveModelCallback("~/runs/best.pt")
    learn = make_learner(callbacks=[saver])
    learn.fit(1, 1e-3)  # the saver writes, then reloads, ~/runs/best.pt
    learn.save("~/runs/last.pt")
    assert (home / "runs" / "best.pt").is_file() and (home / "runs" / "last.pt").is_file()
    assert not Path("~").exists()  # no folder literally named ~ in the working folder
    loaded = make_learner().load("~/runs/last.pt")
    assert loaded.history == learn.history
    model = build_model("simple_cnn", 3, in_channels=3, pretrained="~/runs/last.pt")
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in model.state_dict().items())


def test_range_test_json_and_figures_expand_the_home_folder(home: Path) -> None:
    from trainers import LRFindResult
    from trainers.plots import plot_curves, plot_lr_find

    (home / "out").mkdir(parents=True)
    learn = make_learner()
    result = learn.lr_find(num_it=20, suggest=())
    result.to_json("~/out/lr_find.json")
    assert LRFindResult.from_json("~/out/lr_find.json") == result
    plot_lr_find(result, "~/out/lr_find.png")
    learn.fit(1, 1e-3)
    path = plot_curves(learn.history, "~/out/curves.png")
    assert path == home / "out" / "curves.png"
    assert sorted(p.name for p in (home / "out").iterdir()) == [
        "curves.png",
        "lr_find.json",
        "lr_find.png",
    ]
    assert not Path("~").exists()
