"""Review of the data pipeline with real data: dataset contracts, augmentation, inference."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainers import Learner, build_model
from trainers.data import DATASETS, ImageSource, make_dataloaders
from trainers.data.augment import Augment


class FloatPixels(ImageSource):
    """Twelve images of two classes whose ``images`` returns floats in 0..1, not uint8."""

    def __init__(self) -> None:
        self.labels = torch.arange(2).repeat(6)
        self.classes = ["a", "b"]
        self.valid_mask = None

    def images(self, image_size: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return torch.rand(len(self.labels), 3, image_size, image_size, generator=generator)


def test_a_dataset_returning_float_pixels_is_refused_naming_the_dtype(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # float pixels in 0..1 were read as 0..255 values: batches had a mean near 400, std near 255
    monkeypatch.setitem(DATASETS, "floaty", FloatPixels)
    with pytest.raises(
        ValueError, match=r"'FloatPixels' images\(4\) returned dtype torch.float32.*uint8"
    ):
        make_dataloaders("floaty", image_size=4, batch_size=4)


# ------------------------------------------------------------------------------ augmentation


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"rotate": np.float32(10.0)}, {"rotate": 10.0}),
        ({"rotate": np.int64(15), "zoom": np.float32(1.25)}, {"rotate": 15.0, "zoom": 1.25}),
        ({"flip": np.bool_(True), "jitter": np.float16(0.5)}, {"flip": True, "jitter": 0.5}),
    ],
)
def test_augment_takes_numpy_scalars_as_every_other_numeric_argument(
    fields: dict, expected: dict
) -> None:
    # np.float32(10) was refused as 'must be a number in [0, 180]'
    values = Augment(**fields).to_dict()
    for name, value in expected.items():
        assert values[name] == value and type(values[name]) is type(value)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"rotate": np.float32(200.0)}, r"augment rotate must be a number in \[0, 180\]"),
        ({"zoom": np.float64("nan")}, r"augment zoom must be a number"),
        ({"jitter": np.bool_(True)}, r"augment jitter must be a number"),
        ({"flip": np.int64(1)}, r"augment flip must be True or False"),
    ],
)
def test_augment_still_refuses_numpy_values_out_of_range(fields: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Augment(**fields)


# ------------------------------------------------------------------------------ precompute


def test_precompute_on_a_body_that_never_saw_data_warns_and_not_once_trained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a random body's BatchNorm (mean 0, var 1) normalises nothing in eval mode: the cached head
    # ended at 50% error where the plain frozen fit reached 6%, without a word
    dls = make_dataloaders("digits", image_size=8, batch_size=64, seed=1)
    learn = Learner(
        build_model("simple_cnn", 10, in_channels=1), dls, seed=0, progress=False, device="cpu"
    )
    learn.freeze()
    with caplog.at_level(logging.WARNING, logger="trainers._inference"):
        learn.fit(1, 1e-3, precompute=True)
    assert "4 BatchNorm layers that never saw data" in caplog.text
    caplog.clear()
    learn.fit(1, 1e-3)  # the frozen body's BatchNorm layers learn the data's statistics
    with caplog.at_level(logging.WARNING, logger="trainers._inference"):
        learn.fit(1, 1e-3, precompute=True)
    assert "never saw data" not in caplog.text


# ------------------------------------------------------------------------------ inference


def test_predict_normalises_raw_uint8_pixels_as_the_loaders_do() -> None:
    # a uint8 image (PIL -> tensor, or the dataset's own pixels) was fed as 0..255 z-scores
    dls = make_dataloaders("digits", image_size=8, batch_size=64, seed=1)
    learn = Learner(
        build_model("simple_cnn", 10, in_channels=1), dls, seed=0, progress=False, device="cpu"
    )
    learn.fit(1, 3e-3)
    probs, _, _ = learn.get_preds()
    raw = dls.valid.images[:5]
    assert raw.dtype == torch.uint8
    assert torch.allclose(learn.predict(raw), probs[:5], atol=1e-5)
    assert torch.allclose(learn.predict(raw[0]), probs[0], atol=1e-5)


# ------------------------------------------------------------------------------ numpy sizes


def test_sizes_and_seeds_take_numpy_integers_and_progressive_resizing_with_them() -> None:
    # np.int64 sizes (np.arange / np.linspace(...).astype(int) schedules) were refused as
    # 'must be a positive integer', as were np.float32 valid_pct values
    dls = make_dataloaders(
        "digits",
        image_size=np.int64(8),
        batch_size=np.int32(64),
        valid_pct=np.float32(0.25),
        seed=np.uint8(1),
        num_workers=np.int64(0),
    )
    plain = make_dataloaders("digits", image_size=8, batch_size=64, valid_pct=0.25, seed=1)
    assert torch.equal(dls.valid_labels, plain.valid_labels)
    assert (type(dls.image_size), type(dls.batch_size), type(dls.seed)) == (int, int, int)
    for size in np.arange(12, 20, 4):
        dls = dls.resize(size)
        assert tuple(next(iter(dls.train))[0].shape) == (64, 1, int(size), int(size))
        assert type(dls.image_size) is int


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": np.bool_(True)}, r"image_size must be a positive integer"),
        ({"batch_size": np.int64(0)}, r"batch_size must be a positive integer"),
        ({"valid_pct": np.float32(1.0)}, r"valid_pct must be a number in \(0, 1\)"),
        ({"seed": np.int64(-1)}, r"seed must be a non-negative integer"),
    ],
)
def test_numpy_sizes_out_of_range_are_still_refused(kwargs: dict, match: str) -> None:
    arguments = {"image_size": 8, "batch_size": 64, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_dataloaders("digits", **arguments)


# ------------------------------------------------------------------------------ image_folder


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_unreadable_image_is_named_in_one_error(tmp_path: Path, num_workers: int) -> None:
    # the first bad file stopped the load: a folder with twelve needed twelve runs to clean
    for name in ("a", "b"):
        for i in range(3):
            (tmp_path / name).mkdir(exist_ok=True)
            Image.new("RGB", (6, 6), (40 * i, 0, 0)).save(tmp_path / name / f"{i}.png")
    bad = [tmp_path / "a" / f"bad{i:02d}.png" for i in range(12)]
    for path in bad:
        path.write_bytes(b"not a png")
    with pytest.raises(ValueError) as caught:
        make_dataloaders(
            "image_folder", image_size=4, batch_size=2, path=tmp_path, num_workers=num_workers
        )
    message = str(caught.value)
    assert message.startswith(f"Could not read 12 image files under '{tmp_path}': '{bad[0]}' (")
    assert all(str(path) in message for path in bad[:10]) and str(bad[10]) not in message
    assert message.endswith("; and 2 more. Remove or replace them.")


def test_images_a_level_too_deep_or_beside_the_classes_are_reported_not_skipped_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # cat/2019/*.png and stray root images were dropped without a word: half a class could go
    for name in ("cat", "dog"):
        (tmp_path / name / "2019" / "june").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (6, 6), (40 * i, 0, 0)).save(tmp_path / name / f"{i}.png")
    for i in range(2):
        Image.new("RGB", (6, 6)).save(tmp_path / "cat" / "2019" / f"deep{i}.PNG")
    Image.new("RGB", (6, 6)).save(tmp_path / "cat" / "2019" / "june" / "deeper.jpg")
    (tmp_path / "cat" / ".cache").mkdir()
    Image.new("RGB", (6, 6)).save(tmp_path / "cat" / ".cache" / "hidden.png")
    Image.new("RGB", (6, 6)).save(tmp_path / "stray.png")
    with caplog.at_level(logging.WARNING, logger="trainers.data._image_folder"):
        dls = make_dataloaders("image_folder", image_size=4, batch_size=2, path=tmp_path)
    assert len(dls.train_labels) + len(dls.valid_labels) == 6
    warnings = [r.getMessage() for r in caplog.records]
    assert any(
        f"skips 3 image(s) in the sub-folders of {tmp_path / 'cat'}, e.g." in w
        and str(tmp_path / "cat" / "2019" / "deep0.PNG") in w
        for w in warnings
    )
    assert any(
        f"skips 1 image(s) beside the class folders in {tmp_path}, e.g." in w for w in warnings
    )
    assert not any(str(tmp_path / "dog") in w for w in warnings)


def _line_angles(images: torch.Tensor) -> torch.Tensor:
    """Angle in degrees (clockwise on screen) of the bright line through each image's centre."""
    cols = torch.tensor([6, 26])
    rows = images[:, 0][:, :, cols].argmax(dim=1).float()  # (N, 2): the line's row at each column
    return torch.rad2deg(torch.atan((rows[:, 1] - rows[:, 0]) / float(cols[1] - cols[0])))


def test_rotate_turns_by_up_to_its_degrees_in_both_directions_about_the_centre() -> None:
    line = torch.zeros(400, 1, 33, 33)
    line[:, :, 16, :] = 1.0  # horizontal, through the centre
    angles = _line_angles(Augment(rotate=30)(line, generator=torch.Generator().manual_seed(0)))
    assert angles.abs().max() <= 30 + 3 and angles.abs().max() >= 25
    assert (angles > 10).float().mean() > 0.25 and (angles < -10).float().mean() > 0.25
    still = _line_angles(Augment(zoom=1.3)(line, generator=torch.Generator().manual_seed(0)))
    assert still.abs().max() == 0  # zoom alone neither turns nor transposes


@pytest.mark.parametrize("layout", ["classes", "train_valid"])
def test_a_macos_zips_macosx_folder_is_no_class(tmp_path: Path, layout: str) -> None:
    # unzipping a Finder zip adds __MACOSX/<class>/._x.png: it was taken for a class and refused
    # as 'has no images; ... if those are the classes, pass path=.../__MACOSX'
    splits = [tmp_path] if layout == "classes" else [tmp_path / "train", tmp_path / "valid"]
    for split in splits:
        for name in ("cat", "dog"):
            (split / name).mkdir(parents=True)
            (split / "__MACOSX" / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (6, 6), (40 * i, 0, 0)).save(split / name / f"{i}.png")
                (split / "__MACOSX" / name / f"._{i}.png").write_bytes(b"\x00\x05\x16\x07")
    dls = make_dataloaders("image_folder", image_size=4, batch_size=2, path=tmp_path)
    assert dls.classes == ["cat", "dog"]
    assert len(dls.train_labels) + len(dls.valid_labels) == 6 * len(splits)


def test_predict_names_an_image_given_channels_last_as_pil_and_numpy_give_it() -> None:
    # np.asarray(PIL image) is (H, W, C): it failed inside normalisation or the first conv
    dls = make_dataloaders("shapes", image_size=8, batch_size=16, n_per_class=4)
    learn = Learner(build_model("simple_cnn", dls.n_classes), dls, progress=False, device="cpu")
    pixels = np.array(Image.new("RGB", (8, 8), (200, 10, 10)))
    with pytest.raises(ValueError, match=r"C=3 channels.*\(8, 8, 3\).*permute\(2, 0, 1\)"):
        learn.predict(torch.as_tensor(pixels))
    probs = learn.predict(torch.as_tensor(pixels).permute(2, 0, 1))
    assert probs.shape == (dls.n_classes,) and float(probs.sum()) == pytest.approx(1.0)
