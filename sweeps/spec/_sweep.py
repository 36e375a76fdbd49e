"""The top-level :class:`SweepSpec` and its run-time sections (stopping, resources, storage)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import Field, field_validator, model_validator

from sweeps.spec._redact import uri_has_credentials, uri_has_password
from sweeps.spec._schema import tagged_members
from sweeps.spec._strategies import (
    OPTUNA_STARTUP_DEFAULTS,
    OptunaStrategy,
    RecipeStrategy,
    Strategy,
)
from sweeps.spec._task import TaskSpec, is_uri, local_path
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

EXPERIMENT_MAX = 200
"""The longest ``tracking.experiment`` a spec accepts."""
REPORTED_METRICS = ("valid_loss", "train_loss", "error_rate", "accuracy")
"""Per-epoch metrics every trial reports to Ray Tune; the stoppers may watch any of them."""
MAXIMISED_METRICS = frozenset({"accuracy"})
"""Metrics that grow as a trial improves (mode ``max``); every other metric is minimised.

``trainers.callbacks``' ``mode="auto"`` uses the same list (a test keeps the two equal: the
trainers do not import the sweeps).
"""
_STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "file")
_TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "postgres", "mysql", "databricks")
_PASSWORD_HINT = (
    "must not contain a password; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in "
    "the environment instead (for a PostgreSQL store: PGPASSWORD or ~/.pgpass)"
)
_CREDENTIALS_HINT = (
    "must not contain credentials (a user or a token in the URI); set MLFLOW_TRACKING_TOKEN, or "
    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, in the environment instead"
)
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


class StorageSpec(SpecModel):
    """Ray Tune's ``storage_path``: where trial checkpoints and the experiment state live.

    ``null`` is ``.lrsweep/ray_results`` in the working directory (one machine only). A
    multi-node run needs a URI (``s3://``, ``gs://`` ...) or a local path that every node mounts,
    marked ``shared``.
    Local paths are stored absolute.
    """

    path: str | None = None
    shared: Annotated[bool, Field(strict=True)] = False

    @field_validator("path")
    @classmethod
    def _check_path(cls, path: str | None) -> str | None:
        if path is None:
            return None
        if is_uri(path):
            scheme = urlsplit(path).scheme.lower()
            if scheme not in _STORAGE_SCHEMES:
                raise ValueError(
                    f"unknown scheme {scheme!r} (accepted: {', '.join(_STORAGE_SCHEMES)} "
                    "or a local path)"
                )
            return path
        return str(local_path(path)[0].resolve())

    @model_validator(mode="after")
    def _shared_needs_path(self) -> StorageSpec:
        if self.shared and self.path is None:
            raise field_error("shared", "true needs storage.path: a folder every node mounts")
        return self

    @property
    def is_shared(self) -> bool:
        """True when every node of a cluster can reach the storage (a remote URI or ``shared``)."""
        if self.path is None:
            return False
        remote = is_uri(self.path) and urlsplit(self.path).scheme.lower() != "file"
        return self.shared or remote


class TrackingSpec(SpecModel):
    """Where MLflow logs; ``uri: null`` is the embedded store under ``./.lrsweep/``.

    Credentials never belong in the spec: a URI carrying a password is refused (use
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``).

    ``checkpoints``: which checkpoints are also logged to MLflow (``all``, the best model only,
    ``none``). ``checkpoint_every_s``: a trial writes its Tune checkpoint (what a restarted
    trial resumes from) at the end of an epoch once this many seconds (default 30) have passed
    since the last one, and always at its end: every epoch when epochs take 30 s or more, and
    no checkpoint per epoch of a sub-second epoch, where writing it would cost as much as the
    epoch; 0 checkpoints every epoch. ``flush_every_s``:
    per-step and per-epoch metric points are sent to MLflow at most this often (and at the
    trial's end; points not sent yet travel in the checkpoint); 0 sends them every epoch.
    """

    uri: str | None = None
    experiment: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_./-]+$", min_length=1, max_length=EXPERIMENT_MAX
    )
    checkpoints: Literal["all", "best", "none"] = "all"
    checkpoint_every_s: Number = Field(default=30.0, ge=0.0, le=86400.0)
    flush_every_s: Number = Field(default=5.0, ge=0.0, le=3600.0)

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, uri: str | None) -> str | None:
        problem = None if uri is None else tracking_uri_problem(uri)
        if problem:
            raise ValueError(problem)
        return None if uri is None else absolute_sqlite_uri(uri)


def absolute_sqlite_uri(uri: str, cwd: str | Path | None = None) -> str:
    """``uri`` with a relative SQLite database made absolute (relative to ``cwd``, by default
    the working directory); any other URI unchanged.

    Trials run in working directories of their own, where ``sqlite:///mlflow.db`` would open
    another, empty database (every trial then failed: "No Experiment with id=1 exists").

    Example:
        >>> absolute_sqlite_uri("sqlite:///runs/mlflow.db", "/home/me")
        'sqlite:////home/me/runs/mlflow.db'
        >>> absolute_sqlite_uri("sqlite:////abs/mlflow.db", "/home/me")
        'sqlite:////abs/mlflow.db'
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix) :].startswith("/"):
        return uri
    path, sep, query = uri[len(prefix) :].partition("?")
    if path in ("", ":memory:"):
        return uri
    folder = Path(cwd) if cwd is not None else Path.cwd()
    return f"{prefix}{os.path.normpath(folder.resolve() / path)}{sep}{query}"


def tracking_uri_problem(uri: str, *, database_only: bool = False) -> str | None:
    """What makes ``uri`` unusable as lrsweep's MLflow tracking store, or None when it is usable.

    The one check every tracking URI goes through (``tracking.uri``, ``--tracking-uri``,
    ``MLFLOW_TRACKING_URI``). Refused, each with the form that works:

    * a password, in ``user:password@`` or a ``password=`` query parameter (credentials come from
      the environment); the message never repeats it;
    * a folder or ``file:`` URI: MLflow's file store, which MLflow 3 no longer writes (the
      message suggests ``sqlite:///<folder>/mlflow.db``);
    * ``sqlite://name.db`` (two slashes: SQLite has no host) and a SQLite URI with no file;
    * an ``http(s)://`` URI with no host, or with a user or a token (``https://TOKEN@host``,
      ``?token=``): an HTTP server's credentials come from the environment too;
    * unknown schemes;
    * with ``database_only`` (the store of ``lrsweep server``), an MLflow server.

    Example:
        >>> tracking_uri_problem("sqlite:///mlflow.db") is None
        True
        >>> tracking_uri_problem("sqlite://mlflow.db")[:40]
        "'sqlite://mlflow.db' has two slashes, so"
    """
    if uri == "databricks":  # MLflow's name for the Databricks workspace of the default profile
        return None
    try:
        parts = urlsplit(uri)
    except ValueError as error:  # e.g. an unclosed IPv6 bracket
        return f"is not a valid URI ({error})"
    if uri_has_password(uri):
        return _PASSWORD_HINT
    if uri.lower().startswith("file:") or not is_uri(uri):
        path = parts.path if uri.lower().startswith("file:") else uri
        return _folder_problem(uri, path, server_ok=not database_only)
    scheme = parts.scheme.lower().split("+")[0]
    if database_only and scheme in ("http", "https"):
        return _NOT_A_DATABASE
    if scheme not in _TRACKING_SCHEMES:
        return f"unknown scheme {parts.scheme!r} (accepted: {', '.join(_TRACKING_SCHEMES)})"
    if scheme == "sqlite":
        return _sqlite_problem(uri, parts.netloc, parts.path)
    if scheme in ("http", "https") and not parts.hostname:
        return f"{uri!r} names no host; write {scheme}://HOST:PORT, e.g. {scheme}://mlflow:5000"
    if scheme in ("http", "https") and uri_has_credentials(uri):
        return _CREDENTIALS_HINT  # a token as the user (https://TOKEN@host) or as ?token=
    return None


_NOT_A_DATABASE = (
    "an MLflow server, not a database; an MLflow server keeps its runs in a "
    "database: postgresql://USER@HOST:5432/DB (the password in PGPASSWORD) or "
    "sqlite:////abs/path/mlflow.db"
)


_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+:[0-9]{1,5}(/.*)?")
"""``host:port`` or ``host:port/path``: an address written without its ``http://``."""


def _folder_problem(uri: str, path: str, *, server_ok: bool = True) -> str:
    folder = os.path.expanduser(unquote(path)).rstrip("/") or "."
    if folder.endswith((".db", ".sqlite", ".sqlite3")):
        return f"{uri!r} is not a database URI; for a SQLite file write sqlite:///{folder}"
    if server_ok and _HOST_PORT.fullmatch(uri):
        return (
            f"{uri!r} has no scheme: for an MLflow server write http://{uri} (or https://); a "
            f"folder of that name would be MLflow's file store, which MLflow 3 no longer writes"
        )
    server = " (or a server, http://HOST:5000)" if server_ok else ""
    return (
        f"{uri!r} is a folder, MLflow's file store, which MLflow 3 no longer writes; use a SQLite "
        f"database in it instead: sqlite:///{folder}/mlflow.db{server}"
    )


def _sqlite_problem(uri: str, netloc: str, path: str) -> str | None:
    forms = (
        "sqlite:///relative.db (three slashes: relative to the working directory) or "
        "sqlite:////abs/path/mlflow.db (four slashes: an absolute path)"
    )
    if netloc:
        return (
            f"{uri!r} has two slashes, so SQLite would read {netloc!r} as a host; write "
            f"sqlite:///{netloc}{path} instead. The forms are {forms}"
        )
    if path.strip("/") in ("", ":memory:"):
        return f"{uri!r} names no database file (trials could not share it); write {forms}"
    return None


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
    early_stop: EarlyStopSpec | None = Field(default_factory=EarlyStopSpec)
    divergence: DivergenceSpec | None = Field(default_factory=DivergenceSpec)
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

        ``lrsweep validate`` prints them and ``run_sweep`` logs them as warnings; none stops a
        sweep. Today: an ``early_stop`` the spec sets that can never fire, because every arm's
        trials end after at most ``max(grace_epochs, 1) + patience`` epochs (the first epoch
        only sets the best, and a stop after the last epoch saves nothing) or every arm is a
        ``recipe`` (which ends by its own rule, untouched by ``early_stop``); an SGDR schedule
        cut inside a cycle; an ``optuna`` arm whose default startup trials leave it unguided; a
        ``valid_pct`` that an ``image_folder``'s own train/valid split overrides; an image size
        below 8 px (:meth:`TaskSpec.advice`).
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
