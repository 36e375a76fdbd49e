"""lrsweep orchestration: specs, Ray Tune strategy arms, MLflow tracking, reports.

DESIGN's public names are importable from here; each loads its module on first use, so
``import sweeps`` stays light (no Ray, MLflow or torch until a name needs them).

Example:
    >>> import sweeps
    >>> spec = sweeps.load_spec("sweeps/specs/digits.yaml", overrides=["task.epochs=2"])
    >>> spec.task.epochs
    2
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeps.best import best_config, sweep_runs
    from sweeps.predictor import load_predictor
    from sweeps.run import SweepResult, resume_sweep, run_sweep
    from sweeps.spec import SpecError, SweepSpec, load_spec
    from sweeps.stoppers import Divergence, RisingValLoss

__all__ = [
    "Divergence",
    "RisingValLoss",
    "SpecError",
    "SweepResult",
    "SweepSpec",
    "best_config",
    "load_predictor",
    "load_spec",
    "resume_sweep",
    "run_sweep",
    "sweep_runs",
]

_HOMES = {
    "Divergence": "sweeps.stoppers",
    "RisingValLoss": "sweeps.stoppers",
    "SpecError": "sweeps.spec",
    "SweepResult": "sweeps.run",
    "SweepSpec": "sweeps.spec",
    "best_config": "sweeps.best",
    "load_predictor": "sweeps.predictor",
    "load_spec": "sweeps.spec",
    "resume_sweep": "sweeps.run",
    "run_sweep": "sweeps.run",
    "sweep_runs": "sweeps.best",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
