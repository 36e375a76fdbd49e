"""What a sweep leaves in Ray's storage, and deleting what no ``lrsweep resume`` will need.

A finished sweep deletes its Tune checkpoints itself (:func:`sweeps.run.run_sweep`) and keeps
only Tune's state and ``sweep.json`` (kilobytes). An interrupted or failed sweep keeps every
trial's last checkpoints for ``lrsweep resume`` (~190 MB a resnet18 trial), and one that ended
with failed trials a resume can retry keeps theirs; one that is never resumed keeps them for
good. ``lrsweep clean`` lists the sweeps under a storage root and deletes
those last changed before a cutoff. A sweep still running writes its folder every epoch, so the
cutoff also keeps it from being deleted under its trials.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps import _location as location
from sweeps.spec._types import Name

try:
    import fcntl
except ImportError:  # not on Windows: there driver.json alone tells a running sweep
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SWEEP_ID",
    "DriverLockHeld",
    "StoredSweep",
    "driver_gone",
    "driver_lock",
    "driver_record",
    "live_driver",
    "mark_removed",
    "new_sweep_id",
    "parse_state",
    "read_state",
    "remove_sweep",
    "running_driver",
    "stored_sweeps",
]

STATE_FILE = "sweep.json"  # a sweep's state, which `lrsweep resume` reads
TUNE_DIR = "tune"  # Ray Tune's experiment folder (its state and the trials' checkpoints)
DRIVER_FILE = "driver.json"  # the process running the sweep, while it runs
DRIVER_LOCK = "driver.lock"  # locked (flock) by the process running the sweep, while it runs
SWEEP_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")
"""A sweep id, its folder's name: when it started (local time) and 6 random hex digits."""


def new_sweep_id() -> str:
    """A new sweep's id (``20261207-081050-74f982``), which :data:`SWEEP_ID` matches."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class StoredSweep:
    """One sweep's folder under a storage root (``<root>/<name>/<sweep id>``)."""

    name: str
    sweep_id: str
    folder: Path | str
    # "finished", "resumable" (interrupted, failed, or with failed trials to retry), "running"
    # (its driver is alive on this machine) or "damaged" (no usable sweep.json)
    state: str
    last_change: float  # the newest file's modification time (seconds since the epoch)
    size_bytes: int

    def age_days(self, now: float | None = None) -> float:
        return ((time.time() if now is None else now) - self.last_change) / 86400


def stored_sweeps(root: Path | str, name: str | None = None) -> list[StoredSweep]:
    """Every sweep folder under ``root`` (only sweeps called ``name`` when given), oldest sweep
    id first within a name. A folder counts when it holds ``sweep.json``, or when it is named as
    lrsweep names a sweep's folder (:data:`SWEEP_ID`) and holds Tune's ``tune`` folder (a sweep
    whose ``sweep.json`` is gone: a deletion cut half-way); anything else under the root (a
    wrong ``--storage-path``'s own folders, which may hold a ``tune`` of their own) is left
    alone."""
    if name is not None:
        _check_name(name)
    names = [name] if name is not None else location.subfolders(root)
    found = []
    for sweep_name in names:
        sweep_root = location.child(root, sweep_name)
        for sweep_id in location.subfolders(sweep_root):
            folder = location.child(sweep_root, sweep_id)
            text = location.read_text(folder, STATE_FILE)
            if text is None and not (
                SWEEP_ID.fullmatch(sweep_id) and TUNE_DIR in location.subfolders(folder)
            ):
                continue  # not a sweep's folder
            size, newest = _usage(folder)
            running = running_driver(folder) or _lock_held(folder)  # or still starting
            state = "running" if running else _state(text)
            found.append(StoredSweep(sweep_name, sweep_id, folder, state, newest, size))
    return found


def _check_name(name: str) -> None:
    """Refuse what no spec may be called (the spec's own ``Name`` rule): a name with ``/`` or
    ``..`` would reach folders outside the storage root (``clean ../x --yes`` deleted one)."""
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(Name).validate_python(name)
    except ValidationError:
        raise ValueError(
            f"NAME {name!r} is no sweep name: a spec's name is made of letters, digits, _, . and "
            "- (not starting with . or -), and names a folder directly under the storage root; "
            "give the name as the spec writes it, or --storage-path for another root"
        ) from None


def driver_record() -> dict[str, Any]:
    """What :data:`DRIVER_FILE` holds while a sweep runs: this machine, this process and when
    it started (so that another process given the same id later is not taken for it)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _started(os.getpid())}


class DriverLockHeld(RuntimeError):
    """Another process holds the sweep's :data:`DRIVER_LOCK`: it runs or resumes the sweep."""


@contextmanager
def driver_lock(folder: Path | str) -> Iterator[None]:
    """Hold the sweep's :data:`DRIVER_LOCK` (an exclusive ``flock``) while the block runs.

    :data:`DRIVER_FILE` is written only once a driver has checked its store and data, seconds
    after it chose the sweep: two ``lrsweep resume`` started together both found no driver and
    both ran the trials. The lock is taken as the sweep is chosen, atomically, and the kernel
    drops it with its process, however that ends (``kill -9`` included). A URI storage
    (``s3://``) or a file system without ``flock`` takes none: :data:`DRIVER_FILE` alone
    tells a running sweep there.

    Raises:
        DriverLockHeld: at once, when another process holds the lock.
    """
    if not isinstance(folder, Path) or fcntl is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / DRIVER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DriverLockHeld(str(folder)) from None
        except OSError:  # ENOLCK: a network file system without locks; driver.json as before
            pass
        yield
    finally:
        os.close(fd)


def _lock_held(folder: Path | str) -> bool:
    """Whether another process holds the sweep's :data:`DRIVER_LOCK`: a run or resume in its
    first seconds, before it writes :data:`DRIVER_FILE` (a resume's store and data checks).
    Asking takes the lock for an instant, so a resume starting at that very instant is refused
    ("still running") and can be typed again."""
    if not isinstance(folder, Path) or fcntl is None:
        return False
    try:
        fd = os.open(folder / DRIVER_LOCK, os.O_RDWR | os.O_CLOEXEC)
    except OSError:  # none: a sweep from before the lock, or never run here
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a file system without locks
        return False
    finally:
        os.close(fd)  # and the lock, if this took it, with it
    return False


def running_driver(folder: Path | str) -> str | None:
    """``"process N on this machine"`` while the sweep in ``folder`` is being run (or resumed)
    by a live process here, else None: no driver file (the sweep ended, or ran before the file
    existed), a driver killed outright, or one on another machine, which cannot be asked."""
    text = location.read_text(folder, DRIVER_FILE)
    return None if text is None else live_driver(text) or None


def live_driver(record: str) -> str | None:
    """``"process N on this machine"`` when ``record`` (:func:`driver_record` as JSON) names a
    live process here; ``""`` when it names one on this machine that is gone (killed outright:
    nothing runs what it ran); None when it cannot tell (another machine, an unreadable record).
    """
    try:
        fields = json.loads(record)
        host, pid, start = fields["host"], int(fields["pid"]), fields.get("start")
    except (ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return None
    now = _started(pid)  # None: no such process; another start time: another process
    if now is None or now != start:
        return ""
    return f"process {pid} on this machine"


def driver_gone(folder: Path | str) -> bool:
    """Whether the sweep in ``folder`` was left by a driver killed outright: its
    :data:`DRIVER_FILE` names a process on this machine that is gone, and no process holds its
    :data:`DRIVER_LOCK` (a resume of it). False when that cannot be told: no driver file (the
    sweep ended, or its driver died in its first seconds), a driver on another machine."""
    text = location.read_text(folder, DRIVER_FILE)
    return text is not None and live_driver(text) == "" and not _lock_held(folder)


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: clock ticks since boot), or None when there
    is no such process. Elsewhere, ``""`` for any live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]  # field 22, after the command's name
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


def remove_sweep(sweep: StoredSweep) -> None:
    """Delete the sweep's folder, then its name's folder if nothing else is left in it (and it
    is no symbolic link), whether the storage is a path, a ``file://`` URI or a remote one.

    Its ``sweep.json`` goes first: a deletion that fails half-way (``OSError``) leaves a folder
    that ``lrsweep resume`` no longer takes for a sweep (it would restore Tune from half its
    checkpoints) and ``lrsweep clean`` lists as damaged, so a second clean finishes it.
    """
    location.remove_file(sweep.folder, STATE_FILE)
    folder = location.local_path(sweep.folder)  # a file:// storage's too: links as for a path
    if folder is None:
        location.remove_folder(sweep.folder)
    elif folder.is_symlink():
        # a sweep's folder linked elsewhere (listed with its files' size): they go, then the
        # link (rmtree() refuses a link: the clean failed, and every clean after it)
        location.remove_folder(folder.resolve())
        folder.unlink()
    else:
        location.remove_folder(folder)
    # a name's folder linked elsewhere (moved to a bigger disk) stays: rmdir() refuses a link
    # and failed the clean of a sweep already deleted
    location.remove_empty_folder(location.parent(sweep.folder if folder is None else folder))


def mark_removed(sweep: StoredSweep, state: dict[str, Any], when: float) -> None:
    """Tag the MLflow run of a resumable ``sweep`` whose folder was deleted: ``sweeps.resumable``
    ``false`` and ``sweeps.cleaned`` (``when``, UTC), so that its report's notes and the CLI stop
    offering a resume that would answer "no sweep to resume". ``state`` is its ``sweep.json``,
    read before the folder went; the run is looked up in the store the sweep logged to.

    Raises:
        LookupError: that store is gone (an embedded SQLite file deleted or moved).
        sweeps._uri.TrackingUriError: its server does not answer or refuses this client.
        mlflow.exceptions.MlflowException: the store refused the tags (no such run, say).
    """
    from datetime import UTC, datetime

    from sweeps._uri import check_tracking_server, existing_store_uri, sqlite_path
    from sweeps.tracking import TAG_CLEANED, TAG_RESUMABLE, Tracker

    if not state.get("tracking_uri") or not state.get("parent_run_id"):
        raise LookupError(f"{STATE_FILE} names no tracking_uri and parent_run_id")
    try:
        uri = existing_store_uri(str(state["tracking_uri"]))
    except LookupError:  # its own words send the user to --tracking-uri, which clean has not
        path = sqlite_path(str(state["tracking_uri"]))
        raise LookupError(f"no MLflow store at {path}: deleted or moved") from None
    where = location.shown(location.child(sweep.folder, STATE_FILE))
    check_tracking_server(uri, source=f"the tracking URI in {where}")
    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M UTC")
    Tracker(uri).set_tags(str(state["parent_run_id"]), {TAG_RESUMABLE: "false", TAG_CLEANED: stamp})


def read_state(sweep: StoredSweep) -> dict[str, Any] | None:
    """The sweep's ``sweep.json`` as :func:`parse_state` reads it (None when it has none)."""
    text = location.read_text(sweep.folder, STATE_FILE)
    return None if text is None else parse_state(text)


def parse_state(text: str) -> dict[str, Any] | None:
    """A ``sweep.json``'s state, or None when it is no JSON object with ``finished`` (a file
    cut short or edited: the sweep is damaged)."""
    try:
        state = json.loads(text)
    except ValueError:
        return None
    return state if isinstance(state, dict) and "finished" in state else None


def _state(text: str | None) -> str:
    state = None if text is None else parse_state(text)
    if state is None:
        return "damaged"
    return "finished" if state["finished"] else "resumable"


def _usage(folder: Path | str) -> tuple[int, float]:
    """The bytes of every file under ``folder`` and the newest modification time among them
    (the folder's own when it holds no file)."""
    local = location.local_path(folder)
    if local is not None:
        size, newest = 0, local.stat().st_mtime
        for parent, _, files in os.walk(local):
            for file in files:
                try:
                    info = os.stat(os.path.join(parent, file))
                except FileNotFoundError:  # a sweep still writing replaced it
                    continue
                size += info.st_size
                newest = max(newest, info.st_mtime)
        return size, newest
    import pyarrow.fs

    fs, path = location.filesystem(str(folder))
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
    stored = [info for info in infos if info.type == pyarrow.fs.FileType.File]
    times = [info.mtime.timestamp() for info in stored if info.mtime is not None]
    return sum(info.size or 0 for info in stored), max(times, default=0.0)
