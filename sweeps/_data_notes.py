"""What the data's size makes pointless: the notes ``lrsweep run`` (before a sweep) and
``lrsweep validate`` print as ``Note:`` lines, from one function, :func:`data_notes`.

The sizes come from the class counts alone, as the trials' split draws them: no image is
decoded. For the bundled ``digits`` and the generated ``shapes`` with no options the counts are
known here (:data:`DIGITS_CLASS_COUNTS`, :data:`SHAPES_DEFAULTS`), so this module and such a
spec need no torch (``validate`` stays quick); a dataset with options or a local image folder is
counted from its labels (or its ``valid/`` folder): those of the dataset the preflight's data
check opened, passed in, or else opened here through ``trainers.data``, which imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from sweeps.spec import SweepSpec
from sweeps.spec._task import is_uri

if TYPE_CHECKING:  # torch: only where a dataset is opened
    from trainers.data import ImageSource

__all__ = [
    "DIGITS_CLASS_COUNTS",
    "FEW_STEPS_PER_EPOCH",
    "FEW_VALID_IMAGES",
    "SHAPES_DEFAULTS",
    "data_notes",
    "split_sizes",
    "steps_per_epoch",
]

FEW_VALID_IMAGES = 100
"""Below this many validation images an error rate moves in steps of more than one point, the
margin issue 4's headline compares strategies by: :func:`data_notes` says so."""

FEW_STEPS_PER_EPOCH = 4
"""Below this many optimizer steps an epoch is too coarse for a schedule: :func:`data_notes`."""

DIGITS_CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
"""Images of each digit 0..9 in scikit-learn's bundled digits (1,797 in all); a test checks them
against ``sklearn.datasets.load_digits``."""

SHAPES_DEFAULTS = MappingProxyType({"n_classes": 3, "n_per_class": 100})
"""``shapes``' builder defaults (``trainers.data._shapes.Shapes``); a test checks them."""


def data_notes(spec: SweepSpec, *, source: ImageSource | None = None) -> list[str]:
    """Valid settings the data's size makes pointless, each with what to change: a validation
    set too small to tell strategies apart, a batch size that leaves an epoch a few steps.

    The split is the trials' own (``valid_pct`` over the class counts, or an image folder's
    ``valid/``). Bundled and generated datasets and a local image folder are counted; a
    torchvision dataset or a remote folder is not, and neither is data that does not open (its
    errors are the preflight's and the trials'). ``run_sweep`` hands the notes, after the
    spec's other advice, to its ``on_note`` (``lrsweep run`` prints them as ``lrsweep validate``
    does) or logs them as warnings; none stops a sweep.

    Args:
        spec: The sweep.
        source: The spec's dataset as the preflight opened it
            (:func:`~sweeps.preflight.check_local_data`), counted instead of opening it again:
            an image folder logs its warnings (a class of a single image) each time it is
            opened. None opens it here where it must be (a cluster's driver, which does not
            read the data).

    Example:
        >>> from sweeps.spec import load_spec
        >>> spec = load_spec("sweeps/specs/digits.yaml", overrides=["task.batch_size=512"])
        >>> data_notes(spec)  # doctest: +ELLIPSIS
        ['task.batch_size: 512 leaves an epoch of the 1438 training images 3 optimizer steps, ...']
    """
    split = _split_of(spec, source)
    if split is None:
        return []
    dataset, batch_size = spec.task.dataset, spec.task.batch_size
    notes = []
    if split.n_valid < FEW_VALID_IMAGES:
        fix = (
            "add images to its valid/ folder"
            if split.own
            else f"raise task.dataset.valid_pct ({dataset.valid_pct}) or add data"
        )
        n_valid = split.n_valid
        step = f"{100 / n_valid:.2g}" if n_valid > 1 else "100"  # .2g: 100 is '1e+02'
        notes.append(
            f"task.dataset: the validation set holds {n_valid} image{'s' if n_valid > 1 else ''}, "
            f"so an error rate moves in steps of {step} points and strategies closer than that "
            f"cannot be told apart; {fix}"
        )
    steps = steps_per_epoch(split.n_train, batch_size)
    if steps < FEW_STEPS_PER_EPOCH:
        notes.append(
            f"task.batch_size: {batch_size} leaves an epoch of the {split.n_train} training "
            f"images {steps} optimizer step{'s' if steps > 1 else ''}, too few for a schedule to "
            "shape (and a range test repeats those batches); lower task.batch_size"
        )
    return notes


def split_sizes(counts: Sequence[int], valid_pct: float) -> tuple[int, int]:
    """Training and validation images of the trials' stratified split of these class counts.

    ``trainers.data._split.stratified_split`` holds out ``round(valid_pct * N)`` images (at
    least one), every class keeping one for training; which images, the seed decides, but not
    how many. That module imports torch, so the count is taken here (a test pins the two to the
    same sizes).

    Args:
        counts: Images per class (a class of 0 is allowed).
        valid_pct: Fraction in (0, 1) held out.

    Returns:
        ``(n_train, n_valid)``.

    Raises:
        ValueError: if no image can be held out (every class has at most one image), as the
            split itself refuses.

    Example:
        >>> split_sizes([178, 182, 177, 183, 181, 182, 181, 179, 174, 180], 0.2)
        (1438, 359)
    """
    total = sum(counts)
    spare = sum(max(count - 1, 0) for count in counts)  # each class keeps one training image
    n_valid = min(max(round(valid_pct * total), 1), spare)
    if n_valid == 0:
        raise ValueError(
            f"valid_pct={valid_pct} leaves no validation images out of {total}: every class has "
            "a single image; add images."
        )
    return total - n_valid, n_valid


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in an epoch of ``n_train`` training images, as the trials' training
    loader batches them: a final batch of a single image is dropped (BatchNorm cannot train on
    it; ``trainers.data.TensorLoader``'s ``drop_single``), so 1,438 images at 479 a batch are 3
    steps, not 4.

    Example:
        >>> steps_per_epoch(1438, 479), steps_per_epoch(1438, 478)
        (3, 4)
    """
    if n_train > 1 and n_train % batch_size == 1:
        return n_train // batch_size
    return -(-n_train // batch_size)


@dataclass(frozen=True)
class _Split:
    """Sizes of the trials' split; ``own``: an image folder's ``valid/``, not ``valid_pct``."""

    n_train: int
    n_valid: int
    own: bool = False


def _split_of(spec: SweepSpec, source: ImageSource | None) -> _Split | None:
    """The sizes of the trials' split, or None for data not counted on this machine."""
    dataset = spec.task.dataset
    if dataset.name not in ("digits", "shapes", "image_folder"):
        return None
    if dataset.path is not None and is_uri(dataset.path):
        return None
    if dataset.name == "image_folder" and not (dataset.path and Path(dataset.path).is_dir()):
        return None
    if dataset.name != "image_folder" and not (dataset.options or dataset.path):
        counts = (
            DIGITS_CLASS_COUNTS
            if dataset.name == "digits"
            else [SHAPES_DEFAULTS["n_per_class"]] * SHAPES_DEFAULTS["n_classes"]
        )
        return _Split(*split_sizes(counts, dataset.valid_pct))
    return _opened_split(spec, source)


def _opened_split(spec: SweepSpec, source: ImageSource | None) -> _Split | None:
    """The split's sizes from the labels of the dataset as the trials open it (torch): those of
    ``source``, else of the dataset opened here."""
    dataset = spec.task.dataset
    try:
        if source is None:
            from trainers.data import open_dataset  # torch: the data is read anyway

            source = open_dataset(
                dataset.name, seed=dataset.seed, path=dataset.path, **dataset.options
            )
        if source.valid_mask is not None:
            n_valid = int(source.valid_mask.sum())
            return _Split(len(source.valid_mask) - n_valid, n_valid, own=True)
        return _Split(*split_sizes(source.labels.bincount().tolist(), dataset.valid_pct))
    except (ValueError, TypeError, OSError):  # the data's own errors: the preflight's, the trials'
        return None
