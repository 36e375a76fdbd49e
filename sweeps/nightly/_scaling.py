"""Time baselines scaled to tonight's machine by the machine-speed reference (pure).

A night records ``reference_s``, the seconds a fixed workload takes on its machine
(``sweeps.nightly._reference``). A time figure (``compute_s``, ``wall_time_s``) of an earlier
night is converted to tonight's machine by multiplying it by tonight's reference over *that
night's own* reference; the baseline is the median of the converted values, and the usual
``compute_pct`` / ``wall_time_pct`` / ``min_seconds`` limit applies to it. Each night is scaled
by its own reference rather than the median figure by the median reference because nights land
on different machines (CI VMs): a median figure and a median reference may come from two
different nights. Equivalently, figure / reference ratios are compared, then shown in seconds of
tonight's machine.

A figure is scaled only when ``thresholds.scale_time_by_reference`` is on, tonight has a
reference, and every baseline night with the figure has one; else it is compared raw, as
before references existed (nights recorded before 2026-12-07 have none), and
:func:`scaling_notes` says why. Error rates, regret and trial counts are never scaled.

Example:
    >>> s = scale_baseline([(10.0, 1.0), (12.0, 1.0), (30.0, 3.0)], reference_s=2.0)
    >>> s.baseline, s.raw_baseline, s.factor
    (20.0, 12.0, 1.6666666666666667)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

__all__ = ["Scaling", "scale_baseline", "scaling_notes", "usable_reference"]


@dataclass(frozen=True)
class Scaling:
    """A time figure's baseline converted to tonight's machine.

    Attributes:
        baseline: The median of the converted values (seconds on tonight's machine).
        raw_baseline: The median of the values as recorded.
        factor: ``baseline / raw_baseline`` (tonight's reference over the baseline nights'
            when they all ran on one machine); ``reference_s / baseline_reference_s`` for a raw
            baseline of 0.
        reference_s: Tonight's reference.
        baseline_reference_s: The median reference of the nights in the baseline.
    """

    baseline: float
    raw_baseline: float
    factor: float
    reference_s: float
    baseline_reference_s: float


def usable_reference(value: float | None) -> TypeGuard[float]:
    """Whether ``value`` is a reference to scale by (finite and positive)."""
    return value is not None and math.isfinite(value) and value > 0


def scale_baseline(
    history: Sequence[tuple[float, float | None]], *, reference_s: float | None
) -> Scaling | None:
    """The baseline of ``history`` (each night's ``(value, reference)``) on tonight's machine.

    Returns None (compare raw) when ``history`` is empty, tonight has no usable reference, or
    any night of it has none (a night recorded before references, or one whose measurement
    failed): mixing scaled and raw values would be neither.
    """
    if not history or not usable_reference(reference_s):
        return None
    known = [ref for _, ref in history if usable_reference(ref)]
    if len(known) != len(history):
        return None
    converted = [value * reference_s / ref for (value, _), ref in zip(history, known, strict=True)]
    baseline = statistics.median(converted)
    raw = statistics.median(value for value, _ in history)
    night_ref = statistics.median(known)
    factor = baseline / raw if raw > 0 else reference_s / night_ref
    return Scaling(baseline, raw, factor, reference_s, night_ref)


def scaling_notes(
    *,
    enabled: bool,
    reference_s: float | None,
    references: Sequence[float | None],
    n_scaled: int,
    n_time_figures: int,
) -> list[str]:
    """Lines for the report on how tonight's time figures were judged.

    Args:
        enabled: ``thresholds.scale_time_by_reference``.
        reference_s: Tonight's reference (None: not measured).
        references: The reference of each baseline night that has a figure of tonight's.
        n_scaled: Time figures whose baseline was scaled.
        n_time_figures: Time figures with a baseline.
    """
    if not n_time_figures:
        return []
    if not enabled:
        return [
            "Time figures are compared raw: thresholds.scale_time_by_reference is off (a "
            "slower or faster machine moves them as much as a change of the code)."
        ]
    if not usable_reference(reference_s):
        return [
            "Time figures are compared raw: tonight's machine-speed reference could not be "
            "measured (see the log)."
        ]
    without = sum(not usable_reference(ref) for ref in references)
    known = [ref for ref in references if usable_reference(ref)]
    lines = []
    if n_scaled:
        nights = f"median {statistics.median(known):.4g} s" if known else "none"
        lines.append(
            f"Time figures are judged relative to the machine-speed reference: {reference_s:.4g} "
            f"s tonight ({nights} on the baseline nights); {n_scaled} of {n_time_figures} time "
            "baselines are scaled by tonight's reference over each baseline night's own (the "
            "'machine x' column; the limit is of the scaled baseline)."
        )
    if without:
        lines.append(
            f"{without} of the {len(references)} baseline nights have no machine-speed "
            "reference (recorded before it existed, or its measurement failed): the time figures "
            f"they are part of are compared raw ({n_time_figures - n_scaled} of {n_time_figures})."
        )
    return lines
