"""``SweepResult``: what one execution of a sweep produced, as ``run_sweep`` and
``resume_sweep`` return it (both in :mod:`sweeps.run`, which re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sweeps import _ray
from sweeps._location import Location
from sweeps.report import Report

__all__ = ["SweepResult"]


@dataclass(frozen=True)
class SweepResult:
    """What one sweep execution produced.

    Attributes:
        name: The spec's name.
        sweep_id: This execution's id (``sweeps.sweep_id`` on every run).
        experiment: The MLflow experiment name.
        experiment_id: Its id.
        parent_run_id: The parent run of this execution.
        tracking_uri: The MLflow store (credentials never included).
        sweep_dir: Where Ray's state and checkpoints live; ``lrsweep resume`` takes it.
        trials: Every trial's outcome as Ray Tune saw it, per arm name.
        report: The comparison (None when the sweep was interrupted or every trial failed).
        interrupted: True when Ctrl-C / SIGTERM stopped the sweep before the end.
        stop_signal: ``SIGINT`` or ``SIGTERM`` when interrupted (``SIGINT`` when unknown).
        address: The Ray cluster it ran on (None: a Ray of its own on this machine).
        resumable: True when the sweep was left for ``lrsweep resume`` to retry its failed
            trials: every trial failed, or some did and not all of those for good (an error
            that comes back the same on every retry, ``sweeps.failed_for_good``).
        runs_left_running: True when the sweep was stopped and MLflow could not be reached to
            close its runs: they still show RUNNING until ``lrsweep resume`` closes them.
    """

    name: str
    sweep_id: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    sweep_dir: Location
    trials: dict[str, list[_ray.TrialOutcome]] = field(default_factory=dict)
    report: Report | None = None
    interrupted: bool = False
    stop_signal: str | None = None
    address: str | None = None
    resumable: bool = False
    runs_left_running: bool = False

    @property
    def n_trials(self) -> int:
        """Trials run in all."""
        return sum(len(outcomes) for outcomes in self.trials.values())

    @property
    def failed(self) -> list[_ray.TrialOutcome]:
        """The trials that ended in an error (their ``error`` says which)."""
        return [o for outcomes in self.trials.values() for o in outcomes if o.status == "ERROR"]

    @property
    def failed_arms(self) -> list[str]:
        """The arms that ran trials and lost every one of them (the comparison has no row
        measured for them): empty when every trial failed (see :attr:`all_failed`)."""
        if self.all_failed:
            return []
        return [
            arm
            for arm, outcomes in self.trials.items()
            if outcomes and all(o.status == "ERROR" for o in outcomes)
        ]

    @property
    def all_failed(self) -> bool:
        """True when trials ran and every one of them failed (the parent run is FAILED)."""
        return not self.interrupted and self.n_trials > 0 and len(self.failed) == self.n_trials
