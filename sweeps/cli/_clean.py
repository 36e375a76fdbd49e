"""``lrsweep clean``: list the sweeps kept in Ray's storage and delete the old ones."""

from __future__ import annotations

import json
import shlex
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sweeps.cli import app
from sweeps.cli._options import TextOrJson, fail

if TYPE_CHECKING:
    from sweeps._location import Location
    from sweeps.clean import StoredSweep

_KINDS = {
    "resumable": "interrupted, or trials to retry: its checkpoints wait for `lrsweep resume`",
    "finished": "its trials all ended: only Tune's state is left",
    "damaged": "no readable sweep.json: it cannot be resumed",
    "running": "its driver is alive on this machine: never deleted",
}


@app.command("clean")
def clean_command(
    name: Annotated[
        str | None, typer.Argument(help="Only the sweeps of this name (default: every sweep).")
    ] = None,
    older_than: Annotated[
        float,
        typer.Option(
            "--older-than",
            min=0.0,
            help="Delete only sweeps whose folder has not changed for this many days. A sweep "
            "still running writes its folder every epoch.",
        ),
    ] = 7.0,
    storage_path: Annotated[
        str | None,
        typer.Option(
            "--storage-path",
            help="Ray storage root: a spec's storage.path (default: ./.lrsweep/ray_results).",
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Delete them; without it nothing is deleted.")
    ] = False,
    output_format: Annotated[
        TextOrJson, typer.Option("--format", help="text | json (one object: sweeps, deleted).")
    ] = TextOrJson.text,
) -> None:
    """List the sweeps kept in Ray's storage and, with --yes, delete the old ones.

    Each sweep is listed with its size, its age and whether `lrsweep resume` can continue it;
    --yes deletes those unchanged for --older-than days. An interrupted sweep keeps every
    trial's last checkpoints until it is resumed; one never resumed keeps them for good. Their
    MLflow runs, models and reports stay.

    ``--format json`` prints one object: ``storage_path``, ``older_than_days``, ``sweeps`` (each
    with ``name``, ``sweep_id``, ``folder``, ``state``, ``last_change`` (ISO 8601, UTC),
    ``age_days``, ``size_bytes``, ``action`` (delete or keep) and ``reason``), ``command`` (the
    one that deletes the marked sweeps, or null) and ``deleted`` (the folders --yes deleted)."""
    from sweeps import _location as location
    from sweeps._location import default_storage

    root = location.storage_root(storage_path or default_storage())
    sweeps = _stored(root, name)
    as_json = output_format is TextOrJson.json
    if not sweeps and not as_json:
        missing = isinstance(root, Path) and not root.is_dir()  # a typo, or another folder
        typer.echo(
            f"No sweeps under {location.shown(root)}"
            + (
                ": no such folder (sweeps stored elsewhere: pass their storage.path with "
                "--storage-path)."
                if missing
                else "."
            )
        )
        return
    now = time.time()
    old = [s for s in sweeps if s.age_days(now) >= older_than and s.state != "running"]
    listing = _listing(location.shown(root), sweeps, old, older_than, now)
    command = _command(name, storage_path and location.shown(root), older_than) + " --yes"
    if as_json and not (old and yes):
        typer.echo(json.dumps({**listing, "command": command if old else None}, indent=2))
        return
    if not as_json:
        _print_listing(location.shown(root), sweeps, old, older_than, now)
    total = _size(sum(sweep.size_bytes for sweep in old))
    if not old:
        typer.echo(
            f"Nothing to delete: every sweep is running or changed within {older_than:g} days."
        )
        return
    if not yes:
        typer.echo(f"Nothing deleted. To delete the {len(old)} marked ({total}): {command}")
        return
    tagged = _delete(old, now)
    if as_json:
        deleted = [location.shown(sweep.folder) for sweep in old]
        typer.echo(json.dumps({**listing, "deleted": deleted}, indent=2))
        return
    resumable = sum(sweep.state == "resumable" for sweep in old)
    marked = f" (tagged on {tagged} of their sweep runs: sweeps.resumable=false)" if tagged else ""
    typer.echo(
        f"Deleted {len(old)} sweep folder{'s' if len(old) != 1 else ''} ({total}). "
        + (f"{resumable} of them can no longer be resumed{marked}; their" if resumable else "Their")
        + " MLflow runs, models and reports stay."
    )


def _stored(root: Location, name: str | None) -> list[StoredSweep]:
    """The sweeps under ``root`` (called ``name``, when given); exit 2 when it cannot be read or
    holds no sweep of that name."""
    from sweeps import _location as location
    from sweeps.clean import stored_sweeps

    try:
        sweeps = stored_sweeps(root, name)
    except OSError as error:
        raise fail(f"--storage-path {location.shown(root)}: cannot be read ({error})") from None
    except ValueError as error:
        raise fail(str(error)) from None
    if not sweeps and name is not None:
        # the names that hold a sweep: not every folder (one of NAME's own, left by hand)
        try:
            known = sorted({sweep.name for sweep in stored_sweeps(root)})
        except OSError:
            known = location.subfolders(root)
        raise fail(
            f"no sweep called {name!r} under {location.shown(root)}; sweeps there: "
            f"{known or 'none'}. A sweep "
            "whose spec set storage.path is elsewhere: pass it with --storage-path."
        )
    return sweeps


def _print_listing(
    root: str, sweeps: list[StoredSweep], old: list[StoredSweep], older_than: float, now: float
) -> None:
    """The text listing: a line per sweep with its action, in columns as wide as their widest
    value (names and sweep ids vary in length), then what each state means."""
    typer.echo(f"Sweeps under {root}:")
    rows = []
    for sweep in sweeps:
        action = (
            "delete"
            if sweep in old
            else "keep (running)"
            if sweep.state == "running"
            else f"keep (changed within {older_than:g} days)"
        )
        age = _ago(sweep.age_days(now))
        rows.append((sweep.name, sweep.sweep_id, sweep.state, age, _size(sweep.size_bytes), action))
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    for name, sweep_id, state, age, size, action in rows:
        typer.echo(
            f"  {name:<{widths[0]}}  {sweep_id:<{widths[1]}}  {state:<{widths[2]}}  "
            f"{age:>{widths[3]}}  {size:>{widths[4]}}  {action}"
        )
    for state in sorted({sweep.state for sweep in sweeps}):
        typer.echo(f"  ({state}: {_KINDS[state]})")


def _delete(old: list[StoredSweep], now: float) -> int:
    """Delete the ``old`` sweeps' folders and tag the resumable ones' runs not resumable; how
    many were tagged. A warning (stderr, at once: --format json keeps stdout to its JSON) for a
    run that cannot be tagged; exit 1 at a folder that cannot be deleted, naming those deleted
    before it. A folder cut half-way has lost its sweep.json (it goes first), so nothing
    resumes it any more: its run is tagged too."""
    from sweeps import _location as location
    from sweeps.clean import STATE_FILE, read_state, remove_sweep
    from sweeps.spec._redact import redact_text

    tagged = 0
    for index, sweep in enumerate(old):
        # read first: its MLflow run is tagged once its sweep.json is gone (and only then)
        saved = read_state(sweep) if sweep.state == "resumable" else None
        try:
            remove_sweep(sweep)
        except KeyboardInterrupt:  # Ctrl-C cuts it as a failed deletion does: tagged as well
            if sweep.state == "resumable" and location.read_text(sweep.folder, STATE_FILE) is None:
                _mark_removed(sweep, saved, now)
            raise
        except OSError as error:
            if sweep.state == "resumable" and location.read_text(sweep.folder, STATE_FILE) is None:
                _mark_removed(sweep, saved, now)
            done = ", ".join(f"{s.name} {s.sweep_id}" for s in old[:index])
            raise fail(
                f"could not delete {location.shown(sweep.folder)}: {redact_text(str(error))}"
                + (f" (deleted before it: {done})" if done else ""),
                code=1,
            ) from None
        if sweep.state == "resumable":
            tagged += _mark_removed(sweep, saved, now)
    return tagged


def _mark_removed(sweep: StoredSweep, state: dict[str, Any] | None, now: float) -> bool:
    """Tag a deleted resumable sweep's run as no longer resumable: whether it was; else a
    warning on stderr, when its store cannot be reached or refuses (the folder is gone
    either way)."""
    from mlflow.exceptions import MlflowException

    from sweeps._uri import TrackingUriError
    from sweeps.clean import STATE_FILE, mark_removed

    try:
        if state is None:
            raise LookupError(f"its {STATE_FILE} could not be read")
        mark_removed(sweep, state, now)
    except (LookupError, TrackingUriError, MlflowException) as error:
        what = str(error).splitlines()[0] if str(error) else type(error).__name__
        typer.echo(
            f"Warning: {sweep.name} {sweep.sweep_id}: its sweep run could not be tagged "
            f"sweeps.resumable=false ({what}); its report may still suggest `lrsweep resume`.",
            err=True,
        )
        return False
    return True


def _command(name: str | None, storage_path: str | None, older_than: float) -> str:
    """The ``lrsweep clean`` command that marks the same sweeps (``--yes`` deletes them)."""
    command = "lrsweep clean" + (f" {shlex.quote(name)}" if name else "")
    if storage_path:
        command += f" --storage-path {shlex.quote(storage_path)}"
    if older_than != 7.0:
        command += f" --older-than {older_than:g}"
    return command


def _listing(
    root: str,
    sweeps: list[StoredSweep],
    old: list[StoredSweep],
    older_than: float,
    now: float,
) -> dict[str, Any]:
    """What ``--format json`` prints: the sweeps, each with its action, and nothing deleted."""
    from sweeps import _location as location

    rows = []
    for sweep in sweeps:
        action, reason = (
            ("delete", f"unchanged for {older_than:g} days or more")
            if sweep in old
            else ("keep", "running")
            if sweep.state == "running"
            else ("keep", f"changed within {older_than:g} days")
        )
        changed = datetime.fromtimestamp(sweep.last_change, tz=UTC)
        rows.append(
            {
                "name": sweep.name,
                "sweep_id": sweep.sweep_id,
                "folder": location.shown(sweep.folder),
                "state": sweep.state,
                "last_change": changed.isoformat(timespec="seconds"),
                "age_days": round(sweep.age_days(now), 4),
                "size_bytes": sweep.size_bytes,
                "action": action,
                "reason": reason,
            }
        )
    return {
        "storage_path": root,
        "older_than_days": older_than,
        "sweeps": rows,
        "command": None,
        "deleted": [],
    }


def _ago(days: float) -> str:
    """When a folder last changed, ``days`` before now: ``3.0 h ago``, or ``3.0 h from now``
    for a file dated in the future (a node whose clock runs ahead wrote it to shared storage)."""
    shown = _age(abs(days))
    return f"{shown} from now" if days < 0 and shown != "0 min" else f"{shown} ago"


def _age(days: float) -> str:
    """``days`` in the largest unit it reaches *as shown*: 59.6 minutes is ``1.0 h`` (not
    ``60 min``), 23.96 hours ``1.0 days`` (not ``24.0 h``)."""
    minutes = days * 24 * 60
    if round(minutes) < 60:  # round() as the f-string rounds: 59.5 minutes shows 60
        return f"{minutes:.0f} min"
    hours = minutes / 60
    if round(hours, 1) < 24:
        return f"{hours:.1f} h"
    return f"{days:.1f} days"


def _size(count: int) -> str:
    """``count`` bytes in the largest unit they reach *as shown* (powers of 1000): 999,950
    bytes are ``1.0 MB``, not ``1000.0 kB``."""
    if count < 1000:
        return f"{count} B"
    value = count / 1000
    for unit in ("kB", "MB", "GB"):
        if round(value, 1) < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
