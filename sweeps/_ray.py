"""Every Ray import lrsweep makes (the stoppers' ``Stopper`` base class aside), here and in
the three ``_ray_*`` modules beside this one.

Ray's API churns between releases (``tune.report`` signatures, ``trial_runner`` ->
``tune_controller``, ``ray.air`` -> ``ray.tune``); an upgrade touches these files only. The rest
of ``sweeps`` sees plain functions and small dataclasses: search-space primitives for the
strategies, a searcher built from a picklable description, the session calls a trial body needs
(report with a checkpoint folder, the checkpoint to resume from, its trial id), and one function
that runs or restores a Tuner and hands back plain :class:`TrialOutcome` records.

Here: the Tuner (its plan, the searcher serving every search, running and restoring it, the
outcomes), the calls from inside a trial and the values trials share. Starting, joining and
watching Ray is in ``_ray_cluster.py``; the search-space primitives, searchers and drawn configs
are in ``_ray_search.py``; what lrsweep does to Ray's and Tune's log lines is in
``_ray_logs.py`` (no Ray import). This module re-exports the names it always offered, and the
rest of ``sweeps`` imports them from here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search import Searcher

from sweeps._ray_cluster import init_ray as init_ray  # re-exported
from sweeps._ray_cluster import is_initialized as is_initialized  # re-exported
from sweeps._ray_cluster import local_ray_lost as local_ray_lost  # re-exported
from sweeps._ray_cluster import node_name as node_name  # re-exported
from sweeps._ray_cluster import shutdown_ray as shutdown_ray  # re-exported
from sweeps._ray_logs import quiet_trial_logs as quiet_trial_logs  # re-exported
from sweeps._ray_logs import without_tune_loggers
from sweeps._ray_search import SearcherSpec as SearcherSpec  # re-exported
from sweeps._ray_search import build_searcher as build_searcher  # re-exported
from sweeps._ray_search import grid_search as grid_search  # re-exported
from sweeps._ray_search import is_domain as is_domain  # re-exported
from sweeps._ray_search import is_grid as is_grid  # re-exported
from sweeps._ray_search import loguniform as loguniform  # re-exported
from sweeps._ray_search import merge
from sweeps._ray_search import sample_configs as sample_configs  # re-exported

logger = logging.getLogger(__name__)

Callback = tune.Callback
"""Ray Tune's driver-side callback base class (``sweeps.progress`` subclasses it)."""


@dataclass(frozen=True)
class TrialOutcome:
    """What Ray Tune knows of one trial once its Tuner returns.

    Attributes:
        trial_id: Ray Tune's trial id.
        config: The trial's resolved config.
        status: ``TERMINATED``, ``ERROR``, or ``PENDING``/``RUNNING``/``PAUSED`` when the run
            was interrupted.
        metrics: The last reported result (empty if none).
        error: The error text for an errored trial.
        ended: True when the trial ran to its end or errored; False when the Tuner was
            interrupted (Ctrl-C / SIGTERM) first, even though Tune then marks a stopped trial
            ``TERMINATED``.
    """

    trial_id: str
    config: dict[str, Any]
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    ended: bool = False


@dataclass(frozen=True)
class TunerPlan:
    """Everything one Tuner run needs, in plain values.

    Attributes:
        name: Folder name of the Tune experiment under ``storage_path``.
        storage_path: Where Ray keeps experiment state and trial checkpoints.
        trainable: The trial body ``f(config, **constants)``.
        constants: Keyword arguments every trial gets (small: they are pickled with the
            trainable, see :func:`_bind`).
        searches: The searches to run, in order, as one stream of trials; each has ``name``,
            ``param_space``, ``num_samples``, ``searcher`` (a :class:`SearcherSpec` or None)
            and ``n_trials`` (``sweeps.strategies.Search``).
        resources: ``{"cpu": ..., "gpu": ..., <custom>: ...}`` per trial.
        node_labels: Node labels a trial's placement group must match.
        max_concurrent: Cap on trials running at once (None: what the cluster holds).
        max_failures: Restarts of a trial from its last checkpoint after a crash.
        stopper: A Ray Tune ``Stopper`` (or None).
        callbacks: Ray Tune callbacks.
        metric: Metric for Ray's own bookkeeping (``best_valid_loss``: the best, not the last).
        mode: ``min`` or ``max``.
    """

    name: str
    storage_path: str
    trainable: Callable[..., Any]
    constants: Mapping[str, Any]
    searches: Sequence[Any]
    resources: Mapping[str, float] = field(default_factory=lambda: {"cpu": 1.0})
    node_labels: Mapping[str, str] = field(default_factory=dict)
    max_concurrent: int | None = None
    max_failures: int = 0
    stopper: Any = None
    callbacks: Sequence[Any] = ()
    metric: str = "best_valid_loss"
    mode: str = "min"

    @property
    def n_trials(self) -> int:
        """Trials of every search together."""
        return sum(int(search.n_trials) for search in self.searches)


# --- the searcher of a Tuner ---------------------------------------------------------------
# Kept in this module: a Tuner's saved state (tuner.pkl) names its class by module and name, and
# `lrsweep resume` of a sweep stopped before a move would no longer find it.


class _SearchesInOne(Searcher):
    """Several searches as one stream of trials for one Tuner.

    Searches are served in order; a grid or random search's configs are drawn up front
    (seeded), an Optuna search asks its own ``OptunaSearch``, which is told the results of the
    trials it suggested. One Tuner for the whole sweep means one set of worker processes (no
    start-up per arm), no drain between arms, and one ``Tuner.restore`` to resume.
    """

    def __init__(self, searches: Sequence[Any], *, metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self._names = [s.name for s in searches]
        self._quota = [int(s.n_trials) for s in searches]
        self._issued = [0] * len(searches)
        self._queues: list[list[dict[str, Any]]] = []
        self._optuna: dict[int, Any] = {}
        self._spaces = [dict(s.param_space) for s in searches]
        self._owner: dict[str, int] = {}
        self._asked: dict[str, dict[str, Any]] = {}  # what each Optuna trial was given
        self._told: set[str] = set()  # trials whose end their study has been told
        for index, search in enumerate(searches):
            if search.searcher is not None and search.searcher.kind == "optuna":
                self._optuna[index] = build_searcher(search.searcher, search.param_space)
                self._queues.append([])
            else:
                self._queues.append(
                    sample_configs(
                        search.param_space,
                        num_samples=search.num_samples,
                        searcher=search.searcher,
                        seeds_apart=search.seeds_apart,
                    )
                )

    def set_search_properties(self, metric: Any, mode: Any, config: Any, **spec: Any) -> bool:
        return True  # every search brings its own space

    def suggest(self, trial_id: str) -> Any:  # a config, Searcher.FINISHED, or None (wait)
        for index, quota in enumerate(self._quota):
            if self._issued[index] >= quota:
                continue
            if index in self._optuna:
                suggested = self._optuna[index].suggest(trial_id)
                if suggested is None:
                    return None
                self._asked[trial_id] = dict(suggested)
                config = merge(self._spaces[index], suggested)
            else:
                config = dict(self._queues[index][self._issued[index]])
            self._issued[index] += 1
            self._owner[trial_id] = index
            return config
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        index = self._owner.get(trial_id)
        if index in self._optuna:
            self._optuna[index].on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Tell the trial's Optuna study how it ended, once per end.

        A trial that errored for good was told as failed; ``resume_sweep`` (``resume_errored``)
        runs it again, and Ray's ``OptunaSearch`` ignores a second end ("already finished"),
        so the study never learnt the value. That value joins the study as a new trial with
        the same parameters (``add_evaluated_point``).
        """
        index = self._owner.get(trial_id)
        if index not in self._optuna:
            return
        algo = self._optuna[index]
        if trial_id not in self._told:
            self._told.add(trial_id)
            algo.on_trial_complete(trial_id, result=result, error=error)
            return
        value = (result or {}).get(algo.metric)
        params = self._asked.pop(trial_id, None)  # one value per trial, however often told
        if error or params is None or not isinstance(value, int | float) or math.isnan(value):
            return
        algo.add_evaluated_point(params, float(value))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__.copy(), file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            state = pickle.load(file)
        self.__dict__.update({"_asked": {}, "_told": set(), **state})  # older sweeps lack them


# --- inside a trial ------------------------------------------------------------------------


def trial_id() -> str:
    """The running trial's id (stable across restarts and ``Tuner.restore``)."""
    return tune.get_context().get_trial_id()


def report(metrics: Mapping[str, Any], *, checkpoint_dir: str | Path | None = None) -> None:
    """Report one epoch's metrics to Tune, with the folder to persist as its checkpoint."""
    checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
    tune.report(dict(metrics), checkpoint=checkpoint)


@contextlib.contextmanager
def resume_checkpoint() -> Iterator[Path | None]:
    """The folder of the checkpoint this trial resumes from, or None on a fresh start."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as folder:
        yield Path(folder)


# --- values the trials of a sweep share --------------------------------------------------

SHARED_NAMESPACE = "lrsweep"
"""Namespace of lrsweep's keys in Ray's key-value store (held by the GCS, so cluster-wide)."""


def shared_get(key: str) -> bytes | None:
    """The value a trial of this Ray cluster put under ``key``; None when there is none.

    Sharing saves work and never decides a result, so a store that cannot answer counts as
    holding nothing (the trial does the work itself).
    """
    try:
        from ray.experimental import internal_kv

        if not internal_kv._internal_kv_initialized():
            return None
        return internal_kv._internal_kv_get(key, namespace=SHARED_NAMESPACE)
    except Exception as error:  # any failure just means nothing is shared
        logger.debug("Ray's key-value store did not answer for %s: %s", key, error)
        return None


def shared_put(key: str, value: bytes) -> None:
    """Put ``value`` under ``key`` for the other trials; best effort (see :func:`shared_get`)."""
    try:
        from ray.experimental import internal_kv

        if internal_kv._internal_kv_initialized():
            internal_kv._internal_kv_put(key, value, overwrite=True, namespace=SHARED_NAMESPACE)
    except Exception as error:  # best effort, as shared_get
        logger.debug("Ray's key-value store did not take %s: %s", key, error)


def shared_drop(prefix: str) -> None:
    """Remove every shared value whose key starts with ``prefix`` (a sweep's, at its end)."""
    try:
        from ray.experimental import internal_kv

        if internal_kv._internal_kv_initialized():
            internal_kv._internal_kv_del(prefix, del_by_prefix=True, namespace=SHARED_NAMESPACE)
    except Exception as error:  # best effort, as shared_get
        logger.debug("Ray's key-value store did not drop %s*: %s", prefix, error)


# --- running -------------------------------------------------------------------------------


def _resources(plan: TunerPlan) -> Any:
    resources = {k: float(v) for k, v in plan.resources.items() if v}
    if not plan.node_labels:
        return resources
    bundle = {
        "CPU": resources.pop("cpu", 1.0),
        "GPU": resources.pop("gpu", 0.0),
        **resources,
    }
    return tune.PlacementGroupFactory(
        [bundle], strategy="PACK", bundle_label_selector=[dict(plan.node_labels)]
    )


def _trainable(plan: TunerPlan) -> Any:
    return tune.with_resources(_bind(plan.trainable, plan.constants), _resources(plan))


def _bind(trainable: Callable[..., Any], constants: Mapping[str, Any]) -> Callable[..., Any]:
    """``trainable(config, **constants)`` as a one-argument function trainable.

    Not ``tune.with_parameters``: that ``ray.put``s the constants, an object the driver owns in
    the raylet's object store. When a SIGTERM reaches every process of the sweep (systemd's
    ``KillMode=control-group``), the raylet's death makes the driver try to recover that object
    through the dead store, and Ray ends the driver on the spot (exit 1, "connection to the
    plasma store is failed"), before its SIGTERM handler has closed the MLflow runs. The
    constants here (the spec and a few ids) are small, so they travel inside the function Tune
    registers instead.
    """

    def bound(config: dict[str, Any]) -> Any:
        return trainable(config, **constants)

    bound.__name__ = bound.__qualname__ = getattr(trainable, "__name__", "trainable")
    bound.__doc__ = trainable.__doc__
    return bound


def _run_config(plan: TunerPlan) -> tune.RunConfig:
    return tune.RunConfig(
        name=plan.name,
        storage_path=plan.storage_path,
        stop=plan.stopper,
        callbacks=list(plan.callbacks),
        failure_config=tune.FailureConfig(max_failures=plan.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        verbose=0,
    )


def _error_text(trial: Any) -> str:
    """The root error of an errored trial as ``Type: message`` (Ray's wrapper removed)."""
    try:
        error = trial.get_pickled_error()
    except Exception:  # an unreadable error file must not hide the trial's outcome
        error = None
    cause = getattr(error, "cause", None) or error
    if cause is not None:
        first = next((line for line in str(cause).splitlines() if line.strip()), "")
        return f"{type(cause).__name__}: {first.strip()}"[:500]
    try:
        text = trial.get_error() or ""
    except Exception:
        text = ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1][:500] if lines else "the trial raised an error Ray Tune did not record"


def _outcomes(grid: Any) -> list[TrialOutcome]:
    outcomes = []
    for trial in grid._experiment_analysis.trials:
        error = _error_text(trial) if trial.status == "ERROR" else None
        last = dict(trial.last_result or {})
        outcomes.append(
            TrialOutcome(
                trial_id=trial.trial_id,
                config=dict(trial.config),
                status=str(trial.status),
                metrics=last,
                error=error,
                ended=trial.status == "ERROR" or (trial.status == "TERMINATED" and _ended(last)),
            )
        )
    return outcomes


def _ended(last: dict[str, Any]) -> bool:
    """Whether a TERMINATED trial's last result is its end, not an interrupt's.

    A trial's final report names why it ended (``stop_reason``: completed, rising_val_loss,
    diverged); the reports before it and a trial stopped by an interrupt leave it empty. Tune's
    own ``done``, set on the last result when the function returns or a stopper ends it, counts
    too; but Tune sets it on the result in memory without marking the trial for its next saved
    state, so a sweep restored from that state (``lrsweep resume``) found trials that had ended
    before a Ctrl-C without it, took them for interrupted and closed their runs KILLED.
    """
    return bool(last.get("done")) or bool(last.get("stop_reason"))


_USER_PENDING_TRIALS = os.environ.get("TUNE_MAX_PENDING_TRIALS_PG")


def _allow_pending_trials(plan: TunerPlan) -> None:
    """Let Tune start as many trials at once as the cluster has slots for.

    With a custom search algorithm Tune keeps a single trial pending by default, so trials start
    one after another and every sweep ran serially. Allow one pending trial per slot (CPUs of the
    cluster over CPUs per trial, capped by ``max_concurrent``); more would only make Optuna
    suggest before it has seen results. A value set by the user in the environment wins.
    """
    per_trial = float(plan.resources.get("cpu") or 1.0)
    slots = int(ray.cluster_resources().get("CPU", 1.0) // max(per_trial, 1e-9)) or 1
    if plan.max_concurrent:
        slots = min(slots, plan.max_concurrent)
    if not _USER_PENDING_TRIALS:
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(max(slots, 1))


def run_tuner(plan: TunerPlan) -> list[TrialOutcome]:
    """Run every search of ``plan`` in one Tuner, to the end or until interrupted."""
    _allow_pending_trials(plan)
    without_tune_loggers()
    tuner = tune.Tuner(
        _trainable(plan),
        param_space={},
        tune_config=tune.TuneConfig(
            metric=plan.metric,
            mode=plan.mode,
            num_samples=plan.n_trials,
            search_alg=_SearchesInOne(plan.searches, metric=plan.metric, mode=plan.mode),
            max_concurrent_trials=plan.max_concurrent,
            reuse_actors=True,  # one worker process (and one torch import) per slot
        ),
        run_config=_run_config(plan),
    )
    return _outcomes(tuner.fit())


def experiment_path(plan: TunerPlan) -> str:
    """Where Ray keeps the experiment state of ``plan``."""
    return f"{plan.storage_path.rstrip('/')}/{plan.name}"  # a URI stays one (no Path)


def can_restore(path: str) -> bool:
    """True when ``path`` holds a Tune experiment state that ``Tuner.restore`` can read."""
    return tune.Tuner.can_restore(path)


def restore_tuner(plan: TunerPlan) -> list[TrialOutcome]:
    """Continue an interrupted Tuner run of ``plan`` (finished trials are not re-run).

    Unfinished and errored trials resume from their latest checkpoints; the searcher (Optuna's
    study included) comes back from the saved experiment state.
    """
    _allow_pending_trials(plan)
    without_tune_loggers()
    tuner = tune.Tuner.restore(
        experiment_path(plan),
        trainable=_trainable(plan),
        resume_unfinished=True,
        resume_errored=True,
    )
    return _outcomes(tuner.fit())
