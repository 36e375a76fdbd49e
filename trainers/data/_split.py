"""The seeded validation split and the training-set channel statistics."""

from __future__ import annotations

import torch

_STATS_CHUNK = 512  # images per pass when summing pixels


def stratified_split(
    labels: torch.Tensor, *, valid_pct: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into train and validation, class by class, fixed by ``seed`` alone.

    ``round(valid_pct * N)`` images (at least one) go to validation, shared among classes in
    proportion to their size (largest remainder; every class keeps at least one training image,
    so a single-image class stays in training). Within a class, the images are chosen by a
    permutation from a generator seeded with ``seed``. Only the labels, ``valid_pct`` and the
    seed matter: image size, augmentation and batch size never move an image across.

    Args:
        labels: int64 class indices ``(N,)``.
        valid_pct: Fraction in (0, 1) of the images held out.
        seed: Seed of the permutation.

    Returns:
        ``(train_idx, valid_idx)``, each sorted ascending.

    Raises:
        ValueError: if no image can be held out (every class has a single image).
    """
    counts = torch.bincount(labels).tolist()
    n_valid = _valid_quotas(counts, valid_pct)
    if sum(n_valid) == 0:
        raise ValueError(
            f"valid_pct={valid_pct} leaves no validation images out of {len(labels)}: every "
            "class has a single image; add images."
        )
    generator = torch.Generator().manual_seed(seed)
    is_valid = torch.zeros(len(labels), dtype=torch.bool)
    for cls, n in enumerate(n_valid):
        members = torch.nonzero(labels == cls).flatten()
        order = torch.randperm(len(members), generator=generator)
        is_valid[members[order[:n]]] = True
    return split_by_mask(is_valid)


def _valid_quotas(counts: list[int], valid_pct: float) -> list[int]:
    """Validation images per class: proportional, largest remainder, each class keeps one.

    Their sum is counted without torch by ``sweeps._data_notes.split_sizes`` for the notes on a
    sweep's data size (a test pins the two to the same sizes): change both together.
    """
    caps = [max(count - 1, 0) for count in counts]
    target = min(max(round(valid_pct * sum(counts)), 1), sum(caps))
    exact = [valid_pct * count for count in counts]
    quotas = [min(int(q), cap) for q, cap in zip(exact, caps, strict=True)]
    by_remainder = sorted(range(len(counts)), key=lambda c: quotas[c] - exact[c])
    while sum(quotas) < target:
        for cls in by_remainder:
            if sum(quotas) < target and quotas[cls] < caps[cls]:
                quotas[cls] += 1
    return quotas


def split_by_mask(is_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the False and True entries of a boolean mask, each ascending."""
    return torch.nonzero(~is_valid).flatten(), torch.nonzero(is_valid).flatten()


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images, on the 0..1 scale.

    A channel with zero spread (a constant image set) gets std 1, so normalising never divides
    by zero.

    Args:
        images: uint8 ``(N, C, H, W)`` with ``N >= 1``.

    Returns:
        ``(mean, std)``, float32 tensors of shape ``(C,)``.
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], _STATS_CHUNK):
        chunk = images[start : start + _STATS_CHUNK].float()
        total += chunk.sum(dim=(0, 2, 3), dtype=torch.float64)
        total_sq += chunk.square().sum(dim=(0, 2, 3), dtype=torch.float64)
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_(min=0.0)
    std = var.sqrt()
    std = torch.where(std > 1e-6, std, torch.full_like(std, 255.0))
    return (mean / 255).float(), (std / 255).float()
