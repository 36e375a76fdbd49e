"""The ``strategies`` list: one model per way of choosing a learning rate (an *arm*).

Each arm runs once per seed. Two arms of one kind need distinct ``name:`` values; ``arm_name``
(the name, or else the kind) identifies an arm in MLflow tags and in the report.

Seeds are 32-bit: an ``optuna`` arm's sampler seed for training seed ``s`` is ``seed + s``, and
Optuna's samplers (numpy's legacy generator) refuse anything outside ``[0, 2**32 - 1]``, so the
arm's ``seed`` plus the sweep's largest seed must stay within it. A ``random`` arm's ``seed``
seeds ``numpy.random.default_rng`` alone, which takes any non-negative integer.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from sweeps.spec._errors import short_value
from sweeps.spec._lr import log_spaced
from sweeps.spec._types import Int, Name, Number, SpecModel, field_error

__all__ = [
    "HIGH_LR",
    "OPTUNA_SAMPLERS",
    "RECIPE_MIN_EPOCHS",
    "RULE_MIN_POINTS",
    "SEED_MAX",
    "SUGGESTION_RULES",
    "FixedStrategy",
    "GridLr",
    "GridStrategy",
    "LrFinderStrategy",
    "LrRange",
    "OptunaStrategy",
    "RandomStrategy",
    "RecipeStrategy",
    "Strategy",
    "high_lr_notes",
    "single_draw_notes",
]

SUGGESTION_RULES = ("valley", "steep", "minimum", "slide")
OPTUNA_SAMPLERS = ("tpe", "random", "qmc", "gp", "cmaes")
MAX_POINTS = 1000
MAX_TRIALS = 10000
SEED_MAX = 2**32 - 1
"""The largest seed numpy's legacy generator, and so every Optuna sampler, accepts."""

Rule = Literal["valley", "steep", "minimum", "slide"]

RULE_MIN_POINTS = {"valley": 3, "steep": 2, "minimum": 2, "slide": 16}
"""The usable points each rule of ``trainers.suggestions`` needs (a test keeps them equal: the
spec does not import the trainers). A range test of ``num_it`` steps keeps
``num_it - num_it // 10 - RULE_SKIP_END`` of them."""
RULE_SKIP_END = 5
"""The trailing points every rule drops (fastai's ``[:-5]``)."""


def usable_points(num_it: int) -> int:
    """Points of a ``num_it``-step range test a suggestion rule judges (fastai's cuts)."""
    return num_it - num_it // 10 - RULE_SKIP_END


def _default_rules() -> list[Rule]:
    return ["valley"]


class LrRange(SpecModel):
    """A log-scale learning-rate interval ``[min, max]`` with ``0 < min < max``."""

    min: Number = Field(gt=0.0)
    max: Number = Field(gt=0.0)

    @model_validator(mode="after")
    def _check_order(self) -> LrRange:
        if self.min >= self.max:
            raise ValueError(f"min must be below max, but got min={self.min} max={self.max}.")
        return self


class GridLr(LrRange):
    """``points`` log-spaced learning rates from ``min`` to ``max`` inclusive."""

    points: Int = Field(ge=2, le=MAX_POINTS)

    @field_validator("points", mode="before")
    @classmethod
    def _one_point_is_a_fixed_arm(cls, points: Any) -> Any:
        if type(points) is int and points == 1:
            raise ValueError(
                "must be at least 2 (a grid's points run from min to max, both included), but "
                "got 1; for one given learning rate use an arm {kind: fixed, lr: RATE}"
            )
        return points

    @model_validator(mode="after")
    def _check_points_are_distinct(self) -> GridLr:
        log_spaced(self.min, self.max, self.points)  # a range too narrow names itself here
        return self


def _rates_for_a_range(value: Any, keys: str) -> Any:
    """Refuse learning rates written where an arm takes a range (``lr: 0.01``, ``lr: [0.01]``),
    naming the range's keys and the ``fixed`` arm, which takes one given rate ("must be a
    mapping" alone named neither)."""
    rates = value if isinstance(value, list) else [value]
    if not rates or not all(isinstance(r, int | float) and not isinstance(r, bool) for r in rates):
        return value  # pydantic's own "must be a mapping"
    if len(rates) == 1:
        fix = f"for one given learning rate use an arm {{kind: fixed, lr: {rates[0]}}}"
    elif len(rates) == 2:
        points = ", points: N" if "points" in keys else ""
        fix = f"for the range between them write {{min: {min(rates)}, max: {max(rates)}{points}}}"
    else:
        fix = (
            "for given learning rates use one fixed arm per rate, each with its own name "
            f"(e.g. {{kind: fixed, lr: {rates[0]}, name: lr-{rates[0]}}})"
        )
    raise ValueError(f"must be a range {keys} to search, but got {short_value(value)}; {fix}")


class _Arm(SpecModel):
    kind: str
    name: Name | None = None

    @property
    def arm_name(self) -> str:
        """The arm's ``name``, or its ``kind`` when unnamed."""
        return self.name or self.kind


class LrFinderStrategy(_Arm):
    """Run the LR range test inside each trial, then train at the LR a suggestion rule picks.

    ``suggest`` lists the rules; each rule is its own trial per seed. A single rule may be
    written as a string (``suggest: valley``).
    """

    kind: Literal["lr_finder"] = "lr_finder"
    suggest: list[Rule] = Field(default_factory=_default_rules, min_length=1)
    num_it: Int = Field(default=100, ge=10, le=10000)
    start_lr: Number = Field(default=1.0e-7, gt=0.0)
    end_lr: Number = Field(default=10.0, gt=0.0)

    @field_validator("suggest", mode="before")
    @classmethod
    def _one_rule_as_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("suggest")
    @classmethod
    def _unique_rules(cls, rules: list[str]) -> list[str]:
        repeated = sorted({rule for rule in rules if rules.count(rule) > 1})
        if repeated:
            raise ValueError(f"each rule may appear once, but {', '.join(repeated)} repeats")
        return rules

    @model_validator(mode="after")
    def _check_range(self) -> LrFinderStrategy:
        if self.start_lr >= self.end_lr:
            raise ValueError(
                f"start_lr must be below end_lr, but got start_lr={self.start_lr} "
                f"end_lr={self.end_lr}."
            )
        return self

    @model_validator(mode="after")
    def _enough_points_for_rules(self) -> LrFinderStrategy:
        kept = usable_points(self.num_it)
        short = [rule for rule in self.suggest if kept < RULE_MIN_POINTS[rule]]
        if not short:
            return self
        rule = max(short, key=RULE_MIN_POINTS.__getitem__)
        need = RULE_MIN_POINTS[rule]
        least = next(n for n in itertools.count(self.num_it) if usable_points(n) >= need)
        raise field_error(
            "num_it",
            f"{self.num_it} is too few for rule {rule!r}: after dropping the first num_it // 10 "
            f"and the last {RULE_SKIP_END} points it keeps {kept}, and {rule} needs {need} "
            f"(every trial would fail); set num_it to at least {least}",
        )


class GridStrategy(_Arm):
    """Every LR of a log-spaced grid (``tune.grid_search``)."""

    kind: Literal["grid"] = "grid"
    lr: GridLr

    @field_validator("lr", mode="before")
    @classmethod
    def _not_rates(cls, value: Any) -> Any:
        return _rates_for_a_range(value, "{min, max, points}")


STARTUP_SAMPLERS = ("tpe", "gp", "cmaes")
"""Optuna samplers with ``n_startup_trials`` (random trials before the model takes over)."""

OPTUNA_STARTUP_DEFAULTS = {"tpe": 10, "gp": 10, "cmaes": 1}
"""Each sampler's own ``n_startup_trials``, which ``startup_trials: null`` keeps."""


class OptunaStrategy(_Arm):
    """Ray Tune's ``OptunaSearch`` over a log-uniform LR range with a seeded sampler.

    Samplers: ``tpe``, ``random``, ``qmc``, ``gp`` (``optuna.samplers.GPSampler``) and ``cmaes``
    (needs the ``cmaes`` package, checked when the spec is loaded). ``startup_trials``: the
    sampler's ``n_startup_trials``, the trials it draws at random before it models the results
    (``tpe``, ``gp``, ``cmaes`` only, below ``trials``; None keeps Optuna's default: 10 for
    ``tpe`` and ``gp``, so a study of 12 trials is guided for its last 2 only). ``tpe`` runs with
    Optuna's ``constant_liar``: a trial still running counts as a bad result, so the trials
    asked for in parallel do not crowd one LR.
    """

    kind: Literal["optuna"] = "optuna"
    lr: LrRange
    trials: Int = Field(default=12, ge=1, le=MAX_TRIALS)
    sampler: Literal["tpe", "random", "qmc", "gp", "cmaes"] = "tpe"
    seed: Int = Field(default=0, ge=0, le=SEED_MAX)
    startup_trials: Int | None = Field(default=None, ge=1, le=MAX_TRIALS)

    @field_validator("lr", mode="before")
    @classmethod
    def _not_rates(cls, value: Any) -> Any:
        return _rates_for_a_range(value, "{min, max}")

    @field_validator("sampler")
    @classmethod
    def _sampler_installed(cls, sampler: str) -> str:
        if sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
            raise ValueError(
                "cmaes needs the cmaes package, which is not installed here (Optuna would fail "
                "mid-sweep, once the first trial is done); run `pip install cmaes`, or pick "
                "another sampler"
            )
        return sampler

    @model_validator(mode="after")
    def _check_startup(self) -> OptunaStrategy:
        if self.startup_trials is not None and self.sampler not in STARTUP_SAMPLERS:
            raise ValueError(
                f"startup_trials applies to the samplers {list(STARTUP_SAMPLERS)} only, but "
                f"sampler is {self.sampler!r}; remove startup_trials or change the sampler."
            )
        if self.startup_trials is not None and self.startup_trials >= self.trials:
            raise ValueError(
                f"startup_trials ({self.startup_trials}) must be below trials ({self.trials}): "
                "otherwise the sampler draws every trial at random and models nothing; lower "
                "startup_trials, or use sampler: random."
            )
        return self


class RandomStrategy(_Arm):
    """``trials`` learning rates drawn log-uniformly from ``lr`` with a fixed ``seed``."""

    kind: Literal["random"] = "random"
    lr: LrRange
    trials: Int = Field(default=12, ge=1, le=MAX_TRIALS)
    seed: Int = Field(default=0, ge=0)

    @field_validator("lr", mode="before")
    @classmethod
    def _not_rates(cls, value: Any) -> Any:
        return _rates_for_a_range(value, "{min, max}")


class FixedStrategy(_Arm):
    """One given learning rate: re-runs a chosen config (``lrsweep best --format spec``) or pins
    a baseline (the nightly suite) without a search."""

    kind: Literal["fixed"] = "fixed"
    lr: Number = Field(gt=0.0)


RECIPE_MIN_EPOCHS = 4
"""The least ``max_epochs`` of a ``recipe`` arm: ``fit_recipe``'s head step (1 epoch) and
augmented step (2) leave SGDR at least 1."""


class RecipeStrategy(_Arm):
    """fastai's recipe (``Learner.fit_recipe``): range test, train, diagnose, adjust, repeat."""

    kind: Literal["recipe"] = "recipe"
    suggest: Rule = "valley"
    max_epochs: Int = Field(default=12, le=10000)

    @field_validator("max_epochs")
    @classmethod
    def _leaves_sgdr_an_epoch(cls, value: int) -> int:
        if value < RECIPE_MIN_EPOCHS:
            raise ValueError(
                f"must be at least {RECIPE_MIN_EPOCHS}: the recipe trains the head 1 epoch and "
                f"2 more with augmentation, and leaves SGDR at least 1, but got {value}"
            )
        return value


def _check_sampler_seeds(arm: Any, info: ValidationInfo) -> Any:
    """Refuse an ``optuna`` arm whose sampler seed ``seed + s`` passes :data:`SEED_MAX`.

    Runs on each arm of ``SweepSpec.strategies``, where ``info.data`` holds the sweep's
    ``seeds`` (declared, hence validated, before ``strategies``). When the seeds are invalid
    they carry their own error and the arm is checked against seed 0 only (its field bound).
    """
    if not isinstance(arm, OptunaStrategy):
        return arm
    seeds = (info.data or {}).get("seeds") or [0]
    top = max(seeds)
    if arm.seed + top > SEED_MAX:
        raise field_error(
            "seed",
            f"must be from 0 to {SEED_MAX - top} with sweep seeds up to {top}: each study's "
            f"sampler seed is seed + s and must lie in [0, 2**32 - 1] = [0, {SEED_MAX}], but got "
            f"{arm.seed} ({arm.seed} + {top} = {arm.seed + top})",
        )
    return arm


Strategy = Annotated[
    LrFinderStrategy
    | GridStrategy
    | OptunaStrategy
    | RandomStrategy
    | RecipeStrategy
    | FixedStrategy,
    Field(discriminator="kind"),
    AfterValidator(_check_sampler_seeds),
]


HIGH_LR = 10.0
"""A learning rate above which :func:`high_lr_notes` speaks up: a range test's default
``end_lr``, where SGD and Adam have long diverged."""


def high_lr_notes(strategies: Sequence[Any]) -> list[str]:
    """An arm's learning rate above :data:`HIGH_LR` (``lr: 3e3`` for ``3e-3``): valid, yet its
    trials diverge at once and spend their slot for a ``diverged`` row. ``lr_finder``'s
    ``end_lr`` is left alone (a range test stops where the loss diverges)."""
    notes = []
    for i, arm in enumerate(strategies):
        where = f"strategies[{i}] ({arm.kind} arm {arm.arm_name!r})"
        if isinstance(arm, FixedStrategy) and arm.lr > HIGH_LR:
            notes.append(f"{where}: lr {arm.lr:g} {_too_high(arm.lr)}")
        elif isinstance(arm, GridStrategy | OptunaStrategy | RandomStrategy):
            if arm.lr.max > HIGH_LR:
                field = "lr.min and lr.max" if arm.lr.min > HIGH_LR else "lr.max"
                notes.append(f"{where}: {field} {arm.lr.max:g} {_too_high(arm.lr.max)}")
    return notes


def single_draw_notes(strategies: Sequence[Any]) -> list[str]:
    """A ``random`` or ``optuna`` arm of ``trials: 1``: valid, yet it searches nothing: its row
    is one learning rate drawn at random (per seed), a chance result beside the arms that
    search; a grid has at least two points."""
    return [
        f"strategies[{i}] ({arm.kind} arm {arm.arm_name!r}): trials: 1 draws a single learning "
        f"rate at random from lr {{min: {arm.lr.min:g}, max: {arm.lr.max:g}}} and searches "
        "nothing; raise trials to search the range, or use an arm {kind: fixed, lr: RATE} "
        "for one learning rate of your choice"
        for i, arm in enumerate(strategies)
        if isinstance(arm, OptunaStrategy | RandomStrategy) and arm.trials == 1
    ]


def _too_high(lr: float) -> str:
    """Why a rate above :data:`HIGH_LR` is pointed out, with the likely one (``3e3``: ``3e-3``)."""
    mantissa, exponent = f"{lr:e}".split("e")
    meant = f"{float(mantissa):g}e-{int(exponent)}"
    return (
        f"is above {HIGH_LR:g}, where training diverges at once (the trials end as diverged); "
        f"if a minus sign is missing, write {meant}"
    )
