"""``lrsweep resume``: continue an interrupted sweep (driver killed, Ctrl-C, SIGTERM)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from sweeps._uri import TrackingUriError
from sweeps.cli import app
from sweeps.cli._options import Address, fail, print_note, usable_tracking_uri
from sweeps.cli._run import finish, make_console, stopped_exit
from sweeps.spec import SpecError

_RUN_AGAIN = "or start the sweep again: lrsweep run <your spec file>"
_STORAGE_HINT = (
    " A sweep whose spec set storage.path (or that ran from another folder) is not here: pass "
    "that folder or URI with --storage-path."
)


@app.command("resume")
def resume_command(
    name: Annotated[
        str, typer.Argument(help="The sweep's name (its latest unfinished run) or its folder.")
    ],
    address: Address = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="MLflow store, if not the one the sweep used."),
    ] = None,
    storage_path: Annotated[
        str | None,
        typer.Option(
            "--storage-path",
            help="Ray storage root: the storage.path the sweep ran with, if its spec set one "
            "(default: ./.lrsweep/ray_results).",
        ),
    ] = None,
) -> None:
    """Continue an interrupted sweep where it stopped, then write its report.

    The sweep's Tuner is restored: finished trials stay, unfinished ones continue from their
    checkpoints in their own MLflow runs."""
    from sweeps._interrupts import honour_sigint
    from sweeps.preflight import PreflightError
    from sweeps.run import (
        SweepNotFound,
        SweepNotInStore,
        SweepRunning,
        default_storage,
        resume_sweep,
    )

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("sweeps.progress").setLevel(logging.INFO)  # a line per trial when piped
    honour_sigint()  # a script's `&` job starts with SIGINT ignored
    if tracking_uri:  # else the URI the sweep ran with, checked when it started
        tracking_uri = usable_tracking_uri(tracking_uri)
    try:
        result = resume_sweep(
            name,
            address=address,
            tracking_uri=tracking_uri,
            storage_path=storage_path,
            on_note=print_note,
        )
    except SweepNotFound as error:  # found but running: no "it is elsewhere" hint
        elsewhere = not isinstance(error, SweepRunning | SweepNotInStore)
        elsewhere = elsewhere and storage_path is None and not Path(name).is_dir()
        raise fail(f"{error}{_STORAGE_HINT if elsewhere else ''}") from None
    except (PreflightError, TrackingUriError, OSError) as error:
        raise fail(error) from None
    except SpecError as error:  # the spec it started with no longer holds (a folder gone ...)
        raise fail(
            f"Cannot resume {name!r}: the spec the sweep started with is no longer valid here "
            f"({error}). Fix what it names (resume keeps that spec), {_RUN_AGAIN}."
        ) from None
    except json.JSONDecodeError as error:  # a sweep.json cut short or edited by hand
        where = (
            name
            if Path(name).is_dir()
            else f"{str(storage_path or default_storage()).rstrip('/')}/{name}"
        )
        raise fail(
            f"Cannot resume {name!r}: a sweep.json under {where} is not valid JSON ({error}). "
            f"Move that sweep's folder away or pass the folder of another one, {_RUN_AGAIN}."
        ) from None
    except KeyboardInterrupt as stop:  # outside the trials: runs closed, resume logged
        raise stopped_exit(stop) from None
    finish(make_console(), result)
