"""trainers.data: datasets (offline), seeded splits, loaders, augmentation, errors."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.data import (
    DATASETS,
    Augment,
    DataLoaders,
    ImageSource,
    TensorLoader,
    make_dataloaders,
    open_dataset,
)

# ---------------------------------------------------------------- helpers and tiny datasets


class Indexed(ImageSource):
    """Every image is filled with its own index (channel 0: index % 256, channel 1: // 256)."""

    def __init__(self, *, labels: list[int]) -> None:
        self.labels = torch.tensor(labels)
        self.classes = [f"c{i}" for i in range(int(self.labels.max()) + 1)]
        self.valid_mask = None

    def images(self, image_size: int) -> torch.Tensor:
        idx = torch.arange(len(self.labels))
        planes = torch.stack([idx % 256, idx // 256, torch.zeros_like(idx)], dim=1)
        return planes.to(torch.uint8)[:, :, None, None].expand(-1, -1, image_size, image_size)


@pytest.fixture
def indexed(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(DATASETS, "indexed", Indexed)
    return "indexed"


def ids(dls: DataLoaders, images: torch.Tensor) -> list[int]:
    """Recover the Indexed source's image ids from normalised images."""
    raw = (images * dls.std.view(1, -1, 1, 1) + dls.mean.view(1, -1, 1, 1)) * 255
    pixel = raw[:, :, 0, 0].round().long()
    return (pixel[:, 0] + 256 * pixel[:, 1]).tolist()


def epoch(loader: TensorLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader)


def same_batches(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


def write_png(path: Path, mode: str, size: tuple[int, int] = (12, 10), value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    color = value if channels == 1 else (value,) * channels
    Image.new(mode, size, color).save(path)


def image_folder(root: Path, counts: dict[str, int], mode: str = "RGB") -> Path:
    for k, (name, count) in enumerate(counts.items()):
        for i in range(count):
            write_png(root / name / f"{i}.png", mode, value=40 * k + i)
    return root


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX ubyte format of MNIST: magic (0, 0, 0x08, ndim), big-endian dims, bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str, n_train: int = 40) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", 10)):
        write_idx(
            root / folder / "raw" / f"{split}-images-idx3-ubyte",
            rng.integers(0, 256, (n, 28, 28)),
        )
        write_idx(root / folder / "raw" / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)


def write_cifar10(root: Path, per_batch: int = 8) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8),
            "labels": [int(v) for v in np.arange(per_batch) % 10],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))


# ------------------------------------------------------------------------------ datasets


def build(tmp_path: Path, name: str) -> DataLoaders:
    if name == "image_folder_flat":
        root = image_folder(tmp_path / "flat", {"cat": 5, "dog": 5})
        return make_dataloaders("image_folder", image_size=8, batch_size=4, path=root)
    if name == "image_folder_split":
        image_folder(tmp_path / "split" / "train", {"cat": 4, "dog": 4})
        image_folder(tmp_path / "split" / "valid", {"cat": 2, "dog": 1})
        return make_dataloaders("image_folder", image_size=8, batch_size=4, path=tmp_path / "split")
    if name in ("mnist", "fashion_mnist"):
        write_mnist(tmp_path, "MNIST" if name == "mnist" else "FashionMNIST")
        return make_dataloaders(name, image_size=14, batch_size=8, path=tmp_path, download=False)
    if name == "cifar10":
        write_cifar10(tmp_path)
        return make_dataloaders(
            name, image_size=16, batch_size=8, path=tmp_path, download=False, verify_checksums=False
        )
    if name == "shapes":
        return make_dataloaders("shapes", image_size=16, batch_size=8, n_per_class=10, n_classes=6)
    return make_dataloaders("digits", image_size=12, batch_size=64)


@pytest.mark.parametrize(
    ("name", "size", "channels", "n_classes", "n_train", "n_valid"),
    [
        ("digits", 12, 1, 10, 1438, 359),
        ("shapes", 16, 3, 6, 48, 12),
        ("image_folder_flat", 8, 3, 2, 8, 2),
        ("image_folder_split", 8, 3, 2, 8, 3),
        ("mnist", 14, 1, 10, 32, 8),
        ("fashion_mnist", 14, 1, 10, 32, 8),
        ("cifar10", 16, 3, 10, 32, 8),
    ],
)
def test_each_dataset_loads_offline_into_normalised_batches(
    tmp_path: Path, name: str, size: int, channels: int, n_classes: int, n_train: int, n_valid: int
) -> None:
    dls = build(tmp_path, name)
    xb, yb = next(iter(dls.train))
    assert (dls.image_size, dls.in_channels, dls.n_classes) == (size, channels, n_classes)
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert tuple(xb.shape[1:]) == (channels, size, size)
    assert (len(dls.train_labels), len(dls.valid_labels)) == (n_train, n_valid)
    assert dls.valid_images.shape == (n_valid, channels, size, size)
    assert len(dls.classes) == n_classes and int(yb.max()) < n_classes


def test_torchvision_datasets_keep_their_class_names(tmp_path: Path) -> None:
    assert build(tmp_path, "cifar10").classes[:2] == ["airplane", "automobile"]


def test_training_statistics_normalise_the_training_split() -> None:
    dls = make_dataloaders("shapes", image_size=16, batch_size=8, n_per_class=20)
    images = dls.train_images
    assert images.mean(dim=(0, 2, 3)) == pytest.approx([0.0] * 3, abs=1e-4)
    assert images.std(dim=(0, 2, 3), correction=0) == pytest.approx([1.0] * 3, abs=1e-3)


@pytest.mark.parametrize("channels", [1, 3])
def test_greyscale_datasets_repeat_to_rgb_on_request(channels: int) -> None:
    dls = make_dataloaders("digits", image_size=8, batch_size=16, channels=channels)
    assert dls.in_channels == channels and dls.valid_images.shape[1] == channels


def test_shapes_are_deterministic_by_seed() -> None:
    def first(seed: int) -> torch.Tensor:
        return make_dataloaders("shapes", image_size=12, batch_size=4, seed=seed).valid_images

    assert torch.equal(first(3), first(3))
    assert not torch.equal(first(3), first(4))


def test_image_folder_mixing_greyscale_and_rgba_loads_as_three_channels(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "grey.png", "L")
    write_png(tmp_path / "a" / "grey2.png", "L", value=10)
    write_png(tmp_path / "b" / "alpha.png", "RGBA", size=(20, 7))
    write_png(tmp_path / "b" / "rgb.jpg", "RGB")
    dls = make_dataloaders("image_folder", image_size=6, batch_size=2, path=tmp_path)
    assert dls.in_channels == 3 and dls.classes == ["a", "b"]
    assert dls.train_images.shape[1:] == (3, 6, 6)


def test_image_folder_warns_about_a_single_image_class(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image_folder(tmp_path, {"many": 4, "lonely": 1})
    with caplog.at_level(logging.WARNING, logger="trainers.data"):
        dls = make_dataloaders("image_folder", image_size=4, batch_size=2, path=tmp_path)
    assert "single image" in caplog.text and "lonely" in caplog.text
    assert dls.n_classes == 2


# ------------------------------------------------------------------------------ splitting


def valid_ids(dataset: str, **kwargs: object) -> list[int]:
    args: dict = {"image_size": 4, "batch_size": 8, "labels": [0] * 30 + [1] * 20, **kwargs}
    dls = make_dataloaders(dataset, **args)
    return ids(dls, dls.valid_images)


def test_split_is_fixed_by_seed_alone(indexed: str) -> None:
    reference = valid_ids(indexed, seed=1)
    assert valid_ids(indexed, seed=1, image_size=9, batch_size=3, augment="standard") == reference
    assert valid_ids(indexed, seed=2) != reference
    assert len(reference) == 10 and reference == sorted(reference)


def test_split_is_stratified(indexed: str) -> None:
    dls = make_dataloaders(indexed, image_size=2, batch_size=8, labels=[0] * 40 + [1] * 10)
    assert torch.bincount(dls.valid_labels).tolist() == [8, 2]


def test_resize_keeps_split_statistics_and_augment(indexed: str) -> None:
    dls = make_dataloaders(indexed, image_size=4, batch_size=8, labels=[0, 1] * 20, augment="light")
    bigger = dls.resize(10)
    assert bigger.image_size == 10 and bigger.valid_images.shape[-1] == 10
    assert ids(bigger, bigger.valid_images) == ids(dls, dls.valid_images)
    assert sorted(ids(bigger, bigger.train_images)) == sorted(ids(dls, dls.train_images))
    assert torch.equal(bigger.mean, dls.mean) and bigger.augment == dls.augment


def test_image_folder_split_layout_ignores_valid_pct(tmp_path: Path) -> None:
    image_folder(tmp_path / "train", {"x": 3, "y": 3})
    image_folder(tmp_path / "valid", {"x": 1})
    dls = make_dataloaders("image_folder", image_size=4, batch_size=2, path=tmp_path, valid_pct=0.5)
    assert len(dls.train_labels) == 6 and dls.valid_labels.tolist() == [0]


# ------------------------------------------------------------------------------ loaders


def test_validation_is_never_augmented_nor_shuffled() -> None:
    plain = make_dataloaders("digits", image_size=10, batch_size=50)
    augmented = make_dataloaders("digits", image_size=10, batch_size=50, augment="standard")
    assert same_batches(epoch(plain.valid), epoch(augmented.valid))
    assert torch.equal(torch.cat([x for x, _ in plain.valid]), plain.valid_images)
    assert not torch.equal(next(iter(plain.train))[0], next(iter(augmented.train))[0])


def test_augmentation_does_not_change_the_training_order(indexed: str) -> None:
    args: dict = {"image_size": 4, "batch_size": 8, "labels": [0, 1] * 20}
    plain = make_dataloaders(indexed, **args)
    flipped = make_dataloaders(indexed, augment={"flip": True}, **args)
    assert [y.tolist() for _, y in plain.train] == [y.tolist() for _, y in flipped.train]


def test_same_seed_gives_identical_epochs_other_seed_does_not() -> None:
    def first_epoch(seed: int) -> list:
        dls = make_dataloaders("digits", image_size=8, batch_size=128, seed=seed, augment="light")
        return epoch(dls.train)

    assert same_batches(first_epoch(5), first_epoch(5))
    assert not same_batches(first_epoch(5), first_epoch(6))


def _first_draws(generator: torch.Generator) -> tuple[int, ...]:
    return tuple(torch.randint(2**31, (8,), generator=generator).tolist())


def test_reseed_gives_each_seed_streams_shared_with_no_other_seed_nor_the_weights() -> None:
    """Order, augmentation and ``seed_everything``'s weights: no two start on the same draws.

    Seeding the augmentation with ``seed + 1`` once made it seed ``seed + 1``'s shuffle order.
    """
    loader = TensorLoader(torch.zeros(6, 1, 2, 2), torch.zeros(6), batch_size=2, shuffle=True)
    draws: dict[tuple[int, str], tuple[int, ...]] = {}
    for seed in (0, 1, 2, 2**64 - 1):  # torch's CPU generator keeps a seed's low 32 bits
        loader.reseed(seed)
        assert loader.seed == seed
        draws[seed, "order"] = _first_draws(loader._order_gen)
        draws[seed, "augment"] = _first_draws(loader._augment_gen)
        draws[seed, "weights"] = _first_draws(torch.Generator().manual_seed(seed))
    assert len(set(draws.values())) == len(draws)


def test_derive_seed_is_fixed_per_seed_and_stream_and_refuses_a_nameless_stream() -> None:
    from trainers.seeding import derive_seed

    assert derive_seed(7, "order") == derive_seed(7, "order")
    assert len({derive_seed(s, n) for s in (0, 1) for n in ("order", "augment")}) == 4
    assert all(0 <= derive_seed(2**64 - 1, n) < 2**64 for n in ("order", "augment"))
    with pytest.raises(ValueError, match="stream must be a non-empty name, but got ''"):
        derive_seed(0, "")


def test_reseed_repeats_what_a_loader_built_with_that_seed_draws() -> None:
    images, labels = torch.rand(40, 1, 6, 6), torch.arange(40) % 4
    args: dict = {"batch_size": 8, "shuffle": True, "augment": Augment(flip=True, rotate=10)}
    built = TensorLoader(images, labels, seed=3, **args)
    reseeded = TensorLoader(images, labels, seed=0, **args)
    epoch(reseeded)
    reseeded.reseed(3)
    assert same_batches(epoch(built), epoch(reseeded))
    assert same_batches(epoch(built), epoch(reseeded))  # and goes on as it would


def test_a_numpy_integer_seeds_as_the_same_int() -> None:
    # make_dataloaders took np.int64 seeds, and reseed and seed_everything refused them.
    from trainers import seed_everything

    images, labels = torch.rand(40, 1, 6, 6), torch.arange(40) % 4
    built = TensorLoader(images, labels, batch_size=8, shuffle=True, seed=3)
    reseeded = TensorLoader(images, labels, batch_size=8, shuffle=True, seed=0)
    reseeded.reseed(np.int64(3))
    assert type(reseeded.seed) is int
    assert same_batches(epoch(built), epoch(reseeded))
    seed_everything(np.uint32(5))
    drawn = torch.rand(3)
    seed_everything(5)
    assert torch.equal(drawn, torch.rand(3))


@pytest.mark.parametrize("seed", [-1, 2**64, 1.0, True, "0", np.bool_(True), np.int64(-2)])
def test_reseed_refuses_a_seed_outside_torchs_range(seed: object) -> None:
    loader = TensorLoader(torch.zeros(2, 1, 2, 2), torch.zeros(2), batch_size=2)
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer below 2\*\*64"):
        loader.reseed(seed)  # type: ignore[arg-type]


def test_state_dict_round_trip_reproduces_the_next_epoch() -> None:
    dls = make_dataloaders("digits", image_size=8, batch_size=128, augment="light")
    epoch(dls.train)
    state = dls.state_dict()
    partial = iter(dls.train)
    next(partial)  # an interrupted epoch (as lr_find leaves it) consumed RNG
    dls.load_state_dict(state)
    fresh = make_dataloaders("digits", image_size=8, batch_size=128, augment="light")
    fresh.load_state_dict(state)
    assert same_batches(epoch(dls.train), epoch(fresh.train))


def test_one_batch_is_the_next_epochs_first_and_draws_nothing() -> None:
    dls = make_dataloaders("digits", image_size=8, batch_size=128, augment="light")
    untouched = make_dataloaders("digits", image_size=8, batch_size=128, augment="light")
    xb, yb = dls.one_batch()
    assert xb.shape == (128, 1, 8, 8) and yb.shape == (128,)
    vx, vy = dls.valid.one_batch()
    assert torch.equal(vx, dls.valid_images[:128]) and torch.equal(vy, dls.valid.labels[:128])
    first, *rest = epoch(dls.train)  # the training run goes on as if nobody had looked
    assert torch.equal(first[0], xb) and torch.equal(first[1], yb)
    assert same_batches([first, *rest], epoch(untouched.train))
    peeked, fresh = (
        make_dataloaders("digits", image_size=8, batch_size=128, augment="light") for _ in "ab"
    )
    next(iter(peeked.train))  # what one_batch spares: a look that moves the streams
    assert not same_batches(epoch(peeked.train), epoch(fresh.train))


def test_oversampling_balances_a_skewed_set(indexed: str) -> None:
    labels = [0] * 160 + [1] * 20 + [2] * 20
    args: dict = {"image_size": 2, "batch_size": 16, "labels": labels}
    plain = make_dataloaders(indexed, **args)
    balanced = make_dataloaders(indexed, oversample=True, **args)
    drawn = torch.cat([y for _ in range(5) for _, y in balanced.train])
    shares = torch.bincount(drawn, minlength=3).double() / len(drawn)
    assert shares.tolist() == pytest.approx([1 / 3] * 3, abs=0.05)
    assert len(balanced.train) == len(plain.train)


@pytest.mark.parametrize(
    ("n", "batch_size", "batches"), [(41, 8, 5), (40, 8, 5), (33, 8, 4), (42, 8, 6), (1, 8, 1)]
)
def test_train_drops_only_a_final_single_image_batch(n: int, batch_size: int, batches: int) -> None:
    train = TensorLoader(
        torch.zeros(n, 1, 2, 2), torch.zeros(n), batch_size=batch_size, drop_single=True
    )
    sizes = [len(y) for _, y in train]
    assert len(train) == batches == len(sizes) and sum(sizes) in (n, n - 1)
    assert min(sizes) > 1 or n == 1


def test_sample_weights_stay_on_the_cpu_beside_the_order_generator() -> None:
    # the order is drawn with a CPU generator: weights on the batches' device would fail there
    train = TensorLoader(
        torch.zeros(6, 1, 2, 2), torch.arange(6), batch_size=3, sample_weights=[1, 1, 1, 0, 0, 0]
    ).to("meta")
    assert train.sample_weights is not None and train.sample_weights.device.type == "cpu"
    xb, yb = next(iter(train))
    assert xb.device.type == yb.device.type == "meta"
    order = TensorLoader(
        torch.zeros(6, 1, 2, 2), torch.arange(6), batch_size=3, sample_weights=[1, 1, 1, 0, 0, 0]
    )._epoch_order()
    assert set(order.tolist()) <= {0, 1, 2}


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([1.0, 1.0], r"one weight per image, shape \(3,\), but got shape \(2,\)"),
        ([[1.0, 1.0, 1.0]], r"shape \(3,\), but got shape \(1, 3\)"),
        ([1.0, -1.0, 1.0], "finite and non-negative with at least one positive"),
        ([0.0, 0.0, 0.0], "finite and non-negative with at least one positive"),
        ([1.0, float("nan"), 1.0], "finite and non-negative"),
        (["a", "b", "c"], "sample_weights must be numbers, one per image"),
    ],
)
def test_bad_sample_weights_are_named(weights: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TensorLoader(torch.zeros(3, 1, 2, 2), torch.zeros(3), batch_size=2, sample_weights=weights)


def test_to_device_moves_batches_and_returns_the_loaders() -> None:
    dls = make_dataloaders("digits", image_size=8, batch_size=32, augment="standard")
    assert dls.to("meta") is dls
    xb, yb = next(iter(dls.train))
    assert xb.device.type == yb.device.type == dls.valid_images.device.type == "meta"


@pytest.mark.parametrize("augment", [{"flip": True}, {"flip": True, "jitter": 0.1}])
def test_flip_without_warp_runs_on_the_batch_device(augment: dict) -> None:
    dls = make_dataloaders("digits", image_size=8, batch_size=32, augment=augment).to("meta")
    xb, _ = next(iter(dls.train))
    assert xb.device.type == "meta" and xb.shape == (32, 1, 8, 8)


# ------------------------------------------------------------------------------ augment


def test_flip_only_mirrors_each_image_or_leaves_it() -> None:
    x = torch.randn(32, 3, 5, 5)
    out = Augment(flip=True)(x, generator=torch.Generator().manual_seed(0))
    mirrored = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 0 < sum(mirrored) < 32


def test_geometric_augmentation_keeps_shape_and_changes_pixels() -> None:
    x = torch.randn(4, 1, 9, 9)
    out = Augment(rotate=30, zoom=1.3, jitter=0.2)(x, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and not torch.allclose(out, x)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"rotation": 10}, r"unknown key 'rotation'.*\['flip', 'rotate', 'zoom', 'jitter'\]"),
        ({"zoom": 0.5}, r"zoom must be a number in \[1, inf\)"),
        ({"rotate": -1}, r"rotate must be a number in \[0, 180\]"),
        ({"jitter": 1.0}, r"jitter must be a number in \[0, 1\)"),
        ({"flip": "yes"}, "flip must be True or False"),
        ("heavy", r"preset must be one of \['light', 'none', 'standard'\]"),
    ],
)
def test_bad_augment_is_rejected_with_the_accepted_values(spec: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_dataloaders("digits", image_size=8, batch_size=8, augment=spec)


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "imagenet"}, r"dataset must be one of \[.*'digits'.*\], but got 'imagenet'"),
        ({"image_size": 0}, "image_size must be a positive integer, but got 0"),
        ({"image_size": -3}, "image_size must be a positive integer"),
        ({"image_size": 8.0}, "image_size must be a positive integer, but got 8.0"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"valid_pct": 0}, r"valid_pct must be a number in \(0, 1\)"),
        ({"valid_pct": 1.0}, r"valid_pct must be a number in \(0, 1\)"),
        ({"num_workers": -1}, "num_workers must be a non-negative integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"oversample": "yes"}, "oversample must be True or False"),
        ({"n_per_class": 5}, r"'digits' got an unknown keyword 'n_per_class'; it accepts \["),
        ({"path": "/tmp"}, r"path is only used by the datasets \["),
        ({"dataset": "image_folder"}, "'image_folder' needs path="),
        ({"dataset": "shapes", "n_classes": 7}, "shapes n_classes must be an integer from 2 to 6"),
        ({"dataset": "shapes", "n_classes": 3.0}, r"n_classes must be an integer .* got 3\.0"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, match: str) -> None:
    args = {"dataset": "digits", "image_size": 8, "batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_dataloaders(**args)


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"{missing}.*does not exist"):
        make_dataloaders("image_folder", image_size=8, batch_size=8, path=missing)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    image_folder(tmp_path, {"a": 2, "b": 2})
    broken = tmp_path / "b" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match=f"Could not read image file '{broken}'"):
        make_dataloaders("image_folder", image_size=8, batch_size=8, path=tmp_path)


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ({}, "has no class folders"),
        ({"a": 2, "empty": 0}, r"class folder '.*empty' has no images"),
    ],
)
def test_empty_folders_are_rejected_with_their_path(
    tmp_path: Path, layout: dict[str, int], match: str
) -> None:
    image_folder(tmp_path, layout)
    for name in layout:
        (tmp_path / name).mkdir(exist_ok=True)
    with pytest.raises(ValueError, match=match):
        make_dataloaders("image_folder", image_size=8, batch_size=8, path=tmp_path)


def test_missing_torchvision_files_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=f"put torchvision's files for mnist .* in '{tmp_path}"):
        make_dataloaders("mnist", image_size=8, batch_size=8, path=tmp_path, download=False)


@pytest.mark.parametrize("root_exists", [True, False])
def test_a_failed_download_leaves_nothing_behind(tmp_path: Path, root_exists: bool) -> None:
    """A real download that fails (torchvision's own code against a closed local port): it
    left an empty ``MNIST/raw`` in the folder, which then failed as an ``image_folder``."""
    import socket

    from torchvision import datasets

    from trainers.data._torchvision import _MNIST_FILES, TorchvisionDataset

    with socket.socket() as sock:  # a port nothing listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = type("MNIST", (datasets.MNIST,), {"mirrors": [f"http://127.0.0.1:{port}/"]})
    root = tmp_path / "classes"
    if root_exists:
        image_folder(root, {"a": 4, "b": 4})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(RuntimeError, match=rf"Could not download mnist under '{root}'"):
        TorchvisionDataset(
            "mnist", unreachable, "MNIST/raw", _MNIST_FILES, path=root, download=True, channels=1
        )
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    if root_exists:  # the folder still loads as the image_folder it was
        make_dataloaders("image_folder", image_size=8, batch_size=4, path=root, valid_pct=0.25)


def test_cifar10_checksums_are_verified_by_default(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(RuntimeError, match=r"Could not read cifar10 .*corrupted"):
        make_dataloaders("cifar10", image_size=8, batch_size=8, path=tmp_path, download=False)


def test_split_layout_with_an_empty_valid_folder_names_it(tmp_path: Path) -> None:
    image_folder(tmp_path / "train", {"x": 2, "y": 2})
    (tmp_path / "valid").mkdir()
    with pytest.raises(ValueError, match=f"'{tmp_path / 'valid'}' has no class folders"):
        make_dataloaders("image_folder", image_size=4, batch_size=2, path=tmp_path)


# ------------------------------------------------------------------------------ review


def test_image_folder_reads_16_bit_greyscale_over_its_full_range(tmp_path: Path) -> None:
    for name, level in (("dark", 1000), ("mid", 32896)):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(np.full((6, 6), level, dtype=np.uint16)).save(
                tmp_path / name / f"{i}.png"
            )
    assert Image.open(tmp_path / "dark" / "0.png").mode.startswith("I;16")
    pixels = open_dataset("image_folder", path=tmp_path).images(4)
    assert pixels.shape == (4, 3, 4, 4)
    assert pixels[:2].unique().tolist() == [4] and pixels[2:].unique().tolist() == [128]


@pytest.mark.parametrize(
    ("mode", "to_image"),
    [
        ("I", lambda a: Image.fromarray(a.astype(np.int32) * 257)),  # 16-bit levels, int32 file
        ("F", lambda a: Image.fromarray(a.astype(np.float32) / 255)),  # a float image in 0..1
    ],
)
def test_image_folder_refuses_32_bit_images_it_would_clip(
    tmp_path: Path, mode: str, to_image: Any
) -> None:
    """PIL's conversion to 8 bits clips modes I and F (every pixel 0 or 255, or 0 or 1): each such
    file is named, with what to save instead, rather than a dataset of blank images."""
    levels = np.random.default_rng(0).integers(0, 256, (6, 6))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(levels.astype(np.uint8)).save(tmp_path / name / "0.png")
        to_image(levels).save(tmp_path / name / "1.tif")
    assert Image.open(tmp_path / "a" / "1.tif").mode == mode
    with pytest.raises(ValueError, match=r"Could not read 2 image files") as info:
        make_dataloaders("image_folder", image_size=6, batch_size=2, path=tmp_path)
    for name in ("a", "b"):
        assert str(tmp_path / name / "1.tif") in str(info.value)
    assert f"(PIL mode '{mode}')" in str(info.value) and "16-bit greyscale" in str(info.value)
    assert str(info.value).count("PIL mode") == 1  # one cause, said once
    for name in ("a", "b"):  # the same levels as 8-bit files load over their full range
        (tmp_path / name / "1.tif").unlink()
        Image.fromarray(levels.astype(np.uint8)).save(tmp_path / name / "1.tif")
    pixels = open_dataset("image_folder", path=tmp_path).images(6)
    assert pixels.shape == (4, 3, 6, 6) and pixels.max() > 200 and pixels.min() < 50


def test_precompute_fit_advances_the_real_training_loader_every_epoch() -> None:
    # checkpoints and snapshots taken after an epoch of a precomputed fit read learn.dls: its
    # order must be where the cached loader's is, or a resumed run replays the first epoch
    from trainers import Learner, build_model
    from trainers.callbacks import Callback

    class RecordOrder(Callback):
        def __init__(self) -> None:
            self.states: list[torch.Tensor] = []

        def after_epoch(self) -> None:
            self.states.append(self.learn.dls.train.state_dict()["order"].clone())

    dls = make_dataloaders("shapes", image_size=8, batch_size=8, n_per_class=6)
    start = dls.train.state_dict()["order"].clone()
    record = RecordOrder()
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    learn = Learner(model, dls, device="cpu", progress=False, callbacks=[record])
    learn.freeze()
    learn.fit(2, 1e-3, precompute=True)
    first, second = record.states
    assert not torch.equal(first, start) and not torch.equal(second, first)
    reference = make_dataloaders("shapes", image_size=8, batch_size=8, n_per_class=6)
    epoch(reference.train)
    assert torch.equal(first, reference.train.state_dict()["order"])
