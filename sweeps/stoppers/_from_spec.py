"""``from_spec``: the stopper a sweep spec asks for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweeps.stoppers._any_of import AnyOf
from sweeps.stoppers._divergence import Divergence
from sweeps.stoppers._rising import RisingValLoss

if TYPE_CHECKING:
    from sweeps.spec import SweepSpec

__all__ = ["from_spec"]


def from_spec(spec: SweepSpec) -> AnyOf:
    """Build ``AnyOf(RisingValLoss, Divergence)`` from ``spec.early_stop`` and ``spec.divergence``.

    A section set to null is left out; with both null the result never stops a trial (it still
    answers ``stop_reason`` and ``best_epoch``, so callers need no special case). The
    ``RisingValLoss`` comes first, so ``best_epoch`` reads the early-stop metric.
    """
    stoppers: list[RisingValLoss | Divergence] = []
    if spec.early_stop is not None:
        early = spec.early_stop
        stoppers.append(
            RisingValLoss(
                early.metric,
                mode=early.mode,
                patience=early.patience,
                min_delta=early.min_delta,
                grace_epochs=early.grace_epochs,
            )
        )
    if spec.divergence is not None:
        divergence = spec.divergence
        stoppers.append(
            Divergence(
                divergence.metric, factor=divergence.factor, grace_epochs=divergence.grace_epochs
            )
        )
    return AnyOf(*stoppers)
