"""``AnyOf``: stop a trial when any of several stoppers says so, and remember which one did.

Ray's ``CombinedStopper`` does the same with ``any(generator)``, which short-circuits: once the
first stopper fires, the others never see that result, so their state lags and a missing metric
in a later stopper goes unnoticed. ``AnyOf`` subclasses it (so Ray treats it as one) but calls
every stopper on every result and keeps the stop reason per trial.
"""

from __future__ import annotations

from typing import Any

from ray.tune.stopper import CombinedStopper, Stopper

__all__ = ["AnyOf"]


class AnyOf(CombinedStopper):
    """Logical OR of stoppers, each of which sees every result.

    Example:
        >>> from sweeps.stoppers import Divergence, RisingValLoss
        >>> stopper = AnyOf(RisingValLoss(), Divergence())
        >>> stopper("t", {"valid_loss": 1.0, "train_loss": float("nan"), "training_iteration": 1})
        True
        >>> stopper.stop_reason("t")
        'diverged'

    Args:
        *stoppers: Ray Tune stoppers; with none, no trial is ever stopped.

    Raises:
        TypeError: naming the position of an argument that is not a Ray Tune ``Stopper``.
    """

    def __init__(self, *stoppers: Stopper) -> None:
        for index, stopper in enumerate(stoppers):
            if not isinstance(stopper, Stopper):
                raise TypeError(
                    f"stoppers[{index}] must be a Ray Tune Stopper, but got {stopper!r}."
                )
        super().__init__(*stoppers)
        self.stoppers: tuple[Stopper, ...] = tuple(stoppers)
        self._reasons: dict[str, str] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Call every stopper; True when at least one says stop.

        When several fire on the same result, the reason kept is the one of the stopper with the
        highest ``severity`` (``diverged`` before ``rising_val_loss``), ties going to the first.
        """
        fired = [stopper for stopper in self.stoppers if stopper(trial_id, result)]
        if fired and trial_id not in self._reasons:
            chosen = max(fired, key=lambda stopper: getattr(stopper, "severity", 0))
            self._reasons[trial_id] = _reason_of(chosen, trial_id)
        return bool(fired)

    def stop_all(self) -> bool:
        """True when any stopper wants the whole experiment stopped."""
        return any([stopper.stop_all() for stopper in self.stoppers])

    def stop_reason(self, trial_id: str) -> str | None:
        """Why the trial was stopped (``diverged``, ``rising_val_loss`` ...), or None."""
        return self._reasons.get(trial_id)

    def best_epoch(self, trial_id: str, *, metric: str | None = None) -> int | None:
        """The best epoch according to the first stopper watching ``metric`` (or any metric).

        Returns None when no such stopper has seen the trial.
        """
        for stopper in self.stoppers:
            if metric is not None and getattr(stopper, "metric", None) != metric:
                continue
            best_epoch = getattr(stopper, "best_epoch", None)
            epoch = best_epoch(trial_id) if callable(best_epoch) else None
            if epoch is not None:
                return int(epoch)
        return None

    def __repr__(self) -> str:
        return f"AnyOf({', '.join(repr(stopper) for stopper in self.stoppers)})"


def _reason_of(stopper: Stopper, trial_id: str) -> str:
    stop_reason = getattr(stopper, "stop_reason", None)
    reason = stop_reason(trial_id) if callable(stop_reason) else None
    return reason or type(stopper).__name__
