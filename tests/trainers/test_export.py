"""Predicting on new images (files, PIL images, raw pixels of any size), ``learn.export`` and
``load_learner``, and a checkpoint's class names checked on ``learn.load``."""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from trainers import Learner, Predictor, build_model, load_learner, make_dataloaders
from trainers._inference import ImageFormat, model_input
from trainers.data._base import resize_uint8
from trainers.seeding import seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")

COLOURS = {"blue": (40, 60, 200), "green": (50, 190, 60), "red": (210, 40, 40)}


def _write_images(root: Path, per_class: int, size: int = 24, seed: int = 0) -> None:
    """PNGs of ``size`` px: each class a colour, a square of another shade at a random place."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(colour, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            x, y = rng.integers(0, size - 8, 2)
            pixels[y : y + 8, x : x + 8] = 255 - pixels[y : y + 8, x : x + 8]
            Image.fromarray(pixels).save(folder / f"{i:02d}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    _write_images(root / "train", 12, seed=0)
    _write_images(root / "valid", 1, seed=1)  # one file per class: the valid order is by class
    return root


@pytest.fixture(scope="module")
def learn(folder: Path) -> Learner:
    """A simple_cnn trained 2 epochs at 16 px on 24 px files (squished, as loaded)."""
    dls = make_dataloaders("image_folder", path=folder, image_size=16, batch_size=12)
    seed_everything(0)
    model = build_model("simple_cnn", dls.n_classes)
    learner = Learner(model, dls, seed=0, device="cpu", progress=False)
    learner.fit_one_cycle(2, 1e-2)
    return learner


def _valid_file(folder: Path, name: str) -> Path:
    return folder / "valid" / name / "00.png"


def test_an_image_file_or_pil_image_is_predicted_as_the_loaders_render_it(
    learn: Learner, folder: Path
) -> None:
    probs, targets, _ = learn.get_preds()
    for name in COLOURS:
        row = probs[targets == learn.dls.classes.index(name)][0]
        path = _valid_file(folder, name)
        assert torch.allclose(learn.predict(path), row, atol=1e-6)
        assert torch.allclose(learn.predict(str(path)), row, atol=1e-6)
        with Image.open(path) as image:
            assert torch.allclose(learn.predict(image), row, atol=1e-6)
    files = [_valid_file(folder, name) for name in COLOURS]
    batch = learn.predict(files)
    assert batch.shape == (3, 3)
    assert torch.allclose(batch.sum(dim=1), torch.ones(3))


def test_raw_pixels_of_another_size_are_resized_to_the_datas_size(
    learn: Learner, folder: Path
) -> None:
    with Image.open(_valid_file(folder, "red")) as image:
        raw = torch.as_tensor(np.array(image)).permute(2, 0, 1)  # uint8 (3, 24, 24)
    assert raw.shape == (3, 24, 24)
    resized = resize_uint8(raw[None], 16)[0]
    assert torch.equal(learn.predict(raw), learn.predict(resized))
    # the model pools adaptively, so 24 px would run: it used to, predicting from the wrong scale
    normalised = learn.dls.valid.normalise(raw[None].float())
    with pytest.raises(ValueError, match=r"x is 24x24 but the model was trained on 16x16 images"):
        learn.predict(normalised)


def test_a_missing_or_unreadable_file_is_named(learn: Learner, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"image file '.*nothing\.png' does not exist"):
        learn.predict(tmp_path / "nothing.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image file '.*broken\.png'"):
        learn.predict(broken)


def test_a_greyscale_model_takes_a_pil_image_as_its_uint8_pixels() -> None:
    dls = make_dataloaders("digits", image_size=16, batch_size=64)
    seed_everything(0)
    model = build_model("simple_cnn", dls.n_classes, in_channels=1)
    learn = Learner(model, dls, seed=0, device="cpu", progress=False)
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    as_tensor = learn.predict(torch.as_tensor(pixels)[None])
    assert torch.equal(learn.predict(Image.fromarray(pixels)), as_tensor)
    assert torch.equal(learn.predict(Image.fromarray(pixels).convert("RGB")), as_tensor)
    # a 2-D array (np.array of a greyscale image, sklearn's digits) is its one channel
    assert torch.equal(learn.predict(pixels), as_tensor)
    # in a batch of two: another batch size may take another kernel (other float rounding)
    assert torch.allclose(learn.predict([pixels, pixels])[1], as_tensor, rtol=0, atol=1e-6)


def test_an_export_predicts_as_the_learner_without_the_data(
    learn: Learner, folder: Path, tmp_path: Path
) -> None:
    path = learn.export(tmp_path / "sub" / "model.pt")
    assert path == tmp_path / "sub" / "model.pt"
    predictor = load_learner(path, device="cpu")
    assert isinstance(predictor, Predictor)
    assert predictor.classes == learn.dls.classes == sorted(COLOURS)
    assert (predictor.image_size, predictor.in_channels) == (16, 3)
    assert torch.equal(
        predictor.predict(learn.dls.valid_images), learn.predict(learn.dls.valid_images)
    )
    files = [_valid_file(folder, name) for name in COLOURS]
    assert torch.equal(predictor.predict(files), learn.predict(files))
    expected = [learn.dls.classes[int(i)] for i in learn.predict(files).argmax(dim=1)]
    assert predictor.predict_class(files) == expected
    assert predictor.predict_class(files[0]) == expected[0]
    assert "Predictor(simple_cnn, classes=3, image_size=16" in repr(predictor)


def test_load_learner_names_a_file_that_is_no_export(learn: Learner, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"export file '.*missing\.pt' does not exist"):
        load_learner(tmp_path / "missing.pt")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_learner(tmp_path)
    checkpoint = learn.save(tmp_path / "ckpt.pt")
    with pytest.raises(
        ValueError, match=r"is a training checkpoint \(learn\.save\), not an export"
    ):
        load_learner(checkpoint)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(
        ValueError, match=r"export file '.*garbage\.pt' is not a PyTorch file \(it "
    ):
        load_learner(garbage)
    (tmp_path / "trial.json").write_text('{"epoch": 3}')  # a sweep checkpoint's other file
    with pytest.raises(ValueError, match=r"starts with b'\{\"ep'; torch.save writes a zip") as e:
        load_learner(tmp_path / "trial.json")
    assert "Unpickling" not in str(e.value)  # torch's own long advice is not passed on
    exported = learn.export(tmp_path / "model.pt")
    state = torch.load(exported, weights_only=True)
    state["arch"] = "resnet18"  # the weights of another architecture
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match=r"holds weights that do not fit its model 'resnet18'"):
        load_learner(tmp_path / "edited.pt")
    del state["classes"]
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(ValueError, match=r"lacks \['classes'\]; it is incomplete"):
        load_learner(tmp_path / "cut.pt")


def test_export_refuses_what_it_could_not_rebuild(learn: Learner, tmp_path: Path) -> None:
    own = Learner(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3)), learn.dls, progress=False)
    with pytest.raises(ValueError, match=r"needs a model built by it .* got Sequential"):
        own.export(tmp_path / "own.pt")
    with pytest.raises(IsADirectoryError, match=r"export path .* is a folder"):
        learn.export(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_of_other_classes_is_refused_on_load(tmp_path: Path) -> None:
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    model = build_model("simple_cnn", dls.n_classes)
    saved = Learner(model, dls, device="cpu", progress=False).save(tmp_path / "a.pt")
    other = make_dataloaders("shapes", image_size=16, batch_size=32)
    other.classes = list(reversed(other.classes))  # the same count, read in another order
    learn = Learner(build_model("simple_cnn", 3), other, device="cpu", progress=False)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(ValueError, match=r"was trained on classes \['circle', 'square', 'tri"):
        learn.load(saved)
    assert all(torch.equal(v, before[k]) for k, v in learn.model.state_dict().items())
    Learner(build_model("simple_cnn", 3), dls, device="cpu", progress=False).load(saved)


@pytest.fixture(scope="module")
def cropped(tmp_path_factory: pytest.TempPathFactory) -> Learner:
    """A learner on 'crop' data: files 40 px wide, 24 high (their centred square is kept)."""
    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir()
        for i in range(6):
            pixels = np.clip(rng.normal(colour, 40, (24, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    dls = make_dataloaders(
        "image_folder", path=root, image_size=16, batch_size=6, resize_method="crop"
    )
    seed_everything(0)
    learner = Learner(build_model("simple_cnn", 3), dls, seed=0, device="cpu", progress=False)
    learner.fit(1, 1e-2)
    return learner


def test_raw_pixels_are_fitted_as_the_datas_files_are_cropped_or_squished(
    cropped: Learner,
) -> None:
    wide = torch.randint(0, 256, (3, 24, 40), generator=torch.Generator().manual_seed(1))
    wide = wide.to(torch.uint8)
    centre = wide[:, :, 8:32]  # the largest centred square, as ImageOps.fit takes it
    assert torch.equal(cropped.predict(wide), cropped.predict(centre))  # it used to squish
    squished = resize_uint8(wide[None], 16)[0]
    assert not torch.allclose(cropped.predict(wide), cropped.predict(squished))


def test_inputs_that_are_neither_pixels_nor_a_normalised_image_are_refused_or_warned(
    learn: Learner, folder: Path
) -> None:
    pixels = torch.randint(0, 256, (3, 16, 16), generator=torch.Generator().manual_seed(0))
    for wrong in (pixels.long(), pixels.int(), pixels > 100, pixels.numpy().astype(np.int32)):
        with pytest.raises(ValueError, match=r"holds (int64|int32|bool) values, which are neither"):
            learn.predict(wrong)
    with pytest.warns(UserWarning, match=r"x reaches 25\d, but an image normalised as the tr"):
        learn.predict(pixels.float())
    no_statistics = ImageFormat(in_channels=3, image_size=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # without statistics the fixed bound, 30, holds
        model_input(torch.full((3, 8, 8), 29.0), no_statistics)
    with pytest.warns(UserWarning, match=r"x reaches 31, but a normalised image stays within"):
        model_input(torch.full((3, 8, 8), 31.0), no_statistics)
    with pytest.raises(ValueError, match=r"is a folder: pass the image files in it"):
        learn.predict(folder / "valid")
    with pytest.raises(ValueError, match=r"one kind throughout, but it holds \['PosixPath', 'T"):
        learn.predict([folder / "valid" / "red" / "00.png", pixels.to(torch.uint8)])
    with pytest.raises(ValueError, match=r"but got a generator"):
        learn.predict(p for p in [folder])
    with pytest.raises(ValueError, match=r"x is an empty list"):
        learn.predict([])


def test_a_list_of_images_of_any_sizes_is_one_batch(learn: Learner) -> None:
    gen = torch.Generator().manual_seed(0)
    small, large = (
        torch.randint(0, 256, (3, s, s), generator=gen).to(torch.uint8) for s in (12, 30)
    )
    batch = learn.predict([small, large.numpy()])
    assert batch.shape == (2, 3)
    assert torch.allclose(batch[0], learn.predict(small), atol=1e-6)
    assert torch.allclose(batch[1], learn.predict(large), atol=1e-6)
    with pytest.raises(ValueError, match=r"x\[1\] must be one image \(C, H, W\) in a list"):
        learn.predict([small, large[None]])


def test_data_of_other_classes_given_later_is_refused_and_so_is_its_export(
    learn: Learner, tmp_path: Path
) -> None:
    shapes = make_dataloaders("shapes", image_size=16, batch_size=32, n_classes=5)
    with pytest.raises(ValueError, match=r"the model has 3 outputs but the data has n_classes=5"):
        learn.dls = shapes  # as learn.dls = learn.dls.resize(32) would be taken
    assert learn.dls.n_classes == 3
    learn.dls = learn.dls.resize(20)  # the same classes at another size: fine
    try:
        assert learn.dls.image_size == 20
    finally:
        learn.dls = learn.dls.resize(16)
    exported = learn.export(tmp_path / "model.pt")
    state = torch.load(exported, weights_only=True)
    for change, problem in (
        ({"classes": ["a", "b"]}, r"2 class names for a model of 3 outputs"),
        ({"std": [0.2, 0.0, 0.3]}, r"std must be > 0 \(it divides\)"),
        ({"mean": [0.5]}, r"mean must hold one number per channel \(3\)"),
        ({"image_size": -3}, r"image_size must be an integer >= 1, but is -3"),
        ({"resize_method": "stretch"}, r"resize_method must be one of \['squish', 'crop'\]"),
    ):
        torch.save({**state, **change}, tmp_path / "edited.pt")
        with pytest.raises(ValueError, match=r"'.*edited\.pt' does not fit together: " + problem):
            load_learner(tmp_path / "edited.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"'.*empty\.pt' is not a PyTorch file \(it is empty;"):
        load_learner(tmp_path / "empty.pt")
    with pytest.raises(ValueError, match=r"is an export \(learn\.export\), not a training chec"):
        learn.load(exported)


@pytest.mark.parametrize("protocol", [0, 1])
def test_an_export_or_checkpoint_of_pickle_protocol_0_or_1_is_named_and_not_unpickled(
    learn: Learner, tmp_path: Path, protocol: int
) -> None:
    """torch.save with an old pickle protocol writes a file torch.load(weights_only=True)
    cannot read: it was called "not a PyTorch file (it starts with b'L119'; torch.save writes
    a zip archive): pass the .pt file, not a JSON, text or image file" of the .pt file."""
    state = torch.load(learn.export(tmp_path / "model.pt"), weights_only=True)
    old = tmp_path / "old.pt"
    torch.save(state, old, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    written = r"'.*old\.pt' was written by torch\.save with pickle protocol 0 or 1, which torch"
    for load, what in ((load_learner, "export"), (learn.load, "checkpoint")):
        with pytest.raises(ValueError, match=f"^{what} file {written}") as refused:
            load(old)
        assert "default protocol" in str(refused.value)
        assert "weights_only=False" not in str(refused.value)


def test_a_predictor_runs_many_images_in_chunks_with_the_same_probabilities(
    learn: Learner, folder: Path, tmp_path: Path
) -> None:
    """A list of thousands of files, or a large uint8 batch, went through the model in one
    pass: memory grew with the number of images until the process was killed."""
    from trainers.export import PREDICT_BATCH

    predictor = load_learner(learn.export(tmp_path / "m.pt"), device="cpu")
    sizes: list[int] = []
    predictor.model.register_forward_hook(lambda _m, args, _out: sizes.append(len(args[0])))
    pixels = torch.randint(0, 256, (2 * PREDICT_BATCH + 5, 3, 20, 20), dtype=torch.uint8)
    probs = predictor.predict(pixels)
    assert sizes == [PREDICT_BATCH, PREDICT_BATCH, 5]
    one_by_one = torch.stack([predictor.predict(image) for image in pixels])
    assert torch.allclose(probs, one_by_one, atol=1e-6)
    files = [_valid_file(folder, name) for name in COLOURS] * (PREDICT_BATCH // 3 + 1)
    sizes.clear()
    assert predictor.predict_class(files) == list(COLOURS) * (PREDICT_BATCH // 3 + 1)
    assert sizes == [PREDICT_BATCH, len(files) - PREDICT_BATCH]


def test_learner_predict_runs_many_images_in_chunks_as_the_predictor_does(
    learn: Learner, tmp_path: Path
) -> None:
    """``Learner.predict`` ran a large batch through the model in one pass as the predictor
    did: the same chunks now, and the predictor's probabilities."""
    from trainers.export import PREDICT_BATCH

    pixels = torch.randint(0, 256, (PREDICT_BATCH + 3, 3, 20, 20), dtype=torch.uint8)
    expected = load_learner(learn.export(tmp_path / "m.pt"), device="cpu").predict(pixels)
    sizes: list[int] = []
    hook = learn.model.register_forward_hook(lambda _m, args, _out: sizes.append(len(args[0])))
    try:
        probs = learn.predict(pixels)
    finally:
        hook.remove()
    assert sizes == [PREDICT_BATCH, 3]
    assert torch.allclose(probs, expected, atol=1e-6)


def test_a_predictor_stays_where_it_was_when_a_device_is_not_there(
    learn: Learner, tmp_path: Path
) -> None:
    predictor = load_learner(learn.export(tmp_path / "m.pt"), device="cpu")
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    with pytest.raises((AssertionError, RuntimeError)):
        predictor.to("cuda")
    assert predictor.device == torch.device("cpu")
    assert next(predictor.model.parameters()).device == torch.device("cpu")


def _next_line() -> int:
    """The line after the caller's: where a warning said at the next call must point."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


def test_predict_warns_of_raw_pixels_beyond_what_the_datas_statistics_allow() -> None:
    # The bound was an absolute 30: scikit-learn's digits as floats (0..16) were taken for a
    # normalised image and predicted at 42% accuracy without a word.
    dls = make_dataloaders("digits", image_size=8, batch_size=64, seed=0)
    seed_everything(0)
    learn = Learner(build_model("simple_cnn", 10, in_channels=1), dls)
    digits = torch.linspace(0, 16, 64).view(1, 1, 8, 8)
    with pytest.warns(
        UserWarning, match=r"x reaches 16, but .* reaches 1\.\d+ at most: that"
    ) as said:
        line = _next_line()
        learn.predict(digits)
    assert [(w.filename, w.lineno) for w in said] == [(__file__, line)]  # the user's call
    predictor = Predictor(
        learn.model,
        classes=[str(i) for i in range(10)],
        image_size=8,
        in_channels=1,
        mean=dls.mean,
        std=dls.std,
    )
    with pytest.warns(UserWarning, match=r"x reaches 16, but") as said:
        line = _next_line()
        predictor.predict(digits)
    assert [(w.filename, w.lineno) for w in said] == [(__file__, line)]
    with pytest.warns(UserWarning, match=r"x reaches 16, but") as said:
        line = _next_line()
        predictor.predict([digits[0], digits[0]])  # a list of images: each checked
    assert {(w.filename, w.lineno) for w in said} == {(__file__, line)}
    with pytest.warns(UserWarning, match=r"x reaches 16, but") as said:
        line = _next_line()
        predictor.predict_class(digits)  # through predict: still the user's call
    assert [(w.filename, w.lineno) for w in said] == [(__file__, line)]
    black_and_white = torch.tensor([0, 255], dtype=torch.uint8).repeat(32).view(1, 1, 8, 8)
    jittered = make_dataloaders(
        "digits", image_size=8, batch_size=64, seed=0, augment={"jitter": 0.9}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the most extreme image, normalised: no warning
        learn.predict(predictor.normalise(black_and_white))
        for _ in range(5):  # nor strongly augmented training batches
            learn.predict(jittered.train.one_batch()[0])


@pytest.mark.parametrize(
    ("shape", "in_channels", "hint"),
    [
        (
            (200, 8, 8),
            1,
            r"^a batch of greyscale images \(N, H, W\) needs its channel axis: x\[:, None\] \(",
        ),
        ((8, 8, 3), 1, r"channels-last: permute\(2, 0, 1\) it; the model takes greyscale images"),
        ((8, 8, 3), 3, r"channels-last: permute\(2, 0, 1\) it \(a PIL image or an image file is"),
        ((4, 8, 8, 3), 3, r"channels-last: permute\(0, 3, 1, 2\) it \(a PIL"),
        ((4, 8, 8, 1), 1, r"channels-last: permute\(0, 3, 1, 2\) it \(a PIL"),
        ((8, 8, 1), 3, r"permute\(2, 0, 1\) it; the model takes 3 channels: repeat the one"),
        ((1, 8, 8), 3, r"^the model takes 3 channels: repeat the one \(expand to 3\) \(a PIL"),
        ((4, 1, 8, 8), 3, r"^the model takes 3 channels: repeat the one"),
        ((5, 8, 8), 3, r"axis: x\[:, None\]; the model takes 3 channels: repeat the one"),
        ((2, 3, 8, 8), 1, r"^the model takes greyscale images: average uint8 pixels over the col"),
    ],
)
def test_a_channel_mismatch_says_what_to_pass(
    shape: tuple[int, ...], in_channels: int, hint: str
) -> None:
    predictor = Predictor(
        build_model("simple_cnn", 2, in_channels=in_channels),
        classes=["a", "b"],
        image_size=8,
        in_channels=in_channels,
        mean=[0.5] * in_channels,
        std=[0.25] * in_channels,
    )
    with pytest.raises(ValueError) as raised:
        predictor.predict(torch.zeros(shape, dtype=torch.uint8))
    advice = str(raised.value).split(f"but got shape {shape}; ")[1]
    assert re.search(hint, advice), advice
