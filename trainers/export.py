"""A trained model and what predicting needs, without the data: fastai's ``export`` and
``load_learner``, with no pickled code.

>>> learn.export("models/shapes.pt")  # doctest: +SKIP
>>> predictor = load_learner("models/shapes.pt")  # doctest: +SKIP
>>> predictor.predict("new/circle_01.png").argmax()  # doctest: +SKIP

The file holds the architecture's name and build arguments, the weights, the class names, the
normalisation statistics, the image size and how images are fitted to it. ``load_learner``
reads it with ``torch.load(weights_only=True)`` and rebuilds the model with
:func:`~trainers.models.build_model`, so only models built by it can be exported.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trainers import _checkpoint, _image_input
from trainers._inference import ImageFormat, ImageInput, eval_mode
from trainers.data._image_folder import RESIZE_METHODS
from trainers.data._loaders import normalising
from trainers.models import ARCHS, GroupedModel, build_model

if TYPE_CHECKING:
    from trainers.learner import Learner

__all__ = [
    "EXPORT_FORMAT",
    "PREDICT_BATCH",
    "Predictor",
    "export",
    "export_metadata",
    "load_learner",
]

EXPORT_FORMAT = _checkpoint.EXPORT_FORMAT
"""The ``format`` of an export file (a ``learn.save`` checkpoint is another format)."""

PREDICT_BATCH = _image_input.PREDICT_BATCH

_KEYS = (
    "arch",
    "n_classes",
    "in_channels",
    "model",
    "classes",
    "mean",
    "std",
    "image_size",
    "resize_method",
)


class Predictor:
    """An exported model ready to predict: what :func:`load_learner` returns.

    Attributes:
        model: The rebuilt model, in eval mode, on ``device``.
        classes: Class names; output ``i`` scores ``classes[i]``.
        image_size, in_channels: The images the model was trained on.
        mean, std: The training images' per-channel statistics (0..1 scale).
        resize_method: How an image of another size is fitted (``"squish"`` or ``"crop"``).
        device: Where the model runs.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        classes: list[str],
        image_size: int,
        in_channels: int,
        mean: list[float],
        std: list[float],
        resize_method: str = "squish",
        device: str | torch.device = "cpu",
    ) -> None:
        self.classes = list(classes)
        self.image_size, self.in_channels = int(image_size), int(in_channels)
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self.resize_method = resize_method
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._gain, self._bias = normalising(self.mean, self.std, len(self.std))  # the loaders

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, C, H, W)`` pixels -> the model's normalised float input."""
        return torch.addcmul(self._bias, images.float().cpu(), self._gain)

    def predict(self, x: ImageInput) -> torch.Tensor:
        """Class probabilities on the CPU: ``(n_classes,)`` for one image, ``(N, n_classes)``
        for a batch, as :meth:`Learner.predict <trainers.Learner.predict>` gives them.

        ``x``: an image file's path, a PIL image, a list of them, uint8 pixels ``(C, H, W)`` /
        ``(N, C, H, W)`` (resized to :attr:`image_size`), or normalised float images of that
        size. A batch or list of more than :data:`PREDICT_BATCH` images is run in chunks of
        that many (the same probabilities, in bounded memory).

        Raises:
            ValueError: for a tensor of another rank, channel count or (float) size, or a file
                that cannot be decoded (naming it).
            FileNotFoundError: for a path that does not exist.
        """
        return self._probabilities(x)

    def predict_class(self, x: ImageInput) -> str | list[str]:
        """The most probable class name of one image, or of each image of a batch."""
        probs = self._probabilities(x)
        if probs.ndim == 1:
            return self.classes[int(probs.argmax())]
        return [self.classes[int(i)] for i in probs.argmax(dim=1)]

    def _probabilities(self, x: ImageInput) -> torch.Tensor:
        """What :meth:`predict` gives, for ``predict`` and ``predict_class`` alike: a raw-pixels
        warning names the user's call of either (two frames above this one)."""
        fmt = ImageFormat(
            in_channels=self.in_channels,
            image_size=self.image_size,
            resize_method=self.resize_method,
            normalise=self.normalise,
        )

        def forward(batch: torch.Tensor) -> torch.Tensor:
            with eval_mode(self.model), torch.no_grad():
                return self.model(batch.to(self.device)).float().softmax(dim=1).cpu()

        return _image_input.chunked_probabilities(x, fmt, forward, stacklevel=3)

    def to(self, device: str | torch.device) -> Predictor:
        """Move the model to ``device`` (in place); returns self."""
        target = torch.device(device)
        self.model.to(target)  # first: a device that is not there leaves everything as it was
        self.device = target
        return self

    def __repr__(self) -> str:
        arch = getattr(self.model, "arch", type(self.model).__name__)
        return (
            f"Predictor({arch}, classes={self.n_classes}, image_size={self.image_size}, "
            f"in_channels={self.in_channels}, device={self.device})"
        )


def export(learn: Learner, path: str | os.PathLike[str]) -> Path:
    """Write ``learn``'s model and what predicting needs to ``path`` (atomically).

    Raises:
        ValueError: for a model not built by :func:`~trainers.models.build_model` (nothing
            could rebuild it), or data without class names, statistics or an image size
            (``make_dataloaders``' has them); nothing is written.
        IsADirectoryError: ``path`` is a folder.

    Returns:
        The path written.
    """
    model = learn.model
    state: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        **export_metadata(learn),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    target = _checkpoint.file_path(path, "export")
    _checkpoint.write_atomic(target, state)
    return target


def export_metadata(learn: Learner) -> dict[str, Any]:
    """What an :func:`export` holds besides the weights, as plain JSON values: ``arch``,
    ``n_classes``, ``in_channels``, ``classes``, ``mean``, ``std``, ``image_size`` and
    ``resize_method``. ``Predictor(model, **fields)`` takes all but the first two, so a model
    kept elsewhere (an MLflow logged model) predicts on raw pixels with them.

    Raises:
        ValueError: as :func:`export` does, for a model or data it could not describe.
    """
    model = learn.model
    if not isinstance(model, GroupedModel) or model.arch not in ARCHS:
        raise ValueError(
            "export rebuilds the model with build_model, so it needs a model built by it "
            f"(arch one of {list(ARCHS)}), but got {type(model).__name__}; for a model of "
            "your own, save learn.model.state_dict() and rebuild the model yourself."
        )
    dls = learn.dls
    fields: dict[str, Any] = {
        name: getattr(dls, name, None) for name in ("classes", "mean", "std", "image_size")
    }
    missing = [name for name, value in fields.items() if value is None]
    if missing:
        raise ValueError(
            f"export needs the data's {missing}, which {type(dls).__name__} does not have; "
            "build the data with make_dataloaders."
        )
    n_classes = len(fields["classes"])
    if model.n_outputs != n_classes:
        raise ValueError(
            f"the model has {model.n_outputs} outputs but the data has {n_classes} classes: an "
            "export would read its outputs as the wrong classes; export the model with the "
            "data it was trained on."
        )
    return {
        "arch": model.arch,
        "n_classes": model.n_outputs,
        "in_channels": model.in_channels,
        "classes": _checkpoint.data_classes(dls),
        "mean": [float(m) for m in torch.as_tensor(fields["mean"]).flatten()],
        "std": [float(s) for s in torch.as_tensor(fields["std"]).flatten()],
        "image_size": int(fields["image_size"]),
        "resize_method": str(getattr(dls, "resize_method", "squish")),
    }


def load_learner(
    path: str | os.PathLike[str], *, device: str | torch.device | None = None
) -> Predictor:
    """Read an :func:`export` file (``torch.load(weights_only=True)``) into a :class:`Predictor`.

    Args:
        path: The file ``learn.export`` wrote (``~`` is the home folder).
        device: Where the model runs (default: CUDA when available, else the CPU).

    Raises:
        FileNotFoundError: for a missing file.
        IsADirectoryError: ``path`` is a folder.
        ValueError: for a file that is not an export (a ``learn.save`` checkpoint is named as
            one), cannot be read safely, or holds weights that do not fit its architecture;
            the message names the file.
    """
    file = Path(path).expanduser()
    state = _checkpoint.read_safely(file, "export")
    if isinstance(state, dict) and state.get("format") == _checkpoint.FORMAT:
        raise ValueError(
            f"{str(file)!r} is a training checkpoint (learn.save), not an export: load it into "
            "a Learner with learn.load(path), then write an export with learn.export(path)."
        )
    if not isinstance(state, dict) or state.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{str(file)!r} is not an export file (format {EXPORT_FORMAT!r}).")
    missing = [key for key in _KEYS if key not in state]
    if missing:
        raise ValueError(f"export file {str(file)!r} lacks {missing}; it is incomplete.")
    _check_fields(file, state)
    try:
        model = build_model(state["arch"], state["n_classes"], in_channels=state["in_channels"])
        model.load_state_dict(state["model"])
    except (ValueError, RuntimeError) as err:
        raise ValueError(
            f"export file {str(file)!r} holds weights that do not fit its model "
            f"{state['arch']!r}: {err}"
        ) from err
    chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Predictor(
        model,
        classes=state["classes"],
        image_size=state["image_size"],
        in_channels=state["in_channels"],
        mean=state["mean"],
        std=state["std"],
        resize_method=state["resize_method"],
        device=chosen,
    )


def _check_fields(file: Path, state: dict[str, Any]) -> None:
    """Refuse an export whose fields do not fit together (an edited or foreign file), naming
    the file and the field, before a prediction would fail or come out NaN."""
    problems = []
    channels, classes = state["in_channels"], state["classes"]
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        problems.append(f"classes must be a list of names, but is {classes!r:.60}")
    elif len(classes) != state["n_classes"]:
        problems.append(f"{len(classes)} class names for a model of {state['n_classes']} outputs")
    for name in ("mean", "std"):
        values = state[name]
        if not (isinstance(values, list) and len(values) == channels):
            problems.append(f"{name} must hold one number per channel ({channels})")
        elif not all(isinstance(v, float | int) and math.isfinite(v) for v in values):
            problems.append(f"{name} must hold finite numbers, but holds {values!r}")
        elif name == "std" and not all(v > 0 for v in values):
            problems.append(f"std must be > 0 (it divides), but holds {values!r}")
    size = state["image_size"]
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
        problems.append(f"image_size must be an integer >= 1, but is {size!r}")
    if state["resize_method"] not in RESIZE_METHODS:
        problems.append(
            f"resize_method must be one of {list(RESIZE_METHODS)}, but is "
            f"{state['resize_method']!r}"
        )
    if problems:
        raise ValueError(f"export file {str(file)!r} does not fit together: {'; '.join(problems)}.")
