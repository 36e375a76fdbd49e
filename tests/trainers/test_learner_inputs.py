"""A loss made non-finite by the data itself is a data error, not a divergence."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trainers import Learner, LRFindResult, TrainingDiverged, build_model
from trainers.data import TensorLoader
from trainers.seeding import seed_everything
from trainers.suggestions import CurveTooShort

pytestmark = pytest.mark.usefixtures("one_thread")


def make_learner(bad_value: float | None) -> Learner:
    """simple_cnn on 64 random float images (2 classes); one training image holds
    ``bad_value`` in one pixel when given."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(64, 1, 16, 16, generator=gen)
    labels = torch.arange(64) % 2
    if bad_value is not None:
        images[5, 0, 3, 3] = bad_value
    dls = SimpleNamespace(
        train=TensorLoader(images, labels, batch_size=16, shuffle=True, seed=0),
        valid=TensorLoader(images[:16].nan_to_num(), labels[:16], batch_size=16),
    )
    seed_everything(0)
    return Learner(build_model("simple_cnn", 2, in_channels=1), dls, device="cpu", progress=False)


def _freeze_every_parameter(learn: Learner) -> None:
    for p in learn.model.parameters():
        p.requires_grad_(False)


def _detaching_loss(learn: Learner) -> None:
    learn.loss_func = lambda pred, target: torch.nn.functional.cross_entropy(pred.detach(), target)


@pytest.mark.parametrize("run", ["fit", "lr_find"])
@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (None, r"gradients are switched off here: the call runs inside torch\.no_grad\(\)"),
        (
            _freeze_every_parameter,
            r"no parameter of learn\.model is trainable .*call learn\.unfreeze\(\)",
        ),
        (_detaching_loss, r"the loss depends on no trainable parameter of learn\.model"),
    ],
)
def test_a_loss_without_gradient_is_refused_with_its_cause_and_leaves_the_weights(
    run: str, setup, message: str
) -> None:
    """Each failed at the first backward with PyTorch's "element 0 of tensors does not require
    grad and does not have a grad_fn", a RuntimeError saying nothing of the cause."""
    learn = make_learner(None)
    if setup is not None:
        setup(learn)
    before = {k: v.detach().clone() for k, v in learn.model.named_parameters()}
    where = r"epoch 0, batch 0" if run == "fit" else r"lr_find's iteration 0 \(lr 1e-07\)"
    call = (lambda: learn.fit(1, 1e-3)) if run == "fit" else (lambda: learn.lr_find(num_it=20))
    with pytest.raises(ValueError, match=rf"training loss at {where} has no gradient.*{message}"):
        if setup is None:
            with torch.no_grad():
                call()
        else:
            call()
    assert all(torch.equal(v, before[k]) for k, v in learn.model.named_parameters())


@pytest.mark.parametrize("run", ["fit", "lr_find", "validate"])
@pytest.mark.parametrize(
    ("loss_func", "message"),
    [
        (torch.nn.CrossEntropyLoss(reduction="none"), r"a tensor of shape \(16,\): .*'mean'"),
        (lambda pred, target: 1.0, r"a float: return a torch tensor"),
    ],
)
def test_a_loss_func_not_giving_one_number_is_refused_naming_what_it_gave(
    run: str, loss_func, message: str
) -> None:
    """reduction="none" failed in backward with "grad can be implicitly created only for
    scalar outputs" (validate: "output with shape [] doesn't match the broadcast shape")."""
    learn = make_learner(None)
    learn.loss_func = loss_func
    where = {
        "fit": r"epoch 0, batch 0",
        "lr_find": r"lr_find's iteration 0 \(lr 1e-07\)",
        "validate": r"validation batch 0",
    }[run]
    call = {
        "fit": lambda: learn.fit(1, 1e-3),
        "lr_find": lambda: learn.lr_find(num_it=20),
        "validate": learn.validate,
    }[run]
    with pytest.raises(
        ValueError,
        match=rf"loss_func must return the batch's mean loss, a "
        rf"tensor of one number, but at {where} it returned {message}",
    ):
        call()


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda learn, r: learn.fit_one_cycle(1, r), "lr_max"),
        (lambda learn, r: learn.fit(1, r), "lr"),
        (lambda learn, r: learn.fit_sgdr(1, 1, r), "lr_max"),
        (lambda learn, r: learn.fine_tune(1, r), "base_lr"),
    ],
)
def test_a_whole_range_test_given_as_a_rate_names_its_suggestions(call, name: str) -> None:
    """fit_one_cycle(3, learn.lr_find()) printed the result's repr, every rate and loss of the
    curve (some 6,000 characters for num_it=100), in the middle of the message."""
    learn = make_learner(None)
    lrs = tuple(1e-5 * 1.2**i for i in range(100))
    result = LRFindResult(
        lrs=lrs,
        losses=(1.0,) * 100,
        raw_losses=(1.0,) * 100,
        suggestions={"valley": 1.5e-3, "steep": 4e-4},
        num_it_run=100,
    )
    with pytest.raises(ValueError) as info:
        call(learn, result)
    message = str(info.value)
    assert message.startswith(
        f"{name} got a whole LR range test result (LRFindResult), not a rate: pass one of its "
        "suggestions, result.valley (0.0015), result.steep (0.0004);"
    )
    assert len(message) < 300 and learn.history == []
    empty = LRFindResult(lrs=lrs, losses=(1.0,) * 100, raw_losses=(1.0,) * 100, num_it_run=100)
    with pytest.raises(ValueError, match=r"of which it has none \(suggest=\(\)\)"):
        call(learn, empty)


def test_another_object_given_as_a_rate_is_shown_cut_short() -> None:
    learn = make_learner(None)
    with pytest.raises(ValueError, match=r"(?s)but got tensor\(\[0\., 0\., .*\.\.\.\.$") as info:
        learn.fit_one_cycle(1, torch.zeros(1000))  # type: ignore[arg-type]
    assert len(str(info.value)) < 250


@pytest.mark.parametrize("run", ["fit", "lr_find"])
def test_batches_of_one_image_name_the_batch_size_batchnorm_cannot_train_on(run: str) -> None:
    """They failed with PyTorch's "Expected more than 1 value per channel when training, got
    input size torch.Size([1, 64])", which names no argument (the CLI and the spec refuse a
    batch size of 1; make_dataloaders takes it, for models without BatchNorm)."""
    learn = make_learner(None)
    learn.dls.train = TensorLoader(
        learn.dls.train.images, learn.dls.train.labels, batch_size=1, shuffle=True, seed=0
    )
    where = r"epoch 0, batch 0" if run == "fit" else r"lr_find's iteration 0 \(lr 1e-07\)"
    with pytest.raises(
        ValueError,
        match=rf"training batch at {where} holds 1 image\(s\), and a BatchNorm layer .* "
        r"batch_size of at least 2",
    ):
        learn.fit(1, 1e-3) if run == "fit" else learn.lr_find(num_it=20)


def test_lr_find_inside_inference_mode_names_the_switched_off_gradients() -> None:
    learn = make_learner(None)
    with pytest.raises(ValueError, match=r"inside torch\.no_grad\(\) or torch\.inference_mode"):
        with torch.inference_mode():
            learn.lr_find(num_it=20)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_fit_on_nan_or_inf_inputs_blames_the_data_not_the_learning_rate(bad_value: float) -> None:
    learn = make_learner(bad_value)
    with pytest.raises(ValueError, match=r"holds 1 NaN or inf input value\(s\) out of 4096"):
        learn.fit(1, 1e-3)


def test_lr_find_on_nan_inputs_blames_the_data_and_leaves_no_trace() -> None:
    learn = make_learner(float("nan"))
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"lr_find's iteration \d+ \(lr [0-9.e+-]+\) holds 1 NaN or inf input"
    ):
        learn.lr_find(num_it=20)
    assert all(torch.equal(v, before[k]) for k, v in learn.model.state_dict().items())


def test_a_finite_batch_with_a_non_finite_loss_is_still_a_divergence() -> None:
    learn = make_learner(None)
    with pytest.raises(TrainingDiverged, match="learning rate is probably too high"):
        learn.fit(1, 1e12)


def test_a_loss_not_finite_before_the_fit_stepped_is_not_blamed_on_the_rate() -> None:
    learn = make_learner(None)
    learn.loss_func = lambda pred, target: torch.log(pred.softmax(1) * 0).mean()
    with pytest.raises(TrainingDiverged, match="first batch") as info:
        learn.fit(2, 1e-3)
    assert (info.value.epoch, info.value.batch) == (0, 0)
    assert "learning rate is not the cause" in str(info.value)
    assert "too high" not in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))  # as Ray carries it from a trial
    assert str(again) == str(info.value) and again.cause == info.value.cause


def test_a_loss_not_finite_after_a_step_still_blames_the_rate() -> None:
    learn = make_learner(None)
    learn.fit(1, 1e-3)
    calls = 0

    def nan_from_the_second_batch(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        loss = torch.nn.functional.cross_entropy(pred, target)
        return loss if calls == 1 else loss * float("nan")

    learn.loss_func = nan_from_the_second_batch
    with pytest.raises(TrainingDiverged, match="learning rate is probably too high") as info:
        learn.fit(1, 1e-3)
    assert (info.value.epoch, info.value.batch, info.value.cause) == (0, 1, None)
    # the diverged step left NaN weights: the next fit's first batch is blamed on them
    learn.loss_func = torch.nn.functional.cross_entropy
    with pytest.raises(TrainingDiverged, match=r"first batch.*loaded weights holding NaN"):
        learn.fit(1, 1e-3)


@pytest.mark.parametrize("start_epoch", [0, 1])
def test_a_loss_not_finite_on_a_later_epochs_first_batch_blames_the_rate(start_epoch: int) -> None:
    """An epoch's first batch comes after the steps of the epochs before it: only the fit's
    very first batch (``start_epoch``'s, as a resumed fit begins) is the starting weights'."""
    learn = make_learner(None)

    def nan_on_the_second_epoch(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(pred, target)
        return loss * float("nan") if learn.training and learn.epoch == 2 else loss

    learn.loss_func = nan_on_the_second_epoch
    with pytest.raises(TrainingDiverged, match="learning rate is probably too high") as info:
        learn.fit_one_cycle(3, 1e-3, start_epoch=start_epoch)
    assert (info.value.epoch, info.value.batch, info.value.cause) == (2, 0, None)
    with pytest.raises(TrainingDiverged, match="first batch") as info:  # the fit's own first
        learn.fit_one_cycle(3, 1e-3, start_epoch=2)
    assert (info.value.epoch, info.value.batch) == (2, 0) and info.value.cause is not None


def test_lr_find_on_weights_a_diverged_fit_left_blames_them_not_a_rate() -> None:
    """A user ran lr_find after the TrainingDiverged message said to: the weights were the
    diverged step's (NaN), and the test failed as CurveTooShort blaming an lr of 1e-7."""
    learn = make_learner(None)
    with pytest.raises(TrainingDiverged, match="load a checkpoint or rebuild the model first"):
        learn.fit(1, 1e30)
    with pytest.raises(
        CurveTooShort, match=r"loss was nan at lr_find.s first iteration \(lr 1.00e-07\)"
    ):
        learn.lr_find(num_it=20)  # a CurveTooShort still: a sweep's retries do not repeat it


@pytest.mark.parametrize("base_lr", [[1e-4, 1e-3, 1e-2], [1e-3], np.array([1e-3])])
def test_fine_tune_takes_one_base_rate_not_a_list(base_lr: object) -> None:
    learn = make_learner(None)
    with pytest.raises(ValueError, match=r"base_lr must be a finite number > 0, .*fine_tune sp"):
        learn.fine_tune(1, base_lr, freeze_epochs=0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "loss_func",
    [torch.nn.CrossEntropyLoss(label_smoothing=0.1), torch.nn.functional.cross_entropy],
)
def test_an_explicit_cross_entropy_still_checks_the_models_outputs(loss_func: object) -> None:
    dls = make_learner(None).dls
    dls.n_classes = 2  # as make_dataloaders' data says
    with pytest.raises(ValueError, match=r"the model has 3 outputs but the data has n_classes=2"):
        Learner(build_model("simple_cnn", 3, in_channels=1), dls, loss_func=loss_func)


def test_an_empty_validation_loader_is_refused_before_any_step() -> None:
    """It was found after a whole epoch of training had changed the weights."""
    learn = make_learner(None)
    images = learn.dls.valid.images
    learn.dls.valid = TensorLoader(images[:0], torch.zeros(0, dtype=torch.long), batch_size=16)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(ValueError, match=r"validation loader yields no batches.*valid_pct > 0"):
        learn.fit_one_cycle(1, 1e-3)
    assert all(torch.equal(v, before[k]) for k, v in learn.model.state_dict().items())


def test_an_empty_training_loader_is_not_blamed_on_the_batch_size() -> None:
    learn = make_learner(None)
    learn.dls.train = TensorLoader(
        learn.dls.valid.images[:0], torch.zeros(0, dtype=torch.long), batch_size=16
    )
    with pytest.raises(ValueError, match="training loader yields no batches: it holds no items"):
        learn.fit(1, 1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda", r"device='cuda', but this machine has no CUDA device; pass device='cpu'"),
        ("cuda:1", r"device='cuda:1', but this machine has no CUDA device"),
        ("tpu", r"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', but got 'tpu'"),
    ],
)
def test_a_device_this_machine_lacks_is_refused_naming_device(device: str, message: str) -> None:
    dls = make_learner(None).dls
    with pytest.raises(ValueError, match=message):
        Learner(build_model("simple_cnn", 2, in_channels=1), dls, device=device)


def test_a_model_with_nothing_to_train_is_refused_at_once() -> None:
    """It failed at the first backward, deep in autograd ("does not require grad")."""

    class Slicer(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :2]

    dls = make_learner(None).dls
    with pytest.raises(ValueError, match=r"model \(Slicer\) has no parameters"):
        Learner(Slicer(), dls)
    with pytest.raises(ValueError, match=r"model must be a torch\.nn\.Module, but got str"):
        Learner("resnet18", dls)  # type: ignore[arg-type]
