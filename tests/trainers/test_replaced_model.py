"""A model replaced without a new optimizer is refused at fit, not trained silently not at all."""

from __future__ import annotations

import pytest
import torch
from _shapes import shapes_learner

from trainers import Learner, build_model
from trainers._training import layer_groups, make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def make_learner() -> Learner:
    return shapes_learner()


def test_fit_refuses_a_replaced_model_the_optimizer_does_not_hold() -> None:
    learn = make_learner()
    new = build_model("simple_cnn", 3, in_channels=3)
    before = {k: v.clone() for k, v in new.state_dict().items()}
    learn.model = new
    with pytest.raises(ValueError, match=r"learn\.opt does not hold 16 trainable parameter\(s\)"):
        learn.fit_one_cycle(1, 1e-2)
    with pytest.raises(ValueError, match=r"learn\.model was replaced after the optimizer"):
        learn.lr_find(num_it=20)  # its curve would be flat: no step reaches the new model
    assert all(torch.equal(v, before[k]) for k, v in new.state_dict().items())
    learn.opt = make_optimizer("adamw", layer_groups(new), wd=0.01)  # what the message asks
    learn.fit_one_cycle(1, 1e-2)
    assert not torch.equal(new.state_dict()["head.4.weight"], before["head.4.weight"])


def test_parameters_frozen_by_hand_outside_the_optimizer_are_allowed() -> None:
    learn = make_learner()
    extra = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    learn.model.register_parameter("fixed_scale", extra)  # not trainable: nothing is lost
    learn.fit(1, 1e-3)
    assert len(learn.history) == 1
