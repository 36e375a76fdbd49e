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
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import requests
from mlflow.exceptions import MlflowException

from sweeps.spec._redact import redact_text

__all__ = [
    "RETRY_TIMEOUT_S",
    "STOP_RETRY_S",
    "giving_up_within",
    "is_transient",
    "redact_text",
    "retrying",
]

logger = logging.getLogger(__name__)

RETRY_TIMEOUT_S = 300.0
"""How long a call keeps retrying a store that is locked, down or restarting."""
STOP_RETRY_S = 10.0
"""How long a stopped sweep gives MLflow to close its runs: a stop asked for (SIGTERM, whose
sender kills after a grace period, or Ctrl-C) must not wait 5 minutes for a server that is gone;
``lrsweep resume`` closes them later."""

_give_up_at: ContextVar[float | None] = ContextVar("lrsweep_give_up_at", default=None)


@contextmanager
def giving_up_within(limit_s: float = STOP_RETRY_S) -> Iterator[None]:
    """Every :func:`retrying` call of the block (in this thread) gives up ``limit_s`` after the
    block began, whatever its own timeout, and says nothing of its retries (its caller says
    what could not be done)."""
    limit = time.monotonic() + limit_s
    earlier = _give_up_at.get()
    token = _give_up_at.set(limit if earlier is None else min(earlier, limit))
    try:
        yield
    finally:
        _give_up_at.reset(token)


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


def _redact_error(error: Exception) -> None:
    """Remove credentials from the message of an MLflow error before it travels on."""
    if isinstance(error, MlflowException):
        message = redact_text(error.message)
        if message != error.message:
            error.message = message
            error.args = (message, *error.args[1:])


_DB_ERROR = re.compile(r"^\((?:sqlite3|psycopg2?|pymysql|MySQLdb|pyodbc)[\w.]*\)")
"""A SQL store's own database error, as MLflow (and the bulk writer) quote it."""
_DB_TRANSIENT = (
    "database is locked",
    "deadlock detected",
    "could not serialize access",
    "server closed the connection",
    "terminating connection",
    "connection refused",
    "could not connect",
    "timeout expired",
    "timed out",
    "the database system is starting up",
    "the database system is shutting down",
)


def is_transient(error: Exception) -> bool:
    """True for a locked SQLite store or a server that is down, restarting or overloaded.

    MLflow's SQL store reports *every* database ``OperationalError`` as
    ``TEMPORARILY_UNAVAILABLE`` (a missing table, a read-only or corrupt file too); of those
    only a lock, a deadlock or a lost or refused connection is retried. A TLS failure (a
    certificate that does not verify, ``https://`` to a plain HTTP server) is never retried,
    though ``requests`` reports it as a connection error.
    """
    text = str(error).lower()
    if isinstance(error, requests.exceptions.SSLError) or "sslerror" in text:
        return False  # a certificate or TLS mismatch: retrying for minutes changes nothing
    if isinstance(error, requests.ConnectionError | requests.Timeout):
        return True
    if _DB_ERROR.match(str(error)):
        first_line = text.partition("\n")[0]  # not the statement's parameters below it
        return any(part in first_line for part in _DB_TRANSIENT)
    code = getattr(error, "error_code", "")
    return code == "TEMPORARILY_UNAVAILABLE" or any(part in text for part in _UNREACHABLE)


def retrying(call: Callable[[], _T], *, what: str, timeout_s: float = RETRY_TIMEOUT_S) -> _T:
    """Run ``call``, retrying transient store errors with exponential backoff (capped at 5 s).

    ``timeout_s=0`` tries once. A store still failing at the deadline raises its last error.
    Inside :func:`giving_up_within` the deadline is that block's, when sooner.
    """
    deadline = time.monotonic() + timeout_s
    cut_short = _give_up_at.get()
    deadline = deadline if cut_short is None else min(deadline, cut_short)
    delay_s, failures = 0.05, 0
    while True:
        try:
            result = call()
        except (MlflowException, requests.RequestException) as error:
            _redact_error(error)
            if not is_transient(error) or time.monotonic() + delay_s > deadline:
                raise
            failures += 1
            log = logger.warning if failures == 5 and cut_short is None else logger.debug
            shown = redact_text(str(error))
            log("MLflow %s failed (%s); retrying for up to %.0fs", what, shown, timeout_s)
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)
            continue
        if failures >= 5:
            logger.warning("MLflow %s went through after %d retries", what, failures)
        return result
