"""The smallest sweep the CLI tests run or refuse: one 1-epoch trial on 8 px digits."""

from __future__ import annotations

from typing import Any


def tiny_spec(name: str) -> dict[str, Any]:
    """A spec of one fixed-LR trial that fails the sweep at once (``max_failures: 0``)."""
    return {
        "name": name,
        "task": {"dataset": {"name": "digits"}, "image_size": 8, "epochs": 1, "batch_size": 256},
        "seeds": [0],
        "strategies": [{"kind": "fixed", "lr": 0.01}],
        "failure": {"max_failures": 0},
    }
