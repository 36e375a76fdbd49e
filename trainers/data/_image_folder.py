"""``image_folder``: images on disk, one folder per class (ImageNet style or train/ + valid/)."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from trainers.data._base import ImageSource

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
RESIZE_METHODS = ("squish", "crop")


class ImageFolder(ImageSource):
    """Images read with PIL from ``path/<class>/*``, or ``path/train/`` + ``path/valid/``.

    With the second layout (both folders present) the split is the folders' and ``valid_pct``
    is ignored; validation classes must be a subset of the training classes. Class names are the
    sorted folder names. Hidden folders, ``__MACOSX`` (a macOS zip's) and files with other
    extensions than :data:`IMAGE_EXTENSIONS` are skipped. Every image is converted to RGB
    (greyscale, palette and RGBA mix freely; alpha is dropped; 16-bit greyscale is scaled to 8
    bits; 32-bit integer or float images, PIL's modes ``I`` and ``F``, are refused as files it
    cannot read, since no range to scale them from is known) and resized to a square:
    ``"squish"`` resizes the whole image, ``"crop"`` takes the largest centred square first.
    Files are decoded again for every image size (progressive resizing), with ``num_workers``
    threads.

    A class folder holding a single image is allowed and logged as a warning.

    Args:
        path: The dataset's root folder.
        num_workers: Decoding threads; 0 decodes in the calling thread.
        train: Name of the training folder in the train/valid layout.
        valid: Name of the validation folder in the train/valid layout.
        resize_method: ``"squish"`` or ``"crop"``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for a folder with no class folders or a single one (a classifier needs
            two), a class folder with no images, a validation class unknown to training,
            ``train`` and ``valid`` naming one folder, an unknown ``resize_method``, or (when
            pixels are read) image files PIL cannot decode, all named in one error; each
            message names the path and what to do.
    """

    def __init__(
        self,
        *,
        path: str | Path,
        num_workers: int = 0,
        train: str = "train",
        valid: str = "valid",
        resize_method: str = "squish",
    ) -> None:
        if resize_method not in RESIZE_METHODS:
            raise ValueError(
                f"image_folder resize_method must be one of {RESIZE_METHODS}, "
                f"but got {resize_method!r}."
            )
        root = Path(path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"image_folder path {str(root)!r} does not exist or is not a folder."
            )
        self.root = root
        self.num_workers = num_workers
        self.resize_method = resize_method
        train_dir, valid_dir = root / train, root / valid
        if train_dir.resolve() == valid_dir.resolve():
            raise ValueError(
                f"image_folder train={train!r} and valid={valid!r} name the same folder "
                f"{str(train_dir)!r}: every image would be both trained on and validated on; "
                "name two different folders."
            )
        if train_dir.is_dir() != valid_dir.is_dir():
            found, missing = (
                (train_dir, valid_dir) if train_dir.is_dir() else (valid_dir, train_dir)
            )
            raise ValueError(
                f"image_folder found {str(found)!r} but not {str(missing)!r}: use both folders "
                f"(train/valid layout, names set by train= and valid=) or neither (class folders "
                f"directly under {str(root)!r})."
            )
        if train_dir.is_dir():
            train_files = _scan_classes(train_dir)
            valid_files = _scan_classes(valid_dir, allowed=list(train_files))
            self.classes = list(train_files)
            self.files, labels = _flatten(train_files, self.classes)
            valid_list, valid_labels = _flatten(valid_files, self.classes)
            self.files += valid_list
            self.labels = torch.tensor(labels + valid_labels, dtype=torch.long)
            self.valid_mask = torch.arange(len(self.files)) >= len(labels)
        else:
            files = _scan_classes(root)
            self.classes = list(files)
            self.files, labels = _flatten(files, self.classes)
            self.labels = torch.tensor(labels, dtype=torch.long)
            self.valid_mask = None

    def images(self, image_size: int) -> torch.Tensor:
        """Every file decoded at ``image_size``.

        Raises:
            ValueError: naming every file PIL cannot decode (the first ten, and how many), so
                one run finds them all.
        """

        def load(file: Path) -> np.ndarray | _UnreadableImage:
            try:
                return _read_rgb(file, image_size, self.resize_method)
            except _UnreadableImage as error:
                return error

        if self.num_workers > 0:
            with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
                results = list(pool.map(load, self.files))
        else:
            results = [load(file) for file in self.files]
        failures = [r for r in results if isinstance(r, _UnreadableImage)]
        if len(failures) == 1:
            (failure,) = failures
            raise ValueError(
                f"Could not read image file {str(failure.file)!r}: {failure.reason}. Remove or "
                "replace the file."
            ) from failure.__cause__
        if failures:
            more = len(failures) - _FAILURES_SHOWN
            one_cause = len({f.reason for f in failures}) == 1  # a format refused: said once
            why = f" ({failures[0].reason})" if one_cause else ""
            shown = "; ".join(
                repr(str(f.file)) + ("" if one_cause else f" ({f.reason})")
                for f in failures[:_FAILURES_SHOWN]
            )
            raise ValueError(
                f"Could not read {len(failures)} image files under {str(self.root)!r}{why}: "
                f"{shown}{f'; and {more} more' if more > 0 else ''}. Remove or replace them."
            ) from failures[0].__cause__
        arrays = [r for r in results if not isinstance(r, _UnreadableImage)]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


_FAILURES_SHOWN = 10


class _UnreadableImage(Exception):
    """A file PIL cannot decode, with PIL's reason."""

    def __init__(self, file: Path, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file, self.reason = file, reason


def _scan_classes(folder: Path, *, allowed: list[str] | None = None) -> dict[str, list[Path]]:
    """Map each class folder name under ``folder`` (sorted) to its sorted image files."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not _skipped_dir(p.name))
    if not class_dirs:
        raise ValueError(
            f"image_folder {str(folder)!r} has no class folders: expected "
            f"{str(folder / '<class>' / '<image>.png')!r}, or 'train/' and 'valid/' folders."
        )
    files: dict[str, list[Path]] = {}
    for class_dir in class_dirs:
        if allowed is not None and class_dir.name not in allowed:
            raise ValueError(
                f"image_folder validation class folder {str(class_dir)!r} has no training "
                f"counterpart; the training classes are {allowed}."
            )
        images = sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if not images:
            raise ValueError(
                f"image_folder class folder {str(class_dir)!r} has no images "
                f"(accepted extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}){_deeper(class_dir)}."
            )
        if len(images) == 1:
            logger.warning("image_folder class folder %s has a single image.", class_dir)
        _warn_unread(f"in the sub-folders of {class_dir}", _images_below(class_dir))
        files[class_dir.name] = images
    _warn_unread(f"beside the class folders in {folder}", _images_in(folder))
    if allowed is None and len(files) == 1:
        (name,) = files
        raise ValueError(
            f"image_folder {str(folder)!r} has one class folder ({name!r}); a classifier needs at "
            f"least two: put each class's images in its own folder under {str(folder)!r}"
            f"{_deeper(folder / name)}."
        )
    return files


def _skipped_dir(name: str) -> bool:
    """Hidden folders, and macOS's ``__MACOSX`` (resource forks a Finder zip adds): no class."""
    return name.startswith(".") or name == "__MACOSX"


def _images_in(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (not hidden)."""
    return [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    ]


def _images_below(folder: Path) -> list[Path]:
    """The image files in the (not hidden) sub-folders of ``folder``, at any depth.

    Linked sub-folders are not followed (a link back up would loop).
    """
    found: list[Path] = []
    for here, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not _skipped_dir(d)]
        if Path(here) != folder:
            found += [
                Path(here) / n
                for n in names
                if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not n.startswith(".")
            ]
    return found


def _warn_unread(where: str, unread: list[Path]) -> None:
    """Warn that ``unread`` images (none read: classes are one folder level deep) are skipped."""
    if unread:
        logger.warning(
            "image_folder skips %d image(s) %s, e.g. %s: only images directly inside a class "
            "folder are read; move them there to use them.",
            len(unread),
            where,
            min(unread),
        )


def _deeper(folder: Path) -> str:
    """A hint when ``folder`` holds class-like sub-folders: ``path`` is one level too high."""
    inner = sorted(p.name for p in folder.iterdir() if p.is_dir() and not _skipped_dir(p.name))
    if not inner:
        return ""
    return f"; it holds folders {inner}: if those are the classes, pass path={str(folder)!r}"


def _flatten(files: dict[str, list[Path]], classes: list[str]) -> tuple[list[Path], list[int]]:
    paths = [p for name in files for p in files[name]]
    labels = [classes.index(name) for name in files for _ in files[name]]
    return paths, labels


def _read_rgb(file: Path, image_size: int, resize_method: str) -> np.ndarray:
    """Decode one file to a ``(image_size, image_size, 3)`` uint8 array."""
    try:
        with Image.open(file) as image:
            return fit_rgb(image, image_size, resize_method)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise _UnreadableImage(file, str(error)) from error


def fit_rgb(image: Image.Image, image_size: int, resize_method: str) -> np.ndarray:
    """``image`` as the loaders hold it: 8-bit RGB, a ``(image_size, image_size, 3)`` uint8
    array, resized by ``resize_method`` (``"squish"`` or ``"crop"``).

    Raises:
        ValueError: for a 32-bit integer or float image (see :func:`_to_rgb`).
    """
    size = (image_size, image_size)
    rgb = _to_rgb(image)
    if resize_method == "crop":
        rgb = ImageOps.fit(rgb, size, Image.Resampling.BILINEAR)
    else:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


_NO_FIXED_RANGE = {"I": "32-bit integer", "F": "32-bit float"}
"""PIL modes whose pixels have no fixed range: converting them to 8 bits clips every value
outside 0..255 (a float image in 0..1 comes out black, 16-bit levels in an int32 file white),
and no scale can be chosen per file without making two images of one dataset disagree."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB; 16-bit greyscale is scaled to 0..255 (PIL would clip it at 255).

    Raises:
        ValueError: for a 32-bit integer (``I``) or float (``F``) image, which has no fixed
            range to scale from.
    """
    if image.mode in _NO_FIXED_RANGE:
        raise ValueError(
            f"{_NO_FIXED_RANGE[image.mode]} pixels (PIL mode {image.mode!r}) have no fixed range "
            "to scale to 8 bits; save the images as 8-bit or 16-bit greyscale or RGB (PNG, or "
            "TIFF of mode L, I;16 or RGB)"
        )
    if image.mode.startswith("I;16"):
        levels = np.rint(np.asarray(image, dtype=np.float64) / 257.0).astype(np.uint8)
        return Image.fromarray(levels).convert("RGB")
    return image.convert("RGBA" if image.mode == "P" else image.mode).convert("RGB")
