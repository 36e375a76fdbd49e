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

Example:
    >>> best = best_config("digits-lr", metric="error_rate")  # doctest: +SKIP
    >>> best.config["lr"], best.metrics["error_rate"], best.model_uri  # doctest: +SKIP
"""

from __future__ import annotations

import ast
import copy
import json
import logging
import math
import re
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import yaml

from sweeps.spec import (
    EXPERIMENT_MAX,
    MAX_SPEC_BYTES,
    MAXIMISED_METRICS,
    NAME_MAX,
    dump_yaml,
    parse_yaml,
)
from sweeps.tracking import PARENT_TAG, TAG_SWEEP_ID, Tracker, as_logged, existing_store_uri

logger = logging.getLogger(__name__)

STRATEGY_TAG = "sweeps.strategy"
ARM_TAG = "sweeps.arm"
RULE_TAG = "sweeps.rule"
STOP_REASON_TAG = "sweeps.stop_reason"
BEST_EPOCH_TAG = "sweeps.best_epoch"
BEST_PREFIX = "best/"
TTA_PREFIX = "tta_"
"""``best/tta_<metric>``: the best epoch under test-time augmentation (``task.tta``)."""
EXCLUDED_STOP_REASONS = frozenset({"diverged", "failed"})
TIE_BREAK_METRIC = "valid_loss"
SPEC_ARTIFACT = "spec.yaml"

_INT = re.compile(r"[+-]?\d+")
LISTED_RUNS = 5
"""How many run ids a warning about unranked trials names."""


class BestConfigError(LookupError):
    """No best config: unknown experiment, metric, strategy or mode, or no eligible trial.

    The message lists what exists instead.
    """


@dataclass(frozen=True)
class BestConfig:
    """The best trial of a sweep.

    Attributes:
        experiment: the sweep's experiment name.
        run_id: the trial's child run.
        parent_run_id: the sweep execution it belongs to.
        model_uri: ``runs:/<run_id>/model``, loadable with ``mlflow.pytorch.load_model``;
            ``None`` when the trial logged no model (``tracking.checkpoints: none``).
        strategy: the arm's kind (``lr_finder``, ``grid``, ``optuna``, ``random``, ``recipe``).
        arm: the arm's name in the spec (its ``name:``, else its kind).
        metric: the metric ranked by (without the ``best/`` prefix).
        mode: ``min`` or ``max``.
        value: the trial's ``best/<metric>``.
        best_epoch: the epoch the best metrics come from (``None`` if not tagged).
        config: the trial's params, typed back (numbers as numbers, booleans, ``None``).
        metrics: every ``best/*`` metric of the trial, prefix removed.
        sweep_spec: the parent run's ``spec.yaml`` (``None`` when it has none).
        spec_problem: why ``sweep_spec`` is ``None`` (no such artifact, unreadable, or kept
            by an MLflow server this tracking URI does not reach); ``""`` when it is there.
    """

    experiment: str
    run_id: str
    parent_run_id: str
    model_uri: str | None
    strategy: str | None
    arm: str | None
    metric: str
    mode: str
    value: float
    best_epoch: int | None
    config: dict[str, Any]
    metrics: dict[str, float]
    sweep_spec: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    spec_problem: str = field(default="", repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the sweep spec, as plain JSON-able values: a NaN or infinite metric
        or param is ``None`` (JSON has no NaN; ``json.dumps`` would write one all the same)."""
        data = asdict(self)
        data.pop("sweep_spec")
        data.pop("spec_problem")
        return {key: _json_safe(value) for key, value in data.items()}

    def to_json(self) -> str:
        """``to_dict()`` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        """``to_dict()`` as YAML."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_spec(self) -> str:
        """A spec YAML that re-runs exactly this trial.

        It is the sweep's own ``spec.yaml`` (task, schedule, stoppers, resources unchanged)
        named ``<name>-best`` (and ``tracking.experiment``, when set, ``<experiment>-best``, so
        the re-run does not join the original comparison; a name at the spec's length limit is
        cut to make room), with ``seeds: [<the trial's seed>]``
        and one arm: ``{kind: fixed, lr: <the trial's lr>}``, so a finder trial re-runs at the
        LR its range test picked and a searched trial at the LR the search chose. A ``recipe``
        trial changes its LR as it goes, so its own arm is kept instead.

        Raises:
            BestConfigError: the parent run has no ``spec.yaml``, or the trial's params lack
                ``lr`` or ``seed`` (the message lists the params it has).
        """
        if self.sweep_spec is None:
            why = self.spec_problem or f"it has no {SPEC_ARTIFACT} artifact"
            raise BestConfigError(
                f"The sweep run {self.parent_run_id} of experiment {self.experiment!r}: {why}, "
                "so no spec can be written; use --format json or yaml."
            )
        arm = self._recipe_arm()
        needed = ("seed",) if arm is not None else ("lr", "seed")
        missing = [key for key in needed if self.config.get(key) is None]
        if missing:
            raise BestConfigError(
                f"Trial {self.run_id} has no param {' or '.join(map(repr, missing))}; "
                f"its params are: {sorted(self.config)}."
            )
        spec = copy.deepcopy(self.sweep_spec)
        spec["name"] = _suffixed(str(spec.get("name", self.experiment)), NAME_MAX)
        tracking = spec.get("tracking")
        if isinstance(tracking, dict) and tracking.get("experiment"):
            tracking["experiment"] = _suffixed(str(tracking["experiment"]), EXPERIMENT_MAX)
        spec["seeds"] = [int(self.config["seed"])]
        spec["strategies"] = [arm or {"kind": "fixed", "lr": float(self.config["lr"])}]
        epoch = f" at epoch {self.best_epoch}" if self.best_epoch is not None else ""
        header = (
            f"# Re-runs trial {self.run_id} ({self.strategy}) of experiment "
            f"{self.experiment!r}: best {self.metric} = {self.value:.6g}{epoch}.\n"
        )
        return header + dump_yaml(spec)

    def _recipe_arm(self) -> dict[str, Any] | None:
        arms = (self.sweep_spec or {}).get("strategies") or []
        for arm in arms:
            if not isinstance(arm, dict) or arm.get("kind") != "recipe":
                continue
            if (arm.get("name") or arm["kind"]) == (self.arm or self.strategy):
                return copy.deepcopy(arm)
        return None


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
    try:
        tracker = Tracker(existing_store_uri(tracking_uri))
    except LookupError as exc:
        raise BestConfigError(str(exc)) from None
    try:
        experiment_id = tracker.experiment_id(experiment)
    except LookupError as exc:
        raise BestConfigError(str(exc)) from None
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
    # what the trials ranked are: every sweep of the experiment, or the one --run-id names
    scope = f"experiment {experiment!r}"
    if parent_run_id is not None:
        scope = f"sweep run {parent_run_id} of {scope}"
    eligible = _eligible(children, scope)
    if strategy is not None:
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
    key = BEST_PREFIX + metric
    scored = _scored(eligible, scope, metric, key)
    sign = 1.0 if mode == "min" else -1.0
    tie_break = BEST_PREFIX + TIE_BREAK_METRIC

    def rank(run: Any) -> tuple[float, float, int, str]:
        loss = run.data.metrics.get(tie_break)
        return (
            sign * run.data.metrics[key],
            loss if _finite(loss) else math.inf,
            run.info.start_time or 0,
            run.info.run_id,
        )

    best = min(scored, key=rank)
    logger.info("Best %s trial of %r: run %s.", metric, experiment, best.info.run_id)
    if parent_run_id is None:
        _warn_if_data_differ(scored, best, scope)
    spec, spec_problem = _load_spec(tracker, best)
    found = _to_best(best, experiment, metric, mode, key, spec, _has_model(tracker, best))
    return replace(found, spec_problem=spec_problem)


def _scored(eligible: list[Any], scope: str, metric: str, key: str) -> list[Any]:
    """The eligible runs with a finite ``key``; the others are named in a warning. ``scope``
    says where they come from (``experiment 'x'``, or ``sweep run <id> of experiment 'x'``).

    Raises:
        BestConfigError: no run has a finite ``key`` (says whether it is missing or not finite).
    """
    scored = [run for run in eligible if _finite(run.data.metrics.get(key))]
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


DATA_PARAMS = "task.dataset."
"""The trial params that say which images a trial validated on (name, path, options, split)."""


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
            and _finite(run.data.metrics.get(BEST_PREFIX + TIE_BREAK_METRIC))
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


def _suffixed(name: str, limit: int, suffix: str = "-best") -> str:
    """``name + suffix``, ``name`` cut so the result stays within the spec's ``limit``."""
    return name[: limit - len(suffix)] + suffix


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


def _finite(value: float | None) -> bool:
    """A real number: not None, NaN, +-inf, nor +-inf as MLflow's SQL stores keep it."""
    return value is not None and math.isfinite(as_logged(value))


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (inside lists and dicts too) as ``None``."""
    if isinstance(value, float):
        return value if _finite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _metric_names(runs: list[Any]) -> list[str]:
    keys = {key for run in runs for key in run.data.metrics}
    best = sorted(key.removeprefix(BEST_PREFIX) for key in keys if key.startswith(BEST_PREFIX))
    return best or sorted(keys)


def _to_best(
    run: Any,
    experiment: str,
    metric: str,
    mode: str,
    key: str,
    spec: dict[str, Any] | None,
    has_model: bool,
) -> BestConfig:
    tags = run.data.tags
    epoch = tags.get(BEST_EPOCH_TAG)
    return BestConfig(
        experiment=experiment,
        run_id=run.info.run_id,
        parent_run_id=tags[PARENT_TAG],
        model_uri=f"runs:/{run.info.run_id}/model" if has_model else None,
        strategy=tags.get(STRATEGY_TAG),
        arm=tags.get(ARM_TAG),
        metric=metric,
        mode=mode,
        value=float(run.data.metrics[key]),
        best_epoch=int(epoch) if epoch is not None and _INT.fullmatch(epoch) else None,
        config={name: typed_param(value) for name, value in sorted(run.data.params.items())},
        metrics={
            name.removeprefix(BEST_PREFIX): as_logged(value)
            for name, value in sorted(run.data.metrics.items())
            if name.startswith(BEST_PREFIX)
        },
        sweep_spec=spec,
    )


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


def typed_param(text: str) -> Any:
    """An MLflow param (always a string) back as the value it was logged from.

    ``"3"`` -> 3, ``"0.003"`` / ``"1e-3"`` -> float, ``"True"`` -> True, ``"None"`` -> None,
    ``"[1, 2]"`` -> [1, 2]; anything else stays a string (``"2024_01"`` too, though Python
    would read it as a number).
    """
    stripped = text.strip()
    if stripped in ("True", "true"):
        return True
    if stripped in ("False", "false"):
        return False
    if stripped in ("None", "null"):
        return None
    if _INT.fullmatch(stripped):
        return int(stripped)
    try:
        if "_" not in stripped:  # str() of a number has none; float() reads "2024_01" as one
            return float(stripped)
    except ValueError:
        pass
    if stripped[:1] in "[{(":
        try:
            return ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            return text
    return text
