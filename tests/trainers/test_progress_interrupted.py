"""A fit that raises mid-epoch leaves the terminal as it found it (cursor shown)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from trainers import Learner, ProgressCallback, TrainingDiverged, build_model, make_dataloaders
from trainers.seeding import seed_everything

HIDE, SHOW = "\x1b[?25l", "\x1b[?25h"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_fit_that_raises_mid_epoch_does_not_leave_the_cursor_hidden() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True)
    dls = make_dataloaders("shapes", image_size=16, batch_size=8, n_per_class=10)
    seed_everything(0)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    learn = Learner(model, dls, device="cpu", callbacks=[ProgressCallback(console)])
    with pytest.raises(TrainingDiverged):  # Ctrl-C would leave the bar the same way
        learn.fit(1, 1e12)
    text = out.getvalue()
    assert HIDE not in text or text.rindex(SHOW) > text.rindex(HIDE)
