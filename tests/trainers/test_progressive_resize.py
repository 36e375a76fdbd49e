"""ProgressiveResize: smaller images first, inside one fit's schedule, resumable."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from _shapes import Interrupt, shapes_learner

from trainers import Callback, ProgressiveResize, make_dataloaders

pytestmark = pytest.mark.usefixtures("one_thread")


class Sizes(Callback):
    """Records each epoch's training batch side and validation image side."""

    def __init__(self) -> None:
        self.train: dict[int, int] = {}
        self.valid: dict[int, int] = {}

    def after_batch(self) -> None:
        if self.learn.training:
            self.train[self.learn.epoch] = int(self.learn.xb.shape[-1])

    def after_validate(self) -> None:
        self.valid[self.learn.epoch] = int(self.learn.dls.valid_images.shape[-1])


def _learner():
    return shapes_learner(n_per_class=40)


def test_stages_train_smaller_images_first_within_one_schedule() -> None:
    learn, sizes = _learner(), Sizes()
    full = learn.dls
    with learn.added_cbs(ProgressiveResize([(8, 1), (12, 2)]), sizes):
        learn.fit_one_cycle(5, 3e-3)
    assert sizes.train == {0: 8, 1: 12, 2: 12, 3: 16, 4: 16}
    assert sizes.valid == sizes.train  # validation at the epoch's own size
    assert learn.dls is full  # the full-size loaders after the fit
    # one schedule over every size: the rates are those of a fit without resizing
    plain = _learner()
    plain.fit_one_cycle(5, 3e-3)
    assert learn.recorder.lrs == plain.recorder.lrs and learn.recorder.moms == plain.recorder.moms
    assert len(learn.history) == 5
    assert learn.history[-1]["valid_loss"] != plain.history[-1]["valid_loss"]


def test_stages_count_the_learners_epochs_across_fits() -> None:
    learn, sizes = _learner(), Sizes()
    with learn.added_cbs(ProgressiveResize([(8, 2)]), sizes):
        learn.fit(1, 1e-3)  # a frozen phase's fit, say
        assert sizes.train == {0: 8}
        learn.fit(2, 1e-3)  # epochs 0 and 1 of this fit: the learner's second and third
    assert sizes.train == {0: 8, 1: 16}


def test_a_resumed_fit_repeats_the_uninterrupted_one(tmp_path: Path) -> None:
    whole = _learner()
    with whole.added_cbs(ProgressiveResize([(8, 2)])):
        whole.fit_one_cycle(4, 3e-3)

    first = _learner()
    with first.added_cbs(ProgressiveResize([(8, 2)]), Interrupt(1)):
        first.fit_one_cycle(4, 3e-3)
    first.save(tmp_path / "ckpt.pt")  # saved mid-stage: the shuffle stream is the stage's

    second = _learner()
    second.load(tmp_path / "ckpt.pt")
    with second.added_cbs(ProgressiveResize([(8, 2)])):
        second.fit_one_cycle(4, 3e-3, start_epoch=1)
    assert [r["valid_loss"] for r in second.history] == [r["valid_loss"] for r in whole.history]
    assert [r["train_loss"] for r in second.history] == [r["train_loss"] for r in whole.history]


def test_stage_loaders_continue_the_full_loaders_shuffle_and_augmentation() -> None:
    dls = make_dataloaders("shapes", image_size=16, batch_size=8, n_per_class=10, augment="light")
    resize = ProgressiveResize([(8, 1)])
    small = resize.loaders_at(0, dls)
    assert small.image_size == 8 and resize.loaders_at(1, dls) is dls
    assert resize.loaders_at(0, dls) is small  # rendered once
    before = dls.train.state_dict()["order"].clone()
    next(iter(small.train))
    assert not torch.equal(dls.train.state_dict()["order"], before)  # one stream


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([], "at least one"),
        ([(0, 2)], r"stages\[0\]'s image_size must be an integer >= 1"),
        ([(8, 1), (12, 0)], r"stages\[1\]'s epochs must be an integer >= 1"),
        ([(8, True)], r"stages\[0\]'s epochs"),
        ([8], r"stages\[0\] must be an \(image_size, epochs\) pair"),
    ],
)
def test_bad_stages_are_refused(stages: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProgressiveResize(stages)


def test_other_batch_counts_and_precompute_are_refused() -> None:
    learn = shapes_learner(n_per_class=40)

    class Swap(Callback):
        def before_epoch(self) -> None:
            if self.learn.epoch == 1:
                self.learn.dls = make_dataloaders(
                    "shapes", image_size=16, batch_size=8, n_per_class=40
                )

    with learn.added_cbs(Swap()), pytest.raises(ValueError, match="batches an epoch"):
        learn.fit(2, 1e-3)
    assert len(learn.history) == 1

    learn = shapes_learner(n_per_class=40)
    learn.freeze()
    with (
        learn.added_cbs(ProgressiveResize([(8, 1)])),
        pytest.raises(ValueError, match="precompute=True"),
    ):
        learn.fit(2, 1e-3, precompute=True)
    assert learn.history == []


def test_a_fit_that_raises_leaves_the_data_it_began_with() -> None:
    """No after_fit runs after an error: the loop puts back the loaders the fit began with,
    instead of leaving a stage's small images for every later call (a helper's find)."""

    class Boom(Callback):
        def after_epoch(self) -> None:
            raise RuntimeError("boom")

    learn = _learner()
    full = learn.dls
    with (
        learn.added_cbs(ProgressiveResize([(8, 2)]), Boom()),
        pytest.raises(Exception, match="boom"),
    ):
        learn.fit_one_cycle(3, 3e-3)
    assert learn.dls is full


def test_data_another_callback_assigns_mid_fit_becomes_the_full_size() -> None:
    replaced = make_dataloaders("shapes", image_size=12, batch_size=32, n_per_class=40)

    class Replace(Callback):
        order = 5

        def after_epoch(self) -> None:
            if self.learn.epoch == 0:
                self.learn.dls = replaced

    learn, sizes = _learner(), Sizes()
    with learn.added_cbs(ProgressiveResize([(8, 2)]), Replace(), sizes):
        learn.fit_one_cycle(3, 3e-3)
    assert sizes.train == {0: 8, 1: 8, 2: 12}  # epoch 1: the new data's 8 px stage
    assert learn.dls is replaced


def test_loading_a_checkpoint_taken_in_a_stage_says_how_it_resumes(tmp_path: Path) -> None:
    learn = _learner()
    learn.dls = ProgressiveResize([(8, 2)]).loaders_at(0, learn.dls)  # as after a stage epoch
    learn.save(tmp_path / "stage.pt")
    with pytest.warns(UserWarning, match=r"8 px images \(this data: 16 px\).*ProgressiveResize"):
        _learner().load(tmp_path / "stage.pt")


def test_lr_find_says_when_it_tests_at_another_size_than_the_first_stage() -> None:
    learn = _learner()
    resize = ProgressiveResize([(8, 1)])
    learn.add_cb(resize)
    with pytest.warns(UserWarning, match=r"lr_find runs on learn\.dls's 16 px images, but Progre"):
        learn.lr_find(num_it=10, suggest=None)
    learn.dls = resize.loaders_at(0, learn.dls)  # the first stage's images: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learn.lr_find(num_it=10, suggest=None)
