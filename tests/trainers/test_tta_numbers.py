"""tta takes NumPy scalars as every other numeric argument does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainers import Learner, build_model, make_dataloaders
from trainers.seeding import seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def learn() -> Learner:
    dls = make_dataloaders("shapes", image_size=16, batch_size=32, n_per_class=10, augment="light")
    seed_everything(0)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    return Learner(model, dls, seed=0, device="cpu", progress=False)


def test_numpy_n_and_beta_give_the_same_blend(learn: Learner) -> None:
    expected = learn.tta(n=2, beta=0.25)["probs"]
    got = learn.tta(n=np.int64(2), beta=np.float32(0.25))["probs"]
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": float("nan")}, r"beta must be a number in \[0, 1\], but got nan"),
        ({"beta": True}, r"beta must be a number in \[0, 1\], but got True"),
        ({"n": np.int64(0)}, r"n must be an integer >= 1"),
        ({"n": 2.0}, r"n must be an integer >= 1, but got 2\.0"),
    ],
)
def test_bad_tta_arguments_are_named(learn: Learner, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        learn.tta(**kwargs)
