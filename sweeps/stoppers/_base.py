"""``MetricStopper``: the shared machinery of stoppers that watch one metric per trial.

A Ray Tune ``Stopper`` is called with ``(trial_id, result)`` after each reported result (one
per epoch here) and returns True to stop that trial. Ray's own stoppers skip a result that lacks
their metric, so a misspelt metric never stops anything; these raise instead, listing the metrics
the result does carry.

Per-trial state lives in a dict keyed by trial id and pickles with the stopper. Ray Tune
pickles the stopper once, when the ``Tuner`` is built, so after ``Tuner.restore`` the driver's
stopper knows no trial and meets a resumed trial at the epoch it resumes from; the trial itself
replays its history into its own stopper, which keeps counting where it left off (a stopper that
meets a trial late must never stop it before that one would: see ``Divergence``). A result whose
epoch is not past the last one seen for that trial (a trial replaying epochs after restarting
from a checkpoint) is ignored. Once a trial is stopped, every later call for it returns True.
"""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar

from ray.tune.stopper import Stopper

__all__ = ["MetricStopper", "MissingMetricError", "TrialState", "finite_number", "whole_number"]

logger = logging.getLogger(__name__)


class MissingMetricError(KeyError):
    """A result handed to a stopper lacks the metric (or epoch counter) it watches.

    Attributes:
        metric: The key that is missing.
        present: The keys the result does have, sorted.
        stopper: The class name of the stopper that looked.
    """

    def __init__(self, metric: str, present: list[str], *, stopper: str) -> None:
        self.metric = metric
        self.present = present
        self.stopper = stopper
        super().__init__(
            f"{stopper} watches {metric!r}, but the reported result has no such key; "
            f"present: {', '.join(present) or '(none)'}. Report {metric!r} every epoch or "
            "configure the stopper with one of the present metrics."
        )

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (_missing_metric, (self.metric, self.present, self.stopper))


def _missing_metric(metric: str, present: list[str], stopper: str) -> MissingMetricError:
    return MissingMetricError(metric, present, stopper=stopper)


def whole_number(name: str, value: Any, *, minimum: int) -> int:
    """``value`` as an ``int`` (numpy's integers too; ``bool`` and floats refused).

    Raises:
        ValueError: naming ``name``, when ``value`` is not a whole number ``>= minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, but got {value!r}.")
    return int(value)


def finite_number(value: Any) -> float | None:
    """``value`` as a ``float`` when it is a finite real number (numpy's too), else None.

    ``bool`` is refused: ``min_delta=True`` is a mistake, not 1.0.
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class TrialState:
    """What a stopper remembers about one trial. ``best`` is sign-adjusted: lower is better."""

    best: float = math.inf
    best_epoch: int | None = None
    first: float = math.nan
    start: float = math.inf
    last_epoch: int = 0
    bad_epochs: int = 0
    reason: str | None = None


class MetricStopper(Stopper):
    """Base of stoppers that watch one metric of each trial.

    Subclasses set :attr:`reason` and :attr:`severity` and implement :meth:`_update`.

    Args:
        metric: The result key to watch, e.g. ``"valid_loss"``.
        mode: ``"min"`` when lower is better, ``"max"`` when higher is; normalised once to a sign.
        epoch_key: The result key counting epochs (1-based; Ray adds ``training_iteration`` to
            every result). None counts the results received for the trial instead.

    Raises:
        ValueError: for an empty ``metric``, a ``mode`` other than ``min`` / ``max``, or an
            ``epoch_key`` that is neither None nor a non-empty string.
    """

    reason: ClassVar[str] = "stopped"
    """The stop reason recorded when this stopper ends a trial (an MLflow tag value)."""
    severity: ClassVar[int] = 0
    """When several stoppers fire on one result, ``AnyOf`` reports the most severe reason."""

    def __init__(
        self, metric: str, *, mode: str = "min", epoch_key: str | None = "training_iteration"
    ) -> None:
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric must be a non-empty string, but got {metric!r}.")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', but got {mode!r}.")
        if epoch_key is not None and (not isinstance(epoch_key, str) or not epoch_key):
            raise ValueError(
                f"epoch_key must be None or a non-empty string, but got {epoch_key!r}."
            )
        self.metric = metric
        self.mode = mode
        self.epoch_key = epoch_key
        self._sign = 1.0 if mode == "min" else -1.0
        self._trials: dict[str, TrialState] = {}

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        """Record ``result`` for ``trial_id`` and say whether the trial must stop.

        Raises:
            MissingMetricError: when ``result`` lacks the metric or the epoch key.
            TypeError: when the metric is not a real number, or the epoch not a whole one.
        """
        value = self._number(result, self.metric)
        state = self._trials.setdefault(trial_id, TrialState())
        epoch = (
            state.last_epoch + 1 if self.epoch_key is None else self._epoch(result, self.epoch_key)
        )
        if state.reason is not None or epoch <= state.last_epoch:
            return state.reason is not None
        state.last_epoch = epoch
        if epoch == 1:
            self._first_result(state, result)
        if self._update(state, self._sign * value, epoch):
            state.reason = self.reason
            counter = self.epoch_key or "result"  # counted from 1, as Tune counts
            logger.info(
                "stopping trial %s at %s %d: %s (%s=%s, %s)",
                trial_id, counter, epoch, self.reason, self.metric, value,
                self._reference(state, counter),
            )  # fmt: skip
        return state.reason is not None

    def _reference(self, state: TrialState, counter: str) -> str:
        """What the stopping value was measured against, for the log."""
        return f"best {self._sign * state.best} at {counter} {state.best_epoch}"

    def _first_result(self, state: TrialState, result: Mapping[str, Any]) -> None:
        """Read what the trial's first result says about its start (nothing by default)."""

    @abstractmethod
    def _update(self, state: TrialState, signed: float, epoch: int) -> bool:
        """Fold one epoch's sign-adjusted value (lower is better) into ``state``; True stops."""

    def stop_all(self) -> bool:
        """Never stops the whole experiment."""
        return False

    def stop_reason(self, trial_id: str) -> str | None:
        """:attr:`reason` if this stopper stopped the trial, else None (also for unknown ids)."""
        state = self._trials.get(trial_id)
        return None if state is None else state.reason

    def best_epoch(self, trial_id: str) -> int | None:
        """The epoch with the best finite value seen so far; None before any."""
        state = self._trials.get(trial_id)
        return None if state is None else state.best_epoch

    def best_value(self, trial_id: str) -> float | None:
        """The best finite value of the metric seen so far (in its own sign); None before any."""
        state = self._trials.get(trial_id)
        if state is None or state.best_epoch is None:
            return None
        return self._sign * state.best

    def _number(self, result: Mapping[str, Any], key: str) -> float:
        if key not in result:
            present = sorted(str(name) for name in result)
            raise MissingMetricError(key, present, stopper=type(self).__name__)
        value = result[key]
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(
                f"{type(self).__name__} needs {key!r} to be a number, but got {value!r}."
            )
        return float(value)

    def _epoch(self, result: Mapping[str, Any], key: str) -> int:
        epoch = self._number(result, key)
        if not epoch.is_integer():  # NaN and infinities too
            raise TypeError(
                f"{type(self).__name__} needs {key!r} to be a whole number, but got "
                f"{result[key]!r}."
            )
        return int(epoch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(metric={self.metric!r}, mode={self.mode!r})"
