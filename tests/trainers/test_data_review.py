"""Review of trainers.data: registry contracts, image_folder mistakes, seeds at the edges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from trainers.data import DATASETS, ImageSource, make_dataloaders, open_dataset


class Tiny(ImageSource):
    """Six images of two classes; ``images`` can be told to misbehave."""

    def __init__(
        self, *, labels: tuple[int, ...] = (0, 0, 0, 1, 1, 1), wrong_size: bool = False
    ) -> None:
        self.labels = torch.tensor(labels)
        self.classes = ["a", "b"]
        self.valid_mask = None
        self.wrong_size = wrong_size

    def images(self, image_size: int) -> torch.Tensor:
        size = image_size + 1 if self.wrong_size else image_size
        return torch.zeros(len(self.labels), 3, size, size, dtype=torch.uint8)


def _png(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (value, value, value)).save(path)


def _classes(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        for i in range(count):
            _png(root / name / f"{i}.png", 40 * i)
    return root


# ------------------------------------------------------------------------------ registry


def test_registered_factory_taking_any_keyword_receives_the_dataset_kwargs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    def factory(**options: Any) -> ImageSource:
        seen.update(options)
        return Tiny()

    monkeypatch.setitem(DATASETS, "anykw", factory)
    dls = make_dataloaders("anykw", image_size=4, batch_size=2, flavour="x")
    assert seen == {"flavour": "x"} and dls.classes == ["a", "b"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": (0, 0, 2, 1, 1, 1)}, r"dataset 'tiny' has labels from 0 to 2 but 2 classes"),
        ({"labels": (0, 0, -1, 1, 1, 1)}, r"dataset 'tiny' has labels from -1 to 1 but 2 classes"),
        ({"wrong_size": True}, r"dataset 'Tiny' images\(4\) returned shape \(6, 3, 5, 5\)"),
    ],
)
def test_a_registered_dataset_breaking_the_contract_is_named(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict, match: str
) -> None:
    monkeypatch.setitem(DATASETS, "tiny", Tiny)
    with pytest.raises(ValueError, match=match):
        make_dataloaders("tiny", image_size=4, batch_size=2, **kwargs)


def test_float_labels_are_refused_naming_the_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    class FloatLabels(Tiny):
        def __init__(self) -> None:
            super().__init__()
            self.labels = self.labels.float()

    monkeypatch.setitem(DATASETS, "floaty", FloatLabels)
    with pytest.raises(ValueError, match=r"dataset 'floaty' labels must be .*integer.*float32"):
        open_dataset("floaty")


# ------------------------------------------------------------------------------ seeds


def test_the_largest_64_bit_seed_works_and_a_larger_one_is_named() -> None:
    dls = make_dataloaders("shapes", image_size=4, batch_size=8, n_per_class=4, seed=2**64 - 1)
    assert sum(len(y) for _, y in dls.train) == 10
    with pytest.raises(ValueError, match=r"seed must be .* below 2\*\*64, but got"):
        make_dataloaders("shapes", image_size=4, batch_size=8, n_per_class=4, seed=2**64)


# ------------------------------------------------------------------------------ image_folder


def test_image_folder_one_level_too_high_points_at_the_inner_folder(tmp_path: Path) -> None:
    _classes(tmp_path / "pets", {"cat": 2, "dog": 2})
    with pytest.raises(ValueError, match=r"holds folders \['cat', 'dog'\].*path=.*pets'"):
        make_dataloaders("image_folder", image_size=4, batch_size=2, path=tmp_path)


def test_image_folder_with_a_single_class_is_refused(tmp_path: Path) -> None:
    _classes(tmp_path, {"cat": 4})
    with pytest.raises(ValueError, match=rf"'{tmp_path}' has one class folder \('cat'\)"):
        make_dataloaders("image_folder", image_size=4, batch_size=2, path=tmp_path)


def test_unreadable_image_says_to_remove_or_replace_it(tmp_path: Path) -> None:
    _classes(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "b" / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.png'.*Remove or replace the file"):
        make_dataloaders("image_folder", image_size=4, batch_size=2, path=tmp_path)


def test_train_and_valid_naming_one_folder_is_refused(tmp_path: Path) -> None:
    _classes(tmp_path / "train", {"a": 2, "b": 2})
    with pytest.raises(ValueError, match=r"train='train' and valid='train' name the same folder"):
        make_dataloaders(
            "image_folder", image_size=4, batch_size=2, path=tmp_path, train="train", valid="train"
        )


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (torch.zeros(6, dtype=torch.bool), r"valid_mask marks 0 of 6 images for validation"),
        (torch.ones(6, dtype=torch.bool), r"valid_mask marks 6 of 6 images for validation"),
        (torch.zeros(5, dtype=torch.bool), r"valid_mask must be None or a bool tensor of shape"),
    ],
)
def test_a_dataset_split_without_train_or_valid_images_is_named(
    monkeypatch: pytest.MonkeyPatch, mask: torch.Tensor, match: str
) -> None:
    class OwnSplit(Tiny):
        def __init__(self) -> None:
            super().__init__()
            self.valid_mask = mask

    monkeypatch.setitem(DATASETS, "own", OwnSplit)
    with pytest.raises(ValueError, match=rf"dataset 'own' {match}"):
        make_dataloaders("own", image_size=4, batch_size=2)


def test_register_dataset_refuses_a_name_that_is_not_a_string() -> None:
    from trainers.data import register_dataset

    with pytest.raises(ValueError, match=r"dataset name must be a non-empty string, but got 3"):
        register_dataset(3, Tiny)  # type: ignore[arg-type]
    assert 3 not in DATASETS


def test_register_dataset_again_needs_replace_and_never_replaces_a_built_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trainers.data import _registry, register_dataset

    registry = dict(DATASETS)  # what this test registers goes with it
    monkeypatch.setattr(_registry, "DATASETS", registry)

    class Other(Tiny):
        def __init__(self) -> None:
            super().__init__()
            self.classes = ["x", "y"]

    register_dataset("mine", Tiny)
    with pytest.raises(ValueError, match=r"'mine' is already registered; pass replace=True"):
        register_dataset("mine", Other)
    assert registry["mine"] is Tiny
    register_dataset("mine", Other, replace=True)  # the notebook cell run again, edited
    assert make_dataloaders("mine", image_size=4, batch_size=2).classes == ["x", "y"]
    with pytest.raises(ValueError, match=r"'digits' is built in and cannot be replaced"):
        register_dataset("digits", Other, replace=True)
    with pytest.raises(ValueError, match=r"replace must be True or False, but got 'yes'"):
        register_dataset("mine", Tiny, replace="yes")  # type: ignore[arg-type]
    assert registry["mine"] is Other
