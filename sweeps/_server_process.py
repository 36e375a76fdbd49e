"""The ``mlflow server`` child process: started in a process group of its own, polled until it
answers, stopped with every worker it started (:mod:`sweeps.server` decides its arguments)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from sweeps.server import ServerLaunch

__all__ = ["ServerStartError", "start_server", "stop_server", "wait_until_ready"]

logger = logging.getLogger("sweeps.server")


class ServerStartError(RuntimeError):
    """``mlflow server`` exited or did not answer before it became ready."""


def start_server(launch: ServerLaunch, *, output: IO[bytes] | None = None) -> subprocess.Popen:
    """Start ``launch`` as a child process (its output goes to ``output`` or ours).

    The child leads a process group of its own, which :func:`stop_server` kills whole: signals
    from the terminal (Ctrl-C, a hangup) reach only the caller, which stops it. (A terminal's
    SIGHUP stopped ``mlflow server`` at once, and uvicorn, which takes SIGHUP as "restart the
    workers", served on as an orphan.)
    """
    logger.info(
        "Starting MLflow at %s (backend %s, artifacts %s%s).",
        launch.url,
        launch.backend_display,
        launch.artifacts_destination,
        ", basic auth" if launch.auth_config_path else "",
    )
    env = {**os.environ, **launch.env}
    prctl = _linux_prctl()
    parent = os.getpid()

    def die_with_parent() -> None:  # in the child, before exec: no lock is taken here
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before the line above
                os.kill(os.getpid(), signal.SIGTERM)

    return subprocess.Popen(
        launch.argv,
        env=env,
        stdin=subprocess.DEVNULL,  # a background process group must not read the terminal
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
        process_group=0,
        # SIGTERM (which MLflow forwards to its workers) when lrsweep dies, even by SIGKILL,
        # since its own group no longer shares the fate of lrsweep's.
        preexec_fn=die_with_parent,
    )


PR_SET_PDEATHSIG = 1


def _linux_prctl() -> Callable[[int, int], int] | None:
    """libc's ``prctl`` on Linux (loaded in the parent: a forked child must not load it)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def wait_until_ready(url: str, process: subprocess.Popen, *, timeout_s: float = 120.0) -> None:
    """Poll ``url``/health until it answers 200.

    Raises:
        ServerStartError: the process exited first, or ``timeout_s`` passed.
    """
    # Never through a proxy from http_proxy: the server is this machine's own child.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ServerStartError(f"mlflow server exited with code {code} before {url} was up.")
        try:
            with opener.open(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise ServerStartError(f"mlflow server did not answer at {url}/health within {timeout_s}s.")


def stop_server(process: subprocess.Popen, *, timeout_s: float = 20.0) -> int:
    """SIGTERM ``process`` (MLflow forwards it to its workers), SIGKILL its whole process group
    (see :func:`start_server`) after ``timeout_s``; whatever is left of the group once it has
    exited is killed too, so no worker serves the port on as an orphan."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("mlflow server ignored SIGTERM for %ss; killing it.", timeout_s)
            _kill_group(process.pid)
            process.wait()
    _kill_group(process.pid)
    return process.returncode


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left (or a process that leads no group of ours)
