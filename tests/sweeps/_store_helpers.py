"""A sweep's MLflow runs written straight to a store (no Ray, no training): the report, best
and clean tests read them as a sweep that was interrupted, left running or partly failed."""

from __future__ import annotations

from sweeps.tracking import Tracker


def logged_sweep(
    tracker: Tracker,
    experiment: str,
    tags: dict[str, str],
    params: dict[str, str] | None = None,
    *,
    trial_status: str = "KILLED",
    parent_status: str = "KILLED",
    trial_error: str | None = None,
) -> str:
    """A sweep run of ``experiment`` (KILLED unless ``parent_status`` says otherwise; RUNNING:
    left running) with one finished grid trial and one of ``trial_status`` (tagged with
    ``trial_error`` as its error when given); returns the sweep run's id."""
    experiment_id = tracker.ensure_experiment(experiment)
    parent = tracker.start_run(
        experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep", **tags}
    )
    if params:
        tracker.log_params(parent, params)
    for index, status in enumerate(["FINISHED", trial_status]):
        run_id = tracker.start_run(
            experiment_id,
            run_name=f"t{index}",
            tags={"sweeps.strategy": "grid"},
            parent_run_id=parent,
        )
        tracker.log_params(run_id, {"strategy": "grid", "arm": "grid", "seed": 0, "lr": index})
        tracker.log_metrics(run_id, [("best/valid_loss", 0.5, 0), ("epochs_run", 1, 0)])
        if index and trial_error:
            tracker.set_tags(run_id, {"sweeps.error": trial_error})
        if status != "RUNNING":
            tracker.end_run(run_id, status)
    if parent_status != "RUNNING":
        tracker.end_run(parent, parent_status)
    return parent
