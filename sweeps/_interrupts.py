"""How a running sweep reacts to Ctrl-C and SIGTERM (also one sent to its whole process group)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sweeps import _ray
from sweeps._resume_command import left_running_note
from sweeps._retry import giving_up_within, is_transient, redact_text

__all__ = [
    "HEAD_LOST_S",
    "HEAD_POLL_S",
    "LOST_HEAD_EXIT",
    "LOST_RAY_GRACE_S",
    "RAY_POLL_S",
    "SIGTERM_EXIT",
    "Interrupts",
    "Terminated",
    "before_forced_exit",
    "closing_runs",
    "honour_sigint",
    "sigterm_stops",
]

logger = logging.getLogger("sweeps.run")

SIGTERM_EXIT = 143  # 128 + SIGTERM, as ``lrsweep run`` exits after a graceful SIGTERM stop
LOST_HEAD_EXIT = 1  # the cluster went away: a failure, not a stop asked for
RAY_POLL_S = 0.25
LOST_RAY_GRACE_S = 2.0
HEAD_POLL_S = 2.0
"""How often a sweep on a cluster checks that the head still answers."""
HEAD_LOST_S = 30.0
"""How long the head may not answer before the sweep closes its runs and exits: Ray ends the
driver itself 60 s after it lost the GCS (leaving every run RUNNING), and a shorter wait than
this would end sweeps that Ray would have carried through a network blip."""
"""After SIGTERM, how long a sweep whose raylet is gone may still end by itself before exit."""

_FORCED_EXIT_HOOKS: list[tuple[Callable[[], None], int | None]] = []


@contextmanager
def before_forced_exit(hook: Callable[[], None], *, status: int | None = None) -> Iterator[None]:
    """Run ``hook`` if the lost-Ray watchdog ends the process while this block runs.

    The watchdog ends the process with ``os._exit`` (no ``finally`` or ``except`` of the
    caller runs), so a caller with records of its own around a sweep (``lrsweep nightly``'s
    night run) closes them here. ``status`` replaces the exit status (143).
    """
    entry = (hook, status)
    _FORCED_EXIT_HOOKS.append(entry)
    try:
        yield
    finally:
        _FORCED_EXIT_HOOKS.remove(entry)


class Interrupts:
    """Which signal stopped the sweep: SIGTERM is turned into Ctrl-C's SIGINT for Ray Tune.

    Ray Tune installs its own SIGINT handler while it runs (it stops the trials, saves the
    experiment state and returns normally), so SIGTERM is re-sent as SIGINT, and remembered
    here to choose the exit code.

    SIGTERM first closes the sweep's MLflow runs as KILLED, before anything talks to Ray again:
    a SIGTERM sent to every process at once (systemd's default ``KillMode=control-group``, a
    ``kill`` of every process of the sweep) also stops the local Ray's raylet, and then Ray
    ends the driver itself, within milliseconds (plasma store gone) or after its 60 s GCS
    timeout. For the second case a watchdog closes the runs again, logs how to resume and exits
    with status 143 once the raylet is seen gone, instead of waiting for Ray to abort. Python
    runs the handler in the main thread only, which a call into a dead GCS blocks until that
    abort, so a thread woken by the signal's wakeup fd closes the runs and arms the watchdog.

    Args:
        close_killed: Closes the sweep's unfinished runs and its parent run as KILLED.
        resume: The command that continues the sweep (logged on a forced exit).
        watch_local_ray: Arm the watchdog (a Ray started on this machine: ``address`` None).
        watch_head: On a cluster, the head's ``host:port``: while the trials run, a thread
            checks that it still answers, and once it has not for :data:`HEAD_LOST_S` closes
            the runs KILLED, logs how to resume and exits with status 1 (Ray would end the
            driver 60 s after losing the GCS, its runs left RUNNING, nothing said).
        store: The tracking URI (no credentials) named when MLflow cannot be reached to close
            the runs: each close gives it :data:`~sweeps._retry.STOP_RETRY_S`, not minutes.
    """

    def __init__(
        self,
        close_killed: Callable[[], None],
        *,
        resume: str,
        watch_local_ray: bool,
        watch_head: str | None = None,
        store: str | None = None,
    ) -> None:
        self.signal: str | None = None
        self._close_killed = close_killed
        self._resume = resume
        self._store = store or "of the sweep"
        self._watch_local_ray = watch_local_ray
        self._watch_head = watch_head
        self._head_watchdog: threading.Thread | None = None
        self._finished = threading.Event()
        self._began = False
        self._lock = threading.RLock()  # a second SIGTERM may interrupt the first's close

    def _on_sigterm(self, *_: object) -> None:
        self._begin_sigterm()
        os.kill(os.getpid(), signal.SIGINT)

    def _begin_sigterm(self) -> None:
        """Close the runs and arm the watchdog, once: from the handler or the wakeup watcher.

        Never waits for the other: the handler may have interrupted the main thread inside a
        store transaction that the watcher's close would wait for (a SQLite write lock).
        """
        self.signal = "SIGTERM"
        if not self._lock.acquire(blocking=False):
            return  # the other thread is closing them
        try:
            if self._began:
                return
            self._began = True
            self._close_runs()
            if self._watch_local_ray:
                watchdog = threading.Thread(
                    target=self._exit_if_ray_lost, name="lrsweep-lost-ray-watchdog", daemon=True
                )
                watchdog.start()
        finally:
            self._lock.release()

    def _close_runs(self) -> bool:
        """Close the runs KILLED; False when MLflow could not be reached (the caller says so,
        in one line: :meth:`_closed`); another error is logged here."""
        try:
            with giving_up_within():
                self._close_killed()
        except Exception as error:  # the graceful path tries again; the signal must get through
            if is_transient(error):
                logger.debug("MLflow out of reach on SIGTERM: %s", redact_text(str(error)))
                return False
            logger.exception("could not close the sweep's MLflow runs on SIGTERM")
        return True

    def _closed(self, reached: bool, *, joined: str = "; its", then: str = "Continue") -> str:
        """How a forced exit's message ends: the runs closed and the command that continues
        the sweep, or (MLflow out of reach) the runs left RUNNING and how to close them."""
        if not reached:
            return f". {left_running_note(self._store, self._resume)}"
        return f"{joined} runs are closed as KILLED. {then} it with: {self._resume}"

    def _exit_if_ray_lost(self) -> None:
        while not self._finished.wait(RAY_POLL_S):
            if _ray.local_ray_lost():
                break
        if self._finished.wait(LOST_RAY_GRACE_S):
            return
        reached = self._close_runs()  # a trial may have ended its run meanwhile, or opened one
        logger.warning(
            "SIGTERM reached Ray's own processes too, so the sweep cannot stop gracefully%s",
            self._closed(reached),
        )
        _forced_exit(SIGTERM_EXIT)

    def _exit_if_head_lost(self, head: str) -> None:
        from sweeps.preflight._cluster import head_answers

        silent_since: float | None = None
        while not self._finished.wait(HEAD_POLL_S):
            why = head_answers(head, timeout=HEAD_POLL_S)
            if why is None:
                silent_since = None
                continue
            now = time.monotonic()
            silent_since = now if silent_since is None else silent_since
            if now - silent_since >= HEAD_LOST_S:
                break
        else:
            return
        reached = self._close_runs()
        logger.warning(
            "The Ray cluster's head at %s has not answered for %.0f s (%s): the sweep cannot go "
            "on%s",
            head,
            HEAD_LOST_S,
            why,
            self._closed(reached, joined=", and its", then="Once the head is back, continue"),
        )
        _forced_exit(LOST_HEAD_EXIT)

    def watching(self) -> None:
        """Start the head's watchdog (a sweep on a cluster), once; :meth:`finished` stops it."""
        if self._watch_head is None or self._head_watchdog is not None:
            return
        self._head_watchdog = threading.Thread(
            target=self._exit_if_head_lost,
            args=(self._watch_head,),
            name="lrsweep-lost-head-watchdog",
            daemon=True,
        )
        self._head_watchdog.start()

    def finished(self) -> None:
        """The sweep has closed its runs: disarm the watchdogs (Ray's shutdown is no loss)."""
        self._finished.set()

    @contextmanager
    def catching(self) -> Iterator[None]:
        """Route SIGTERM through Ctrl-C's path for the duration (main thread only), and watch a
        cluster's head.

        Afterwards SIGINT and SIGUSR1 get their handlers back too: Ray Tune installs its own
        and leaves them after a run that ends by itself, so the next Ctrl-C (between the sweeps
        of a night, or in a program that called ``run_sweep``) only logged "ending Ray Tune run".
        """
        self.watching()
        try:
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread: leave signals alone
            yield
            return
        kept = {sig: signal.getsignal(sig) for sig in _TUNE_SIGNALS}
        try:
            with _wakeup_watcher(signal.SIGTERM, self._begin_sigterm):
                yield
        finally:
            signal.signal(signal.SIGTERM, previous)
            for sig, handler in kept.items():
                if handler is not None:  # None: set outside Python, cannot be put back
                    signal.signal(sig, handler)


def _forced_exit(status: int) -> None:
    """Run the hooks of :func:`before_forced_exit` and end the process with ``status`` (a
    hook's own status replaces it), now: no ``finally`` of the caller runs."""
    for hook, replaced in list(_FORCED_EXIT_HOOKS):
        try:
            hook()
        except Exception:  # the exit must happen all the same
            logger.exception("a hook before the forced exit failed")
        status = replaced if replaced is not None else status
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(status)


def honour_sigint() -> None:
    """Let Ctrl-C (SIGINT) stop the command even when it started with SIGINT ignored.

    A shell without job control (a script) starts its ``&`` jobs that way, and Python then
    never raises ``KeyboardInterrupt``: a ``kill -INT`` to such a sweep or night did nothing
    while Ray started, the night went on to pass and joined the baseline, yet the same signal a
    few seconds later, once Ray Tune had installed its own handler, stopped it. One rule for
    the whole command: SIGINT stops it. Main thread only; a handler the caller set stays.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def closing_runs() -> Iterator[None]:
    """Let a Ctrl-C or SIGTERM that comes while a stopped sweep closes its runs only say so.

    Ray Tune gives SIGINT back when it returns, and Python's default handler would raise
    ``KeyboardInterrupt`` in the middle of the closing (a second press is what Tune's own
    message invites), leaving the sweep's parent run RUNNING and the resume command unsaid;
    SIGTERM would meet Ray's own handler (``sys.exit``) there. Main thread only; elsewhere
    signals are left alone.
    """

    with _handling({signal.SIGINT: _say_closing, signal.SIGTERM: _say_closing}):
        yield


def _say_closing(*_: object) -> None:
    logger.warning("the sweep is closing its MLflow runs; it ends in a moment")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises ``KeyboardInterrupt``: every ``except
    KeyboardInterrupt`` stops the same way for both, and the exit status can still tell them
    apart (143, not 130)."""


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` for the block, once (main thread only).

    For a sweep's stretches outside its trials (``Interrupts.catching``): Ray's start and the
    closing and report after the trials. There SIGTERM met Ray's own handler
    (``sys.exit(15)``, which ``ray.init`` installs and leaves), and a SIGTERM while the report
    was made ended the sweep as a failed report, exit status 15, with no word of how to
    continue. A second SIGTERM only says that the sweep is closing its runs. Ray's handler, set
    by ``ray.init`` inside the block, raises ``SystemExit(15)``: that too becomes
    :class:`Terminated`. After the block
    the handler from before it is back, which drops the one ``ray.init`` installed inside it:
    outside these stretches SIGTERM does what the caller set (Python's default ends the
    process; ``lrsweep nightly`` records a failed night).
    """
    stopped = False

    def _on_sigterm(*_: object) -> None:
        nonlocal stopped
        if stopped:
            _say_closing()
            return
        stopped = True
        raise Terminated

    with _handling({signal.SIGTERM: _on_sigterm}):
        try:
            yield
        except SystemExit as error:  # a handler set inside the block: ray.init's sys.exit(15)
            if error.code != signal.SIGTERM:
                raise
            raise Terminated from None


@contextmanager
def _handling(handlers: dict[int, Callable[..., None]]) -> Iterator[None]:
    """``handlers`` installed for the block, the earlier ones put back after (main thread only:
    elsewhere signals are left alone)."""
    previous: dict[int, Any] = {}
    try:
        for sig, handler in handlers.items():
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


_TUNE_SIGNALS = tuple(
    sig for sig in (signal.SIGINT, getattr(signal, "SIGUSR1", None)) if sig is not None
)
"""The signals Ray Tune takes over while it runs (``tune.tune._setup_signal_catching``)."""


@contextmanager
def _wakeup_watcher(signum: int, react: Callable[[], None]) -> Iterator[None]:
    """Call ``react`` from a thread as soon as ``signum`` arrives (main thread only).

    Python runs a signal's handler in the main thread only, between two bytecodes: a main
    thread blocked in C (a call into Ray's GCS that retries until Ray aborts 60 s later) would
    never run it. Python's C-level handler also writes the signal's number to the wakeup fd at
    once, whatever the main thread is doing, so a thread reading that pipe reacts in time. A
    wakeup fd someone else set (an asyncio loop's) still gets every byte.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # required by set_wakeup_fd
    try:
        earlier = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        os.close(read_fd)
        os.close(write_fd)
        yield
        return
    watcher = threading.Thread(
        target=_watch_wakeups,
        args=(read_fd, earlier, signum, react),
        name="lrsweep-signal-watcher",
        daemon=True,
    )
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(earlier)
        os.close(write_fd)  # the watcher reads end-of-file and returns
        watcher.join(timeout=5.0)
        if not watcher.is_alive():  # still reacting (its MLflow call retrying): let it finish
            os.close(read_fd)


def _watch_wakeups(read_fd: int, earlier: int, signum: int, react: Callable[[], None]) -> None:
    while True:
        try:
            received = os.read(read_fd, 64)
        except OSError:
            return
        if not received:
            return
        if earlier != -1:
            try:
                os.write(earlier, received)
            except OSError:
                pass
        if signum in received:
            try:
                react()
            except Exception:
                logger.exception("could not react to signal %d", signum)
