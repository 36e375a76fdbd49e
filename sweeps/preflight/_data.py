"""A local run's data and pretrained weights, read once on this machine before Ray starts or any
MLflow run exists."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sweeps._data_notes import split_sizes
from sweeps.preflight._report import PreflightError
from sweeps.spec import SweepSpec
from sweeps.spec._task import is_uri

if TYPE_CHECKING:  # torch: imported only when there is data to read
    from trainers.data import ImageSource

__all__ = [
    "PREFLIGHT_IMAGE_SIZE",
    "check_local_data",
    "check_local_weights",
    "check_portable_inputs",
]

logger = logging.getLogger(__name__)

PREFLIGHT_IMAGE_SIZE = 8
"""Side the images are decoded at for the check: every file is opened, little is kept."""


def check_local_data(spec: SweepSpec, *, fetch: bool = True) -> ImageSource | None:
    """Refuse a local sweep whose ``image_folder`` data the trials could not load.

    Without this, every trial would start, fail on the same bad file and be retried
    ``failure.max_failures`` times, after the experiment and parent run were created. The check
    builds the dataloaders exactly as a trial does (same dataset options), at
    :data:`PREFLIGHT_IMAGE_SIZE` pixels, so every image file is decoded once: an empty folder,
    a class folder with no images or a file PIL cannot read is reported with its path. A
    torchvision dataset (``mnist``, ``fashion_mnist``, ``cifar10``) is opened once, downloaded
    into its folder when missing (``fetch``; ``lrsweep validate`` downloads nothing), or refused
    naming the files and where they belong. Remote paths are not read here.

    ``digits`` and ``shapes`` are opened (no pixel is rendered) as each trial opens them, so an
    option value their builders refuse (``n_classes: 7``), a ``path`` they do not read, or
    classes too small for ``valid_pct`` to hold an image out (``n_per_class: 1``) is reported
    here, not by every trial.

    Args:
        spec: The sweep.

    Returns:
        The dataset as it was opened (labels, classes, channels, its own split), for
        :func:`check_local_weights` and :func:`~sweeps.preflight.data_notes`, which then do not
        open it again (an image folder's warnings, such as a class of a single image, are
        logged once); None when the dataset was not checked.

    Raises:
        PreflightError: naming ``task.dataset`` and the folder or file at fault.
    """
    dataset, task = spec.task.dataset, spec.task
    if dataset.name in ("digits", "shapes"):
        return _open_generated(spec)
    if dataset.name in TORCHVISION_DATASETS:
        local = not (dataset.path and is_uri(dataset.path))
        return _fetch_torchvision_data(spec) if fetch and local else None
    if dataset.name != "image_folder" or dataset.path is None or is_uri(dataset.path):
        return None
    from trainers import make_dataloaders  # torch: imported only when there is data to read

    logger.info("reading %s once before the sweep starts", dataset.path)
    try:
        dls = make_dataloaders(
            dataset.name,
            image_size=PREFLIGHT_IMAGE_SIZE,
            batch_size=task.batch_size,
            valid_pct=dataset.valid_pct,
            seed=dataset.seed,
            oversample=task.oversample,
            path=dataset.path,
            **dataset.options,
        )
    except (ValueError, OSError) as error:
        raise PreflightError(
            f"task.dataset: the trials could not load their data: {error} "
            "Fix the folder (or task.dataset.path) and run again."
        ) from None
    return dls.source


TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10")
"""Datasets read through torchvision's files, downloaded into a cache folder when missing."""


def _fetch_torchvision_data(spec: SweepSpec) -> ImageSource:
    """Open a torchvision dataset once, as each trial opens it: its files are read where the
    trials on this machine read them, and downloaded there now when missing. Without this, a
    machine without a network (or ``download: false`` and no files) started Ray and made the
    sweep's run, then every trial failed on its own download, each retried
    ``failure.max_failures`` times, and several trials downloaded into one folder at once."""
    from trainers.data import open_dataset  # torch: imported only when there is data to read

    dataset = spec.task.dataset
    logger.info("opening %s once before the sweep starts (downloaded if missing)", dataset.name)
    try:
        return open_dataset(dataset.name, seed=dataset.seed, path=dataset.path, **dataset.options)
    except (ValueError, TypeError, RuntimeError, OSError) as error:
        raise PreflightError(
            f"task.dataset: the trials could not load {dataset.name!r}: {error} Put the files "
            "there (or set task.dataset.path to the folder holding them) and run again."
        ) from None


def check_portable_inputs(spec: SweepSpec) -> None:
    """The input checks whose answer is the same on every machine, for a sweep on a cluster.

    A bundled or generated dataset (``digits``, ``shapes``) is opened with the spec's options,
    and a torchvision weights name is looked up (no download), as :func:`check_local_data` and
    :func:`check_local_weights` do for a local sweep; an ``image_folder`` or a weights file is
    the nodes' to read (``check_cluster`` probes them). Without this, a bad option or weights
    name failed every trial on the cluster, each retried ``failure.max_failures`` times.

    Raises:
        PreflightError: naming ``task.dataset`` or ``task.model.pretrained``.
    """
    if spec.task.dataset.name in ("digits", "shapes"):
        _open_generated(spec)
    model = spec.task.model
    if model.pretrained is not None and not is_uri(model.pretrained):
        if not Path(model.pretrained).is_file():
            _check_weights_name(model.arch, model.pretrained)


def _open_generated(spec: SweepSpec) -> ImageSource:
    """Open a bundled or generated dataset with the spec's options, as each trial does, and
    count its split by ``valid_pct`` (``shapes`` of one image a class has none to hold out)."""
    from trainers.data import open_dataset  # torch: imported only when there is data to check

    dataset = spec.task.dataset
    try:
        source = open_dataset(dataset.name, seed=dataset.seed, path=dataset.path, **dataset.options)
    except (ValueError, TypeError, MemoryError, RuntimeError) as error:  # torch: out of memory
        raise PreflightError(
            f"task.dataset: the trials could not build {dataset.name!r}: {error} Fix "
            "task.dataset.options (or remove task.dataset.path, which it does not read) and run "
            "again."
        ) from None
    try:
        split_sizes(source.labels.bincount().tolist(), dataset.valid_pct)
    except ValueError as error:
        raise PreflightError(
            f"task.dataset: the trials could not split {dataset.name!r} into training and "
            f"validation images: {error} Give each class more images (task.dataset.options) "
            "and run again."
        ) from None
    return source


def check_local_weights(
    spec: SweepSpec, *, fetch: bool = True, source: ImageSource | None = None
) -> bool:
    """Refuse a sweep whose ``task.model.pretrained`` file the trials could not load.

    A file that is no state dict (or would run code when unpickled), or whose body does not fit
    ``task.model.arch`` and the data's channels, would otherwise fail every trial, each retried
    ``failure.max_failures`` times. The file is loaded as the trials load it
    (``torch.load(weights_only=True)``) into the spec's model, built for the channels of the
    data's images (:func:`trainers.data.open_dataset`, which reads no pixel) where they are on
    this machine: ``digits``, ``shapes`` and a local ``image_folder``. For other datasets the
    model takes the input channels of the file's first convolution. The head is the trials'
    concern (it is loaded only when its shapes match). A torchvision weights name must be one
    torchvision knows for the arch, and (``fetch``) in torch's cache or downloaded into it now,
    once, where the trials on this machine read it. Remote paths are not read here.

    Args:
        spec: The sweep.
        fetch: Download torchvision weights missing from torch's cache (``lrsweep validate``
            downloads nothing).
        source: The spec's dataset as :func:`check_local_data` opened it, whose channels are
            taken instead of opening it again; None opens it.

    Returns:
        True when a file was loaded (or weights fetched), False when there was none to check.

    Raises:
        PreflightError: naming ``task.model.pretrained``, the file and what is wrong.
    """
    model = spec.task.model
    if model.pretrained is None or is_uri(model.pretrained):
        return False
    path = Path(model.pretrained)  # the spec stores a weights file as an absolute path
    if not path.is_file():  # a torchvision weights name: known, and in torch's cache?
        _check_weights_name(model.arch, model.pretrained)
        return _fetch_weights(model.arch, model.pretrained) if fetch else False
    from trainers.models import build_model, read_state_dict  # torch: only with weights to read

    channels = _data_channels(spec, source)
    try:
        state = read_state_dict(path)
        convs = [t for t in state.values() if t.ndim == 4]
        in_channels = channels or (convs[0].shape[1] if convs else 3)
        build_model(model.arch, 2, in_channels=in_channels, pretrained=path)
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        data = f" built for {channels}-channel {spec.task.dataset.name} images" if channels else ""
        raise PreflightError(
            f"task.model.pretrained: the trials could not load {str(path)!r} into "
            f"{model.arch}{data}: {error} Point task.model.pretrained at weights of this "
            "architecture and input (a state dict, or a file learn.save wrote) and run again."
        ) from None
    logger.debug("pretrained weights %s load into %s", path, model.arch)
    return True


def _check_weights_name(arch: str, name: str) -> bool:
    """Refuse a weights name torchvision does not know for ``arch``; False: nothing was read."""
    from trainers.models._resnet import torchvision_weights  # no download: a name lookup

    try:
        torchvision_weights(arch, name)
    except ValueError as error:
        raise PreflightError(
            f"task.model.pretrained: {error} Give one of those names, or a state-dict file, "
            "and run again."
        ) from None
    return False


def _fetch_weights(arch: str, name: str) -> bool:
    """Download torchvision's weights ``name`` into torch's cache once, before the trials (on
    this machine they read them from there), or refuse: on a machine without a network every
    trial failed on its download, each retried ``failure.max_failures`` times, after Ray had
    started and the parent run existed. True: the weights are in the cache."""
    import torch

    from trainers.models._resnet import download_weights, torchvision_weights

    weights = torchvision_weights(arch, name)
    try:
        download_weights(arch, weights)
    except RuntimeError as error:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise PreflightError(
            f"task.model.pretrained: {error} The trials on this machine read the weights from "
            f"torch's cache: put {weights.url.rsplit('/', 1)[-1]} (from {weights.url}) in "
            f"{cache}, or point task.model.pretrained at a state-dict file."
        ) from None
    return True


_LOCAL_DATASETS = ("digits", "shapes", "image_folder")
"""Datasets whose source opens on this machine at once: bundled, generated, a local folder."""


def _data_channels(spec: SweepSpec, source: ImageSource | None = None) -> int | None:
    """Channels of the trials' images (``source``'s, when the dataset was opened already), or
    None where this machine cannot tell cheaply.

    A dataset that does not open here is left to :func:`check_local_data` and the trials.
    """
    dataset = spec.task.dataset
    if dataset.name not in _LOCAL_DATASETS or (dataset.path and is_uri(dataset.path)):
        return None
    if source is not None:
        return int(source.channels)
    from trainers.data import open_dataset

    try:
        source = open_dataset(dataset.name, seed=dataset.seed, path=dataset.path, **dataset.options)
    except (ValueError, OSError):
        return None
    return int(source.channels)
