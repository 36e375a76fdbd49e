"""DESIGN's public names import from the package roots; ``import sweeps`` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sweeps
import trainers

TRAINERS = [
    "make_dataloaders", "build_model", "Learner", "LRFindResult", "valley", "steep", "minimum",
    "slide", "diagnose", "Interpretation",
]  # fmt: skip
LEARNER_METHODS = [
    "fit", "fit_one_cycle", "fit_sgdr", "fine_tune", "freeze", "unfreeze", "lr_find", "validate",
    "tta", "save", "load",
]  # fmt: skip
SWEEPS = [
    "load_spec", "SpecError", "run_sweep", "resume_sweep", "best_config", "RisingValLoss",
    "Divergence",
]  # fmt: skip


@pytest.mark.parametrize("name", TRAINERS)
def test_trainers_exports_designs_names(name: str) -> None:
    value = getattr(trainers, name)  # AttributeError if it is missing
    assert callable(value) and value.__module__.startswith("trainers.")
    assert name in trainers.__all__ and name in dir(trainers)


def test_learner_has_designs_methods() -> None:
    missing = [m for m in LEARNER_METHODS if not callable(getattr(trainers.Learner, m, None))]
    assert missing == []


@pytest.mark.parametrize("name", SWEEPS)
def test_sweeps_exports_designs_names(name: str) -> None:
    value = getattr(sweeps, name)
    assert value.__module__.startswith("sweeps.") and name in sweeps.__all__
    assert name in dir(sweeps)


def test_import_sweeps_loads_neither_ray_nor_mlflow_nor_torch() -> None:
    heavy = "('ray', 'mlflow', 'torch')"
    code = f"import sys, sweeps; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'sweeps' has no attribute 'best_confg'"):
        sweeps.best_confg  # noqa: B018
