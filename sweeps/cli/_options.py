"""Options shared by several sub-commands, declared once, and the checks behind them."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sweeps.spec import SpecError

BAD_INPUT_EXIT = 2


class TextOrJson(StrEnum):
    """``--format`` of the commands that print for a person (text) or a script (json)."""

    text = "text"
    json = "json"


def fail(error: Exception | str, *, code: int = BAD_INPUT_EXIT) -> typer.Exit:
    """Print a user error (no traceback) on stderr and return the exit to raise (status 2)."""
    Console(stderr=True, soft_wrap=True).print(f"Error: {error}", markup=False, highlight=False)
    return typer.Exit(code)


def print_note(note: str) -> None:
    """Print a note on stderr (stdout stays what a script may read): a valid setting that
    cannot work as meant, or what the data's size makes pointless; advice, not an error, the
    same line from ``lrsweep validate`` and ``lrsweep run``."""
    Console(stderr=True, soft_wrap=True).print(f"Note: {note}", markup=False, highlight=False)


def looks_like_suite(error: SpecError) -> bool:
    """True when a file loaded as a sweep spec failed as a nightly suite does (``entries:``)."""
    return any(line.startswith("entries: unknown key") for line in error.errors)


def wrong_kind_hint(error: SpecError, path: Path, *, expected: str) -> str:
    """A line that says what ``path`` seems to be when its errors show the other kind of file:
    a nightly suite given where a sweep spec is expected (``expected="spec"``), or a sweep spec
    where a suite is (``expected="suite"``); else ``""``."""
    shown = shlex.quote(str(path))
    if expected == "spec" and looks_like_suite(error):
        return (
            f"\nHint: this looks like a nightly suite; run it with: lrsweep nightly {shown} "
            f"(check it with: lrsweep validate --suite {shown})"
        )
    spec_keys = ("task: unknown key", "strategies: unknown key")
    if expected == "suite" and any(line.startswith(spec_keys) for line in error.errors):
        return (
            f"\nHint: this looks like a sweep spec, not a suite; run it with: lrsweep run "
            f"{shown} (a suite lists specs under entries:, see sweeps/specs/nightly.yaml)"
        )
    return ""


def usable_tracking_uri(
    option: str | None, spec_uri: str | None = None, *, unreachable_exit: int = BAD_INPUT_EXIT
) -> str:
    """The tracking URI a command will use, refused before anything starts when unusable.

    The URI is ``--tracking-uri``, else the spec's ``tracking.uri``, else ``MLFLOW_TRACKING_URI``,
    else the embedded store (:func:`sweeps.tracking.checked_tracking_uri`). A password, a file
    store or ``sqlite://x.db`` exits 2; a store that does not answer or refuses this client (see
    :func:`sweeps.tracking.check_tracking_server`) exits ``unreachable_exit``.
    Each message names where the URI came from and never shows a password. A relative
    ``sqlite:///x.db`` comes back absolute, so trials in other working directories open it too.
    """
    from sweeps.spec._stores import absolute_sqlite_uri
    from sweeps.tracking import TrackingUriError, check_tracking_server, checked_tracking_uri

    try:
        uri = absolute_sqlite_uri(checked_tracking_uri(option, spec_uri))
    except TrackingUriError as error:
        raise fail(error) from None
    source = "--tracking-uri" if option else "tracking.uri" if spec_uri else "MLFLOW_TRACKING_URI"
    try:
        check_tracking_server(uri, source=source)
    except TrackingUriError as error:
        raise fail(error, code=unreachable_exit) from None
    return uri


TRACKING_URI_HELP = "Default: MLFLOW_TRACKING_URI, else the embedded .lrsweep store."


def tracking_uri_check(
    *, unreachable_exit: int = BAD_INPUT_EXIT
) -> Callable[[typer.Context, str | None], str | None]:
    """The ``--tracking-uri`` callback: the URI checked while the command line is parsed (a
    relative ``sqlite:///x.db`` comes back absolute, as :func:`usable_tracking_uri` gives it).

    ``unreachable_exit`` is the status when the server does not answer: 2 (bad input) for every
    command but ``lrsweep nightly``, which counts it as a failed night (3).
    """

    def check(ctx: typer.Context, value: str | None) -> str | None:
        if ctx.resilient_parsing:
            return value
        uri = usable_tracking_uri(value, unreachable_exit=unreachable_exit)
        return uri if value else value  # not given: the command's own fallbacks still apply

    return check


Address = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster to join: auto, ray://host:10001 (default: local)."),
]
TrackingUri = Annotated[
    str | None,
    typer.Option("--tracking-uri", help=TRACKING_URI_HELP, callback=tracking_uri_check()),
]

# How ``lrsweep best`` picks the best trial; ``lrsweep predict`` picks it the same way.
Experiment = Annotated[str, typer.Argument(help="The sweep's experiment name.")]
BestStrategy = Annotated[
    str | None,
    typer.Option(
        "--strategy",
        help="Only this arm (lr_finder, grid, optuna ..., or its name) or finder rule "
        "(lr_finder:valley, as the report names it).",
    ),
]
BestMetric = Annotated[
    str,
    typer.Option(
        "--metric", help="Rank by best/<metric>: its value at the lowest-valid-loss epoch."
    ),
]
SweepRunId = Annotated[
    str | None,
    typer.Option("--run-id", help="Only this sweep run (default: every sweep of EXPERIMENT)."),
]
