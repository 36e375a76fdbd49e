"""Learner state: atomic checkpoint files and in-memory snapshots."""

from __future__ import annotations

import copy
import hashlib
import os
import secrets
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trainers._training import rng_from_checkpoint, rng_to_checkpoint
from trainers.seeding import rng_state, set_rng_state

if TYPE_CHECKING:
    from trainers.learner import Learner

__all__ = ["FORMAT", "load", "restore", "save", "snapshot"]

FORMAT = "lrsweep.learner/1"
EXPORT_FORMAT = "lrsweep-export/1"
"""``learn.export``'s format (``trainers.export``), named here so ``load`` can point to it."""
"""Value of the ``format`` key of every checkpoint file."""


_LOADERS = ("train", "valid")

_LEGACY_MAGIC = b"L119547037146038801333356"
"""How a file ``torch.save`` wrote with pickle protocol 0 or 1 starts (its magic number, as
those protocols write an integer): a file only an unpickling load reads."""


def _dls_state(learn: Learner) -> dict[str, Any] | None:
    """The data's shuffle and augmentation RNG: ``learn.dls.state_dict()`` where it has one
    (``make_dataloaders``'), else each of its loaders' own (``{"train": ..., "valid": ...}``:
    data of one's own, such as a namespace of :class:`~trainers.data.TensorLoader`, whose
    generators ``lr_find`` and a checkpoint must put back too); None when nothing has one."""
    dls = learn.dls
    state_dict = getattr(dls, "state_dict", None)
    if callable(state_dict):
        return state_dict()
    states = {}
    for name in _LOADERS:
        loader_state = getattr(getattr(dls, name, None), "state_dict", None)
        if callable(loader_state):
            states[name] = loader_state()
    return states or None


def _load_dls_state(learn: Learner, state: dict[str, Any] | None) -> None:
    """Put back :func:`_dls_state`: through ``learn.dls.load_state_dict`` where it has one,
    else into each loader the state names (``DataLoaders``' own is ``{"train": ...}`` too)."""
    if state is None:
        return
    dls = learn.dls
    if callable(getattr(dls, "load_state_dict", None)):
        dls.load_state_dict(state)
        return
    for name in _LOADERS:
        load = getattr(getattr(dls, name, None), "load_state_dict", None)
        if name in state and callable(load):
            load(state[name])


def _scaler_state(learn: Learner) -> dict[str, Any] | None:
    return learn.scaler.state_dict() if learn.scaler is not None else None


def save(learn: Learner, path: str | os.PathLike[str]) -> Path:
    """Write a checkpoint atomically: a temporary file in the same folder, then ``os.replace``.

    The file holds ``format``, ``model`` and ``opt`` state dicts, ``history``, ``epoch`` (the
    ``start_epoch`` that continues the interrupted schedule, ``learn.resume_epoch``), ``phase``,
    ``frozen`` (frozen layer groups), ``rng`` (Python/NumPy/torch), ``dls`` (the loaders'
    shuffling/augmentation RNG, also each loader's of data of one's own) and ``scaler`` (fp16's
    GradScaler state, else None), all
    readable with ``torch.load(weights_only=True)`` (NumPy scalars in ``history`` are stored as
    Python numbers). A reader never sees a half-written file; the folder is created when missing;
    ``~`` is the home folder.

    Raises:
        ValueError: when ``history`` or ``phase`` holds an object ``torch.load`` would refuse
            with ``weights_only=True`` (naming where), before anything is written.
        IsADirectoryError: ``path`` is a folder (nothing is written).

    Returns:
        The path written.
    """
    path = file_path(path, "checkpoint")
    state = {
        "format": FORMAT,
        "model": learn.model.state_dict(),
        "opt": learn.opt.state_dict(),
        "history": [_plain(dict(r), f"learn.history[{i}]") for i, r in enumerate(learn.history)],
        "epoch": learn.resume_epoch,
        "phase": _plain(learn.phase, "learn.phase"),
        "frozen": learn.frozen_groups,
        "rng": rng_to_checkpoint(),
        "dls": _dls_state(learn),
        "scaler": _scaler_state(learn),
        "classes": data_classes(learn.dls),
        "data": data_fingerprint(learn.dls),
    }
    write_atomic(path, state)
    return path


def data_fingerprint(dls: Any) -> dict[str, Any] | None:
    """What :func:`load` compares to tell other data: the image size, the split's sizes and a
    digest of which source images are the validation set (``make_dataloaders``' split indices,
    which another split seed or ``valid_pct`` changes, whatever the image size; else the
    validation labels in order). Cheap: indices, not images. None for loaders without them."""
    try:
        valid = torch.as_tensor(dls.valid_labels)
        train = dls.train_labels
    except (AttributeError, TypeError):
        return None
    which = getattr(dls, "_valid_idx", None)
    which = torch.as_tensor(which if which is not None else valid).cpu().to(torch.int64)
    return {
        "image_size": getattr(dls, "image_size", None),
        "n_train": len(train),
        "n_valid": len(valid),
        "valid_labels": hashlib.sha256(which.contiguous().numpy().tobytes()).hexdigest()[:16],
    }


def _warn_other_data(path: Path, saved: Any, now: dict[str, Any] | None) -> None:
    """Warn (at the caller of ``learn.load``) when the checkpoint was trained on other data: it
    loads (continuing at another size is progressive resizing), but a curve continued on
    another split scores images the model trained on, and one at another size starts worse."""
    if not isinstance(saved, dict) or now is None:
        return
    said = []
    if saved.get("image_size") not in (None, now["image_size"]):
        said.append(f"{saved['image_size']} px images (this data: {now['image_size']} px)")
    if (saved.get("n_train"), saved.get("n_valid"), saved.get("valid_labels")) != (
        now["n_train"],
        now["n_valid"],
        now["valid_labels"],
    ):
        said.append(
            f"another train/valid split ({saved.get('n_train')}/{saved.get('n_valid')} images; "
            f"this data: {now['n_train']}/{now['n_valid']}, or the same sizes drawn with "
            "another seed or valid_pct): its validation images may be ones the model trained "
            "on, so continued metrics would read too good"
        )
    if said:
        warnings.warn(
            f"checkpoint file {str(path)!r} was trained on {' and on '.join(said)}. Build the "
            "data as it was (make_dataloaders with the same image_size, valid_pct and seed) "
            "unless this is meant (a checkpoint taken in a ProgressiveResize stage is: a fit "
            "resumed with the same callback installed trains each epoch at its stage's size).",
            stacklevel=4,
        )


def file_path(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a file to write (``~`` expanded, its folder created).

    Raises:
        IsADirectoryError: ``path`` is a folder (nothing is created).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(
            f"{what} path {str(path)!r} is a folder; give a file name (e.g. "
            f"{str(path / 'model.pt')!r})."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: Path, state: Any) -> None:
    """``torch.save(state)`` to ``path`` so that a reader never sees a half-written file."""
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def data_classes(dls: Any) -> list[str] | None:
    """The data's class names, as plain strings, or None for data without them."""
    classes = getattr(dls, "classes", None)
    return [str(c) for c in classes] if isinstance(classes, list | tuple) else None


_SAFE = (type(None), bool, int, float, str, torch.Tensor)


def _plain(value: Any, where: str) -> Any:
    """``value`` in types ``torch.load(weights_only=True)`` reads back: NumPy scalars become
    Python numbers (a callback's ``sklearn`` metric is a ``np.float64``), containers are walked.

    Raises:
        ValueError: naming where an object of another type sits, before anything is written
            (the file would save, then fail to load).
    """
    if isinstance(value, np.generic):  # before _SAFE: np.float64 and np.str_ subclass float, str
        return value.item()
    if isinstance(value, _SAFE):
        return value
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise ValueError(
        f"{where} holds a {type(value).__name__} ({value!r:.60}), which a checkpoint cannot "
        "hold (torch.load(weights_only=True) would refuse the file): store a number, string, "
        "list, dict or tensor there."
    )


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new file next to ``path``, with the permissions the umask gives (``mkstemp``'s are
    0600, which would make every checkpoint unreadable to the user's group)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(
    learn: Learner, path: str | os.PathLike[str], *, with_opt: bool = True, with_rng: bool = True
) -> None:
    """Restore a :func:`save` checkpoint into ``learn`` (loaded with ``weights_only=True``).

    Restores the model, the freezing, ``history``, ``resume_epoch`` and ``phase``; the optimizer
    state (and an fp16 Learner's gradient-scaler state, when the file has one) when
    ``with_opt``; the global and data RNG states when ``with_rng`` (so training continues
    exactly as the uninterrupted run would).

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: for a file that is not a Learner checkpoint (unreadable, truncated,
            foreign or incomplete), that holds another model's weights (keys or shapes) or
            frozen groups, or (``with_opt``) that was saved by another optimizer (``sgd``,
            ``adam``, ``adamw``) or for another parameter-group layout; the message names the
            file, and ``learn`` is unchanged then.
        IsADirectoryError: ``path`` is a folder.
    """
    path = Path(path).expanduser()
    state = read_safely(path, "checkpoint")
    if isinstance(state, dict) and state.get("format") == EXPORT_FORMAT:
        raise ValueError(
            f"{str(path)!r} is an export (learn.export), not a training checkpoint: it holds "
            "no optimizer or history; predict with trainers.load_learner(path)."
        )
    if isinstance(state, dict) and state and all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(
            f"checkpoint file {str(path)!r} holds model weights alone (a state dict, such as a "
            "sweep checkpoint's best_model.pt), not a Learner checkpoint: load them with "
            "learn.model.load_state_dict(torch.load(path, weights_only=True)), or build the "
            "model with build_model(..., pretrained=path)."
        )
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(
            f"checkpoint file {str(path)!r} is not a Learner checkpoint (format {FORMAT!r})."
        )
    missing = [key for key in _KEYS if key not in state]
    if missing:
        raise ValueError(f"checkpoint file {str(path)!r} lacks {missing}; it is incomplete.")
    _check_model(path, state["model"], learn.model.state_dict())
    saved, now = state.get("classes"), data_classes(learn.dls)
    if saved is not None and now is not None and list(saved) != now:
        raise ValueError(
            f"checkpoint file {str(path)!r} was trained on classes {list(saved)!r}, but this "
            f"Learner's data has {now!r}: its outputs would be read as the wrong classes. "
            "Load it with data of those classes (in that order), or start from its weights "
            "with build_model(..., pretrained=path) to train a new head."
        )
    n_groups = learn.n_groups
    if not (isinstance(state["frozen"], int) and 0 <= state["frozen"] <= n_groups):
        raise ValueError(
            f"checkpoint file {str(path)!r} has {state['frozen']!r} frozen layer groups, but "
            f"this Learner's model has {n_groups}; build the Learner with the saved model."
        )
    if with_opt:
        _check_opt_layout(path, state["opt"], learn.opt.state_dict())
    learn.model.load_state_dict(state["model"])
    learn.freeze_to(state["frozen"])
    if with_opt:
        learn.opt.load_state_dict(state["opt"])
    learn.history = [dict(r) for r in state["history"]]
    learn.resume_epoch = state["epoch"]
    learn.phase = state["phase"]
    if with_opt and learn.scaler is not None and state.get("scaler"):
        learn.scaler.load_state_dict(state["scaler"])
    if with_rng:
        set_rng_state(rng_from_checkpoint(state["rng"]))
        _load_dls_state(learn, state["dls"])
    _warn_other_data(path, state.get("data"), data_fingerprint(learn.dls))


def read_safely(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU; ``what`` names the file in errors.

    Raises:
        IsADirectoryError: ``path`` is a folder.
        FileNotFoundError: for a missing file.
        ValueError: for a file ``torch.load`` cannot read with ``weights_only=True``.
    """
    if path.is_dir():
        raise IsADirectoryError(
            f"{what} path {str(path)!r} is a folder; pass the {what} file in it."
        )
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist.")
    with path.open("rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if not head.startswith((b"PK", b"\x80", _LEGACY_MAGIC)):  # torch.save's zip, or a pickle
        seen = f"it starts with {head[:4]!r}" if head else "it is empty"
        raise ValueError(
            f"{what} file {str(path)!r} is not a PyTorch file ({seen}; torch.save writes a zip "
            "archive): pass the .pt file, not a JSON, text or image file."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if head == _LEGACY_MAGIC:  # torch's refusal advises weights_only=False: not given here
            raise ValueError(
                f"{what} file {str(path)!r} was written by torch.save with pickle protocol 0 "
                "or 1, which torch.load(weights_only=True) cannot read: only an unpickling "
                "load reads it, which runs any code the file names, so it is not read. Write "
                "it again with torch.save's default protocol (learn.save and learn.export "
                "do) from a Python session you trust."
            ) from err
        why = str(err).strip() or "empty or cut short"
        raise ValueError(
            f"{what} file {str(path)!r} cannot be read safely with torch.load(weights_only=True): "
            f"{type(err).__name__}: {why} (not a PyTorch file, cut short, or holding objects "
            "that only an unsafe load would run)"
        ) from err


def snapshot(learn: Learner) -> dict[str, Any]:
    """A deep, in-memory copy of everything training can change.

    Model state dict (BatchNorm buffers included), optimizer state dict (rates and momenta
    included), every module's train/eval mode, every parameter's ``requires_grad`` and gradient,
    the frozen layer groups, the Python/NumPy/torch RNG states and the data loaders' RNG state.
    The fp16 gradient scaler's state is included. ``history`` and the recorder are not
    (``one_batch`` never touches them).
    """
    model = learn.model
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "opt": copy.deepcopy(learn.opt.state_dict()),
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()],
        "frozen": learn.frozen_groups,
        "rng": rng_state(),
        "dls": copy.deepcopy(_dls_state(learn)),
        "scaler": copy.deepcopy(_scaler_state(learn)),
    }


def restore(learn: Learner, snap: dict[str, Any]) -> None:
    """Put back a :func:`snapshot`; the snapshot itself stays reusable."""
    model = learn.model
    model.load_state_dict(snap["model"])
    learn.opt.load_state_dict(copy.deepcopy(snap["opt"]))
    for module, mode in zip(model.modules(), snap["modes"], strict=True):
        module.training = mode
    learn.freeze_to(snap["frozen"])
    for p, flag, grad in zip(model.parameters(), snap["requires_grad"], snap["grads"], strict=True):
        p.requires_grad_(flag)
        p.grad = None if grad is None else grad.clone()
    if learn.scaler is not None and snap["scaler"]:
        learn.scaler.load_state_dict(copy.deepcopy(snap["scaler"]))
    set_rng_state(snap["rng"])
    _load_dls_state(learn, copy.deepcopy(snap["dls"]))


_KEYS = ("model", "opt", "history", "epoch", "phase", "frozen", "rng", "dls")


def _check_model(path: Path, saved: Any, ours: dict[str, Any]) -> None:
    """Refuse weights of another model (keys or shapes), before anything is loaded."""
    if not isinstance(saved, dict):
        raise ValueError(f"checkpoint file {str(path)!r} holds no model state dict.")
    missing = [k for k in ours if k not in saved]
    unexpected = [k for k in saved if k not in ours]
    shapes = [
        f"{k}: {tuple(saved[k].shape)} in the file, {tuple(v.shape)} here"
        for k, v in ours.items()
        if k in saved and hasattr(v, "shape") and getattr(saved[k], "shape", None) != v.shape
    ]
    if missing or unexpected or shapes:
        details = "; ".join(
            f"{label} {items[:5]}{' ...' if len(items) > 5 else ''}"
            for label, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("other shapes", shapes),
            )
            if items
        )
        raise ValueError(
            f"checkpoint file {str(path)!r} holds the weights of another model ({details}); "
            "build the Learner with the architecture, number of classes and input channels it "
            "was saved with. Nothing was loaded."
        )


def _opt_kind(groups: list[dict[str, Any]]) -> str:
    """``sgd``, ``adam`` or ``adamw`` (the Learner's ``opt`` names), read off the settings of
    an optimizer's parameter groups; ``another optimizer`` when none fits."""
    first = groups[0] if groups else {}
    if "betas" in first:
        return "adamw" if first.get("decoupled_weight_decay") else "adam"
    return "sgd" if "momentum" in first else "another optimizer"


def _check_opt_layout(path: Path, saved: dict[str, Any], ours: dict[str, Any]) -> None:
    """Refuse optimizer state saved by another optimizer or for other parameter groups, before
    anything is loaded: SGD's groups given Adam's settings fail in the first step (no
    ``momentum``), and Adam's given AdamW's would run AdamW unannounced."""
    kind, expected_kind = _opt_kind(saved.get("param_groups", [])), _opt_kind(ours["param_groups"])
    if kind != expected_kind:
        raise ValueError(
            f"checkpoint file {str(path)!r} holds {kind} optimizer state, but this Learner's "
            f"optimizer is {expected_kind}: build the Learner with opt={kind!r} to continue "
            "that training, or load with with_opt=False (weights, history and RNG only; the "
            f"{expected_kind} optimizer starts afresh). Nothing was loaded."
        )
    sizes = [len(g["params"]) for g in saved.get("param_groups", [])]
    expected = [len(g["params"]) for g in ours["param_groups"]]
    if sizes != expected:
        raise ValueError(
            f"checkpoint file {str(path)!r} holds optimizer state for parameter groups of "
            f"{sizes} parameters, but this Learner's optimizer has {expected}: it was saved "
            "with another optimizer layout (another model, wd_bn_bias, or a checkpoint from "
            "before normalization layers and biases got their own no-decay groups). Build the "
            "Learner as it was saved, or load with with_opt=False (weights, history and RNG "
            "only; the optimizer starts afresh)."
        )
