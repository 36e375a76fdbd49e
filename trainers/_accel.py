"""The accelerator options of Learner: mixed precision, ``channels_last`` and ``torch.compile``.

:class:`Accelerator` is the validated form of ``Learner(amp=..., channels_last=...,
compile=...)``. The training loop, the range test and inference ask it for the autocast context,
the batch layout, the module to run and the gradient scaler. With every option off, each of its
methods hands back its input unchanged (or a null context), so the float32 path runs exactly the
operations it ran before the options existed.

Example:
    >>> acc = Accelerator.resolve(torch.device("cpu"), amp="bf16", channels_last=True)
    >>> acc.amp, acc.channels_last, acc.compile
    ('bf16', True, None)
    >>> Accelerator.resolve(torch.device("cpu"), compile="reduce-overhead").compile
    {'mode': 'reduce-overhead'}
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["AMP_DTYPES", "COMPILE_KEYS", "COMPILE_MODES", "Accelerator", "CompileOption"]

AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""``amp`` value -> the autocast dtype."""

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes accepted as ``compile="<mode>"``."""

COMPILE_KEYS = tuple(p for p in inspect.signature(torch.compile).parameters if p != "model")
"""Keyword arguments of ``torch.compile`` accepted in ``compile={...}``."""

CompileOption = bool | str | Mapping[str, Any]
"""``False`` (off), ``True`` (defaults), a mode name, or ``torch.compile`` keyword arguments."""

_HALF = (torch.bfloat16, torch.float16)


def _resolve_amp(amp: Any, device: torch.device) -> str | None:
    if amp is None:
        return None
    if not isinstance(amp, str) or amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', but got {amp!r}.")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(
            f"amp='fp16' needs a CUDA device (float16 training needs a GradScaler, which is "
            f"CUDA-only here), but the Learner runs on {device.type!r}; use amp='bf16' (no "
            "scaler, works on CPUs and Ampere or newer GPUs) or amp=None."
        )
    if amp == "bf16" and device.type == "cuda" and not _bf16_supported(device):
        raise ValueError(
            f"amp='bf16' needs a GPU with bfloat16 support (Ampere or newer), but "
            f"{torch.cuda.get_device_name(device)} has none; use amp='fp16' or amp=None."
        )
    return amp


def _bf16_supported(device: torch.device) -> bool:
    """bfloat16 on ``device`` itself (``is_bf16_supported`` asks of the current GPU)."""
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported())


def _resolve_compile(compile: Any) -> dict[str, Any] | None:
    if isinstance(compile, bool):
        return {} if compile else None
    if isinstance(compile, str):
        if compile not in COMPILE_MODES:
            raise ValueError(
                f"compile as a string must be a torch.compile mode from {list(COMPILE_MODES)}, "
                f"but got {compile!r}."
            )
        return {"mode": compile}
    if isinstance(compile, Mapping):
        unknown = sorted(str(k) for k in compile if k not in COMPILE_KEYS)
        if unknown:
            raise ValueError(
                f"compile has unknown key(s) {unknown}; torch.compile accepts {list(COMPILE_KEYS)}."
            )
        mode = compile.get("mode")
        if mode is not None and mode not in COMPILE_MODES:
            raise ValueError(
                f"compile['mode'] must be one of {list(COMPILE_MODES)}, but got {mode!r}."
            )
        return dict(compile)
    raise ValueError(
        "compile must be True, False, a torch.compile mode name or a dict of torch.compile "
        f"keyword arguments, but got {compile!r}."
    )


@dataclass(frozen=True)
class Accelerator:
    """Resolved accelerator options of one Learner (see :class:`~trainers.Learner`).

    Attributes:
        device_type: ``"cpu"``, ``"cuda"`` ... (what autocast is given).
        amp: ``None``, ``"bf16"`` or ``"fp16"``: autocast dtype of forward passes and losses.
        channels_last: Model and 4-D batches in ``torch.channels_last`` memory format.
        compile: ``torch.compile`` keyword arguments, or None when not compiling.
    """

    device_type: str
    amp: str | None = None
    channels_last: bool = False
    compile: dict[str, Any] | None = None
    _checked_shapes: set[tuple[int, ...]] = field(
        default_factory=set, init=False, repr=False, compare=False
    )

    @classmethod
    def resolve(
        cls,
        device: torch.device,
        *,
        amp: str | None = None,
        channels_last: bool = False,
        compile: CompileOption = False,
    ) -> Accelerator:
        """Validate the Learner's arguments.

        Raises:
            ValueError: for an unknown ``amp``; ``amp="fp16"`` off CUDA (use ``"bf16"``);
                ``amp="bf16"`` on a GPU without bfloat16; a non-boolean ``channels_last``; an
                unknown compile mode, a ``compile`` dict key that ``torch.compile`` does not
                take, or any other ``compile`` type. Each message names the argument.
        """
        if not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be True or False, but got {channels_last!r}.")
        return cls(
            device_type=device.type,
            amp=_resolve_amp(amp, device),
            channels_last=channels_last,
            compile=_resolve_compile(compile),
        )

    @property
    def cudagraphs(self) -> bool:
        """True when the compiled model replays CUDA graphs (``mode="reduce-overhead"``).

        A replay overwrites the previous outputs, so :meth:`output` copies them.
        """
        if self.compile is None or self.device_type != "cuda":
            return False
        options = self.compile.get("options") or {}
        return self.compile.get("mode") == "reduce-overhead" or bool(
            options.get("triton.cudagraphs")
        )

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` to the ``amp`` dtype, or a null context when ``amp`` is None."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=AMP_DTYPES[self.amp])

    def batch(self, xb: torch.Tensor) -> torch.Tensor:
        """``xb`` in channels_last format when enabled and ``xb`` is 4-D; otherwise ``xb``."""
        if self.channels_last and xb.ndim == 4:
            return xb.contiguous(memory_format=torch.channels_last)
        return xb

    def output(self, out: torch.Tensor) -> torch.Tensor:
        """Model outputs as the rest of the Learner sees them.

        Under ``amp`` a half-precision output is cast to float32 (losses, metrics and
        predictions are float32); with CUDA graphs it is copied out of the graph's memory.
        Without either, ``out`` itself.
        """
        if self.amp is not None and out.dtype in _HALF:
            out = out.float()
        if self.cudagraphs:
            out = out.clone()
        return out

    def prepare(self, model: nn.Module) -> nn.Module:
        """Convert ``model`` in place to channels_last when enabled (4-D weights only).

        Other ranks are left as they are: ``Module.to(memory_format=torch.channels_last)``
        would raise for a 5-D weight (``Conv3d``). Parameters stay the same objects.
        """
        if self.channels_last:
            for tensor in itertools.chain(model.parameters(), model.buffers()):
                if tensor.ndim == 4:
                    tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
        return model

    def compiled(self, model: nn.Module) -> nn.Module:
        """``torch.compile(model, **compile)`` (sharing ``model``'s parameters), or ``model``.

        Compilation itself happens lazily at the first forward pass; torch raises here for an
        unknown backend or a mode together with options.
        """
        if self.compile is None:
            return model
        return torch.compile(model, **self.compile)  # type: ignore[return-value]

    def check_training_input(self, model: nn.Module, xb: torch.Tensor) -> None:
        """Refuse, before its first step, a batch shape that bf16 on the CPU cannot train.

        PyTorch's CPU bfloat16 convolution backward (2.14) fills the weight gradient of a
        strided ``Conv2d`` with a kernel wider than 1 pixel with garbage, often NaN, in the taps
        that see only padding, when that layer's input is 1 pixel wide (measured: 14-19 of 20
        random draws; float32, stride 1 and inputs 2 or more pixels wide are exact). The loss
        stays finite while the weights are corrupted, so the fit would look healthy. Small
        images reach that size: simple_cnn at 8 px, resnet18/34 below 32 px.

        One probe per new ``(C, H, W)``: the eager module, in eval mode, under autocast and
        without gradients, runs on one sample, and forward pre-hooks record the strided
        convolutions' input widths. Modes are restored and nothing else changes, though a
        forward hook of the user's sees that one extra pass. Off bf16 on the CPU this does
        nothing.

        Raises:
            ValueError: naming the first such layer and the input size, with what to do.
        """
        if self.amp != "bf16" or self.device_type != "cpu" or xb.ndim != 4:
            return
        shape = tuple(xb.shape[1:])
        if shape in self._checked_shapes:
            return
        with self.autocast():
            hits = _one_pixel_wide_strided_convs(getattr(model, "_orig_mod", model), xb[:1])
        if hits:
            raise ValueError(
                f"amp='bf16' on the CPU cannot train this model on {shape[1]}x{shape[2]} "
                f"inputs: {hits[0]!r} (a strided Conv2d) gets a 1-pixel-wide input, where "
                "PyTorch's CPU bfloat16 convolution backward writes garbage (often NaN) into "
                "that layer's weight gradient while the loss stays finite. Use larger images "
                "(16 px or more for simple_cnn, 32 px or more for resnet18/34), amp=None, or a GPU."
            )
        self._checked_shapes.add(shape)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A ``GradScaler`` for ``amp="fp16"`` (float16 gradients underflow without it)."""
        return torch.amp.GradScaler(self.device_type) if self.amp == "fp16" else None


def _one_pixel_wide_strided_convs(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of strided, wider-than-1 ``Conv2d`` layers whose input is 1 pixel wide on ``x``.

    A probe that fails (a model that cannot run one sample in eval mode) finds nothing: the
    real forward pass reports its own error.
    """
    hits: list[str] = []

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if args and isinstance(args[0], torch.Tensor) and args[0].shape[-1] == 1:
                hits.append(name)

        return hook

    handles = [
        m.register_forward_pre_hook(record(name))
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.stride[1] > 1 and m.kernel_size[1] > 1
    ]
    if not handles:
        return hits
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    except Exception:  # the probe only refuses early; the real forward reports its own error
        return []
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.train(training)
    return hits
