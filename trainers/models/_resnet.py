"""resnet18 / resnet34 from torchvision, as a GroupedModel with fastai's three layer groups."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # torchvision pulls in torch._dynamo (~1 s): imported when a ResNet is built
    from torchvision import models as tvm

from trainers.models._base import GroupedModel, create_head

__all__ = ["RESNETS", "resnet", "torchvision_weights"]

logger = logging.getLogger(__name__)

RESNETS = ("resnet18", "resnet34")


def _builder(arch: str) -> Any:
    from torchvision import models as tvm

    return getattr(tvm, arch)


def torchvision_weights(arch: str, name: str) -> tvm.WeightsEnum:
    """The torchvision weights enum member ``name`` (e.g. ``"IMAGENET1K_V1"``) for ``arch``.

    Raises:
        ValueError: for a name torchvision does not know for this arch (lists the known ones).
    """
    from torchvision import models as tvm

    enum = tvm.get_model_weights(_builder(arch))
    known = [w.name for w in enum]
    if name == "DEFAULT":
        return enum.DEFAULT
    if name not in known:
        raise ValueError(
            f"pretrained={name!r} is neither an existing file nor a torchvision weights name for "
            f"{arch}; the weights names are {[*known, 'DEFAULT']}."
        )
    return enum[name]


def download_weights(arch: str, weights: tvm.WeightsEnum) -> Mapping[str, torch.Tensor]:
    """The weights' state dict, from torch's cache or downloaded into it.

    Raises:
        RuntimeError: they are not in the cache and cannot be downloaded (no network).
    """
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # urllib / socket / hash errors all mean "could not fetch"
        raise RuntimeError(
            f"Could not download torchvision weights {weights} for {arch} ({err}). Without a "
            "network, pass pretrained= a local state-dict file instead."
        ) from err


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int, *, pretrained: bool) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs: its pretrained RGB filters averaged and
    spread, or (``pretrained=False``) the new layer's own random init, as fastai's
    ``_update_first_layer``: averaging random filters would give every channel the same one."""
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        bias=conv.bias is not None,
    )
    if not pretrained:
        return new
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (conv.in_channels / in_channels))
    return new


def resnet(
    arch: str,
    n_classes: int,
    *,
    in_channels: int = 3,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    weights: tvm.WeightsEnum | None = None,
) -> GroupedModel:
    """A torchvision ResNet body with a fastai-style head.

    Layer groups: ``[stem + layer1 + layer2, layer3 + layer4, head]``.

    Args:
        arch: ``"resnet18"`` or ``"resnet34"``.
        n_classes: Number of outputs.
        in_channels: Input channels; the first convolution is replaced when not 3: pretrained
            RGB filters are averaged over colour and spread over the new channels, and without
            weights the new layer keeps its own random init (one filter per channel).
        state_dict: A torchvision-format state dict (``conv1.weight`` ...) to start from; its
            ``fc`` layer is ignored.
        weights: torchvision weights to download (or read from torch hub's cache).
    """
    tv = _builder(arch)(weights=None)
    sd = dict(state_dict) if state_dict is not None else None
    if weights is not None:
        sd = dict(download_weights(arch, weights))
    if sd is not None:
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
        missing, unexpected = tv.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(
                f"pretrained weights do not fit {arch}: missing keys {missing[:5]}, "
                f"unexpected keys {unexpected[:5]}."
            )
    if in_channels != 3:
        tv.conv1 = _adapt_first_conv(tv.conv1, in_channels, pretrained=sd is not None)
    stem = nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool)
    body = nn.Sequential(stem, tv.layer1, tv.layer2, tv.layer3, tv.layer4)
    head = create_head(tv.fc.in_features, n_classes)  # fastai's: 512 hidden, no bias, kaiming
    return GroupedModel(body, head, group_starts=(0, 3), arch=arch)
