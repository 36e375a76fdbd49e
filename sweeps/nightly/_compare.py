"""Tonight's figures against the baseline (the median of earlier nights), and the verdict.

Pure: numbers in, comparisons out. A figure *regresses* when it is above its limit:

===================  ===========================  ==========================================
figure               threshold (suite file)       limit
===================  ===========================  ==========================================
``error_rate_pct``   ``error_rate_points``        baseline + threshold (percentage points)
``regret_pp``        ``regret_points``            baseline + threshold (percentage points)
``compute_s``        ``compute_pct``              baseline * (1 + threshold / 100), and at
                     ``min_seconds``              least baseline + ``min_seconds``
``wall_time_s``      ``wall_time_pct``            the same
``stopped_early``    ``stopped_early_delta``      baseline + threshold (trials)
===================  ===========================  ==========================================

Lower is better for every figure, so only a rise can regress; a fall as far below the baseline
as the limit is above it is ``improved`` (it passes, and the verdict counts it). The baseline of
a figure is the median of its values over the baseline nights that have it; a figure no earlier
night has (the first night, a new strategy, an entry whose spec changed: see
:func:`comparable_figures`) has no baseline and passes. A figure of the baseline that tonight
lacks is ``missing`` and passes when its entry did not run tonight (the entry left the suite);
when the entry ran (with the same spec, as :func:`comparable_figures` sees to) the figure
regresses: its strategy stopped producing trials or its measurement broke, and a vanished number
must not pass. A relative limit of a baseline of 0 is undefined; such a figure passes and says
so when ``min_seconds`` is 0 (else its limit is ``min_seconds``). A figure that is NaN or
infinite tonight regresses (when it has a baseline): a broken measurement must not pass as
"within threshold".

Time figures (``compute_s``, ``wall_time_s``) are judged relative to the machine's speed when
tonight and every baseline night with the figure have a machine-speed reference (and
``thresholds.scale_time_by_reference`` is on): the baseline is then the median of each night's
value scaled by tonight's reference over that night's (``sweeps.nightly._scaling``), and the
comparison keeps the raw baseline and the factor beside it. Such a figure is ``improved`` only
when it is also that far below its baseline as recorded: a reference timed slow by load alone
(seen 2.6x, while the sweeps ran barely slower) scales the baseline up as far, and an identical
rerun read as improved; a slower machine slows the sweeps as well, and a faster one lowers the
scaled baseline, whose bound is then the stricter.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sweeps.nightly._figures import COMPUTE, ERROR_RATE, REGRET, STOPPED_EARLY, WALL_TIME, Figure
from sweeps.nightly._scaling import Scaling, scale_baseline, scaling_notes
from sweeps.spec import Thresholds

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_PASSED",
    "EXIT_REGRESSED",
    "Comparison",
    "Status",
    "Verdict",
    "comparable_figures",
    "compare_figures",
    "judge",
    "reference_notes",
    "time_figure",
]

EXIT_PASSED = 0
EXIT_REGRESSED = 1
EXIT_BAD_INPUT = 2
EXIT_FAILED = 3

# figure name -> (Thresholds field, "abs" (added) or "pct" (relative), unit shown to people)
_RULES: dict[str, tuple[str, str, str]] = {
    ERROR_RATE: ("error_rate_points", "abs", "points"),
    REGRET: ("regret_points", "abs", "points"),
    COMPUTE: ("compute_pct", "pct", "%"),
    WALL_TIME: ("wall_time_pct", "pct", "%"),
    STOPPED_EARLY: ("stopped_early_delta", "abs", "trials"),
}


class Status(StrEnum):
    """How one figure compares with its baseline."""

    OK = "ok"
    REGRESSED = "regressed"
    IMPROVED = "improved"
    NO_BASELINE = "no baseline"
    MISSING = "missing"


@dataclass(frozen=True)
class Comparison:
    """One figure, tonight against its baseline.

    Attributes:
        entry: The suite entry (spec).
        name: The figure's name.
        strategy: The strategy group, or None.
        value: Tonight's value (None for a figure only earlier nights have: ``missing``, or
            ``regressed`` when its entry ran tonight).
        baseline: The median of earlier nights (None without any).
        n_nights: How many baseline nights have the figure.
        limit: The highest value that passes (None without a baseline).
        allowed: The threshold in words, e.g. ``+2 points`` or ``+25%``.
        status: ``ok``, ``regressed``, ``improved``, ``no baseline`` or ``missing``.
        scaling: For a time figure judged relative to the machine-speed reference, the raw
            baseline, the factor and the references (``baseline`` and ``limit`` are then the
            scaled ones); None when compared raw.
    """

    entry: str
    name: str
    strategy: str | None
    value: float | None
    baseline: float | None
    n_nights: int
    limit: float | None
    allowed: str
    status: Status
    scaling: Scaling | None = None

    @property
    def label(self) -> str:
        """``name[strategy]`` or ``name``."""
        return f"{self.name}[{self.strategy}]" if self.strategy else self.name

    def describe(self) -> str:
        """One sentence naming the spec, the figure and both values."""
        base = f"{self.entry}: {self.label}"
        if self.status is Status.MISSING:
            return f"{base} is missing tonight (baseline {_num(self.baseline)})."
        if self.value is None:  # the entry ran its baseline's spec, yet the figure is gone
            return (
                f"{base} regressed: it is missing tonight, though the entry ran the spec of its "
                f"baseline ({_num(self.baseline)}, median of {self.n_nights} night"
                f"{'s' if self.n_nights != 1 else ''})."
            )
        if self.baseline is None:
            return f"{base} = {_num(self.value)} (no baseline)."
        nights = f"median of {self.n_nights} night{'s' if self.n_nights != 1 else ''}"
        if self.scaling is not None:
            s = self.scaling
            nights = (
                f"{_num(s.raw_baseline)} s raw, {nights}, x{s.factor:.3g} for the machine's "
                f"speed: reference {_num(s.reference_s)} s tonight, "
                f"{_num(s.baseline_reference_s)} s on the baseline nights"
            )
        if self.value is not None and not math.isfinite(self.value):
            return (
                f"{base} regressed: it is {self.value}, not a finite number (baseline "
                f"{_num(self.baseline)}, {nights})."
            )
        verb = {Status.REGRESSED: "regressed to", Status.IMPROVED: "improved to"}.get(
            self.status, "is"
        )
        limit = (
            f"limit {_num(self.limit)} ({self.allowed})"
            if self.limit is not None
            else ("no relative limit on a baseline of 0")
        )
        return (
            f"{base} {verb} {_num(self.value)} against {_num(self.baseline)} ({nights}); {limit}."
        )


@dataclass(frozen=True)
class Verdict:
    """The night's outcome.

    Attributes:
        status: ``passed``, ``regressed`` or ``failed`` (a sweep crashed or was interrupted;
            failures win over regressions).
        comparisons: Every figure's comparison.
        failures: Why the night failed, one line per problem (empty unless failed).
        n_baseline_nights: How many earlier nights the baseline is made of: those with a
            figure of tonight's (0: the first night, or no earlier night ran tonight's specs of
            the entries, say after an entry was renamed).
        counts: Whether this night can join later baselines (False for a what-if night).
    """

    status: str
    comparisons: tuple[Comparison, ...]
    failures: tuple[str, ...]
    n_baseline_nights: int
    counts: bool = True

    @property
    def regressions(self) -> list[Comparison]:
        """The figures above their limits."""
        return [c for c in self.comparisons if c.status is Status.REGRESSED]

    @property
    def improvements(self) -> list[Comparison]:
        """The figures as far below their baselines as their limits are above."""
        return [c for c in self.comparisons if c.status is Status.IMPROVED]

    @property
    def exit_code(self) -> int:
        """0 passed, 1 regressed, 3 failed (2 is kept for bad input, before a night starts)."""
        return {"passed": EXIT_PASSED, "regressed": EXIT_REGRESSED}.get(self.status, EXIT_FAILED)

    def summary(self) -> str:
        """One line for people: the status and its main reason."""
        if self.status == "failed":
            return f"FAILED: {self.failures[0]}" + (
                f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            )
        if self.status == "regressed":
            count = len(self.regressions)
            return f"REGRESSED: {count} figure{'s' if count != 1 else ''} crossed the threshold."
        if self.n_baseline_nights == 0 and not self.counts:
            text = "PASSED: no baseline yet; a what-if night never starts one"
        elif self.n_baseline_nights == 0:
            text = (
                "PASSED: nothing compared, no baseline yet (no earlier completed night ran "
                "these specs); tonight starts the baseline"
            )
        else:
            nights = f"{self.n_baseline_nights} night{'s' if self.n_baseline_nights != 1 else ''}"
            text = f"PASSED: every figure within its threshold of the baseline (median of {nights})"
        if self.n_baseline_nights == 0 and not any(
            c.status is Status.MISSING for c in self.comparisons
        ):
            return text + "."  # a first night: every figure is without a baseline
        for status, what in (
            (Status.IMPROVED, "improved beyond the threshold"),
            (Status.NO_BASELINE, "without a baseline"),
            (Status.MISSING, "missing tonight"),
        ):
            count = sum(c.status is status for c in self.comparisons)
            if count:
                text += f"; {count} figure{'s' if count != 1 else ''} {what}"
        return text + "."


def compare_figures(
    figures: Sequence[Figure],
    nights: Sequence[Mapping[str, float]],
    thresholds: Thresholds,
    *,
    same_spec: Collection[str] | None = None,
    reference_s: float | None = None,
    references: Sequence[float | None] | None = None,
) -> list[Comparison]:
    """Compare tonight's figures with the median of ``nights`` (each a figure key -> value map).

    Figures of earlier nights that tonight lacks are listed as ``missing`` when their entry has
    no figure tonight (it left the suite: they do not fail the night), and regress when it has
    (``nights`` hold only figures of tonight's spec of an entry: the same spec lost a figure).
    NaN values in earlier nights are ignored.

    Args:
        figures: Tonight's figures.
        nights: Each baseline night's comparable figures (key -> value).
        thresholds: The suite's thresholds.
        same_spec: The entries that ran tonight the spec their baseline nights ran, whose
            missing figures regress (default: every entry with a figure tonight; a what-if
            entry, judged against the suite as written, is not one of them).
        reference_s: Tonight's machine-speed reference in seconds (None: not measured; time
            figures are then compared raw).
        references: Each baseline night's reference, in the order of ``nights`` (None for a
            night without one; default: none has one).

    Raises:
        ValueError: ``references`` is not as long as ``nights``.
    """
    refs = list(references) if references is not None else [None] * len(nights)
    if len(refs) != len(nights):
        raise ValueError(
            f"references must give one value per night, but got {len(refs)} for {len(nights)}."
        )
    scale = reference_s if thresholds.scale_time_by_reference else None
    tonight = {f.key: f for f in figures}
    ran = {f.entry for f in figures} if same_spec is None else set(same_spec)
    out = []
    for judged in figures:
        pairs = _pairs(judged.key, nights, refs)
        scaling = scale_baseline(pairs, reference_s=scale) if time_figure(judged.name) else None
        out.append(_compare_one(judged, [v for v, _ in pairs], thresholds, scaling))
    earlier = sorted({key for night in nights for key in night} - set(tonight))
    for key in earlier:
        figure = Figure.from_key(key, math.nan)
        history = _history(key, nights)
        if figure is not None and history:
            median = statistics.median(history)
            allowed = _allowed(figure.name, thresholds)
            out.append(
                Comparison(
                    figure.entry, figure.name, figure.strategy, None, median, len(history),
                    None, allowed,
                    Status.REGRESSED if figure.entry in ran else Status.MISSING,
                )
            )  # fmt: skip
    return out


def judge(
    figures: Sequence[Figure],
    nights: Sequence[Mapping[str, float]],
    thresholds: Thresholds,
    failures: Sequence[str] = (),
    *,
    counts: bool = True,
    same_spec: Collection[str] | None = None,
    reference_s: float | None = None,
    references: Sequence[float | None] | None = None,
) -> Verdict:
    """The verdict of a night: failed if ``failures``, else regressed if any figure regressed.

    ``counts`` is False for a what-if night, which never joins a baseline; ``same_spec``,
    ``reference_s`` and ``references`` are :func:`compare_figures`'.
    """
    comparisons = tuple(
        compare_figures(
            figures,
            nights,
            thresholds,
            same_spec=same_spec,
            reference_s=reference_s,
            references=references,
        )
    )
    if failures:
        status = "failed"
    elif any(c.status is Status.REGRESSED for c in comparisons):
        status = "regressed"
    else:
        status = "passed"
    keys = {f.key for f in figures}  # a night with none of them (an entry renamed) is no baseline
    n_nights = sum(1 for night in nights if keys & night.keys())
    return Verdict(status, comparisons, tuple(failures), n_nights, counts)


def comparable_figures(
    figures: Mapping[str, float], specs: Mapping[str, str], tonight: Mapping[str, str]
) -> dict[str, float]:
    """The figures of one earlier night that may join tonight's baseline.

    A figure of an entry that runs tonight counts only when that night ran the entry with the
    same spec fingerprint (a changed spec, seed set, epoch count or strategy list starts the
    entry's baseline afresh); a night that recorded no fingerprint for it does not count either.
    Figures of entries not in tonight's suite are kept, so they are listed as ``missing``.

    Args:
        figures: The earlier night's figure key -> value.
        specs: The earlier night's entry -> spec fingerprint.
        tonight: Tonight's entry -> spec fingerprint.

    Example:
        >>> comparable_figures({"a/wall_time_s": 9.0, "b/wall_time_s": 5.0},
        ...                    {"a": "x", "b": "y"}, {"a": "x", "b": "z"})
        {'a/wall_time_s': 9.0}
    """
    kept = {}
    for key, value in figures.items():
        entry = key.split("/", 1)[0]
        if entry not in tonight or specs.get(entry) == tonight[entry]:
            kept[key] = value
    return kept


def reference_notes(
    verdict: Verdict,
    thresholds: Thresholds,
    *,
    reference_s: float | None,
    references: Sequence[float | None],
) -> list[str]:
    """What the report says about the machine-speed reference: how the time figures with a
    baseline were judged (scaled, or raw and why); ``references`` are those of the baseline
    nights that have a figure of tonight's. Nothing when no time figure has a baseline."""
    timed = [
        c
        for c in verdict.comparisons
        if time_figure(c.name) and c.value is not None and c.baseline is not None
    ]
    return scaling_notes(
        enabled=thresholds.scale_time_by_reference,
        reference_s=reference_s,
        references=references,
        n_scaled=sum(c.scaling is not None for c in timed),
        n_time_figures=len(timed),
    )


def time_figure(name: str) -> bool:
    """Whether a figure is a time in seconds, judged relative to the machine-speed reference."""
    return name in (COMPUTE, WALL_TIME)


def _history(key: str, nights: Sequence[Mapping[str, float]]) -> list[float]:
    values = (night.get(key) for night in nights)
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _pairs(
    key: str, nights: Sequence[Mapping[str, float]], refs: Sequence[float | None]
) -> list[tuple[float, float | None]]:
    """Each night's finite value of ``key`` with that night's reference."""
    pairs = []
    for night, ref in zip(nights, refs, strict=True):
        value = night.get(key)
        if value is not None and math.isfinite(value):
            pairs.append((float(value), ref))
    return pairs


def _compare_one(
    figure: Figure, history: list[float], thresholds: Thresholds, scaling: Scaling | None
) -> Comparison:
    allowed = _allowed(figure.name, thresholds)
    if not history:
        return Comparison(
            figure.entry, figure.name, figure.strategy, figure.value, None, 0, None, allowed,
            Status.NO_BASELINE,
        )  # fmt: skip
    median = scaling.baseline if scaling is not None else statistics.median(history)
    limit = _limit(figure.name, median, thresholds)
    # NaN compares False with any limit: a figure that stops being a number regresses.
    regressed = not math.isfinite(figure.value) or (
        limit is not None and figure.value > limit + 1e-9
    )
    improved = _far_below(figure, median, thresholds) and (
        scaling is None or _far_below(figure, scaling.raw_baseline, thresholds)
    )
    status = Status.REGRESSED if regressed else Status.IMPROVED if improved else Status.OK
    return Comparison(
        figure.entry, figure.name, figure.strategy, figure.value, median, len(history), limit,
        allowed, status, scaling,
    )  # fmt: skip


def _far_below(figure: Figure, baseline: float, thresholds: Thresholds) -> bool:
    """Whether ``figure`` is as far below ``baseline`` as its limit is above it."""
    limit = _limit(figure.name, baseline, thresholds)
    return limit is not None and figure.value < baseline - (limit - baseline) - 1e-9


def _limit(name: str, baseline: float, thresholds: Thresholds) -> float | None:
    field, how, _ = _RULES[name]
    threshold = float(getattr(thresholds, field))
    if how == "abs":
        return baseline + threshold
    relative = baseline * (1.0 + threshold / 100.0) if baseline > 0 else None
    floor = float(thresholds.min_seconds)  # every relative figure is a time in seconds
    if floor > 0:
        return max(relative or baseline, baseline + floor)
    return relative


def _allowed(name: str, thresholds: Thresholds) -> str:
    field, how, unit = _RULES[name]
    threshold = getattr(thresholds, field)
    if how == "pct":
        floor = thresholds.min_seconds
        return f"+{threshold:g}%, at least +{floor:g} s" if floor > 0 else f"+{threshold:g}%"
    return f"+{threshold:g} {unit}"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"
