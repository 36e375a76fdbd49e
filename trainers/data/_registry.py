"""Dataset names -> factories, and ``make_dataloaders``, the one entry point."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from trainers._numbers import is_real
from trainers.data._base import ImageSource, is_count
from trainers.data._digits import Digits
from trainers.data._image_folder import ImageFolder
from trainers.data._loaders import DataLoaders
from trainers.data._shapes import Shapes
from trainers.data._split import split_by_mask, stratified_split
from trainers.data._torchvision import cifar10, fashion_mnist, mnist
from trainers.data.augment import Augment, as_augment

logger = logging.getLogger(__name__)

DatasetFactory = Callable[..., ImageSource]

# The keywords make_dataloaders may hand a factory when its signature asks for them.
_PROVIDED = ("seed", "path", "num_workers")

DATASETS: dict[str, DatasetFactory] = {
    "digits": Digits,
    "shapes": Shapes,
    "image_folder": ImageFolder,
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
}


_BUILT_IN = frozenset(DATASETS)


def register_dataset(name: str, factory: DatasetFactory, *, replace: bool = False) -> None:
    """Make ``make_dataloaders(name, ...)`` build its images with ``factory``.

    Args:
        name: The dataset name: new, or one registered before when ``replace``.
        factory: Called with keyword arguments only: the ``dataset_kwargs`` given to
            ``make_dataloaders`` (any keyword when it takes ``**kwargs``), plus ``seed``,
            ``path`` and ``num_workers`` when its signature names them (``path``, when given, also
            through ``**kwargs``). Returns an :class:`~trainers.data.ImageSource` whose labels
            are integer class indices in ``[0, len(classes))``, checked when it is opened, and
            whose ``images()`` are uint8 (0..255), checked when they are rendered.
        replace: Let ``factory`` take the place of the one ``name`` was registered with (a
            notebook cell run again); a built-in dataset is never replaced.

    Raises:
        ValueError: if ``name`` is a built-in dataset, already registered (without
            ``replace``), or ``factory`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string, but got {name!r}.")
    if name in _BUILT_IN:
        raise ValueError(f"dataset {name!r} is built in and cannot be replaced; pick another name.")
    if name in DATASETS and not replace:
        raise ValueError(
            f"dataset {name!r} is already registered; pass replace=True to register it again "
            "(a notebook cell run twice), or pick another name."
        )
    if not isinstance(replace, bool):
        raise ValueError(f"replace must be True or False, but got {replace!r}.")
    if not callable(factory):
        raise ValueError(f"factory must be callable, but got {factory!r}.")
    DATASETS[name] = factory


def make_dataloaders(
    dataset: str,
    *,
    image_size: int,
    batch_size: int,
    valid_pct: float = 0.2,
    seed: int = 42,
    augment: Augment | Mapping[str, Any] | str | None = None,
    oversample: bool = False,
    num_workers: int = 0,
    path: str | os.PathLike[str] | None = None,
    **dataset_kwargs: Any,
) -> DataLoaders:
    """Load a dataset into memory, split it by ``seed`` and wrap it in train/valid loaders.

    Args:
        dataset: One of ``DATASETS``: ``digits``, ``shapes``, ``image_folder``, ``mnist``,
            ``fashion_mnist``, ``cifar10`` (or a name added with :func:`register_dataset`).
        image_size: Side of the square images (positive integer).
        batch_size: Images per batch (positive integer).
        valid_pct: Fraction in (0, 1) of each class held out for validation (stratified).
            Ignored, with an info log, when the dataset brings its own split (``image_folder``
            with ``train/`` + ``valid/``).
        seed: Fixes the split, the training order, augmentation and generated data. The split
            depends on ``seed`` and ``valid_pct`` only, never on size, augmentation or batch size.
        augment: None, an :class:`Augment`, a dict of its fields
            (``{"rotate": 10, "zoom": 1.1, "flip": False, "jitter": 0.1}``) or a preset name
            (``"light"``, ``"standard"``). Applied to training batches only.
        oversample: Draw training samples with replacement, weight ``1 / class count``.
        num_workers: Threads decoding image files (``image_folder``); batches themselves come
            from in-memory tensors, in process.
        path: Folder of ``image_folder``, or root of the torchvision datasets
            (``~/.cache/lrsweep/data`` when None).
        **dataset_kwargs: Passed to the dataset, e.g. ``n_per_class``, ``n_classes`` (shapes),
            ``channels`` (digits, mnist, fashion_mnist), ``download``, ``verify_checksums``.

    Returns:
        :class:`DataLoaders` on the CPU; ``.to(device)`` moves them.

    Raises:
        ValueError: for an unknown dataset name or keyword, a bad ``image_size``,
            ``batch_size``, ``valid_pct``, ``seed``, ``num_workers`` or ``augment``, or
            ``image_folder`` without ``path``; each message names the argument and what it
            accepts. Dataset errors (missing folder, corrupt image) name the path; a dataset
            whose labels are not class indices of its ``classes`` or all of one class, or whose
            ``images()`` returns another size or count, is named with what is wrong.

    Example:
        >>> dls = make_dataloaders("digits", image_size=16, batch_size=64)
        >>> xb, yb = next(iter(dls.train))
        >>> tuple(xb.shape), yb.dtype
        ((64, 1, 16, 16), torch.int64)
    """
    factory = _check_arguments(dataset, image_size, batch_size, valid_pct, seed, num_workers)
    # NumPy scalars (np.int64 from np.arange, a progressive-resizing schedule) as Python's
    image_size, batch_size, seed, num_workers = map(
        int, (image_size, batch_size, seed, num_workers)
    )
    valid_pct = float(valid_pct)
    augment_ = as_augment(augment)
    if not isinstance(oversample, bool):
        raise ValueError(f"oversample must be True or False, but got {oversample!r}.")
    source = _open(dataset, factory, seed, path, num_workers, dataset_kwargs)
    if source.valid_mask is not None:
        logger.info("%s brings its own validation split; valid_pct is ignored.", dataset)
        train_idx, valid_idx = split_by_mask(source.valid_mask)
    else:
        train_idx, valid_idx = stratified_split(source.labels, valid_pct=valid_pct, seed=seed)
    _warn_unmeasured_classes(dataset, source, valid_idx)
    return DataLoaders(
        source,
        train_idx=train_idx,
        valid_idx=valid_idx,
        image_size=image_size,
        batch_size=batch_size,
        seed=seed,
        augment=augment_,
        oversample=oversample,
    )


def _warn_unmeasured_classes(dataset: str, source: ImageSource, valid_idx: torch.Tensor) -> None:
    """Warn about classes with no validation image: the error rate never measures them (a class
    of one image keeps it for training; an image folder's valid/ may lack a class), while the
    model may still predict them, and oversampling draws their few images over and over."""
    n_classes = len(source.classes)
    counts = torch.bincount(source.labels[valid_idx], minlength=n_classes).tolist()
    missing = [str(source.classes[c]) for c, count in enumerate(counts) if count == 0]
    if missing:
        logger.warning(
            "%s: no validation image of class %s: the validation metrics never measure it "
            "(add images of it, to valid/ for a folder with its own split).",
            dataset,
            ", ".join(repr(name) for name in missing),
        )


def open_dataset(
    dataset: str,
    *,
    seed: int = 42,
    path: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    **dataset_kwargs: Any,
) -> ImageSource:
    """The :class:`ImageSource` ``make_dataloaders`` would build, before any pixel is rendered.

    Its labels, classes and ``channels`` are known; reading an image folder's files or
    rendering at a size waits for :meth:`ImageSource.images`. The arguments are
    :func:`make_dataloaders`' (a torchvision dataset is loaded, and downloaded when missing).

    Raises:
        ValueError: for an unknown dataset name or keyword (named), or the dataset's own errors.

    Example:
        >>> open_dataset("digits", channels=3).channels
        3
    """
    factory = _checked_factory(dataset, seed, num_workers)
    return _open(dataset, factory, int(seed), path, int(num_workers), dataset_kwargs)


def _open(
    dataset: str,
    factory: DatasetFactory,
    seed: int,
    path: str | os.PathLike[str] | None,
    num_workers: int,
    dataset_kwargs: dict[str, Any],
) -> ImageSource:
    """``factory`` called with the keywords it accepts (see :func:`_factory_kwargs`)."""
    provided = {"seed": seed, "path": path, "num_workers": num_workers}
    source = factory(**_factory_kwargs(dataset, factory, provided, dataset_kwargs))
    _check_source(dataset, source)
    return source


def _check_source(dataset: str, source: ImageSource) -> None:
    """Refuse a source whose labels would fail later, far from the dataset that made them.

    Labels outside ``[0, len(classes))`` would reach the loss as out-of-bounds targets (or
    land in another class's confusion-matrix cell); non-integer labels break the split.
    """
    labels = getattr(source, "labels", None)
    classes = getattr(source, "classes", None)
    if not isinstance(labels, torch.Tensor) or not isinstance(classes, list | tuple):
        raise ValueError(
            f"dataset {dataset!r} must give an ImageSource with a labels tensor and a classes "
            f"list, but got {type(source).__name__} with labels {type(labels).__name__} and "
            f"classes {type(classes).__name__}."
        )
    if (
        labels.ndim != 1
        or labels.is_floating_point()
        or labels.is_complex()
        or labels.dtype == torch.bool
    ):
        raise ValueError(
            f"dataset {dataset!r} labels must be a 1-d integer tensor of class indices, but got "
            f"dtype {labels.dtype} and shape {tuple(labels.shape)}."
        )
    if len(labels) == 0:
        raise ValueError(f"dataset {dataset!r} has no images; add some.")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= len(classes):
        raise ValueError(
            f"dataset {dataset!r} has labels from {low} to {high} but {len(classes)} classes "
            f"{list(classes)}; labels must be class indices in [0, {len(classes)})."
        )
    if low == high:
        raise ValueError(
            f"dataset {dataset!r} has images of one class only ({classes[low]!r} of "
            f"{list(classes)}): a classifier needs at least two (its loss would be 0 whatever "
            "the weights, and every learning rate would look alike); add images of another class."
        )
    mask = getattr(source, "valid_mask", None)
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != labels.shape:
        raise ValueError(
            f"dataset {dataset!r} valid_mask must be None or a bool tensor of shape "
            f"{tuple(labels.shape)}, one flag per label, but got {mask!r:.80}."
        )
    n_valid = int(mask.sum())
    if not 0 < n_valid < len(mask):
        raise ValueError(
            f"dataset {dataset!r} valid_mask marks {n_valid} of {len(mask)} images for "
            "validation; its own split needs both training and validation images."
        )


def _check_arguments(
    dataset: object,
    image_size: object,
    batch_size: object,
    valid_pct: object,
    seed: object,
    num_workers: object,
) -> DatasetFactory:
    """Validate the common arguments; return the dataset's factory."""
    factory = _checked_factory(dataset, seed, num_workers)
    _check_counts(image_size=(image_size, 1), batch_size=(batch_size, 1))
    if not is_real(valid_pct) or not 0 < valid_pct < 1:  # type: ignore[operator]
        raise ValueError(f"valid_pct must be a number in (0, 1), but got {valid_pct!r}.")
    return factory


def _checked_factory(dataset: object, seed: object, num_workers: object) -> DatasetFactory:
    """``DATASETS[dataset]``, after checking the name, ``seed`` and ``num_workers``."""
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, but got {dataset!r}.")
    _check_counts(seed=(seed, 0), num_workers=(num_workers, 0))
    if seed >= 2**64:  # type: ignore[operator]
        raise ValueError(f"seed must be a non-negative integer below 2**64, but got {seed!r}.")
    return DATASETS[dataset]


def _check_counts(**values: tuple[object, int]) -> None:
    """Each ``name=(value, lowest)`` must be an integer of at least ``lowest`` (0 or 1)."""
    for name, (value, low) in values.items():
        if not is_count(value) or value < low:  # type: ignore[operator]
            kind = "a positive integer" if low == 1 else "a non-negative integer"
            raise ValueError(f"{name} must be {kind}, but got {value!r}.")


def _factory_kwargs(
    dataset: str,
    factory: DatasetFactory,
    provided: dict[str, Any],
    dataset_kwargs: dict[str, Any],
) -> dict[str, Any]:
    """The keywords ``factory`` accepts: the user's dataset kwargs plus seed / path / workers."""
    params = inspect.signature(factory).parameters
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [
        n
        for n, p in params.items()
        if n not in _PROVIDED
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    for key in dataset_kwargs:
        if key not in accepted and not any_keyword:
            raise ValueError(
                f"dataset {dataset!r} got an unknown keyword {key!r}; it accepts {accepted}."
            )
    if any_keyword and provided["path"] is not None and "path" not in params:
        dataset_kwargs = {**dataset_kwargs, "path": provided["path"]}
    elif provided["path"] is not None and "path" not in params:
        users = sorted(n for n, f in DATASETS.items() if "path" in inspect.signature(f).parameters)
        raise ValueError(f"path is only used by the datasets {users}, not {dataset!r}.")
    if "path" in params and params["path"].default is inspect.Parameter.empty:
        if provided["path"] is None:
            raise ValueError(f"dataset {dataset!r} needs path= (the folder holding its images).")
    kwargs = {n: v for n, v in provided.items() if n in params}
    return {**kwargs, **dataset_kwargs}
