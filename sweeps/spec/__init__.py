"""The sweep spec: pydantic models, safe YAML loading, ``--set`` overrides and the nightly suite.

Example:
    >>> from sweeps.spec import load_spec
    >>> spec = load_spec("sweeps/specs/digits.yaml", overrides=["task.epochs=2"])
    >>> spec.experiment_name, [arm.arm_name for arm in spec.strategies][:2]
    ('digits-lr', ['lr_finder', 'grid'])

Every model forbids unknown keys and is frozen. Every error is collected into one
:class:`SpecError` whose lines read ``field.path: message (accepted: ...)``.
"""

from __future__ import annotations

from sweeps.spec._errors import SpecError
from sweeps.spec._load import load_spec, validate_spec
from sweeps.spec._overrides import apply_overrides
from sweeps.spec._redact import redact, redact_url, uri_has_password
from sweeps.spec._strategies import (
    OPTUNA_SAMPLERS,
    SUGGESTION_RULES,
    FixedStrategy,
    GridLr,
    GridStrategy,
    LrFinderStrategy,
    LrRange,
    OptunaStrategy,
    RandomStrategy,
    RecipeStrategy,
    Strategy,
)
from sweeps.spec._suite import Suite, SuiteEntry, Thresholds, load_suite
from sweeps.spec._sweep import (
    EXPERIMENT_MAX,
    MAXIMISED_METRICS,
    REPORTED_METRICS,
    DivergenceSpec,
    EarlyStopSpec,
    FailureSpec,
    ResourcesSpec,
    StorageSpec,
    SweepSpec,
    TrackingSpec,
)
from sweeps.spec._task import (
    DATASETS,
    AcceleratorSpec,
    AugmentSpec,
    ConstantSchedule,
    DatasetSpec,
    FineTuneSpec,
    FlatCosSchedule,
    ModelSpec,
    OneCycleSchedule,
    Schedule,
    SgdrSchedule,
    TaskSpec,
)
from sweeps.spec._types import NAME_MAX
from sweeps.spec._yaml import MAX_SPEC_BYTES, dump_yaml, parse_yaml

__all__ = [
    "DATASETS",
    "EXPERIMENT_MAX",
    "MAXIMISED_METRICS",
    "MAX_SPEC_BYTES",
    "NAME_MAX",
    "OPTUNA_SAMPLERS",
    "REPORTED_METRICS",
    "SUGGESTION_RULES",
    "AcceleratorSpec",
    "AugmentSpec",
    "ConstantSchedule",
    "DatasetSpec",
    "DivergenceSpec",
    "EarlyStopSpec",
    "FailureSpec",
    "FineTuneSpec",
    "FixedStrategy",
    "FlatCosSchedule",
    "GridLr",
    "GridStrategy",
    "LrFinderStrategy",
    "LrRange",
    "ModelSpec",
    "OneCycleSchedule",
    "OptunaStrategy",
    "RandomStrategy",
    "RecipeStrategy",
    "ResourcesSpec",
    "Schedule",
    "SgdrSchedule",
    "SpecError",
    "StorageSpec",
    "Strategy",
    "Suite",
    "SuiteEntry",
    "SweepSpec",
    "TaskSpec",
    "Thresholds",
    "TrackingSpec",
    "apply_overrides",
    "dump_yaml",
    "load_spec",
    "load_suite",
    "parse_yaml",
    "redact",
    "redact_url",
    "uri_has_password",
    "validate_spec",
]
