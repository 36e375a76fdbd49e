"""A sweep report's rows and its numbers: each trial run read into a :class:`TrialRow`, and the
group table computed from them (:func:`compare`, pure). :mod:`sweeps.report` re-exports every
public name here; its docstring defines each number."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, replace
from typing import Any

from sweeps._best_result import BEST_EPOCH_TAG, best_epoch_of
from sweeps.tracking import Tracker, as_logged

__all__ = ["GroupRow", "TrialRow", "compare", "trial_row", "with_epochs_held"]


@dataclass(frozen=True)
class TrialRow:
    """One child run as the report reads it."""

    run_id: str
    group: str
    kind: str
    arm: str
    rule: str
    seed: int
    lr: float
    status: str
    stop_reason: str
    best_epoch: int | None
    """The ``sweeps.best_epoch`` tag (counted from 0) read once by ``best_epoch_of``, as
    ``lrsweep best`` reads it; ``None`` for a trial without one (it diverged or failed before an
    epoch ended), an empty cell in the tables and CSV."""
    diagnosis: str
    best_valid_loss: float
    best_error_rate: float
    epochs_run: int
    compute_s: float
    best_tta_error_rate: float = math.nan
    """``best/tta_error_rate``: the best epoch under test-time augmentation (``task.tta``)."""

    @property
    def counts(self) -> bool:
        """FINISHED with a finite best validation loss."""
        return self.status == "FINISHED" and math.isfinite(self.best_valid_loss)


@dataclass(frozen=True)
class GroupRow:
    """One line of the comparison (an arm, or one rule of a finder arm)."""

    group: str
    kind: str
    n_seeds: int
    n_seeds_run: int
    chosen_lr: float
    valid_loss_mean: float
    valid_loss_std: float
    error_rate_mean: float
    error_rate_std: float
    regret: float
    regret_error_pp: float
    n_trials: int
    epochs_run: int
    compute_s: float
    compute_vs_grid: float
    tta_error_rate_mean: float = math.nan
    """Mean over the same per-seed trials of their TTA error rate (NaN without ``task.tta``)."""


def _number(values: dict[str, Any], key: str, default: float = math.nan) -> float:
    try:
        return as_logged(float(values[key]))
    except (KeyError, TypeError, ValueError):
        return default


def trial_row(run: Any) -> TrialRow:
    """Read one child run (params, tags, metrics) into a :class:`TrialRow`."""
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    kind = tags.get("sweeps.strategy", params.get("strategy", "?"))
    arm = tags.get("sweeps.arm", params.get("arm", kind))
    rule = tags.get("sweeps.rule", params.get("rule", "")) if kind == "lr_finder" else ""
    return TrialRow(
        run_id=run.info.run_id,
        group=f"{arm}:{rule}" if rule else arm,
        kind=kind,
        arm=arm,
        rule=rule,
        seed=int(_number(params, "seed", -1)),
        lr=_number(params, "lr"),
        status=run.info.status,
        stop_reason=tags.get("sweeps.stop_reason", ""),
        best_epoch=best_epoch_of(tags.get(BEST_EPOCH_TAG)),
        diagnosis=tags.get("sweeps.diagnosis", ""),
        best_valid_loss=_number(metrics, "best/valid_loss"),
        best_error_rate=_number(metrics, "best/error_rate"),
        epochs_run=int(_number(metrics, "epochs_run", 0)),
        compute_s=_number(metrics, "compute_s", 0.0),
        best_tta_error_rate=_number(metrics, "best/tta_error_rate"),
    )


def with_epochs_held(tracker: Tracker, run: Any, row: TrialRow) -> TrialRow:
    """``row`` with the epochs and epoch seconds MLflow holds when the run has no summary
    (``compute_s`` is logged only when a trial ends normally: a failed trial's epochs count)."""
    if "compute_s" in run.data.metrics:
        return row
    history = tracker.metric_history(row.run_id, "epoch_time_s")
    finite = [as_logged(v) for _, v in history if math.isfinite(as_logged(v))]
    range_test = _number(run.data.metrics, "lr_find_s", 0.0)  # logged once the test ran
    finite.append(range_test if math.isfinite(range_test) else 0.0)
    # an epoch trained again after a restart: MLflow keeps its first try's seconds (the retry's
    # point is held back), so it counts once; the lost try's seconds are not counted
    return replace(row, epochs_run=len({step for step, _ in history}), compute_s=math.fsum(finite))


def _std(values: list[float]) -> float:
    """Sample standard deviation (n - 1); NaN for fewer than two values (no spread measured)."""
    return statistics.stdev(values) if len(values) > 1 else math.nan


def _log_median(lrs: list[float]) -> float:
    """Median on the log scale (NaN for no LRs; the plain median if one is not positive)."""
    if not lrs or any(not lr > 0 for lr in lrs):
        return math.nan if not lrs else statistics.median(lrs)
    ordered, middle = sorted(lrs), len(lrs) // 2
    if len(lrs) % 2:
        return ordered[middle]  # the LR itself, as the trial ran it
    return math.sqrt(ordered[middle - 1] * ordered[middle])


def _group_row(name: str, rows: list[TrialRow]) -> GroupRow:
    per_seed: dict[int, TrialRow] = {}
    # Only counted rows take part: a NaN loss would make the sort order arbitrary.
    for row in sorted((r for r in rows if r.counts), key=lambda r: (r.seed, r.best_valid_loss)):
        per_seed.setdefault(row.seed, row)
    picks = list(per_seed.values())
    losses = [p.best_valid_loss for p in picks]
    errors = [p.best_error_rate for p in picks]
    tta = [p.best_tta_error_rate for p in picks if math.isfinite(p.best_tta_error_rate)]
    return GroupRow(
        group=name,
        kind=rows[0].kind,
        n_seeds=len(picks),
        n_seeds_run=len({r.seed for r in rows if r.seed >= 0 or r.counts}),  # -1: no params yet
        chosen_lr=_log_median([p.lr for p in picks]),
        valid_loss_mean=statistics.fmean(losses) if losses else math.nan,
        valid_loss_std=_std(losses),
        error_rate_mean=statistics.fmean(errors) if errors else math.nan,
        error_rate_std=_std(errors),
        regret=math.nan,
        regret_error_pp=math.nan,
        n_trials=len(rows),
        epochs_run=sum(r.epochs_run for r in rows),
        compute_s=sum(r.compute_s for r in rows),
        compute_vs_grid=math.nan,
        tta_error_rate_mean=statistics.fmean(tta) if tta and len(tta) == len(picks) else math.nan,
    )


def compare(trials: list[TrialRow]) -> list[GroupRow]:
    """The group table from trial rows (pure: no I/O)."""
    names = list(dict.fromkeys(t.group for t in sorted(trials, key=lambda t: (t.kind, t.group))))
    groups = [_group_row(n, [t for t in trials if t.group == n]) for n in names]
    finite = [g for g in groups if math.isfinite(g.valid_loss_mean)]
    best_loss = min((g.valid_loss_mean for g in finite), default=math.nan)
    # Finite values only: min() keeps a NaN it meets first and would make every regret NaN.
    errors = [g.error_rate_mean for g in finite if math.isfinite(g.error_rate_mean)]
    best_error = min(errors, default=math.nan)
    grid = next((g for g in groups if g.kind == "grid"), None)
    out = []
    for g in groups:
        ratio = g.compute_s / grid.compute_s if grid and grid.compute_s > 0 else math.nan
        out.append(
            GroupRow(
                **{
                    **asdict(g),
                    "regret": g.valid_loss_mean - best_loss,
                    "regret_error_pp": 100 * (g.error_rate_mean - best_error),
                    "compute_vs_grid": ratio,
                }
            )
        )
    return sorted(out, key=lambda g: (math.isnan(g.regret), g.regret))
