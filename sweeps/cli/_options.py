"""Options shared by several sub-commands, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

Address = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster to join: auto, ray://host:10001 (default: local)."),
]
TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri", help="Default: MLFLOW_TRACKING_URI, else the embedded .lrsweep store."
    ),
]
