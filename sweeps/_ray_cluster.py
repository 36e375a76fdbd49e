"""The Ray runtime of this process: started here (in process groups of its own) or joined,
shut down, watched for a lost GCS or raylet; the node a trial runs on.

:mod:`sweeps._ray` re-exports every name; callers go through it (``_ray.init_ray(...)``), which
is what a test replaces to reach the start of Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import ray

from sweeps._ray_logs import AUTH_NOTE_FILTER

__all__ = ["init_ray", "is_initialized", "local_ray_lost", "node_name", "shutdown_ray"]

logger = logging.getLogger("sweeps._ray")  # its messages, as before the split


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
    auth.addFilter(AUTH_NOTE_FILTER)  # a no-op when there
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
