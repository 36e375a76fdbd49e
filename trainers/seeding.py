"""One seed for Python, NumPy and torch, and capture/restore of all their RNG states."""

from __future__ import annotations

import random
import zlib
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device).

    Args:
        seed: An integer in ``[0, 2**64)`` (torch's seed range).

    Raises:
        ValueError: if ``seed`` is not an integer in that range.
    """
    seed = _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(seed: int, stream: str) -> int:
    """A seed of its own for one named random stream of ``seed`` (shuffle order, augmentation).

    Generators seeded with ``seed``, ``seed + 1``, ... share their draws across seeds and with
    ``torch.manual_seed(seed)``'s weight initialisation; hashing ``(seed, stream)`` through
    NumPy's ``SeedSequence`` gives every stream of every seed its own, on every platform.

    >>> derive_seed(0, "order") == derive_seed(0, "order") != derive_seed(1, "order")
    True

    Raises:
        ValueError: if ``seed`` is not an integer in ``[0, 2**64)`` or ``stream`` is empty.
    """
    seed = _check_seed(seed)
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream must be a non-empty name, but got {stream!r}.")
    words = np.random.SeedSequence(seed, spawn_key=(zlib.crc32(stream.encode()),))
    low, high = (int(w) for w in words.generate_state(2, np.uint32))
    return low | high << 32


def _check_seed(seed: Any) -> int:
    """``seed`` as a Python int (a NumPy integer, e.g. from ``rng.integers``, is one too)."""
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, int | np.integer):
        value = None
    else:
        value = int(seed)
    if value is None or not 0 <= value < 2**64:
        raise ValueError(
            f"seed must be a non-negative integer below 2**64 (torch's range), but got {seed!r}."
        )
    return value


def rng_state() -> dict[str, Any]:
    """Capture the Python, NumPy and torch RNG states, in memory.

    CUDA's states are captured only once this process has initialised CUDA: a CPU run on a GPU
    machine would otherwise start CUDA (and a context on the GPU) to save states it never used.
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # a checkpoint saved with more GPUs visible than now: the visible ones get theirs
        torch.cuda.set_rng_state_all(list(state["cuda"])[: torch.cuda.device_count()])
