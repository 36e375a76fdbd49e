"""Ray Tune stoppers built from the spec: overfitting (``RisingValLoss``) and divergence.

Pure Python apart from the ``ray.tune.Stopper`` base class; each is picklable with its per-trial
state, raises ``MissingMetricError`` (listing the metrics present) when a result lacks its metric,
and answers ``stop_reason(trial_id)`` and ``best_epoch(trial_id)``.
"""

from __future__ import annotations

from sweeps.stoppers._any_of import AnyOf
from sweeps.stoppers._base import MetricStopper, MissingMetricError, TrialState
from sweeps.stoppers._divergence import Divergence
from sweeps.stoppers._from_spec import from_spec
from sweeps.stoppers._rising import OWN_STOP_RULE, RisingValLoss

__all__ = [
    "OWN_STOP_RULE",
    "AnyOf",
    "Divergence",
    "MetricStopper",
    "MissingMetricError",
    "RisingValLoss",
    "TrialState",
    "from_spec",
]
