"""In-memory image datasets, seeded splits and tensor batch loaders.

>>> from trainers.data import make_dataloaders
>>> dls = make_dataloaders("shapes", image_size=16, batch_size=32, augment={"rotate": 10})
>>> dls.classes
['circle', 'square', 'triangle']
"""

from __future__ import annotations

from trainers.data._base import ImageSource
from trainers.data._loaders import DataLoaders, TensorLoader
from trainers.data._registry import DATASETS, make_dataloaders, open_dataset, register_dataset
from trainers.data.augment import PRESETS, Augment

__all__ = [
    "DATASETS",
    "PRESETS",
    "Augment",
    "DataLoaders",
    "ImageSource",
    "TensorLoader",
    "make_dataloaders",
    "open_dataset",
    "register_dataset",
]
