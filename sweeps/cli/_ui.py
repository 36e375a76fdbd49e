"""``lrsweep ui``: MLflow's web UI on the configured tracking store."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from sweeps.cli import app
from sweeps.cli._options import fail
from sweeps.cli._server import run_foreground


@app.command("ui")
def ui_command(
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="Store to browse; default: MLFLOW_TRACKING_URI, else the embedded "
            ".lrsweep/mlflow.db.",
        ),
    ] = None,
    artifacts_destination: Annotated[
        str | None,
        typer.Option(
            "--artifacts-destination",
            help="Where the tracking server that logged the runs keeps their artifacts (its "
            "--artifacts-destination: a folder or s3://bucket/prefix); default: artifacts/ "
            "beside a SQLite store; on another database, each run's own location.",
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 5000,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(
            "--allowed-hosts",
            help="Extra Host headers to accept (comma-separated), e.g. mybox.example:5000.",
        ),
    ] = None,
) -> None:
    """Open MLflow's UI on the sweeps' store and print its address (Ctrl-C stops it)."""
    from sweeps.server import (
        ServerConfig,
        ServerConfigError,
        check_port_free,
        experiments_served_elsewhere,
    )
    from sweeps.tracking import (  # MLflow loads only when used
        TrackingUriError,
        check_tracking_server,
        checked_tracking_uri,
        command_uri,
        existing_store_uri,
        redact_uri,
        sqlite_path,
    )

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        uri = checked_tracking_uri(tracking_uri)  # no password, file store or sqlite://x.db
        # A server is not served again: it is shown only once it answers.
        source = _source(tracking_uri)
        check_tracking_server(uri, source=source)
    except TrackingUriError as error:
        raise fail(error) from None
    if uri.startswith(("http://", "https://")):
        typer.echo(f"The tracking store is already a server; open {redact_uri(uri)} in a browser.")
        raise typer.Exit(0)
    if sqlite_path(uri) is not None or uri.startswith(("postgresql", "postgres:")):
        # A SQLite file that is not there holds nothing to browse (outside the folder a sweep
        # ran in, or a typo in --tracking-uri): say so, as `lrsweep report` does, instead of
        # making an empty store there (a busy port is named first). Another program's SQLite
        # file or PostgreSQL database is refused too: MLflow would add its tables to it.
        try:
            if source == "the embedded store":
                check_port_free(host, port)
            existing_store_uri(uri)
        except ServerConfigError as error:
            raise fail(error) from None
        except LookupError as error:
            raise fail(error if source == "the embedded store" else f"{source}: {error}") from None
    artifacts = artifacts_destination or _artifacts_beside(uri)
    if artifacts is None:  # a database: runs logged through a server need that server's folder
        served = experiments_served_elsewhere(uri)
        if served:
            raise fail(_served_elsewhere(source, command_uri(uri), served))
    config = ServerConfig(
        backend_store_uri=uri,
        artifacts_destination=None if artifacts is None else str(artifacts),
        host=host,
        port=port,
        workers=1,
        allowed_hosts=allowed_hosts,
        store_option=source,
        artifacts_option=(
            "--artifacts-destination"
            if artifacts_destination
            else "the artifacts folder beside the store"
        ),
        serve_artifacts=artifacts is not None,
    )
    hint = "Open it in a browser; sweeps are under 'Model training' (MLflow opens on 'GenAI')."
    raise typer.Exit(run_foreground(config, hint=hint))


def _source(tracking_uri: str | None) -> str:
    """Where the store to browse came from, for messages."""
    if tracking_uri:
        return "--tracking-uri"
    return "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the embedded store"


def _artifacts_beside(uri: str) -> Path | None:
    """``artifacts/`` next to a SQLite file (the embedded layout), else None: a database's runs
    keep their artifacts where they logged them, which no folder of the working directory is
    (``.lrsweep/artifacts`` was made and served wherever ``lrsweep ui`` was typed)."""
    from sweeps.tracking import sqlite_path

    path = sqlite_path(uri)
    return path.parent / "artifacts" if path is not None else None


def _served_elsewhere(source: str, shown_uri: str, experiments: list[str]) -> str:
    """Why a database whose runs a tracking server logged is not browsed without its folder."""
    names = ", ".join(repr(name) for name in experiments[:3])
    more = f" and {len(experiments) - 3} more" if len(experiments) > 3 else ""
    return (
        f"{source} {shown_uri}: the runs of {names}{more} were logged through an MLflow server "
        "that keeps their artifacts (mlflow-artifacts:/), and the store does not say where. "
        "Open that server's address in a browser, or give the folder it keeps them in with "
        "--artifacts-destination (the server's own: e.g. /srv/mlflow/artifacts or "
        "s3://BUCKET/PATH)."
    )
