"""``BestConfig``, the best trial as :func:`sweeps.best.best_config` returns it, and what it is
read from: the tags, ``best/*`` metrics and params a trial run carries (their names here), the
params typed back, and its renderings (JSON, YAML, a spec that re-runs the trial).

:mod:`sweeps.best` builds it (:func:`to_best`) and re-exports every public name; the
summaries of ``lrsweep sweeps`` (:mod:`sweeps._sweep_summaries`) read the same names.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from sweeps.spec import EXPERIMENT_MAX, NAME_MAX, EarlyStopSpec, dump_yaml
from sweeps.tracking import PARENT_TAG, as_logged

__all__ = [
    "ARM_TAG",
    "BEST_EPOCH_TAG",
    "BEST_PREFIX",
    "DATA_PARAMS",
    "EXCLUDED_STOP_REASONS",
    "RULE_TAG",
    "SPEC_ARTIFACT",
    "STOP_REASON_TAG",
    "STRATEGY_TAG",
    "TIE_BREAK_METRIC",
    "TTA_PREFIX",
    "BestConfig",
    "BestConfigError",
    "best_epoch_of",
    "finite",
    "to_best",
    "typed_param",
]

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
DATA_PARAMS = "task.dataset."
"""The trial params that say which images a trial validated on (name, path, options, split)."""

_INT = re.compile(r"[+-]?\d+")
_DEFAULT_EARLY_STOP = EarlyStopSpec().model_dump(mode="json")
"""``early_stop`` as a spec without one resolves it (its ``spec.yaml``)."""


def best_epoch_of(tag: str | None) -> int | None:
    """A trial run's ``sweeps.best_epoch`` tag as a number; ``None`` when it is missing or not
    one (empty for a trial that diverged or failed before an epoch ended)."""
    return int(tag) if tag is not None and _INT.fullmatch(tag) else None


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
        An ``early_stop`` equal to the default is left out (the re-run gets it all the same).

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
        if spec.get("early_stop") == _DEFAULT_EARLY_STOP:  # what the re-run gets without it
            # written out, it reads as a setting of the user's: `validate` of a short re-run
            # then said "early_stop can never stop a trial" of a stopper the spec never set
            del spec["early_stop"]
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


def _suffixed(name: str, limit: int, suffix: str = "-best") -> str:
    """``name + suffix``, ``name`` cut so the result stays within the spec's ``limit``."""
    return name[: limit - len(suffix)] + suffix


def finite(value: float | None) -> bool:
    """A real number: not None, NaN, +-inf, nor +-inf as MLflow's SQL stores keep it."""
    return value is not None and math.isfinite(as_logged(value))


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (inside lists and dicts too) as ``None``."""
    if isinstance(value, float):
        return value if finite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def to_best(
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
        best_epoch=best_epoch_of(epoch),
        config={name: typed_param(value) for name, value in sorted(run.data.params.items())},
        metrics={
            name.removeprefix(BEST_PREFIX): as_logged(value)
            for name, value in sorted(run.data.metrics.items())
            if name.startswith(BEST_PREFIX)
        },
        sweep_spec=spec,
    )


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
