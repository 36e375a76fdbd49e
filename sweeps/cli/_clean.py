"""``lrsweep clean``: list the sweeps kept in Ray's storage and delete the old ones."""

from __future__ import annotations

import shlex
import time
from typing import Annotated

import typer

from sweeps.cli import app
from sweeps.cli._options import fail

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
) -> None:
    """List the sweeps kept in Ray's storage and, with --yes, delete the old ones.

    Each sweep is listed with its size, its age and whether `lrsweep resume` can continue it;
    --yes deletes those unchanged for --older-than days. An interrupted sweep keeps every
    trial's last checkpoints until it is resumed; one never resumed keeps them for good. Their
    MLflow runs, models and reports stay."""
    from sweeps import _location as location
    from sweeps._location import default_storage
    from sweeps.clean import remove_sweep, stored_sweeps

    root = location.storage_root(storage_path or default_storage())
    try:
        sweeps = stored_sweeps(root, name)
    except OSError as error:
        raise fail(f"--storage-path {location.shown(root)}: cannot be read ({error})") from None
    except ValueError as error:
        raise fail(str(error)) from None
    if not sweeps:
        if name is None:
            typer.echo(f"No sweeps under {location.shown(root)}.")
            return
        known = location.subfolders(root)
        raise fail(
            f"no sweep called {name!r} under {location.shown(root)}; sweeps there: "
            f"{known or 'none'}. A sweep "
            "whose spec set storage.path is elsewhere: pass it with --storage-path."
        )
    now = time.time()
    old = [s for s in sweeps if s.age_days(now) >= older_than and s.state != "running"]
    typer.echo(f"Sweeps under {location.shown(root)}:")
    for sweep in sweeps:
        action = (
            "delete"
            if sweep in old
            else "keep (running)"
            if sweep.state == "running"
            else f"keep (changed within {older_than:g} days)"
        )
        typer.echo(
            f"  {sweep.name}  {sweep.sweep_id}  {sweep.state:<9}  "
            f"{_age(sweep.age_days(now))} ago  {_size(sweep.size_bytes):>9}  {action}"
        )
    for state in sorted({sweep.state for sweep in sweeps}):
        typer.echo(f"  ({state}: {_KINDS[state]})")
    total = _size(sum(sweep.size_bytes for sweep in old))
    if not old:
        typer.echo(
            f"Nothing to delete: every sweep is running or changed within {older_than:g} days."
        )
        return
    if not yes:
        command = "lrsweep clean" + (f" {shlex.quote(name)}" if name else "")
        if storage_path:
            command += f" --storage-path {shlex.quote(location.shown(root))}"
        if older_than != 7.0:
            command += f" --older-than {older_than:g}"
        typer.echo(f"Nothing deleted. To delete the {len(old)} marked ({total}): {command} --yes")
        return
    for sweep in old:
        try:
            remove_sweep(sweep)
        except OSError as error:
            raise fail(f"could not delete {sweep.folder}: {error}", code=1) from None
    resumable = sum(sweep.state == "resumable" for sweep in old)
    typer.echo(
        f"Deleted {len(old)} sweep folder{'s' if len(old) != 1 else ''} ({total}). "
        + (f"{resumable} of them can no longer be resumed; their" if resumable else "Their")
        + " MLflow runs, models and reports stay."
    )


def _age(days: float) -> str:
    if days >= 1:
        return f"{days:.1f} days"
    hours = days * 24
    return f"{hours:.1f} hours" if hours >= 1 else f"{hours * 60:.0f} min"


def _size(count: int) -> str:
    if count < 1000:
        return f"{count} B"
    value = count / 1000
    for unit in ("kB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
