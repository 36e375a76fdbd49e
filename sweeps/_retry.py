"""The retry policy of every MLflow call: a locked SQLite store or a server that is down.

One policy for both stores. SQLite: MLflow's 20 s ``busy_timeout`` and WAL mode make "database
is locked" rare; what escapes is retried. A server (``http://...``): connection refused or reset,
timeouts, 5xx and 429 answers are retried with exponential backoff (capped at 5 s) for up to
:data:`RETRY_TIMEOUT_S`, so a tracking server restarting mid-sweep costs a pause, not a trial.
MLflow's own HTTP retries are lowered to one (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, when the user
has not set it) by :class:`sweeps.tracking.Tracker`, so that a caller that must not wait (a
metric flush at an epoch's end) learns at once that the server is away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import requests
from mlflow.exceptions import MlflowException

__all__ = ["RETRY_TIMEOUT_S", "is_transient", "retrying"]

logger = logging.getLogger(__name__)

RETRY_TIMEOUT_S = 300.0
"""How long a call keeps retrying a store that is locked, down or restarting."""

_T = TypeVar("_T")

_UNREACHABLE = (
    "database is locked",
    "connection refused",
    "connection aborted",
    "connection reset",
    "failed to establish a new connection",
    "max retries exceeded",
    "remote end closed",
    "timed out",
    "temporarily unavailable",
    "service unavailable",
    "bad gateway",
    "gateway timeout",
    "too many 5",  # urllib3: "too many 503 error responses"
    "too many requests",
)


def is_transient(error: Exception) -> bool:
    """True for a locked SQLite store or a server that is down, restarting or overloaded."""
    if isinstance(error, requests.ConnectionError | requests.Timeout):
        return True
    text = str(error).lower()
    code = getattr(error, "error_code", "")
    return code == "TEMPORARILY_UNAVAILABLE" or any(part in text for part in _UNREACHABLE)


def retrying(call: Callable[[], _T], *, what: str, timeout_s: float = RETRY_TIMEOUT_S) -> _T:
    """Run ``call``, retrying transient store errors with exponential backoff (capped at 5 s).

    ``timeout_s=0`` tries once. A store still failing at the deadline raises its last error.
    """
    deadline = time.monotonic() + timeout_s
    delay_s, failures = 0.05, 0
    while True:
        try:
            result = call()
        except (MlflowException, requests.RequestException) as error:
            if not is_transient(error) or time.monotonic() + delay_s > deadline:
                raise
            failures += 1
            log = logger.warning if failures == 5 else logger.debug
            log("MLflow %s failed (%s); retrying for up to %.0fs", what, error, timeout_s)
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)
            continue
        if failures >= 5:
            logger.warning("MLflow %s went through after %d retries", what, failures)
        return result
