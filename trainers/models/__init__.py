"""Models with named layer groups: ``build_model(arch, n_classes)`` returns a GroupedModel.

Example:
    >>> model = build_model("simple_cnn", n_classes=10, in_channels=1)
    >>> [type(g).__name__ for g in model.layer_groups()]
    ['Sequential', 'Sequential', 'Sequential']
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from trainers.models._base import AdaptiveConcatPool2d, GroupedModel, create_head
from trainers.models._resnet import RESNETS, resnet, torchvision_weights
from trainers.models._simple_cnn import simple_cnn

__all__ = [
    "ARCHS",
    "AdaptiveConcatPool2d",
    "GroupedModel",
    "build_model",
    "create_head",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

ARCHS = ("simple_cnn", *RESNETS)


def build_model(
    arch: str,
    n_classes: int,
    *,
    pretrained: str | os.PathLike[str] | None = None,
    in_channels: int = 3,
) -> GroupedModel:
    """Build a classifier with layer groups for discriminative rates and freezing.

    Args:
        arch: One of :data:`ARCHS`: ``"simple_cnn"`` (four conv-bn-relu stages, CPU-friendly,
            8 px and up), ``"resnet18"``, ``"resnet34"`` (torchvision).
        n_classes: Number of outputs, ``>= 1``.
        pretrained: None (random init); a path to a state dict (``~`` is the home folder),
            loaded with ``torch.load(weights_only=True)`` - either this project's model / checkpoint
            (``learn.save``) or, for resnets, a torchvision-format state dict; or a torchvision
            weights name such as ``"IMAGENET1K_V1"`` (downloaded, or read from torch hub's cache).
            From a file, the body must match exactly; the head is loaded only when its shapes
            match too (same number of classes), otherwise a fresh head is kept (transfer learning).
        in_channels: Channels of the input images, ``>= 1``.

    Raises:
        ValueError: for an unknown ``arch`` (lists :data:`ARCHS`), bad ``n_classes`` /
            ``in_channels``, an unknown weights name, a folder, or a file that is not a
            readable, safe state dict for this model (the message names the file).
        FileNotFoundError: for a path-like ``pretrained`` that does not exist.
        RuntimeError: when torchvision weights cannot be downloaded (offline).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {list(ARCHS)}, but got {arch!r}.")
    for name, value in (("n_classes", n_classes), ("in_channels", in_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, but got {value!r}.")
    path = _as_path(pretrained)
    sd = read_state_dict(path) if path is not None else None
    if arch == "simple_cnn":
        if pretrained is not None and path is None:
            raise ValueError(
                f"pretrained={pretrained!r} is no existing file, and simple_cnn has no "
                "torchvision weights; pass the path of a state-dict file."
            )
        model = simple_cnn(n_classes, in_channels=in_channels)
    elif pretrained is not None and path is None:
        weights = torchvision_weights(arch, str(pretrained))
        return resnet(arch, n_classes, in_channels=in_channels, weights=weights)
    elif sd is not None and path is not None and not _is_grouped(sd):
        try:
            return resnet(arch, n_classes, in_channels=in_channels, state_dict=sd)
        except (ValueError, RuntimeError) as err:  # keys or shapes that do not fit
            raise ValueError(
                f"pretrained file {str(path)!r} does not fit {arch} (read as a torchvision "
                f"state dict): {err} Pass weights saved from a torchvision {arch} or from "
                f"build_model({arch!r}, ...)."
            ) from err
    else:
        model = resnet(arch, n_classes, in_channels=in_channels)
    if sd is not None and path is not None:
        _load_grouped(model, sd, path)
    return model


def _as_path(pretrained: str | os.PathLike[str] | None) -> Path | None:
    """The file behind ``pretrained``, or None for None / a weights name."""
    if pretrained is None:
        return None
    if not isinstance(pretrained, str | os.PathLike):
        raise ValueError(
            "pretrained must be None, a file path or a torchvision weights name, "
            f"but got {type(pretrained).__name__}."
        )
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise ValueError(
            f"pretrained={str(pretrained)!r} is a folder, not a weights file; pass the path of "
            "a state-dict file in it."
        )
    text = str(pretrained)
    if (
        isinstance(pretrained, os.PathLike)
        or os.sep in text
        or text.endswith((".pt", ".pth", ".bin"))
    ):
        raise FileNotFoundError(f"pretrained weights file {text!r} does not exist.")
    return None


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict in a weights file, read as ``build_model(pretrained=path)`` reads it:
    ``torch.load(path, weights_only=True)``, unwrapping a ``learn.save`` checkpoint.

    Raises:
        ValueError: for a file that torch cannot read (truncated, corrupt, another format), is
            not a plain state dict (name -> tensor), would run code when unpickled or holds a
            NaN or inf weight; the message names the file.
        OSError: for a file that cannot be read.
    """
    path = Path(path).expanduser()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except pickle.UnpicklingError as err:
        found = _UNSUPPORTED_GLOBAL.search(str(err))
        if found is None:  # not torch's pickle of anything: cut short, or another format
            raise _unreadable(path, err) from err
        raise ValueError(
            f"pretrained file {str(path)!r} holds Python objects ({found.group(1)}), not a "
            "plain state dict: unpickling it would run their code, so torch.load with "
            "weights_only=True refused it. Save the weights alone and point at that file: "
            "torch.save(model.state_dict(), path)."
        ) from err
    except Exception as err:  # torch.load: OSError (a zip cut short), RuntimeError, EOFError...
        raise _unreadable(path, err) from err
    for wrapper in ("model", "state_dict"):  # learn.save's checkpoint; Lightning's and others'
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        held = (
            f"a mapping of {sorted(map(str, obj))[:6]}"
            if isinstance(obj, Mapping)
            else f"a {type(obj).__name__}"
        )
        raise ValueError(
            f"pretrained file {str(path)!r} does not hold a state dict (name -> tensor) but "
            f"{held}; save the model's state dict alone: torch.save(model.state_dict(), path)."
        )
    for key, value in obj.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"pretrained file {str(path)!r}: tensor {key!r} holds NaN or inf (saved after "
                "the loss diverged?); load weights saved before that."
            )
    return dict(obj)


_UNSUPPORTED_GLOBAL = re.compile(r"unsupported GLOBAL:? (?:GLOBAL )?([\w.]+)", re.IGNORECASE)
"""torch's words for a pickle that names a class or function (a whole model, say)."""


def _unreadable(path: Path, err: Exception) -> ValueError:
    # torch's own text of a weights-only failure is advice to unpickle the file unsafely
    detail = str(err).strip().splitlines()[-1] if str(err).strip() else "no data"
    if "weights only load failed" in str(err).lower():
        detail = (_WEIGHTS_ONLY_DETAIL.findall(str(err)) or ["not torch's format"])[-1]
    return ValueError(
        f"pretrained file {str(path)!r} could not be read as a torch file (truncated, corrupt "
        f"or not written by torch.save?) ({type(err).__name__}: {detail}). "
        "Write it again with torch.save(model.state_dict(), path) or learn.save(path)."
    )


_WEIGHTS_ONLY_DETAIL = re.compile(r"(Unsupported operand \S+|invalid load key[^.\n]*)")


def _is_grouped(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("body.") for k in sd)


def _load_grouped(model: GroupedModel, sd: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load the body strictly and the head only when every shape matches."""
    body = {k[len("body.") :]: v for k, v in sd.items() if k.startswith("body.")}
    head = {k[len("head.") :]: v for k, v in sd.items() if k.startswith("head.")}
    try:
        model.body.load_state_dict(body, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"pretrained file {str(path)!r} does not fit the {model.arch} body: {err} Build the "
            "model with the arch and in_channels the file was saved with."
        ) from err
    own = model.head.state_dict()
    if head.keys() == own.keys() and all(head[k].shape == own[k].shape for k in own):
        model.head.load_state_dict(head)
    else:
        logger.info("pretrained file %s: head shapes differ, keeping a fresh head", path)
