"""simple_cnn: four conv-bn-relu stages, small enough to train on a CPU in seconds."""

from __future__ import annotations

import itertools

from torch import nn

from trainers.models._base import GroupedModel, create_head

__all__ = ["simple_cnn"]

_WIDTHS = (16, 32, 64, 128)


def _conv_block(n_in: int, n_out: int) -> nn.Sequential:
    """3x3 stride-2 convolution, batch norm, ReLU: halves the resolution (never below 1 px)."""
    return nn.Sequential(
        nn.Conv2d(n_in, n_out, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(n_out),
        nn.ReLU(inplace=True),
    )


def simple_cnn(n_classes: int, *, in_channels: int = 3) -> GroupedModel:
    """A 4-stage CNN with 3 layer groups: stages 0-1, stages 2-3, head.

    Works for any image size from 8 px up (each stage halves the resolution with padding, and
    the head pools adaptively).

    Args:
        n_classes: Number of outputs.
        in_channels: Channels of the input images.
    """
    widths = (in_channels, *_WIDTHS)
    body = nn.Sequential(*[_conv_block(a, b) for a, b in itertools.pairwise(widths)])
    # one linear layer with PyTorch's own init and a bias: smaller than fastai's head, which
    # would give this 4-stage body a 512-wide layer it does not need on 8-32 px images
    head = create_head(_WIDTHS[-1], n_classes, hidden=None, ps=0.25, bias=True, init=None)
    return GroupedModel(body, head, group_starts=(0, 2), arch="simple_cnn")
