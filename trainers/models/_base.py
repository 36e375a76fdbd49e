"""GroupedModel: a body of stages and a head, split into layer groups."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["AdaptiveConcatPool2d", "GroupedModel", "create_head"]


class AdaptiveConcatPool2d(nn.Module):
    """Concatenate adaptive average and max pooling along channels (fastai's pooling)."""

    def __init__(self, size: int = 1) -> None:
        super().__init__()
        self.avg = nn.AdaptiveAvgPool2d(size)
        self.max = nn.AdaptiveMaxPool2d(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.max(x), self.avg(x)], dim=1)


def create_head(
    n_features: int,
    n_classes: int,
    *,
    hidden: int | None = 512,
    ps: float = 0.5,
    bias: bool = False,
    init: Callable[[torch.Tensor], Any] | None = nn.init.kaiming_normal_,
) -> nn.Sequential:
    """fastai's classifier head (``create_head``) on a feature map with ``n_features`` channels.

    Concat pooling, flatten, then ``BatchNorm1d -> Dropout(ps/2) -> Linear(-> hidden) -> ReLU``
    when ``hidden`` is given, and ``BatchNorm1d -> Dropout(ps) -> Linear(-> n_classes)``. As in
    fastai, each ``Linear`` follows a ``BatchNorm1d`` and so has no bias, and its weights start
    from ``kaiming_normal_`` (what fastai's ``vision_learner`` applies to its head).

    Args:
        n_features: Channels of the body's output.
        n_classes: Number of outputs.
        hidden: Width of the hidden layer (fastai's 512); None for a single linear layer.
        ps: Dropout probability of the last layer, in ``[0, 1)``.
        bias: Give the ``Linear`` layers a bias (fastai: no).
        init: Applied to each ``Linear`` weight; None keeps PyTorch's default initialisation.

    Raises:
        ValueError: for ``n_classes < 1``, ``hidden < 1`` or ``ps`` outside ``[0, 1)``.
    """
    if not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"n_classes must be an integer >= 1, but got {n_classes!r}.")
    if hidden is not None and (not isinstance(hidden, int) or hidden < 1):
        raise ValueError(f"hidden must be an integer >= 1 or None, but got {hidden!r}.")
    if not 0.0 <= ps < 1.0:
        raise ValueError(f"ps (dropout) must be in [0, 1), but got {ps!r}.")
    width = 2 * n_features
    layers: list[nn.Module] = [AdaptiveConcatPool2d(), nn.Flatten()]
    linears: list[nn.Linear] = []
    if hidden is not None:
        linears.append(nn.Linear(width, hidden, bias=bias))
        layers += [nn.BatchNorm1d(width), nn.Dropout(ps / 2), linears[-1], nn.ReLU(inplace=True)]
        width = hidden
    linears.append(nn.Linear(width, n_classes, bias=bias))
    layers += [nn.BatchNorm1d(width), nn.Dropout(ps), linears[-1]]
    if init is not None:
        with torch.no_grad():
            for linear in linears:
                init(linear.weight)
                if linear.bias is not None:
                    linear.bias.zero_()
    return nn.Sequential(*layers)


class GroupedModel(nn.Module):
    """``head(body(x))`` with the body's stages split into layer groups.

    Args:
        body: The feature extractor as a sequence of stages.
        head: The classifier on the body's output.
        group_starts: Index in ``body`` where each body layer group begins; the first must be 0.
            With ``(0, 2)`` and a 4-stage body the groups are ``body[0:2]``, ``body[2:4]``, head.
        arch: Name of the architecture, for display.

    Raises:
        ValueError: if ``group_starts`` does not start at 0 or is not strictly increasing within
            the body.
    """

    def __init__(
        self, body: nn.Sequential, head: nn.Module, *, group_starts: Sequence[int], arch: str = ""
    ) -> None:
        super().__init__()
        starts = list(group_starts)
        if (
            not starts
            or starts[0] != 0
            or any(b <= a for a, b in itertools.pairwise(starts))
            or starts[-1] >= len(body)
        ):
            raise ValueError(
                "group_starts must be strictly increasing indices into the body starting at 0, "
                f"but got {starts!r} for a body of {len(body)} stages."
            )
        self.body = body
        self.head = head
        self.group_starts = tuple(starts)
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def layer_groups(self) -> list[nn.Module]:
        """The layer groups, earliest first and the head last.

        Each body group is a fresh ``nn.Sequential`` over the body's own stage modules (shared,
        not copied), so the same parameters appear in ``model.parameters()``.
        """
        bounds = [*self.group_starts, len(self.body)]
        groups: list[nn.Module] = [
            nn.Sequential(*self.body[a:b]) for a, b in itertools.pairwise(bounds)
        ]
        return [*groups, self.head]

    @property
    def in_channels(self) -> int | None:
        """Channels of the images the body takes: its first convolution's (None without one)."""
        conv = next((m for m in self.body.modules() if isinstance(m, nn.Conv2d)), None)
        return None if conv is None else int(conv.in_channels)

    @property
    def n_outputs(self) -> int | None:
        """Scores the head gives per image: its last linear layer's (None without one)."""
        linears = [m for m in self.head.modules() if isinstance(m, nn.Linear)]
        return int(linears[-1].out_features) if linears else None
