"""``lrsweep server``: a team MLflow server (PostgreSQL, served artifacts, optional basic auth)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Annotated

import typer

from sweeps.cli import app

if TYPE_CHECKING:
    from sweeps.server import ServerConfig, ServerLaunch

ALLOWED_HOSTS_ENV = "MLFLOW_SERVER_ALLOWED_HOSTS"  # MLflow's own, read by `mlflow server`


@app.command("server")
def server_command(
    backend_store_uri: Annotated[
        str | None,
        typer.Option(
            "--backend-store-uri",
            help="postgresql://user@host:5432/mlflow (created if missing) or sqlite:///path; "
            "default: the embedded .lrsweep/mlflow.db. Keep passwords in PGPASSWORD or ~/.pgpass.",
        ),
    ] = None,
    artifacts_destination: Annotated[
        str | None,
        typer.Option(
            "--artifacts-destination",
            help="Folder or s3://bucket/prefix the server stores and serves artifacts from; "
            "default: .lrsweep/artifacts.",
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to bind (0.0.0.0: all).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 5000,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth",
            help="MLflow basic auth; admin from MLFLOW_AUTH_ADMIN_USERNAME (default admin) and "
            "MLFLOW_AUTH_ADMIN_PASSWORD (required, 12+ characters, not MLflow's stock default).",
        ),
    ] = False,
    auth_db_uri: Annotated[
        str | None,
        typer.Option(
            "--auth-db-uri",
            help="Where basic auth keeps users; default: SQLite in an auth/ folder beside the "
            "artifacts folder.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Server worker processes.")] = 4,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(
            "--allowed-hosts",
            help="Extra Host headers to accept (comma-separated), e.g. mlflow.team.example:5000.",
        ),
    ] = None,
) -> None:
    """Start MLflow's tracking server for a team and keep it in the foreground."""
    from sweeps.server import ServerConfig  # MLflow loads only when used

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = ServerConfig(
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        host=host,
        port=port,
        auth=auth,
        auth_db_uri=auth_db_uri,
        workers=workers,
        allowed_hosts=allowed_hosts,
    )
    raise typer.Exit(run_foreground(config))


def run_foreground(config: ServerConfig, *, hint: str | None = None) -> int:
    """Serve ``config`` until stopped, printing the address (and ``hint``); 2 for a bad setup."""
    from sweeps.server import (
        ServerConfigError,
        ServerStartError,
        StoreUnreachableError,
        is_loopback,
        serve,
    )

    def warn_exposed() -> None:  # once the host is known to be this machine's and usable
        if is_loopback(config.host):
            return
        where = "every interface" if config.host in ("0.0.0.0", "::", "") else config.host
        exposed = (
            "put TLS in front (basic auth sends passwords with every request)."
            if config.auth
            else f"with no authentication, anyone who reaches port {config.port} can read, "
            "change and delete every run and artifact. For a shared server use "
            "`lrsweep server --auth`; for yourself, leave out --host (127.0.0.1)."
        )
        typer.echo(f"Warning: listening on {where}, not only this machine: {exposed}", err=True)
        if not (config.allowed_hosts or os.environ.get(ALLOWED_HOSTS_ENV)):
            typer.echo(
                "Note: MLflow answers 403 (Invalid Host header) to a browser or client that "
                "reaches it by a name or public address; only localhost and private addresses "
                "(10.*, 172.16-31.*, 192.168.*) pass. Add --allowed-hosts name:port for others.",
                err=True,
            )

    def announce(launch: ServerLaunch) -> None:
        typer.echo(f"MLflow is serving at {launch.url}")
        typer.echo(f"  backend store: {launch.backend_display}")
        typer.echo(f"  artifacts:     {launch.artifacts_destination}")
        if launch.auth_config_path is not None:
            typer.echo("  basic auth:    on (clients set MLFLOW_TRACKING_USERNAME/PASSWORD)")
        typer.echo(hint or f"Point sweeps at it with MLFLOW_TRACKING_URI={launch.url}.")
        typer.echo("Ctrl-C stops it.")

    try:
        return serve(config, on_starting=warn_exposed, on_ready=announce)
    except StoreUnreachableError as exc:  # the database may come up: 1, which systemd retries
        typer.echo(f"Error: {exc}", err=True)
        return 1
    except ServerConfigError as exc:
        typer.echo(f"Error: {exc}", err=True)
        return 2
    except ServerStartError as exc:
        typer.echo(f"Error: {exc} See its output above.", err=True)
        return 1
