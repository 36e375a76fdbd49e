"""Each entry of a night, one after another: its sweep run with ``run_sweep`` into the entry's
experiment, its figures read back from MLflow, its problems kept one line each. A signal that a
sweep handled itself (it closed its runs KILLED and returned) ends the night as interrupted
(:class:`EntryInterrupted`), with the entries not run named.

:func:`sweeps.nightly._run.run_nightly` calls :func:`run_entries` as ``_run._run_entries``, the
name a test replaces to run a night without sweeps.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from sweeps.nightly._figures import Figure, entry_figures
from sweeps.nightly._store import NightStore, entry_experiment
from sweeps.spec import Suite, SuiteEntry, SweepSpec
from sweeps.tracking import redact_uri

__all__ = ["MAX_REASON_CHARS", "EntryInterrupted", "one_line", "run_entries"]

logger = logging.getLogger("sweeps.nightly._run")  # its messages, as before the split

MAX_REASON_CHARS = 600


def run_entries(
    suite: Suite,
    store: NightStore,
    night_run_id: str,
    *,
    uri: str,
    address: str | None,
    storage_path: str | Path | None,
    on_note: Callable[[str], None] | None = None,
) -> tuple[list[Figure], list[str]]:
    """Every entry's sweep in the suite's order: the figures found and each problem on one line.
    ``on_note`` takes each sweep's notes (``run_sweep``'s), prefixed ``entries.NAME: `` as
    ``lrsweep validate --suite`` prints them; None logs them as warnings.

    Raises:
        EntryInterrupted: a sweep was stopped by a signal it handled; the rest are not run.
    """
    figures: list[Figure] = []
    failures: list[str] = []
    for index, entry in enumerate(suite.entries):
        found, problems, interrupted = _run_entry(
            suite.name, entry, store, night_run_id, uri=uri, address=address,
            storage_path=storage_path, on_note=on_note,
        )  # fmt: skip
        figures += found
        failures += [one_line(f"{entry.name}: {p}") for p in problems]
        if interrupted:
            skipped = [e.name for e in suite.entries[index + 1 :]]
            logger.warning(
                "night interrupted during %s; entries not run: %s",
                entry.name,
                ", ".join(skipped) or "none",
            )
            raise EntryInterrupted(entry.name, interrupted, skipped)
    return figures, failures


class EntryInterrupted(KeyboardInterrupt):
    """A signal the sweep of an entry handled itself (it closed its runs KILLED and returned):
    the night ends as interrupted, as a signal between sweeps ends it, not as a night that
    ran and found its figures missing."""

    def __init__(self, entry: str, signal_name: str, skipped: list[str]) -> None:
        super().__init__(entry, signal_name, skipped)
        not_run = f"; entries not run: {', '.join(skipped)}" if skipped else ""
        self.reason = f"interrupted ({signal_name}) during the sweep of entry {entry}{not_run}"


def _run_entry(
    suite: str,
    entry: SuiteEntry,
    store: NightStore,
    night_run_id: str,
    *,
    uri: str,
    address: str | None,
    storage_path: str | Path | None,
    on_note: Callable[[str], None] | None = None,
) -> tuple[list[Figure], list[str], str | None]:
    """One entry's sweep: its figures, its problems, and the signal that interrupted it."""
    from sweeps.run import run_sweep  # the Ray-heavy import, only when a night really runs

    experiment = entry_experiment(suite, entry.name)
    spec = _in_experiment(entry.spec, experiment, uri)
    started_ms = int(time.time() * 1000)
    problems: list[str] = []
    interrupted: str | None = None  # the signal that stopped the sweep
    logger.info("entry %s: sweep %s into experiment %s", entry.name, spec.name, experiment)
    try:
        with _keeping_sigterm_handler():
            result = run_sweep(
                spec,
                address=address,
                tracking_uri=uri,
                storage_path=storage_path,
                retry_failed=False,  # a night is never resumed: its checkpoints go
                on_note=on_note and partial(_entry_note, on_note, entry.name),
            )
        sweep_run_id: str | None = result.parent_run_id
        interrupted = (result.stop_signal or "SIGINT") if result.interrupted else None
        ray_errors = _ray_errors(result)
    except Exception as error:  # any way a sweep dies fails the night; its reason is kept
        logger.exception("entry %s: the sweep raised", entry.name)
        problems.append(f"the sweep raised {type(error).__name__}: {error}")
        sweep_run_id, ray_errors = store.latest_sweep_run(experiment, started_ms), []
    if interrupted:
        problems.append(f"the sweep was interrupted ({interrupted})")
    if sweep_run_id is None:
        return [], problems or ["the sweep left no run in MLflow"], interrupted
    store.link_sweep(night_run_id, entry.name, sweep_run_id)
    reading = store.read_sweep(sweep_run_id)
    problems += reading.failures or ray_errors
    figures = entry_figures(entry.name, reading.trials, wall_time_s=reading.wall_time_s)
    return figures, problems, interrupted


def _entry_note(on_note: Callable[[str], None], entry: str, note: str) -> None:
    on_note(f"entries.{entry}: {note}")


def _in_experiment(spec: SweepSpec, experiment: str, uri: str) -> SweepSpec:
    """``spec`` logging to ``experiment`` (no re-validation: the suite validated it)."""
    if spec.tracking.uri and spec.tracking.uri != uri:
        logger.warning(
            "spec %s sets tracking.uri; the nightly logs every entry to %s instead",
            spec.name,
            redact_uri(uri),
        )
    tracking = spec.tracking.model_copy(update={"experiment": experiment, "uri": None})
    return spec.model_copy(update={"tracking": tracking})


def _ray_errors(result: Any) -> list[str]:
    """Trials Ray Tune saw error (some never reach MLflow, e.g. when their data is missing)."""
    errors = []
    for outcomes in result.trials.values():
        for outcome in outcomes:
            if outcome.status == "ERROR":
                text = (outcome.error or "no error text").strip().splitlines() or ["?"]
                arm = outcome.config.get("arm", "?")
                errors.append(f"trial {outcome.trial_id} ({arm}) errored: {text[-1]}")
    return errors


@contextmanager
def _keeping_sigterm_handler() -> Iterator[None]:
    """Put the night's SIGTERM handler back after a sweep: ``ray.init`` installs its own
    (``sys.exit``), which would end the night between entries with its run left RUNNING.
    ``run_sweep`` puts the caller's back itself; this guards any path that starts Ray
    without it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, handler if handler is not None else signal.SIG_DFL)


def one_line(text: str) -> str:
    """``text`` on one line, cut to ``MAX_REASON_CHARS``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_REASON_CHARS else flat[: MAX_REASON_CHARS - 3] + "..."
