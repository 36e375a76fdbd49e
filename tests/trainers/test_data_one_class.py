"""A dataset of one class is refused before training: its loss is 0 whatever the weights."""

from __future__ import annotations

import pytest
import torch

from trainers.data import DATASETS, ImageSource, make_dataloaders, open_dataset


class Labelled(ImageSource):
    """Blank images with the given labels and classes."""

    def __init__(self, *, labels: tuple[int, ...], classes: tuple[str, ...]) -> None:
        self.labels = torch.tensor(labels)
        self.classes = list(classes)
        self.valid_mask = None

    def images(self, image_size: int) -> torch.Tensor:
        return torch.zeros(len(self.labels), 3, image_size, image_size, dtype=torch.uint8)


@pytest.fixture
def labelled(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(DATASETS, "labelled", Labelled)
    return "labelled"


@pytest.mark.parametrize(
    ("labels", "classes", "named"),
    [
        ((0,) * 10, ("cat",), "'cat' of ['cat']"),  # a single class
        ((1,) * 10, ("cat", "dog"), "'dog' of ['cat', 'dog']"),  # two classes, one used
    ],
)
def test_a_dataset_of_one_class_is_refused_naming_it(
    labelled: str, labels: tuple[int, ...], classes: tuple[str, ...], named: str
) -> None:
    match = f"dataset 'labelled' has images of one class only \\({named}\\)"
    with pytest.raises(ValueError, match=match.replace("[", r"\[")):
        make_dataloaders(labelled, image_size=4, batch_size=4, labels=labels, classes=classes)
    with pytest.raises(ValueError, match="a classifier needs at least two"):
        open_dataset(labelled, labels=labels, classes=classes)


def test_two_used_classes_are_accepted(labelled: str) -> None:
    dls = make_dataloaders(
        labelled, image_size=4, batch_size=4, labels=(0, 1) * 5, classes=("cat", "dog")
    )
    assert dls.n_classes == 2
