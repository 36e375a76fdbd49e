"""A PostgreSQL connection that Ctrl-C and SIGTERM cut short: every ``psycopg2.connect`` of
lrsweep's own goes through :func:`connect`.

libpq connects in C and retries a wait that a signal interrupts, so Python's signal handlers
(Ctrl-C's ``KeyboardInterrupt``, ``lrsweep server``'s SIGTERM) ran only once the connection
was made or its ``connect_timeout`` (10 s) ran out: Ctrl-C while ``lrsweep server`` connected to
a PostgreSQL that did not answer waited those 10 s before anything stopped.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["connect"]


def connect(**options: Any) -> Any:
    """``psycopg2.connect(**options)``, made in a thread of its own while this one waits, so a
    signal's handler runs at once and what it raises leaves here (the connection is closed
    once made). libpq's own ``connect_timeout`` and errors are kept.

    Raises:
        psycopg2.Error: as ``psycopg2.connect``.
        ValueError: libpq refuses a parameter's value (a NUL in it).
    """
    import psycopg2

    made: list[Any] = []
    failed: list[BaseException] = []
    lock = threading.Lock()
    abandoned = False

    def attempt() -> None:
        try:
            conn = psycopg2.connect(**options)
        except BaseException as error:  # handed to the waiting thread
            failed.append(error)
            return
        with lock:
            if abandoned:
                conn.close()
            else:
                made.append(conn)

    worker = threading.Thread(target=attempt, name="lrsweep-postgres-connect", daemon=True)
    worker.start()
    try:
        worker.join()  # a signal's handler runs here, on POSIX, whatever the worker does
    except BaseException:
        with lock:
            abandoned = True
            for conn in made:
                conn.close()
        raise
    if failed:
        raise failed[0]
    return made[0]
