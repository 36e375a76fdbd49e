"""SIGTERM while the driver's main thread is blocked in C, as in a call into Ray's GCS.

Python runs a signal's handler in the main thread only, between two bytecodes: a main thread
stuck in a C call that retries through signals never runs it, and Ray aborts such a driver 60 s
after its GCS died, leaving the runs RUNNING. The runs must be closed KILLED at once anyway.
A ``pthread_mutex_lock`` on a mutex another thread holds is such a call: it never returns
early on a signal (``EINTR`` does not exist for it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweeps._interrupts import Interrupts

pytestmark = pytest.mark.skipif(
    not ctypes.util.find_library("c"), reason="needs the C library's pthread_mutex_lock"
)

CLOSE_WAIT_S = 10.0  # a hang guard: the close comes within milliseconds when it works


@pytest.fixture(autouse=True)
def _python_signal_defaults() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, as in a fresh ``lrsweep run`` (an earlier test's Ray or
    Tune may have left a handler of its own), and no wakeup fd is set; both are put back."""
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    wakeup = signal.set_wakeup_fd(-1)
    try:
        yield
    finally:
        signal.set_wakeup_fd(wakeup)
        signal.signal(signal.SIGINT, sigint)


class _HeldMutex:
    """A pthread mutex that a helper thread holds until ``release``."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._mutex = ctypes.create_string_buffer(128)  # zeroed: PTHREAD_MUTEX_INITIALIZER
        self._release = threading.Event()
        held = threading.Event()

        def hold() -> None:
            assert self._libc.pthread_mutex_lock(self._mutex) == 0
            held.set()
            self._release.wait()
            assert self._libc.pthread_mutex_unlock(self._mutex) == 0

        self._holder = threading.Thread(target=hold, daemon=True)
        self._holder.start()
        assert held.wait(5.0)

    def block_until_released(self) -> None:
        """Lock the mutex from this thread: blocks in C, through any signal, until released."""
        assert self._libc.pthread_mutex_lock(self._mutex) == 0
        self._libc.pthread_mutex_unlock(self._mutex)

    def release(self) -> None:
        self._release.set()
        self._holder.join(5.0)


def test_sigterm_closes_the_runs_while_the_main_thread_is_blocked_in_c() -> None:
    closed = threading.Event()
    blocked = threading.Event()
    seen: dict[str, bool] = {}
    interrupts = Interrupts(closed.set, resume="lrsweep resume x", watch_local_ray=False)
    mutex = _HeldMutex()

    def signal_then_release() -> None:
        blocked.wait(5.0)
        os.kill(os.getpid(), signal.SIGTERM)
        seen["closed while blocked"] = closed.wait(CLOSE_WAIT_S)
        mutex.release()

    sender = threading.Thread(target=signal_then_release, daemon=True)
    with pytest.raises(KeyboardInterrupt):  # the handler re-sends SIGTERM as Ctrl-C for Tune
        with interrupts.catching():
            sender.start()
            blocked.set()
            mutex.block_until_released()
    sender.join(5.0)
    assert seen == {"closed while blocked": True}
    assert interrupts.signal == "SIGTERM"


def test_the_runs_are_closed_once_for_many_sigterms_and_the_handlers_are_restored() -> None:
    calls: list[int] = []
    interrupts = Interrupts(lambda: calls.append(1), resume="r", watch_local_ray=False)
    handler_before = signal.getsignal(signal.SIGTERM)
    wakeup_before = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_before)
    for _ in range(3):
        with pytest.raises(KeyboardInterrupt):
            with interrupts.catching():
                os.kill(os.getpid(), signal.SIGTERM)
                threading.Event().wait(1.0)  # the handler raises within it
    assert calls == [1]
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert signal.set_wakeup_fd(wakeup_before) == wakeup_before  # the wakeup fd given back too


def test_an_earlier_wakeup_fd_still_receives_the_signal() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    earlier = signal.set_wakeup_fd(write_fd)
    try:
        interrupts = Interrupts(lambda: None, resume="r", watch_local_ray=False)
        with pytest.raises(KeyboardInterrupt):
            with interrupts.catching():
                os.kill(os.getpid(), signal.SIGTERM)
                threading.Event().wait(1.0)
        assert signal.set_wakeup_fd(write_fd) == write_fd  # restored
        os.set_blocking(read_fd, False)
        assert bytes([signal.SIGTERM]) in os.read(read_fd, 64)
    finally:
        signal.set_wakeup_fd(earlier)
        os.close(read_fd)
        os.close(write_fd)


LOST_HEAD = r"""
import json, socket, sys, time
from pathlib import Path
from sweeps import _interrupts
from sweeps._interrupts import Interrupts, before_forced_exit

_interrupts.HEAD_POLL_S, _interrupts.HEAD_LOST_S = 0.1, 1.0
marker, hooked = Path(sys.argv[1]), Path(sys.argv[2])
head = socket.socket()
head.bind(("127.0.0.1", 0))
head.listen()
address = "127.0.0.1:%d" % head.getsockname()[1]
interrupts = Interrupts(
    lambda: marker.write_text("closed KILLED"),
    resume="lrsweep resume tiny --address " + address,
    watch_local_ray=False,
    watch_head=address,
)
with before_forced_exit(lambda: hooked.write_text("night closed")):
    with interrupts.catching():
        time.sleep(1.5)  # the head answers: nothing happens
        assert not marker.exists()
        head.close()  # the head goes away, as when its machine or its GCS dies
        time.sleep(20)
print(json.dumps("not ended"))
"""


def test_a_sweep_whose_cluster_head_stops_answering_closes_its_runs_and_says_how_to_resume(
    tmp_path: Path,
) -> None:
    """A user's cluster sweep whose head died: Ray ended the driver 60 s later (exit 1), every
    run left RUNNING and no resume command said. A real listening socket stands for the head."""
    marker, hooked = tmp_path / "closed", tmp_path / "hooked"
    done = subprocess.run(
        [sys.executable, "-c", LOST_HEAD, str(marker), str(hooked)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert marker.read_text() == "closed KILLED" and hooked.read_text() == "night closed"
    log = " ".join(done.stderr.split())
    assert re.search(
        r"The Ray cluster's head at 127\.0\.0\.1:\d+ has not answered for 1 s \(.*refused\): "
        r"the sweep cannot go on, and its runs are closed as KILLED\. Once the head is back, "
        r"continue it with: lrsweep resume tiny --address 127\.0\.0\.1:\d+",
        log,
    ), log
