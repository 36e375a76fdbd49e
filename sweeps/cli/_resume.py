"""``lrsweep resume``: continue an interrupted sweep (driver killed, Ctrl-C, SIGTERM)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from sweeps.cli import app
from sweeps.cli._options import Address, fail, usable_tracking_uri
from sweeps.cli._run import INTERRUPTED_EXIT, finish, make_console
from sweeps.preflight import PreflightError
from sweeps.run import SweepNotFound, resume_sweep
from sweeps.tracking import TrackingUriError


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
        typer.Option("--storage-path", help="Ray storage root (default: ./.lrsweep/ray_results)."),
    ] = None,
) -> None:
    """Restore the sweep's Tuner: finished trials stay, unfinished ones continue from their
    checkpoints in their own MLflow runs, then the report is written."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if tracking_uri:  # else the URI the sweep ran with, checked when it started
        usable_tracking_uri(tracking_uri)
    try:
        result = resume_sweep(
            name, address=address, tracking_uri=tracking_uri, storage_path=storage_path
        )
    except (SweepNotFound, PreflightError, TrackingUriError, OSError) as error:
        raise fail(error) from None
    except KeyboardInterrupt:  # before the trials restarted
        raise typer.Exit(INTERRUPTED_EXIT) from None
    finish(make_console(), result)
