"""The sweep runs of an experiment, as ``lrsweep sweeps NAME`` lists them: :class:`SweepRunSummary`
and :func:`sweep_runs`, read from MLflow alone (``sweeps.sweep_runs``). :mod:`sweeps.best`
re-exports both; the trials counted are those ``best_config`` ranks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from sweeps._best_result import (
    BEST_PREFIX,
    DATA_PARAMS,
    EXCLUDED_STOP_REASONS,
    STOP_REASON_TAG,
    TIE_BREAK_METRIC,
    BestConfigError,
    finite,
)
from sweeps.tracking import PARENT_TAG, TAG_SWEEP_ID, Tracker, existing_store_uri

__all__ = ["SweepRunSummary", "sweep_runs"]


@dataclass(frozen=True)
class SweepRunSummary:
    """One sweep run of an experiment, as ``lrsweep sweeps NAME`` lists it.

    Attributes:
        run_id: The sweep's parent run (``--run-id`` of ``lrsweep best`` and ``report``).
        sweep_id: Its folder under Ray's storage (``lrsweep resume`` takes the folder).
        status: The parent run's MLflow status (RUNNING while it runs, or left so by a driver
            that died).
        started: When it started, ``YYYY-MM-DD HH:MM:SS`` UTC.
        trials: Its trial runs by status (``{"FINISHED": 7, "FAILED": 1}``).
        best_valid_loss: The lowest ``best/valid_loss`` of its finished trials, diverged ones
            left out as ``best_config`` leaves them (None: no such trial).
        data: Its trials' ``task.dataset.*`` params (those of its first trial run): what the
            losses were measured on.
    """

    run_id: str
    sweep_id: str | None
    status: str
    started: str
    trials: dict[str, int]
    best_valid_loss: float | None
    data: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweep_runs(experiment: str, *, tracking_uri: str | None = None) -> list[SweepRunSummary]:
    """Every sweep run of ``experiment``, the latest first, read from MLflow alone.

    Raises:
        BestConfigError: for a store that does not exist or an unknown experiment (the message
            lists the experiments).
    """
    import datetime

    try:
        tracker = Tracker(existing_store_uri(tracking_uri))
        experiment_id = tracker.experiment_id(experiment)
    except LookupError as exc:
        raise BestConfigError(str(exc)) from None
    children: dict[str, list[Any]] = {}
    for run in tracker.search_runs(experiment_id):
        parent_id = run.data.tags.get(PARENT_TAG)
        if parent_id is not None:
            children.setdefault(parent_id, []).append(run)
    found = []
    for parent in tracker.sweep_runs(experiment_id):
        runs = sorted(children.get(parent.info.run_id, []), key=lambda r: r.info.start_time or 0)
        losses = [
            run.data.metrics[BEST_PREFIX + TIE_BREAK_METRIC]
            for run in runs
            if run.info.status == "FINISHED"
            and run.data.tags.get(STOP_REASON_TAG) not in EXCLUDED_STOP_REASONS
            and finite(run.data.metrics.get(BEST_PREFIX + TIE_BREAK_METRIC))
        ]
        started = datetime.datetime.fromtimestamp(
            (parent.info.start_time or 0) / 1000, tz=datetime.UTC
        )
        params = runs[0].data.params if runs else {}
        found.append(
            SweepRunSummary(
                run_id=parent.info.run_id,
                sweep_id=parent.data.tags.get(TAG_SWEEP_ID),
                status=parent.info.status,
                started=started.strftime("%Y-%m-%d %H:%M:%S"),
                trials=dict(sorted(Counter(run.info.status for run in runs).items())),
                best_valid_loss=min(losses) if losses else None,
                data={k: v for k, v in sorted(params.items()) if k.startswith(DATA_PARAMS)},
            )
        )
    return found
