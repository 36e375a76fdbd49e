"""The best trial of a sweep, read from MLflow alone.

Any machine that can reach the tracking store can ask: nothing here reads Ray's result folder or
the spec file the sweep was started from. The layout relied on is DESIGN.md's: one experiment
per sweep name, child runs (tag ``mlflow.parentRunId``) one per trial with the resolved trial
config as params, ``best/<metric>`` metrics at the trial's best epoch, tags ``sweeps.strategy``,
``sweeps.stop_reason`` and ``sweeps.best_epoch``; the parent run holds ``spec.yaml``.

Which trials count: child runs that FINISHED and did not stop as ``diverged`` or ``failed``
(completed and early-stopped trials count), and that have a finite ``best/<metric>`` (MLflow's
SQL stores keep +-inf as +-1.797e308: read back, that is infinite too); the finished trials
left out for want of one are named in a warning. The
``best/*`` metrics are those of the trial's best epoch, the epoch of its lowest validation loss,
so ``metric="error_rate"`` ranks the error rate at that epoch. Ties (common on an error rate,
a count over the validation set) go to the lower ``best/valid_loss``, then to the trial that
started first.

Here: the ranking (which trials count, the best of them, the warnings on trials left out or
run on other data) and the artifacts it reads (the sweep's ``spec.yaml``, whether the trial
logged a model). :class:`BestConfig`, the names of a trial run's tags and metrics and the
params typed back are in ``_best_result.py``; the sweep runs ``lrsweep sweeps`` lists
(:func:`sweep_runs`) are in ``_sweep_summaries.py``. This module re-exports the names it
always offered.

Example:
    >>> best = best_config("digits-lr", metric="error_rate")  # doctest: +SKIP
    >>> best.config["lr"], best.metrics["error_rate"], best.model_uri  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections import Counter
from dataclasses import replace
from typing import Any, Literal

from sweeps._best_result import ARM_TAG as ARM_TAG  # re-exported
from sweeps._best_result import BEST_EPOCH_TAG as BEST_EPOCH_TAG  # re-exported
from sweeps._best_result import BEST_PREFIX as BEST_PREFIX  # re-exported
from sweeps._best_result import DATA_PARAMS as DATA_PARAMS  # re-exported
from sweeps._best_result import EXCLUDED_STOP_REASONS as EXCLUDED_STOP_REASONS  # re-exported
from sweeps._best_result import RULE_TAG as RULE_TAG  # re-exported
from sweeps._best_result import SPEC_ARTIFACT as SPEC_ARTIFACT  # re-exported
from sweeps._best_result import STOP_REASON_TAG as STOP_REASON_TAG  # re-exported
from sweeps._best_result import STRATEGY_TAG as STRATEGY_TAG  # re-exported
from sweeps._best_result import TIE_BREAK_METRIC as TIE_BREAK_METRIC  # re-exported
from sweeps._best_result import TTA_PREFIX as TTA_PREFIX  # re-exported
from sweeps._best_result import BestConfig as BestConfig  # re-exported
from sweeps._best_result import BestConfigError as BestConfigError  # re-exported
from sweeps._best_result import finite, to_best
from sweeps._best_result import typed_param as typed_param  # re-exported
from sweeps._sweep_summaries import SweepRunSummary as SweepRunSummary  # re-exported
from sweeps._sweep_summaries import sweep_runs as sweep_runs  # re-exported
from sweeps.spec import MAX_SPEC_BYTES, MAXIMISED_METRICS, parse_yaml
from sweeps.tracking import PARENT_TAG, Tracker, existing_store_uri

logger = logging.getLogger(__name__)

LISTED_RUNS = 5
"""How many run ids a warning about unranked trials names."""


def best_config(
    experiment: str,
    *,
    metric: str = "valid_loss",
    mode: Literal["min", "max"] | None = None,
    strategy: str | None = None,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
) -> BestConfig:
    """Find the best trial of ``experiment`` in MLflow.

    Args:
        experiment: the sweep's experiment name.
        metric: ranked by the trials' ``best/<metric>`` (``best/`` may be given or not).
        mode: ``min`` or ``max``; ``None`` follows the metric as ``early_stop.mode`` does:
            ``max`` for ``accuracy``, ``min`` for the others (losses, ``error_rate``).
        strategy: only trials of this arm: its kind (tag ``sweeps.strategy``) or its name
            (tag ``sweeps.arm``); or of one rule of a finder arm, ``<arm>:<rule>`` (tag
            ``sweeps.rule``), as ``lrsweep report`` names its rows (``lr_finder:valley``).
        tracking_uri: MLflow store; default ``MLFLOW_TRACKING_URI``, else the embedded
            ``.lrsweep/mlflow.db``. Server credentials come from ``MLFLOW_TRACKING_USERNAME`` /
            ``MLFLOW_TRACKING_PASSWORD``.
        parent_run_id: only the trials of this sweep run (``lrsweep report --run-id``'s
            parent run); None ranks the trials of every sweep run of the experiment (trials
            left behind by a deleted sweep run are not ranked).

    Returns:
        The best trial.

    Raises:
        BestConfigError: unknown experiment (lists the experiments), sweep run (lists the
            experiment's sweep runs), metric (lists the metrics trials have), strategy (lists
            the strategies) or mode, or no eligible trial.
    """
    metric = metric.removeprefix(BEST_PREFIX)
    if mode is None:
        mode = default_mode(metric)
    if mode not in ("min", "max"):
        raise BestConfigError(f"mode must be 'min' or 'max', but got {mode!r}.")
    tracker, experiment_id = _open_experiment(experiment, tracking_uri)
    children = _trial_runs(tracker, experiment_id, experiment, parent_run_id)
    # what the trials ranked are: every sweep of the experiment, or the one --run-id names
    scope = f"experiment {experiment!r}"
    if parent_run_id is not None:
        scope = f"sweep run {parent_run_id} of {scope}"
    eligible = _eligible(children, scope)
    if strategy is not None:
        eligible = _of_strategy(eligible, children, strategy, scope)
    key = BEST_PREFIX + metric
    scored = _scored(eligible, scope, metric, key)
    best = _best_run(scored, key, mode)
    logger.info("Best %s trial of %r: run %s.", metric, experiment, best.info.run_id)
    if parent_run_id is None:
        _warn_if_data_differ(scored, best, scope)
    spec, spec_problem = _load_spec(tracker, best)
    found = to_best(best, experiment, metric, mode, key, spec, _has_model(tracker, best))
    return replace(found, spec_problem=spec_problem)


def _open_experiment(experiment: str, tracking_uri: str | None) -> tuple[Tracker, str]:
    """The tracker of the store and the id of ``experiment`` in it.

    Raises:
        BestConfigError: an embedded SQLite store that does not exist, or no such experiment
            (lists the experiments).
    """
    try:
        tracker = Tracker(existing_store_uri(tracking_uri))
    except LookupError as exc:
        raise BestConfigError(str(exc)) from None
    try:
        experiment_id = tracker.experiment_id(experiment)
    except LookupError as exc:
        raise BestConfigError(str(exc)) from None
    return tracker, experiment_id


def _trial_runs(
    tracker: Tracker, experiment_id: str, experiment: str, parent_run_id: str | None
) -> list[Any]:
    """The trial (child) runs to rank: those of the sweep run ``parent_run_id``, else those of
    every live sweep run of the experiment. May be empty when nothing better can be said
    (:func:`_eligible` then says there is no finished trial).

    Raises:
        BestConfigError: ``parent_run_id`` is not a sweep run of the experiment (lists them);
            no trial runs in an experiment whose sweeps lie below it (a nightly suite's) or
            that has no sweep run at all.
    """
    if parent_run_id is None:
        # Trials of a sweep whose run was deleted stay active in MLflow: only live sweeps count.
        sweeps = {run.info.run_id for run in tracker.sweep_runs(experiment_id)}
        runs = tracker.search_runs(experiment_id)
        children = [run for run in runs if run.data.tags.get(PARENT_TAG) in sweeps]
    else:
        try:
            tracker.check_sweep_run(
                experiment_id,
                experiment,
                parent_run_id,
                without_run_id="to rank the trials of every sweep of the experiment",
            )
        except LookupError as exc:
            raise BestConfigError(str(exc)) from None
        sweeps = {parent_run_id}
        children = tracker.child_runs(experiment_id, parent_run_id)
    if not children:
        from sweeps.report import sweeps_below_hint  # a nightly suite's own experiment

        hint = sweeps_below_hint(tracker, experiment)
        if hint:
            raise BestConfigError(f"Experiment {experiment!r} has no trial runs.{hint}")
        if parent_run_id is None and not sweeps:
            raise BestConfigError(
                f"Experiment {experiment!r} has no sweep run (tag sweeps.kind=sweep), so no "
                "trial to rank; pass the experiment a sweep logged to (its spec's "
                "tracking.experiment, else its name)."
            )
    return children


def _of_strategy(eligible: list[Any], children: list[Any], strategy: str, scope: str) -> list[Any]:
    """The eligible runs that ``strategy`` names (see :func:`_strategy_names`).

    Raises:
        BestConfigError: none is; says how its trial runs (``children``) ended, or that none ran
            it, and lists the strategies with finished trials.
    """
    present = sorted({name for run in eligible for name in _strategy_names(run)})
    eligible = [run for run in eligible if strategy in _strategy_names(run)]
    if not eligible:
        ran = [run for run in children if strategy in _strategy_names(run)]
        seen = Counter(
            f"{run.info.status}/{run.data.tags.get(STOP_REASON_TAG, '-')}" for run in ran
        )
        why = (
            f"its trial runs by status/stop_reason: {dict(sorted(seen.items()))} (diverged, "
            "failed, killed and running trials are not ranked)"
            if ran
            else "no trial ran it"
        )
        raise BestConfigError(
            f"{_capitalized(scope)} has no finished trial of strategy {strategy!r}: {why}; "
            f"strategies with finished trials: {present}."
        )
    return eligible


def _best_run(scored: list[Any], key: str, mode: Literal["min", "max"]) -> Any:
    """The run of ``scored`` best by ``key`` (finite in each) for ``mode``; a tie goes to the
    lower ``best/valid_loss`` (a missing or non-finite one ranks last), then to the run that
    started first, then to the lower run id."""
    sign = 1.0 if mode == "min" else -1.0
    tie_break = BEST_PREFIX + TIE_BREAK_METRIC

    def rank(run: Any) -> tuple[float, float, int, str]:
        loss = run.data.metrics.get(tie_break)
        return (
            sign * run.data.metrics[key],
            loss if finite(loss) else math.inf,
            run.info.start_time or 0,
            run.info.run_id,
        )

    return min(scored, key=rank)


def _scored(eligible: list[Any], scope: str, metric: str, key: str) -> list[Any]:
    """The eligible runs with a finite ``key``; the others are named in a warning. ``scope``
    says where they come from (``experiment 'x'``, or ``sweep run <id> of experiment 'x'``).

    Raises:
        BestConfigError: no run has a finite ``key`` (says whether it is missing or not finite).
    """
    scored = [run for run in eligible if finite(run.data.metrics.get(key))]
    if not scored:
        if any(key in run.data.metrics for run in eligible):
            raise BestConfigError(
                f"Metric {metric!r} ({key}) is NaN or infinite in every finished trial of "
                f"{scope}, so none can be ranked by it; rank by another "
                f"--metric: {_metric_names(eligible)}."
            )
        raise BestConfigError(
            f"No finished trial of {scope} has metric {metric!r} "
            f"({key}); metrics present: {_metric_names(eligible)}."
        )
    if len(scored) < len(eligible):
        ranked = {run.info.run_id for run in scored}
        left_out = [run.info.run_id for run in eligible if run.info.run_id not in ranked]
        more = f" and {len(left_out) - LISTED_RUNS} more" if len(left_out) > LISTED_RUNS else ""
        logger.warning(
            "%d of %d finished trials of %s have no finite %s and are not ranked: %s%s.",
            len(left_out),
            len(eligible),
            scope,
            key,
            ", ".join(left_out[:LISTED_RUNS]),
            more,
        )
    return scored


def _warn_if_data_differ(scored: list[Any], best: Any, scope: str) -> None:
    """Warn when the trials ranked together ran on different data: sweeps of one experiment
    with another ``task.dataset`` (``valid_pct``, split ``seed``, options, folder) validated on
    other images, so their losses and error rates do not compare."""
    seen: dict[str, set[str]] = {}
    for run in scored:
        for key, value in _data_params(run).items():
            seen.setdefault(key, set()).add(value)
    for run in scored:  # a field one trial lacks (an older lrsweep's sweep) differs too
        for key in seen.keys() - _data_params(run).keys():
            seen[key].add("(none)")
    differ = {key: values for key, values in sorted(seen.items()) if len(values) > 1}
    if not differ:
        return
    shown = "; ".join(f"{key}: {', '.join(sorted(values))}" for key, values in differ.items())
    logger.warning(
        "The trials of %s ranked here ran on different data (%s): their validation losses and "
        "error rates are on other validation sets and do not compare. The best is of sweep run "
        "%s; pass --run-id %s (run_id=) to rank that sweep's trials alone.",
        scope,
        shown,
        best.data.tags.get(PARENT_TAG),
        best.data.tags.get(PARENT_TAG),
    )


def _data_params(run: Any) -> dict[str, str]:
    """The run's ``task.dataset.*`` params that name its images: ``path`` only for an
    ``image_folder`` (elsewhere a download cache, or unused, and absolute: the same spec run
    from two folders logs two paths)."""
    params = run.data.params
    return {
        key: value
        for key, value in params.items()
        if key.startswith(DATA_PARAMS)
        and (key != DATA_PARAMS + "path" or params.get(DATA_PARAMS + "name") == "image_folder")
    }


def _capitalized(scope: str) -> str:
    """``scope`` opening a sentence: ``experiment 'x'`` -> ``Experiment 'x'``."""
    return scope[:1].upper() + scope[1:]


def default_mode(metric: str) -> Literal["min", "max"]:
    """``max`` for a metric that grows as a trial improves (``accuracy``), else ``min``.

    The rule ``early_stop.mode`` defaults by; ``best/`` may be given or not.

    Example:
        >>> default_mode("accuracy"), default_mode("best/accuracy"), default_mode("error_rate")
        ('max', 'max', 'min')
        >>> default_mode("tta_accuracy"), default_mode("best/tta_error_rate")
        ('max', 'min')
    """
    name = metric.removeprefix(BEST_PREFIX).removeprefix(TTA_PREFIX)  # tta_accuracy: max too
    return "max" if name in MAXIMISED_METRICS else "min"


def _eligible(children: list[Any], scope: str) -> list[Any]:
    eligible = [
        run
        for run in children
        if run.info.status == "FINISHED"
        and run.data.tags.get(STOP_REASON_TAG) not in EXCLUDED_STOP_REASONS
    ]
    if not eligible:
        seen = Counter(
            f"{run.info.status}/{run.data.tags.get(STOP_REASON_TAG, '-')}" for run in children
        )
        raise BestConfigError(
            f"{_capitalized(scope)} has no finished trial (a completed or early-stopped "
            f"child run); trial runs by status/stop_reason: {dict(seen) or 'none'}."
        )
    return eligible


def _strategy_names(run: Any) -> set[str]:
    """What ``strategy=`` matches for ``run``: its kind, its arm's name and, for a finder trial,
    ``<arm>:<rule>`` (the group ``lrsweep report`` shows it in)."""
    tags = run.data.tags
    names = {tags.get(STRATEGY_TAG), tags.get(ARM_TAG)}
    arm, rule = tags.get(ARM_TAG) or tags.get(STRATEGY_TAG), tags.get(RULE_TAG)
    if arm and rule and tags.get(STRATEGY_TAG) == "lr_finder":
        names.add(f"{arm}:{rule}")
    return {name for name in names if name}


def _metric_names(runs: list[Any]) -> list[str]:
    keys = {key for run in runs for key in run.data.metrics}
    best = sorted(key.removeprefix(BEST_PREFIX) for key in keys if key.startswith(BEST_PREFIX))
    return best or sorted(keys)


def _has_model(tracker: Tracker, run: Any) -> bool:
    """Whether the trial logged its model (a store that cannot say is taken at its word)."""
    from mlflow.exceptions import MlflowException

    try:
        found = tracker.has_model(run.info.run_id)
    except MlflowException as exc:
        logger.warning(
            "Cannot tell whether run %s logged a model: %s", run.info.run_id, artifact_error(exc)
        )
        return True
    if not found:
        logger.info("Trial %s logged no model (tracking.checkpoints: none).", run.info.run_id)
    return found


def artifact_error(error: BaseException) -> str:
    """One line on an artifact that could not be read. Runs whose artifacts an MLflow server
    keeps (``mlflow-artifacts:``) are read through that server only: MLflow's own text, several
    lines ending in ``export MLFLOW_TRACKING_URI=http://localhost:5000``, is replaced by what to
    pass here."""
    text = str(error)
    if "mlflow-artifacts" in text:
        return (
            "its artifacts are kept by an MLflow server (mlflow-artifacts:), which is read "
            "through that server only; pass the server's http(s):// address as --tracking-uri "
            "instead of its database"
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first or type(error).__name__


def _load_spec(tracker: Tracker, run: Any) -> tuple[dict[str, Any] | None, str]:
    """The sweep's ``spec.yaml`` and ``""``, or None and why it cannot be had."""
    from mlflow.exceptions import MlflowException

    parent = run.data.tags[PARENT_TAG]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if SPEC_ARTIFACT not in tracker.list_artifacts(parent):
                logger.info("Sweep run %s has no %s artifact.", parent, SPEC_ARTIFACT)
                return None, f"it has no {SPEC_ARTIFACT} artifact"
            path = tracker.download_artifact(parent, SPEC_ARTIFACT, tmp)
        except (MlflowException, OSError) as exc:
            why = artifact_error(exc)
            logger.warning("Cannot read %s of sweep run %s: %s", SPEC_ARTIFACT, parent, why)
            return None, f"its {SPEC_ARTIFACT} cannot be read ({why})"
        try:
            if path.stat().st_size > MAX_SPEC_BYTES:
                raise ValueError(f"it is over {MAX_SPEC_BYTES} bytes")
            spec = parse_yaml(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
            logger.warning(
                "%s of sweep run %s is not a readable spec: %s", SPEC_ARTIFACT, parent, exc
            )
            return None, f"its {SPEC_ARTIFACT} is not a readable spec ({exc})"
    if not isinstance(spec, dict):
        return None, f"its {SPEC_ARTIFACT} is not a spec (a mapping)"
    return spec, ""
