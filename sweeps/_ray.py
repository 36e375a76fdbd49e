"""Every Ray import lrsweep makes (the stoppers' ``Stopper`` base class aside).

Ray's API churns between releases (``tune.report`` signatures, ``trial_runner`` ->
``tune_controller``, ``ray.air`` -> ``ray.tune``); an upgrade touches this file only. The rest of
``sweeps`` sees plain functions and small dataclasses: search-space primitives for the
strategies, a searcher built from a picklable description, the session calls a trial body needs
(report with a checkpoint folder, the checkpoint to resume from, its trial id), and one function
that runs or restores a Tuner and hands back plain :class:`TrialOutcome` records.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune
from ray.tune.search import Searcher

logger = logging.getLogger(__name__)

Callback = tune.Callback
"""Ray Tune's driver-side callback base class (``sweeps.progress`` subclasses it)."""


@dataclass(frozen=True)
class SearcherSpec:
    """A picklable description of a Ray Tune search algorithm.

    Attributes:
        kind: ``optuna`` (Ray Tune's ``OptunaSearch``) or ``random`` (log-uniform draws from
            a numpy generator seeded with ``seed``).
        metric: The reported metric the searcher optimises.
        mode: ``min`` or ``max``.
        seed: Sampler seed; the same seed gives the same suggestions.
        sampler: Optuna sampler name (``tpe``, ``random``, ``qmc``, ``gp``, ``cmaes``).
        startup_trials: The sampler's ``n_startup_trials`` (``tpe``, ``gp``, ``cmaes``); None
            keeps Optuna's default.
    """

    kind: str
    metric: str = "best_valid_loss"
    mode: str = "min"
    seed: int = 0
    sampler: str = "tpe"
    startup_trials: int | None = None


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


# --- cluster -------------------------------------------------------------------------------


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    env_vars: Mapping[str, str] | None = None,
) -> None:
    """Connect to ``address`` (a running cluster) or start Ray on this machine, once.

    Args:
        address: A cluster address; None starts a new Ray on this machine (``address="local"``:
            a plain ``ray.init()`` would join whatever cluster ``/tmp/ray/ray_current_cluster``
            names, such as one left behind by a killed sweep or another user's).
        num_cpus: CPUs of a Ray started here (None: all of them).
        env_vars: Environment variables for every worker of this job (``runtime_env``).
    """
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    kwargs["address"] = address or "local"
    if not address:  # "Connecting to existing Ray cluster at ..." stays: it says where it runs
        # Ray's and Tune's INFO lines ("Started a local Ray instance", "Wrote the latest
        # version of all result files ...") tore the live table and said nothing to act on
        kwargs["logging_level"] = logging.WARNING
    if not address and os.environ.get("RAY_ADDRESS"):  # ray.init() would have joined it
        logger.warning(
            "RAY_ADDRESS=%s is set, but this sweep starts a Ray of its own on this machine, "
            "as every sweep without --address does; --address auto joins the cluster "
            "RAY_ADDRESS names.",
            os.environ["RAY_ADDRESS"],
        )
    if not address and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    if env_vars:
        kwargs["runtime_env"] = {"env_vars": dict(env_vars)}
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Checkpoints are kept 2 deep, which makes Tune snapshot its state often (cheap here).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    auth.addFilter(_AUTH_NOTE_FILTER)  # a no-op when there
    with _own_process_groups(enabled=kwargs["address"] == "local"):
        ray.init(**kwargs)
    _sigterm_to_python()


def _sigterm_to_python() -> None:
    """Give SIGTERM back to the Python handler after ``ray.init`` (main thread only).

    ``ray.init`` sets a Python one (``sys.exit(15)``), then Ray's core worker installs its C
    failure handler over it, which prints "*** SIGTERM received" and aborts the driver (status
    -6, no ``finally``, MLflow runs left RUNNING) until Python's ``signal.signal`` is called
    again; a sweep's own handlers come a moment later, and outside them this one applies.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGTERM)
    if handler is not None:  # None: set outside Python, nothing of Python's to put back
        signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def _own_process_groups(*, enabled: bool) -> Iterator[None]:
    """Start the local Ray's processes (GCS, raylet, dashboard...) outside the driver's group.

    A signal sent to the driver's whole process group (``timeout``, ``kill -- -PGID``) would
    otherwise reach Ray's GCS and raylet too: the raylet exits at once, and the driver, cut off
    mid-sweep, is terminated by Ray within milliseconds (plasma store gone) or hangs 60 s on the
    GCS before it is, leaving its MLflow runs RUNNING. In their own process groups only the
    driver gets the signal; it stops the sweep gracefully and shuts Ray down itself.

    Ray does the same on Windows (``CREATE_NEW_PROCESS_GROUP``) wherever the kernel ties its
    processes to the driver's life; on Linux that tie is ``PR_SET_PDEATHSIG``, so a killed
    driver still takes them along. Ray has no option for it: its ``services.ConsolePopen`` is
    swapped for the duration of ``ray.init`` (a no-op without kernel fate-sharing, where Ray's
    reaper relies on the shared group, or when a Ray upgrade removed that class).
    """
    from ray._private import services, utils

    popen = getattr(services, "ConsolePopen", None)
    if (
        not enabled
        or os.name != "posix"
        or popen is None
        or not utils.detect_fate_sharing_support()
    ):
        yield
        return

    class _InOwnGroup(popen):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("process_group", 0)
            super().__init__(*args, **kwargs)

    setattr(services, "ConsolePopen", _InOwnGroup)  # noqa: B010 (mypy refuses to assign a class)
    try:
        yield
    finally:
        setattr(services, "ConsolePopen", popen)  # noqa: B010


def is_initialized() -> bool:
    """True when this process is connected to a Ray runtime."""
    return ray.is_initialized()


def shutdown_ray() -> None:
    """Stop the Ray runtime this process started (no-op when none)."""
    if ray.is_initialized():
        ray.shutdown()


def local_ray_lost() -> bool:
    """True once the GCS or raylet that ``init_ray`` started on this machine has exited.

    Every later call into Ray then blocks until Ray terminates the driver (60 s after the GCS
    went), so the caller must not wait for one. False when Ray joined a cluster, is not running
    or this Ray version no longer tells.
    """
    import ray._private.worker as ray_worker

    node = getattr(ray_worker, "_global_node", None)
    try:
        dead = node.dead_processes() if node is not None else []
    except Exception:  # Ray's internals moved, or a shutdown is changing them: cannot tell
        return False
    return any(kind in ("gcs_server", "raylet") for kind, _ in dead)


def node_name() -> str:
    """``hostname (ip)`` of the node running the caller."""
    try:
        ip = ray.util.get_node_ip_address()
    except Exception:
        ip = "local"
    return f"{socket.gethostname()} ({ip})"


# --- search-space primitives ---------------------------------------------------------------


def grid_search(values: Sequence[Any]) -> Any:
    """Ray Tune's ``grid_search`` over ``values``."""
    return tune.grid_search(list(values))


def loguniform(low: float, high: float) -> Any:
    """Ray Tune's log-uniform domain on ``[low, high]``."""
    return tune.loguniform(low, high)


def is_grid(value: Any) -> bool:
    """True for a ``grid_search`` marker."""
    return isinstance(value, dict) and set(value) == {"grid_search"}


def is_domain(value: Any) -> bool:
    """True for a sampled Ray Tune domain (``loguniform`` ...)."""
    return isinstance(value, tune.search.sample.Domain)


def _optuna_sampler(name: str, seed: int, startup_trials: int | None = None) -> Any:
    import optuna

    startup: dict[str, Any] = {} if startup_trials is None else {"n_startup_trials": startup_trials}
    samplers: dict[str, Callable[[], Any]] = {
        # constant liar: trials still running count as bad, so parallel asks spread out
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=True, **startup),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed, scramble=True),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, **startup),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, **startup),
    }
    if name not in samplers:
        raise ValueError(f"optuna sampler must be one of {sorted(samplers)}, but got {name!r}.")
    return samplers[name]()


def build_searcher(spec: SearcherSpec, param_space: Mapping[str, Any]) -> Any:
    """The Ray Tune searcher an ``optuna`` :class:`SearcherSpec` describes, set up on a space."""
    if spec.kind != "optuna":
        raise ValueError(f"only optuna searchers are built, but got kind {spec.kind!r}.")
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    algo = OptunaSearch(
        metric=spec.metric,
        mode=spec.mode,
        sampler=_optuna_sampler(spec.sampler, spec.seed, spec.startup_trials),
    )
    verbosity = optuna.logging.get_verbosity()
    # Optuna says "A new study created in memory" at INFO for each seed's study: quiet here
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        algo.set_search_properties(spec.metric, spec.mode, dict(param_space))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return algo


def sample_configs(
    param_space: Mapping[str, Any], *, num_samples: int, searcher: SearcherSpec | None = None
) -> list[dict[str, Any]]:
    """The trial configs of a search, drawn without running anything (also a dry run).

    Grid and random spaces go through Ray's variant generator, seeded by ``searcher.seed``
    (``random``) so the draws repeat; an Optuna searcher is asked for ``num_samples``
    suggestions with no results told back, as for trials started at once.
    """
    from ray.tune.search.variant_generator import generate_variants

    space = dict(param_space)
    if searcher is not None and searcher.kind == "optuna":
        algo = build_searcher(searcher, space)
        return [_merge(space, algo.suggest(f"dry-{i}")) for i in range(num_samples)]
    rng = np.random.default_rng(searcher.seed if searcher else 0)
    return [
        resolved
        for _ in range(num_samples)
        for _, resolved in generate_variants(space, random_state=rng)
    ]


def _merge(space: Mapping[str, Any], suggested: Mapping[str, Any]) -> dict[str, Any]:
    fixed = {k: v for k, v in space.items() if not is_domain(v) and not is_grid(v)}
    return {**fixed, **suggested}


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
                config = _merge(self._spaces[index], suggested)
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


def quiet_trial_logs() -> None:
    """Silence Ray's per-checkpoint INFO lines in a trial's process (they flood the driver),
    and keep the trial's own warnings.

    ``import mlflow.pytorch`` (a trial worker's warm-up) runs ``logging.basicConfig(level=ERROR)``
    (MLflow's Lightning autolog module), which hid every warning of a trial from the driver: an
    MLflow server gone for minutes, retried in silence until the trial failed. A handler set
    first makes that call a no-op; a worker where it already ran gets WARNING back.
    """
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    elif root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


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


class _NoResultFilesWarning(logging.Filter):
    """Drops Tune's "Failed to fetch metrics ... result.json and progress.csv were not found".

    Tune warns so, one line per trial, whenever a Tuner ends without its result files; with
    its loggers off that is by design (the results are in MLflow), not a failure to report.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Failed to fetch metrics") and "progress.csv" in message)


_RESULT_FILES_FILTER = _NoResultFilesWarning()


class _NoTuneResumeAdvice(logging.Filter):
    """Drops Tune's "Experiment has been interrupted ... Resume experiment with:
    Tuner.restore(...)": a stopped sweep says ``lrsweep resume NAME`` itself, which also
    reopens its MLflow runs; a restored Tuner alone would log to none of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(
            ("Experiment has been interrupted", "Training has been interrupted")
        )


_RESUME_ADVICE_FILTER = _NoTuneResumeAdvice()


class _OneLineTrialErrors(logging.Filter):
    """Tune's "Trial task failed for trial ..." in one line, not the ~50 lines of Ray's
    traceback per attempt (300 for a failing arm); its "Trials did not complete: [...]" is
    dropped: lrsweep names every failure, with its error, when the sweep ends."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Trials did not complete"):
            return False
        if message.startswith("Trial task failed") and record.exc_info:
            error = record.exc_info[1]
            cause = getattr(error, "cause", None) or error
            text = str(cause).strip().splitlines()
            said = f"{type(cause).__name__}: {text[0] if text else ''}"
            record.msg = f"{message}: {said[:300]} (the sweep's summary lists every failure)"
            record.args = None
            record.exc_info = record.exc_text = None
        return True


_TRIAL_ERRORS_FILTER = _OneLineTrialErrors()


class _NoAuthEnabledNote(logging.Filter):
    """Drops Ray's "Token authentication is enabled for this Ray cluster" (its secure default,
    said at every start of a local Ray: nothing to act on); "... is disabled" stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


_AUTH_NOTE_FILTER = _NoAuthEnabledNote()


def _without_tune_loggers() -> None:
    """Turn off Tune's own CSV, JSON and TensorBoard result files (unless the user set it).

    Every result is logged to MLflow already; Tune's loggers would write (and flush) each
    result a second time in the driver, on the cores the trials run on (~5 ms per result).
    Tune's warning that those files are missing is then silenced, and so is its advice to
    resume with ``Tuner.restore`` (:class:`_NoTuneResumeAdvice`).
    """
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger("ray.tune.tune").addFilter(_RESUME_ADVICE_FILTER)  # no-op when there
    logging.getLogger("ray.tune.tune").addFilter(_TRIAL_ERRORS_FILTER)
    logging.getLogger("ray.tune.execution.tune_controller").addFilter(_TRIAL_ERRORS_FILTER)
    analysis_logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    if os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1":
        analysis_logger.addFilter(_RESULT_FILES_FILTER)  # a no-op when already there
    else:
        analysis_logger.removeFilter(_RESULT_FILES_FILTER)


def run_tuner(plan: TunerPlan) -> list[TrialOutcome]:
    """Run every search of ``plan`` in one Tuner, to the end or until interrupted."""
    _allow_pending_trials(plan)
    _without_tune_loggers()
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
    _without_tune_loggers()
    tuner = tune.Tuner.restore(
        experiment_path(plan),
        trainable=_trainable(plan),
        resume_unfinished=True,
        resume_errored=True,
    )
    return _outcomes(tuner.fit())
