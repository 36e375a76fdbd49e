"""``RunLogger``: one run's metric points, buffered, sent in batches, kept while MLflow is away."""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import requests
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from sweeps._retry import RETRY_TIMEOUT_S, is_transient, redact_text

if TYPE_CHECKING:
    from sweeps.tracking import Tracker

__all__ = ["MAX_BUFFERED_POINTS", "RunLogger"]

logger = logging.getLogger(__name__)

MAX_BATCH_POINTS = 1000  # MLflow's limit of metrics per log_batch
MAX_BUFFERED_POINTS = 100_000
"""Metric points a :class:`RunLogger` keeps while the store is unreachable before it waits."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class RunLogger:
    """Buffers one run's metric points and sends them with one ``log_batch`` per 1,000 on flush.

    Every point is stamped when it is added, so a batch re-sent after a failure is the same
    batch. While the store is unreachable a non-waiting :meth:`flush` keeps the points (and
    training goes on); the next flush re-sends them. At most :data:`MAX_BUFFERED_POINTS` are
    kept this way: past that, flushes wait for the store.

    Args:
        tracker: The store.
        run_id: The run the points belong to.
        pending: Points not yet sent, as :meth:`pending` returned them (from a checkpoint).
    """

    def __init__(
        self, tracker: Tracker, run_id: str, *, pending: Sequence[Sequence[Any]] = ()
    ) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self._points: list[Metric] = [
            Metric(str(k), float(v), int(t), int(s)) for k, v, t, s in pending
        ]
        self._held: dict[str, int] = {}
        self._unreachable = False

    def hold(self, steps: Mapping[str, int]) -> None:
        """Say which steps the store already holds: per key, every step up to ``steps[key]``.

        A reopened run (a trial restarted after a crash or a killed driver) trains again what it
        had logged before, with new timestamps, so MLflow would keep both copies. From now on
        points of ``key`` at or below ``steps[key]`` are dropped, the buffered ones too.
        A run's points of one key reach the store in step order, so the steps it holds are
        the ones up to the largest.
        """
        self._held.update({str(k): int(v) for k, v in steps.items()})
        self._points = [m for m in self._points if m.step > self._held.get(m.key, -1)]

    def add(self, key: str, value: float, step: int) -> None:
        """Buffer one point (no I/O)."""
        if step > self._held.get(key, -1):
            self._points.append(Metric(key, float(value), _now_ms(), int(step)))

    def extend(self, key: str, values: Sequence[float], *, first_step: int = 0) -> None:
        """Buffer a series as consecutive steps starting at ``first_step``."""
        stamp = _now_ms()
        skip = max(0, self._held.get(key, -1) + 1 - first_step)
        self._points.extend(
            Metric(key, float(v), stamp, first_step + i)
            for i, v in enumerate(values)
            if v is not None and i >= skip
        )

    def add_many(self, values: Mapping[str, float], step: int) -> None:
        """Buffer several keys at one step; non-numeric values are skipped."""
        stamp = _now_ms()
        for key, value in values.items():
            held = step <= self._held.get(key, -1)
            numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if numeric and not held:  # NumPy scalars count: they are numbers.Real
                self._points.append(Metric(key, float(value), stamp, int(step)))

    def __len__(self) -> int:
        return len(self._points)

    def pending(self) -> list[list[Any]]:
        """The points not sent yet, JSON-able (``[key, value, timestamp_ms, step]``)."""
        return [[m.key, m.value, m.timestamp, m.step] for m in self._points]

    def flush(self, *, wait: bool = True, timeout_s: float = RETRY_TIMEOUT_S) -> int:
        """Send everything buffered; return how many points went.

        Args:
            wait: True retries until sent (or ``timeout_s``) and raises if it cannot; False
                tries once and, if the store is unreachable, keeps the points for later.
            timeout_s: How long a waiting flush retries.

        Raises:
            MlflowException | requests.RequestException: a waiting flush that could not send,
                or any non-transient error; unsent points stay buffered.
        """
        if not self._points:
            return 0
        wait = wait or len(self._points) > MAX_BUFFERED_POINTS
        buffered = len(self._points)
        try:
            sent = self._send(timeout_s if wait else 0.0)
        except (MlflowException, requests.RequestException) as error:
            if wait or not is_transient(error):
                raise
            if not self._unreachable:
                logger.warning(
                    "MLflow is unreachable (%s); keeping %d metric points of run %s to re-send",
                    redact_text(str(error)),
                    len(self._points),
                    self.run_id,
                )
            self._unreachable = True
            return buffered - len(self._points)  # the batches sent before the failure
        if self._unreachable:
            logger.warning("MLflow is back; sent %d buffered points of run %s", sent, self.run_id)
        self._unreachable = False
        return sent

    def _send(self, timeout_s: float) -> int:
        sent = 0
        deadline = time.monotonic() + timeout_s  # for the whole flush, not for each batch
        while self._points:
            chunk = self._points[:MAX_BATCH_POINTS]
            left_s = max(0.0, deadline - time.monotonic())
            sent += self.tracker.log_metric_points(self.run_id, chunk, timeout_s=left_s)
            del self._points[: len(chunk)]
        return sent
