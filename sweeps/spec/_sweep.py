"""The top-level :class:`SweepSpec` and its run-time sections (stopping, resources, failures).

Storage and tracking, with the tracking URI's checks, live in :mod:`sweeps.spec._stores`; their
names are re-exported here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, field_validator, model_validator

from sweeps.spec._schema import tagged_members
from sweeps.spec._stores import (
    EXPERIMENT_MAX,
    StorageSpec,
    TrackingSpec,
    absolute_sqlite_uri,
    tracking_uri_problem,
)
from sweeps.spec._strategies import (
    OPTUNA_STARTUP_DEFAULTS,
    OptunaStrategy,
    RecipeStrategy,
    Strategy,
    high_lr_notes,
    single_draw_notes,
)
from sweeps.spec._task import TaskSpec, is_uri
from sweeps.spec._types import Int, Name, Number, SpecModel, field_error

__all__ = [
    "EXPERIMENT_MAX",
    "MAXIMISED_METRICS",
    "REPORTED_METRICS",
    "DivergenceSpec",
    "EarlyStopSpec",
    "FailureSpec",
    "ResourcesSpec",
    "StorageSpec",
    "SweepSpec",
    "TrackingSpec",
    "absolute_sqlite_uri",
    "tracking_uri_problem",
]

REPORTED_METRICS = ("valid_loss", "train_loss", "error_rate", "accuracy")
"""Per-epoch metrics every trial reports to Ray Tune; the stoppers may watch any of them."""
MAXIMISED_METRICS = frozenset({"accuracy"})
"""Metrics that grow as a trial improves (mode ``max``); every other metric is minimised.

``trainers.callbacks``' ``mode="auto"`` uses the same list (a test keeps the two equal: the
trainers do not import the sweeps).
"""
_RAY_BUILTIN_RESOURCES = frozenset({"cpu", "gpu", "memory", "object_store_memory"})
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?"
_LABEL_KEY = re.compile(rf"(?:(?:{_LABEL})?(?:\.(?:{_LABEL})?)*/)?{_LABEL}")
_LABEL_SELECTOR = re.compile(rf"!?(?:in)?\({_LABEL}(?:, ?{_LABEL})*\)|!?{_LABEL}")
"""Ray's label syntax (``ray._private.label_utils``; a test keeps them equal): Ray checks a
selector only when it places a trial, so a malformed one failed the sweep after it started."""
RAY_RESOURCE_UNIT = 0.0001
"""Ray's smallest resource amount: a request for less is refused when a trial starts."""

Metric = Literal["valid_loss", "train_loss", "error_rate", "accuracy"]


class EarlyStopSpec(SpecModel):
    """``RisingValLoss``: stop a trial once ``metric`` has been worse than its best by more than
    ``min_delta`` for ``patience`` consecutive epochs, not counting the first ``grace_epochs``.

    ``mode`` defaults to ``max`` for ``accuracy`` and ``min`` for the others; the other mode is
    refused (it would stop trials as they improve).
    """

    metric: Metric = "valid_loss"
    mode: Literal["min", "max"] = "min"
    patience: Int = Field(default=2, ge=1, le=10000)
    min_delta: Number = Field(default=0.0, ge=0.0)
    grace_epochs: Int = Field(default=1, ge=0, le=10000)

    @model_validator(mode="before")
    @classmethod
    def _default_mode(cls, data: Any) -> Any:
        if isinstance(data, dict) and "mode" not in data:
            maximised = isinstance(data.get("metric"), str) and data["metric"] in MAXIMISED_METRICS
            return {**data, "mode": "max" if maximised else "min"}
        return data

    @model_validator(mode="after")
    def _mode_fits_metric(self) -> EarlyStopSpec:
        expected = "max" if self.metric in MAXIMISED_METRICS else "min"
        if self.mode != expected:
            better = "higher" if expected == "max" else "lower"
            raise field_error(
                "mode",
                f"must be {expected} for {self.metric} ({better} is better; {self.mode} would "
                f"stop trials as they improve), but got {self.mode!r}; set it to {expected} or "
                "leave it out",
            )
        return self


class DivergenceSpec(SpecModel):
    """``Divergence``: stop a trial at once when ``metric`` is NaN or infinite, or (after
    ``grace_epochs``) above ``factor`` times its best value so far and above ``1 / factor`` of its
    first value (a loss wobbling near zero has not blown up)."""

    metric: Literal["train_loss", "valid_loss"] = "train_loss"
    factor: Number = Field(default=4.0, gt=1.0)
    grace_epochs: Int = Field(default=0, ge=0, le=10000)


class ResourcesSpec(SpecModel):
    """Ray resources per trial, and how many trials may run at once.

    ``gpu`` is 0, a fraction in ``(0, 1]`` (0.25 packs four trials on one GPU) or a whole number.
    ``custom`` holds extra Ray resources (``{"accelerator_type:A100": 0.01}``); ``node_labels``
    restricts trials to nodes carrying those labels.
    """

    cpu: Number = Field(default=1.0, gt=0.0, le=1024.0)
    gpu: Number = Field(default=0.0, ge=0.0, le=64.0)
    max_concurrent: Int | None = Field(default=None, ge=1, le=100000)
    custom: dict[str, Annotated[Number, Field(gt=0.0)]] = Field(default_factory=dict)
    node_labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("cpu", "gpu")
    @classmethod
    def _within_ray_precision(cls, amount: float) -> float:
        if 0 < amount < RAY_RESOURCE_UNIT:
            raise ValueError(_below_ray_unit(amount))
        return amount

    @field_validator("gpu")
    @classmethod
    def _check_gpu(cls, gpu: float) -> float:
        if gpu > 1 and not gpu.is_integer():
            raise ValueError(
                f"must be 0, a fraction in (0, 1] or a whole number of GPUs, but got {gpu}"
            )
        return gpu

    @field_validator("node_labels")
    @classmethod
    def _check_label_syntax(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, selector in labels.items():
            if not _LABEL_KEY.fullmatch(key):
                raise field_error(
                    key,
                    "is not a label key (letters, digits, -, _ and ., starting and ending with a "
                    "letter or digit, at most 63; a DNS prefix/ may come first)",
                )
            if selector and not _LABEL_SELECTOR.fullmatch(selector):
                raise field_error(
                    key,
                    f"{selector!r} is not a label selector; write value, !value, in(a,b) or "
                    "!in(a,b) (values: letters, digits, -, _ and ., at most 63)",
                )
        return labels

    @field_validator("custom")
    @classmethod
    def _check_custom(cls, custom: dict[str, float]) -> dict[str, float]:
        builtin = sorted(key for key in custom if key.lower() in _RAY_BUILTIN_RESOURCES)
        if builtin:
            raise ValueError(
                f"{builtin[0]!r} is one of Ray's own resources, not a custom one; set "
                "resources.cpu / resources.gpu instead"
            )
        if any(not key.strip() for key in custom):
            raise ValueError("a custom resource needs a name, but one is empty")
        for key, amount in custom.items():
            if amount < RAY_RESOURCE_UNIT:
                raise field_error(key, _below_ray_unit(amount))
        return custom


def _below_ray_unit(amount: float) -> str:
    return (
        f"{amount} is below {RAY_RESOURCE_UNIT}, Ray's smallest resource amount (Ray would refuse "
        f"it when the trials start); ask for at least {RAY_RESOURCE_UNIT}"
    )


class FailureSpec(SpecModel):
    """How often a trial is restarted from its last checkpoint after its worker dies."""

    max_failures: Int = Field(default=2, ge=0, le=1000)


def _switch(value: Any) -> Any:
    """A stopper given as a switch: ``false`` (YAML's ``off``, ``no``) is off, as null; ``true``
    (``on``) its defaults. ``early_stop: off`` was refused as "must be a mapping, but got
    False", without a word of null."""
    if value is False:
        return None
    if value is True:
        return {}
    return value


class SweepSpec(SpecModel):
    """One sweep: the task, the seeds, the arms to compare and how trials run.

    Build it with :func:`sweeps.spec.load_spec`; ``resolved()`` is the full config with every
    default filled in, which is what gets logged so a sweep can be repeated from MLflow alone.
    """

    name: Name
    task: TaskSpec
    seeds: list[Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)]] = Field(
        default_factory=lambda: [0], min_length=1, max_length=1000
    )
    strategies: list[Strategy] = Field(min_length=1, max_length=100)
    early_stop: Annotated[EarlyStopSpec | None, BeforeValidator(_switch)] = Field(
        default_factory=EarlyStopSpec
    )
    divergence: Annotated[DivergenceSpec | None, BeforeValidator(_switch)] = Field(
        default_factory=DivergenceSpec
    )
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    failure: FailureSpec = Field(default_factory=FailureSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds_not_a_count(cls, seeds: Any) -> Any:
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            example = list(range(min(max(seeds, 1), 5)))
            raise ValueError(
                f"must be a list of the seeds to run, e.g. {example}, not a number, but got "
                f"{seeds}; for one seed write [{seeds}]"
            )
        return seeds

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            raise ValueError(f"each seed may appear once, but {repeated} repeat")
        return seeds

    @field_validator("strategies")
    @classmethod
    def _unique_arm_names(cls, strategies: list[Any]) -> list[Any]:
        kinds = tagged_members(Strategy)
        first_at: dict[str, int] = {}
        for index, arm in enumerate(strategies):
            if arm.name in kinds and arm.name != arm.kind:  # `best --strategy grid`: which?
                raise field_error(
                    f"{index}.name",
                    f"{arm.name!r} is the name of another kind of arm, so `lrsweep best "
                    f"--strategy {arm.name}` and the report could not tell this {arm.kind} arm "
                    f"from the {arm.name} arms; name it otherwise (e.g. {arm.kind}-{arm.name})",
                )
            if arm.arm_name in first_at:
                raise ValueError(
                    f"strategies.{first_at[arm.arm_name]} and strategies.{index} are both named "
                    f"{arm.arm_name!r}; give each arm of one kind a distinct `name:`"
                )
            first_at[arm.arm_name] = index
        return strategies

    @model_validator(mode="after")
    def _no_resizing_in_a_recipe(self) -> SweepSpec:
        recipes = [i for i, arm in enumerate(self.strategies) if isinstance(arm, RecipeStrategy)]
        if self.task.progressive_resizing and recipes:
            raise field_error(
                "task.progressive_resizing",
                f"does not apply to recipe arms (strategies.{recipes[0]}): a recipe decides its "
                "own phases and epochs and runs range tests between them; remove the stages or "
                "run the recipe in a spec of its own",
            )
        return self

    @model_validator(mode="after")
    def _fp16_needs_a_gpu(self) -> SweepSpec:
        if self.task.accelerator.amp == "fp16" and self.resources.gpu == 0:
            raise field_error(
                "task.accelerator.amp",
                "fp16 needs a CUDA GPU per trial (its gradient scaler is CUDA-only), but "
                "resources.gpu is 0; use amp: bf16 (no scaler, CPUs too) or give each trial a "
                "GPU (resources.gpu: 1, or 0.25 for four trials per GPU)",
            )
        return self

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment: ``tracking.experiment``, or else the sweep's ``name``."""
        return self.tracking.experiment or self.name

    def advice(self) -> list[str]:
        """Valid settings that cannot do what they are there for, each with what to change.

        ``lrsweep validate`` and ``lrsweep run`` print them (``Note:`` lines; ``run_sweep``
        hands them to its ``on_note``, else logs them as warnings); none stops a sweep. Today:
        an ``early_stop`` the spec sets that can never fire, because every arm's trials end
        after at most ``max(grace_epochs, 1) + patience`` epochs (the first epoch only sets the
        best, and a stop after the last epoch saves nothing) or every arm is a ``recipe``
        (which ends by its own rule, untouched by ``early_stop``); an SGDR schedule cut inside
        a cycle; an ``optuna`` arm whose default startup trials leave it unguided; a
        ``valid_pct`` that an ``image_folder``'s own train/valid split overrides; an image size
        below 8 px (:meth:`TaskSpec.advice`); an arm's learning rate above 10
        (:func:`~sweeps.spec._strategies.high_lr_notes`); a ``random`` or ``optuna`` arm of
        one trial (:func:`~sweeps.spec._strategies.single_draw_notes`).
        """
        notes: list[str] = self.task.advice()
        # the default early_stop, which the spec did not write, is no setting to correct: a
        # one-epoch spec would be told to turn off what it never turned on
        stop = self.early_stop if "early_stop" in self.model_fields_set else None
        stopped = [arm for arm in self.strategies if not isinstance(arm, RecipeStrategy)]
        if stop is not None and not stopped:
            notes.append(
                "early_stop stops no trial: every arm is a recipe, which ends by its own rule "
                "(SGDR until its validation loss stops improving); set early_stop: null to "
                "say it is off"
            )
        elif stop is not None:
            needed = max(stop.grace_epochs, 1) + stop.patience
            longest = self.task.epochs  # a recipe ends by its own rule, not by early_stop
            if longest <= needed:  # a stop after a trial's last epoch saves nothing
                notes.append(
                    f"early_stop can never stop a trial: it needs more than {needed} epochs "
                    f"(its first stop comes after epoch max(grace_epochs, 1) + patience = "
                    f"{needed}, and one after a trial's last epoch saves nothing), but the "
                    f"trials run at most {longest}; "
                    "raise task.epochs, lower early_stop.patience or "
                    "early_stop.grace_epochs, or set early_stop: null to say it is off"
                )
        note = self._sgdr_cut_note()
        if note:
            notes.append(note)
        notes += self._unguided_optuna_notes()
        notes += high_lr_notes(self.strategies)
        notes += single_draw_notes(self.strategies)
        note = self._ignored_valid_pct_note()
        if note:
            notes.append(note)
        return notes

    def _ignored_valid_pct_note(self) -> str:
        """A ``valid_pct`` the spec sets for an ``image_folder`` whose ``train/`` and ``valid/``
        folders are the split: it changes nothing, yet each trial logs it as a param."""
        dataset = self.task.dataset
        if dataset.name != "image_folder" or "valid_pct" not in dataset.model_fields_set:
            return ""
        if dataset.path is None or is_uri(dataset.path):
            return ""
        root = Path(dataset.path).expanduser()
        train = str(dataset.options.get("train", "train"))
        valid = str(dataset.options.get("valid", "valid"))
        if not ((root / train).is_dir() and (root / valid).is_dir()):
            return ""
        return (
            f"task.dataset.valid_pct ({dataset.valid_pct}) is ignored: {root} holds {train}/ "
            f"and {valid}/ folders, and their images are the split; remove valid_pct, or move "
            "the images into class folders directly under the path to split them by valid_pct"
        )

    def _unguided_optuna_notes(self) -> list[str]:
        """An ``optuna`` arm whose sampler's default ``startup_trials`` (Optuna's 10 for
        ``tpe`` and ``gp``) is not below its ``trials``: every trial is a random draw, and the
        arm's row in the report is random search under another name. (A value given in the
        spec is checked where it is read: it must be below ``trials``.)"""
        notes = []
        for arm in self.strategies:
            if not isinstance(arm, OptunaStrategy) or arm.startup_trials is not None:
                continue
            if arm.trials == 1:  # no startup_trials fits below it: single_draw_notes says so
                continue
            default = OPTUNA_STARTUP_DEFAULTS.get(arm.sampler)
            if default is not None and default >= arm.trials:
                notes.append(
                    f"optuna arm {arm.arm_name!r} draws all of its {arm.trials} trials at "
                    f"random: sampler {arm.sampler} draws its first {default} at random "
                    "(Optuna's default, which startup_trials: null keeps), so its row is random "
                    f"search; set startup_trials below trials (e.g. {max(1, arm.trials // 3)}), or "
                    "sampler: random to say so. Trials asked for while fewer than startup_trials "
                    "have finished (one per parallel slot at the start) are random draws too"
                )
        return notes

    def _sgdr_cut_note(self) -> str:
        """An SGDR schedule whose epochs end inside a cycle: the last epochs restart at the peak
        LR and end high, where fastai's ``fit_sgdr`` (a number of cycles) always ends low."""
        schedule = self.task.schedule
        if schedule.kind != "sgdr":
            return ""
        frozen = self.task.fine_tune.freeze_epochs if self.task.fine_tune is not None else 0
        epochs = self.task.epochs - frozen
        ends, total, length = [], 0, schedule.cycle_len
        while total < epochs:
            total += length
            ends.append(total)
            length *= schedule.cycle_mult
        if epochs in ends:
            return ""
        done = ends[-2] if len(ends) > 1 else 0
        shown = ", ".join(str(end + frozen) for end in ends[-3:])
        where = "a cycle" if done else "its first cycle"
        after = ", after a restart at the peak LR," if done else " before the LR has annealed,"
        return (
            f"task.epochs={self.task.epochs} ends the SGDR schedule {epochs - done} epoch(s) into "
            f"{where} of {ends[-1] - done}{after} so the trials end at a high LR; SGDR cycles "
            f"end after epoch {shown}: set task.epochs to one of those"
        )

    def resolved(self) -> dict[str, Any]:
        """The full config with defaults filled in, as plain JSON-able Python values."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The resolved config as YAML that :func:`sweeps.spec.load_spec` reads back."""
        return yaml.safe_dump(self.resolved(), sort_keys=False, default_flow_style=None)
