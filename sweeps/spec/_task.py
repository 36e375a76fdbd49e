"""The ``task`` section of a spec: what is trained (data, model, schedule), shared by every arm."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sweeps.spec._types import Int, Number, SpecModel, field_error

__all__ = [
    "COMPILE_MODES",
    "DATASETS",
    "AcceleratorSpec",
    "AugmentSpec",
    "ConstantSchedule",
    "DatasetSpec",
    "FineTuneSpec",
    "ModelSpec",
    "OneCycleSchedule",
    "ResizeStage",
    "Schedule",
    "SgdrSchedule",
    "TaskSpec",
    "TtaSpec",
    "is_uri",
    "local_path",
]

DATASETS = ("digits", "shapes", "image_folder", "mnist", "fashion_mnist", "cifar10")
_SEED_MAX = 2**32 - 1
_READS_PATH = ("image_folder", "mnist", "fashion_mnist", "cifar10")
"""Datasets whose builder reads ``path`` (a local folder); the others ignore it."""
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
"""``torch.compile`` modes a spec may name as ``task.accelerator.compile``."""


def is_uri(value: str) -> bool:
    """True for ``scheme://...`` strings (``s3://bucket/x``), which are never checked on disk."""
    return bool(_URI.match(value))


def searched(local: Path) -> str:
    """Where a relative path was looked for: lrsweep reads it from the folder it runs in, not
    the spec's (the same spec runs from any folder, on any node), which a user may not expect."""
    if local.is_absolute():
        return ""
    return (
        f" (a relative path is read from the folder lrsweep runs in, not the spec's: looked "
        f"for {Path.cwd() / local}; run lrsweep from the spec's folder or give the full path)"
    )


def local_path(value: str, probe: Callable[[Path], bool] = Path.exists) -> tuple[Path, bool]:
    """``value`` with ``~`` expanded, and ``probe`` (``exists``, ``is_dir`` ...) of it.

    Raises:
        ValueError: naming ``value`` when ``~user`` names no known user, or when the path cannot
            be looked at (a name too long, a folder it may not enter).
    """
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~user with no such user
        user = value.split("/", 1)[0]
        raise ValueError(
            f"{value!r}: {user!r} is no known user's home folder; write ~/... for your own "
            "home, or the full path"
        ) from None
    try:
        return path, probe(path)
    except OSError as error:
        raise ValueError(f"{value!r} cannot be looked at: {error.strerror or error}") from None


class DatasetSpec(SpecModel):
    """Which images, and how they are split.

    ``path`` is required for ``image_folder`` (a folder of class sub-folders) and optional
    elsewhere (a download or cache folder). A local path must exist when the spec is loaded and is
    stored absolute (trials run in their own working directories). The trials read no URI:
    ``s3://...`` is refused for the datasets that read ``path`` (``digits`` and ``shapes`` ignore
    it).

    ``options`` are keyword arguments of the dataset's builder in ``trainers.data.DATASETS``
    (``n_classes`` for ``shapes``, ``channels`` for ``digits`` ...); their names are checked
    against the builder's signature when the spec is loaded (no data is read), their values by
    the builder in each trial. ``seed`` and ``path`` are fields here, never options.
    """

    name: Literal["digits", "shapes", "image_folder", "mnist", "fashion_mnist", "cifar10"]
    valid_pct: Number = Field(default=0.2, gt=0.0, lt=1.0)
    seed: Int = Field(default=42, ge=0, le=_SEED_MAX)
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str | None, info: ValidationInfo) -> str | None:
        name = info.data.get("name")
        if path is None:
            if name == "image_folder":
                raise ValueError(
                    "is required when name is image_folder (a folder of class folders)"
                )
            return None
        if not path.strip():  # Path("") is ".": the data were read from the working folder
            raise ValueError(
                "must not be empty; give the data's folder, or leave it out (null) where the "
                "dataset needs none"
            )
        if is_uri(path):
            if name in _READS_PATH:
                raise ValueError(
                    f"{path!r} is a URI, but the trials read {name} from a local folder only; "
                    "copy the data to a folder every node can read and give that path"
                )
            return path
        local, is_dir = local_path(path, Path.is_dir)
        exists = is_dir or local_path(path)[1]
        if name == "image_folder" and not exists:
            raise ValueError(f"folder {path!r} does not exist{searched(local)}")
        if not exists:
            raise ValueError(f"{path!r} does not exist{searched(local)}")
        if name in _READS_PATH and not is_dir:
            raise ValueError(
                f"{path!r} is a file, but {name} reads a folder: give the folder that holds its "
                "images"
            )
        return str(local.resolve())

    @model_validator(mode="after")
    def _check_options(self) -> DatasetSpec:
        if not self.options:
            return self
        accepted = _dataset_options(self.name)
        if accepted is None:
            return self
        unknown = [key for key in self.options if key not in accepted]
        if not unknown:
            return self
        first = unknown[0]
        if first in type(self).model_fields:
            message = f"is not an option; set task.dataset.{first} instead"
        else:
            listed = ", ".join(accepted) if accepted else "none"
            message = f"unknown option for dataset {self.name!r} (accepted: {listed})"
        if len(unknown) > 1:
            message += f"; also refused: {', '.join(unknown[1:])}"
        raise field_error(f"options.{first}", message)


def _dataset_options(name: str) -> tuple[str, ...] | None:
    """The ``task.dataset.options`` keys dataset ``name`` accepts, read from its builder.

    The builder is ``trainers.data.DATASETS[name]``; every keyword parameter of its signature
    is an option except those the spec fills from its own fields (``seed``, ``path``).
    Importing ``trainers.data`` loads torch, so this runs only for specs that set options.

    Returns:
        The option names in signature order, or None when the builder takes ``**kwargs``
        (any name is then left to the builder).

    Raises:
        KeyError: if no dataset is registered under ``name``.
    """
    from trainers.data import DATASETS as builders

    accepted: list[str] = []
    for param in inspect.signature(builders[name]).parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        keyword = param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)
        if keyword and param.name not in DatasetSpec.model_fields:
            accepted.append(param.name)
    return tuple(accepted)


class ModelSpec(SpecModel):
    """The network: ``arch`` and optional ``pretrained`` weights.

    ``pretrained`` is passed to ``trainers.build_model``: a local file (stored absolute, as
    trials run in their own working directories; a value that looks like a file, with a path
    separator or a weights suffix such as ``.pt``, must exist) or a torchvision weights name
    (``IMAGENET1K_V1``, resnets only). The trials read no URI, so ``s3://...`` is refused.
    """

    arch: Literal["simple_cnn", "resnet18", "resnet34"] = "simple_cnn"
    pretrained: str | None = None

    @field_validator("pretrained")
    @classmethod
    def _check_pretrained(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("must not be empty; leave it out (null) to start from random weights")
        if is_uri(value):
            raise ValueError(
                f"{value!r} is a URI, but the trials load weights from a local file only; copy "
                "the file to a path every node can read and give that path"
            )
        local, is_file = local_path(value, Path.is_file)
        if is_file:
            return str(local.resolve())
        if "/" in value or "\\" in value or value.endswith(_WEIGHT_SUFFIXES):
            raise ValueError(f"weights file {value!r} does not exist{searched(local)}")
        if info.data.get("arch") == "simple_cnn":
            raise ValueError(
                f"{value!r} is no file here, and simple_cnn has no torchvision weights names; "
                "give a state-dict file, or set task.model.arch to resnet18 or resnet34"
            )
        return value


class OneCycleSchedule(SpecModel):
    """fastai's one-cycle policy: warm up for ``pct_start`` of training, then anneal."""

    kind: Literal["one_cycle"] = "one_cycle"
    pct_start: Number = Field(default=0.25, gt=0.0, lt=1.0)
    div: Number = Field(default=25.0, gt=0.0)
    div_final: Number = Field(default=1.0e5, gt=0.0)


class SgdrSchedule(SpecModel):
    """Cosine annealing with warm restarts; cycles of ``cycle_len * cycle_mult**i`` epochs.

    Training is cut at ``task.epochs`` even when that falls inside a cycle.
    """

    kind: Literal["sgdr"] = "sgdr"
    cycle_len: Int = Field(default=1, ge=1, le=1000)
    cycle_mult: Int = Field(default=2, ge=1, le=100)


class FlatCosSchedule(SpecModel):
    """fastai's ``fit_flat_cos``: the rate flat for ``pct_start`` of training, then half a
    cosine down to ``lr / div_final``."""

    kind: Literal["flat_cos"] = "flat_cos"
    pct_start: Number = Field(default=0.75, ge=0.0, le=1.0)
    div_final: Number = Field(default=1.0e5, gt=0.0)


class ConstantSchedule(SpecModel):
    """The same learning rate throughout."""

    kind: Literal["constant"] = "constant"


Schedule = Annotated[
    OneCycleSchedule | SgdrSchedule | FlatCosSchedule | ConstantSchedule,
    Field(discriminator="kind"),
]


class FineTuneSpec(SpecModel):
    """Transfer learning: train the head alone first, then everything with discriminative LRs.

    ``lr_mult`` is the ratio between the head's LR and the earliest layer group's LR.
    """

    freeze_epochs: Int = Field(default=1, ge=0, le=1000)
    lr_mult: Number = Field(default=10.0, ge=1.0, le=1.0e6)
    precompute: Annotated[bool, Field(strict=True)] = False
    """Train the frozen epochs' head on the body's activations, computed once per trial
    (``fit(..., precompute=True)``): the frozen epochs cost a head's forward and backward only.
    The body stays in eval mode (its BatchNorm statistics are not updated, unlike a plain frozen
    fit's), so it needs pretrained weights, and no augmentation (the cache is of plain images)."""


class AugmentSpec(SpecModel):
    """Train-time batch augmentation (``trainers.data.augment.Augment``); all off by default."""

    flip: Annotated[bool, Field(strict=True)] = False
    rotate: Number = Field(default=0.0, ge=0.0, le=180.0)
    zoom: Number = Field(default=1.0, ge=1.0, le=10.0)
    jitter: Number = Field(default=0.0, ge=0.0, lt=1.0)


class ResizeStage(SpecModel):
    """One stage of progressive resizing: ``epochs`` epochs on ``size`` px images."""

    size: Int = Field(ge=1, le=4096)
    epochs: Int = Field(ge=1, le=10000)


def _tta_value(value: Any) -> Any:
    """``true`` is TTA with fastai's defaults, ``false`` is off (as null)."""
    if value is True:
        return {}
    if value is False:
        return None
    return value


class TtaSpec(SpecModel):
    """Test-time augmentation of each trial's best epoch, as fastai's ``tta(n=4, beta=0.25)``:
    the class probabilities of ``n`` passes over the validation set with ``task.augment``,
    averaged, then blended with one plain pass (``beta`` of it)."""

    n: Int = Field(default=4, ge=1, le=64)
    beta: Number = Field(default=0.25, ge=0.0, le=1.0)


def _compile_value(value: Any) -> Any:
    """Accept exactly true, false or a mode name (not 1, 0 or "yes")."""
    if isinstance(value, bool) or (isinstance(value, str) and value in COMPILE_MODES):
        return value
    raise PydanticCustomError(
        "compile_value",
        "must be true, false or a torch.compile mode ({modes})",
        {"modes": ", ".join(COMPILE_MODES)},
    )


def _amp_value(value: Any) -> Any:
    """``false`` is off, as for ``compile``; ``true`` names no precision, so it is refused."""
    if value is False:
        return None
    if value is True:
        raise PydanticCustomError(
            "amp_value", "true names no precision: use bf16, fp16, or false / null for float32"
        )
    return value


def _fused_step_value(value: Any) -> Any:
    """Accept exactly null, true or false (not 1, 0 or "auto")."""
    if value is None or isinstance(value, bool):
        return value
    raise PydanticCustomError(
        "fused_step_value", "must be null (fused where the parameters allow it), true or false"
    )


class AcceleratorSpec(SpecModel):
    """Speed options of every trial's ``Learner`` (``amp``, ``channels_last``, ``compile``,
    ``fused_step``).

    ``amp``: ``bf16`` autocast (CPUs, Ampere or newer GPUs), ``fp16`` autocast with gradient
    scaling (CUDA only: needs ``resources.gpu`` > 0) or null / false (float32).
    ``channels_last``: model and batches in NHWC memory format (faster convolutions with
    bf16/fp16 on tensor cores).
    ``compile``: ``torch.compile`` the model: false, true or a mode name; compile time is paid
    once per trial process. All off by default: results are then bit-for-bit those of float32.
    ``fused_step``: the optimizer's step: null (PyTorch's fused kernel wherever the parameters
    allow it), false (PyTorch's default implementation: the same maths, another float
    rounding, as lrsweep trained before 2026-12-05) or true (fused, an error where it cannot).
    """

    amp: Annotated[Literal["bf16", "fp16"] | None, BeforeValidator(_amp_value)] = None
    channels_last: Annotated[bool, Field(strict=True)] = False
    compile: Annotated[
        bool | Literal["default", "reduce-overhead", "max-autotune"],
        BeforeValidator(_compile_value),
    ] = False
    fused_step: Annotated[bool | None, BeforeValidator(_fused_step_value)] = None


SMALL_IMAGE_SIZE = 8
"""Below this many pixels a side (the bundled digits' own size) an image keeps little more than
its colours: :meth:`TaskSpec.advice` says so."""


class TaskSpec(SpecModel):
    """Everything every trial of the sweep shares; only the learning rate and the seed vary."""

    dataset: DatasetSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    image_size: Int = Field(default=32, ge=1, le=4096)
    batch_size: Int = Field(default=64, ge=1, le=65536)
    epochs: Int = Field(default=8, ge=1, le=10000)
    opt: Literal["adamw", "adam", "sgd"] = "adamw"
    wd: Number = Field(default=0.01, ge=0.0, le=10.0)
    wd_bn_bias: Annotated[bool, Field(strict=True)] = False
    schedule: Schedule = Field(default_factory=OneCycleSchedule)
    fine_tune: FineTuneSpec | None = None
    augment: AugmentSpec | None = None
    oversample: Annotated[bool, Field(strict=True)] = False
    progressive_resizing: list[ResizeStage] = Field(default_factory=list, max_length=64)
    tta: Annotated[TtaSpec | None, BeforeValidator(_tta_value)] = None
    accelerator: AcceleratorSpec = Field(default_factory=AcceleratorSpec)

    @field_validator("augment", mode="before")
    @classmethod
    def _preset_to_mapping(cls, augment: Any) -> Any:
        """``augment: light`` (a preset name, as ``make_dataloaders`` takes) is that preset's
        values; ``none`` is null. The resolved spec holds the values, not the name."""
        if not isinstance(augment, str):
            return augment
        from dataclasses import asdict

        from trainers.data.augment import PRESETS  # loads torch: only for a spec naming one

        if augment not in PRESETS:
            raise PydanticCustomError(
                "augment_preset",
                "must be a preset ({names}) or a mapping of flip, rotate, zoom and jitter",
                {"names": ", ".join(PRESETS)},
            )
        return None if augment == "none" else asdict(PRESETS[augment])

    @field_validator("batch_size")
    @classmethod
    def _batch_norm_needs_two(cls, batch_size: int) -> int:
        if batch_size < 2:
            raise ValueError(
                f"must be at least 2: every model's head has BatchNorm, which cannot train on "
                f"one image a batch (every trial would fail), but got {batch_size}"
            )
        return batch_size

    @model_validator(mode="after")
    def _check_progressive_resizing(self) -> TaskSpec:
        for index, stage in enumerate(self.progressive_resizing):
            if stage.size >= self.image_size:
                raise field_error(
                    f"progressive_resizing.{index}.size",
                    f"must be below task.image_size={self.image_size} (the epochs after the "
                    f"stages train at image_size), but got {stage.size}",
                )
        staged = sum(stage.epochs for stage in self.progressive_resizing)
        if staged >= self.epochs:
            raise field_error(
                "progressive_resizing",
                f"its stages take {staged} epochs, but task.epochs={self.epochs}: leave at "
                "least one epoch at task.image_size (the size the model is evaluated and "
                "logged at), by raising task.epochs or shortening the stages",
            )
        return self

    @model_validator(mode="after")
    def _check_precompute(self) -> TaskSpec:
        fine_tune = self.fine_tune
        if fine_tune is None or not fine_tune.precompute:
            return self
        why = ""
        if fine_tune.freeze_epochs == 0:
            why = "fine_tune.freeze_epochs is 0: there are no frozen epochs to precompute"
        elif self.model.pretrained is None:
            why = (
                "task.model.pretrained is null: a random body's BatchNorm has seen no data, and "
                "precompute keeps the body in eval mode, so the head would train on features "
                "nothing normalised (digits, 2 epochs: 50% error against 6%)"
            )
        elif self.augment is not None:
            why = (
                "task.augment is set: the cached activations are of plain images, and every "
                "epoch's augmented ones would differ; set task.augment: null"
            )
        elif self.progressive_resizing:
            why = (
                "task.progressive_resizing trains the first epochs at other sizes, and the cache "
                "is of one size"
            )
        if why:
            raise field_error("fine_tune.precompute", f"cannot be true here: {why}")
        return self

    @model_validator(mode="after")
    def _tta_needs_augment(self) -> TaskSpec:
        if self.tta is not None and self.augment is None:
            raise field_error(
                "tta",
                "needs task.augment: TTA averages predictions over augmented copies of each "
                "validation image, drawn as training augments; set task.augment (e.g. light), "
                "or remove tta",
            )
        return self

    @model_validator(mode="after")
    def _check_fine_tune(self) -> TaskSpec:
        if self.fine_tune is not None and self.fine_tune.freeze_epochs >= self.epochs:
            raise field_error(
                "fine_tune.freeze_epochs",
                f"must be below task.epochs={self.epochs} (some epochs must train unfrozen), "
                f"but got {self.fine_tune.freeze_epochs}",
            )
        return self

    def advice(self) -> list[str]:
        """Valid task settings that defeat the comparison, each with what to change: an image
        size too small for a model to see shapes (the trials train, on colours alone)."""
        if self.image_size >= SMALL_IMAGE_SIZE:
            return []
        return [
            f"task.image_size: {self.image_size} px a side leaves each image "
            f"{self.image_size**2} pixel{'s' if self.image_size > 1 else ''} a channel, too few "
            "for a model to see shapes (the trials train, on little more than colour); raise "
            f"task.image_size to at least {SMALL_IMAGE_SIZE} (16-32 for the bundled models)"
        ]
