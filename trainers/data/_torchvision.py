"""``mnist``, ``fashion_mnist``, ``cifar10`` through torchvision's own file readers.

Only torchvision's *training* split is used; ``make_dataloaders`` splits it by ``valid_pct`` and
``seed`` as for every other dataset (fastai's habit), and the official test split stays unused, so
it remains a clean hold-out. Files live under ``path`` or ``~/.cache/lrsweep/data`` in
torchvision's layout; a download is attempted only when files are missing.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainers.data._base import ImageSource, check_channels, repeat_channels, resize_uint8

if TYPE_CHECKING:  # torchvision.datasets costs ~1 s to import: only when a factory runs
    from torchvision import datasets

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("~/.cache/lrsweep/data")
_MNIST_FILES = tuple(
    f"{split}-{kind}-ubyte"
    for split in ("train", "t10k")
    for kind in ("images-idx3", "labels-idx1")
)
_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")


class TorchvisionDataset(ImageSource):
    """A torchvision dataset's training split held as a uint8 tensor at its native size.

    Args:
        name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"`` (for messages).
        dataset_class: The torchvision class that reads the files.
        folder: Where torchvision keeps the files, relative to the root.
        files: File names in ``folder`` whose absence triggers a download.
        path: Root folder; ``~/.cache/lrsweep/data`` when None.
        download: Try to download missing files; with False, missing files raise at once.
        channels: Output channels (greyscale datasets may repeat to 3).

    Raises:
        RuntimeError: if files are missing and cannot be downloaded (offline, or
            ``download=False``), or torchvision rejects the files; the message says where the
            files belong.
    """

    def __init__(
        self,
        name: str,
        dataset_class: type[datasets.VisionDataset],
        folder: str,
        files: tuple[str, ...],
        *,
        path: str | Path | None,
        download: bool,
        channels: int,
    ) -> None:
        root = Path(path if path is not None else DEFAULT_ROOT).expanduser()
        missing = [f for f in files if not (root / folder / f).is_file()]
        hint = (
            f"put torchvision's files for {name} ({', '.join(files)}) in "
            f"{str(root / folder)!r}, or pass path= to the root folder that holds {folder!r}"
        )
        if missing and not download:
            raise RuntimeError(f"{name} files are missing and download=False: {hint}.")
        if missing:
            logger.info("Downloading %s to %s (missing: %s)", name, root, ", ".join(missing))
        before = _entries(root)
        try:
            dataset: Any = dataset_class(root=str(root), train=True, download=bool(missing))
        except (OSError, RuntimeError) as error:
            if missing:
                _remove_new_entries(root, before)
            action = "download" if missing else "read"
            raise RuntimeError(
                f"Could not {action} {name} under {str(root)!r} ({error}): {hint}."
            ) from error
        data = torch.as_tensor(dataset.data)
        native = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
        self._native = native.contiguous()
        self.channels = channels
        self.labels = torch.as_tensor(dataset.targets, dtype=torch.long)
        self.classes = [str(c) for c in dataset.classes]
        self.valid_mask = None

    def images(self, image_size: int) -> torch.Tensor:
        return repeat_channels(resize_uint8(self._native, image_size), self.channels)


def mnist(
    *, path: str | Path | None = None, download: bool = True, channels: int = 1
) -> TorchvisionDataset:
    """MNIST's 60,000 training digits (28x28 greyscale); ``channels=3`` repeats to RGB."""
    channels = check_channels(channels, dataset="mnist")
    from torchvision import datasets

    return TorchvisionDataset(
        "mnist",
        datasets.MNIST,
        "MNIST/raw",
        _MNIST_FILES,
        path=path,
        download=download,
        channels=channels,
    )


def fashion_mnist(
    *, path: str | Path | None = None, download: bool = True, channels: int = 1
) -> TorchvisionDataset:
    """Fashion-MNIST's 60,000 training images (28x28 greyscale); ``channels=3`` repeats to RGB."""
    channels = check_channels(channels, dataset="fashion_mnist")
    from torchvision import datasets

    return TorchvisionDataset(
        "fashion_mnist",
        datasets.FashionMNIST,
        "FashionMNIST/raw",
        _MNIST_FILES,
        path=path,
        download=download,
        channels=channels,
    )


def _entries(root: Path) -> set[str] | None:
    """The names in ``root`` (None: it does not exist)."""
    try:
        return {entry.name for entry in root.iterdir()}
    except OSError:
        return None


def _remove_new_entries(root: Path, before: set[str] | None) -> None:
    """Remove what a failed download created under ``root`` (``MNIST/raw/``, a partial
    archive; ``root`` itself when it was new), so it leaves nothing behind: an empty
    ``MNIST/raw`` in a folder of class folders made it fail as an ``image_folder``."""
    now = _entries(root)
    if now is None:
        return
    if before is None:
        shutil.rmtree(root, ignore_errors=True)
        return
    for name in now - before:
        entry = root / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def cifar10(
    *, path: str | Path | None = None, download: bool = True, verify_checksums: bool = True
) -> TorchvisionDataset:
    """CIFAR-10's 50,000 training images (32x32 RGB).

    Args:
        path: Root holding ``cifar-10-batches-py/``.
        download: Try to download when files are missing.
        verify_checksums: Check torchvision's MD5 of every batch file (default). Pass False for a
            re-packed or reduced copy in the same pickle format.
    """
    from torchvision import datasets

    dataset_class: type[datasets.VisionDataset] = datasets.CIFAR10
    if not verify_checksums:
        dataset_class = _unverified(datasets.CIFAR10)
    return TorchvisionDataset(
        "cifar10",
        dataset_class,
        "cifar-10-batches-py",
        _CIFAR_FILES,
        path=path,
        download=download,
        channels=3,
    )


def _unverified(base: type[datasets.CIFAR10]) -> type[datasets.CIFAR10]:
    """A subclass of ``base`` whose file checks test presence only (torchvision skips md5=None)."""
    return type(
        base.__name__,
        (base,),
        {
            "train_list": [[name, None] for name, _ in base.train_list],
            "test_list": [[name, None] for name, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        },
    )
