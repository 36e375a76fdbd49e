"""The small Learner many trainers tests share: simple_cnn on the generated shapes, seed 0."""

from __future__ import annotations

from typing import Any

from trainers import Callback, CancelFit, Learner, build_model, make_dataloaders
from trainers.seeding import seed_everything


def shapes_learner(*, n_per_class: int = 10, **kwargs: Any) -> Learner:
    """simple_cnn on ``shapes`` (3 RGB classes of ``n_per_class`` 16 px images, batches of 32),
    seeded 0, on the CPU, without a progress bar; ``kwargs`` go to the Learner."""
    dls = make_dataloaders("shapes", image_size=16, batch_size=32, n_per_class=n_per_class)
    seed_everything(0)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    return Learner(model, dls, seed=0, device="cpu", progress=False, **kwargs)


class Interrupt(Callback):
    """Ends the fit after ``n`` epochs, as a killed job would (after that epoch's checkpoint)."""

    order = 20

    def __init__(self, n: int) -> None:
        self.n = n

    def after_epoch(self) -> None:
        if self.learn.epoch + 1 >= self.n:
            raise CancelFit
