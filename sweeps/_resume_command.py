"""The ``lrsweep resume`` command that continues a sweep, written in one place: the one a stopped
sweep logs, and the one a report's note gives, read back from the tags the sweep run carries
(:data:`~sweeps._tags.TAG_STORAGE_PATH`, :data:`~sweeps._tags.TAG_ADDRESS`)."""

from __future__ import annotations

import shlex
from pathlib import Path

from sweeps import _location as location
from sweeps._location import Location, default_storage
from sweeps._tags import TAG_ADDRESS, TAG_STORAGE_PATH
from sweeps._uri import command_uri, resolve_tracking_uri

__all__ = [
    "LOCAL_ADDRESS",
    "left_running_note",
    "resume_command",
    "resume_tags",
    "storage_root_of",
]

LOCAL_ADDRESS = "local"
"""The address tag of a sweep that ran on a Ray of its own (no ``--address``)."""


def storage_root_of(sweep_dir: Location) -> Location:
    """Ray's storage root of the sweep folder ``<root>/<name>/<sweep id>`` (a local one
    absolute): what ``lrsweep resume --storage-path`` takes."""
    root = location.parent(sweep_dir, 2)
    return root.resolve() if isinstance(root, Path) else root


def resume_tags(sweep_dir: Location, address: str | None) -> dict[str, str]:
    """The tags a sweep run carries so that its report can give the exact resume command."""
    return {
        TAG_STORAGE_PATH: location.shown(storage_root_of(sweep_dir)),
        TAG_ADDRESS: address or LOCAL_ADDRESS,
    }


def resume_command(
    name: str,
    root: Location | None,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """``lrsweep resume NAME``, with each option the sweep needs and only those.

    Args:
        name: The sweep's (spec's) name.
        root: Ray's storage root of the sweep; ``--storage-path`` unless it is the default one
            of the working directory (else that command would look for another sweep). None:
            not known, no option.
        address: The cluster it ran on; ``--address`` unless None or ``local`` (else the resume
            would start a Ray of its own on the machine it is typed on).
        tracking_uri: The store the command is read from (a report's); ``--tracking-uri``
            unless it is the one a command run here would use by default. None: no option
            (``lrsweep resume`` logs to the store the sweep ran with).

    Example:
        >>> resume_command("digits lr", "s3://bucket/ray", address="auto")
        "lrsweep resume 'digits lr' --storage-path s3://bucket/ray --address auto"
    """
    command = f"lrsweep resume {shlex.quote(name)}"
    if root is not None and root != default_storage():
        command += f" --storage-path {shlex.quote(location.shown(root))}"
    if address and address != LOCAL_ADDRESS:
        command += f" --address {shlex.quote(address)}"
    if tracking_uri and tracking_uri != resolve_tracking_uri():
        command += f" --tracking-uri {shlex.quote(command_uri(tracking_uri))}"
    return command


def left_running_note(store: str, resume: str | None) -> str:
    """What a stopped sweep says when MLflow at ``store`` (a URI without credentials) could not
    be reached to close its runs, in one sentence: they still show RUNNING, and ``resume`` (the
    sweep's :func:`resume_command`) closes them once MLflow answers again (None: a sweep that
    wrote no state yet, which no resume continues).

    Example:
        >>> left_running_note("http://mlflow:5000", "lrsweep resume x")[:60]
        'The tracking server at http://mlflow:5000 could not be reach'
    """
    where = "tracking server at" if store.startswith(("http://", "https://")) else "tracking store"
    said = f"The {where} {store} could not be reached, so the sweep's runs could not be closed"
    if resume is None:
        return f"{said} (they still show RUNNING)."
    return (
        f"{said} (they still show RUNNING). Once it answers again, continue the sweep with: "
        f"{resume} (it closes them as it ends; Ctrl-C on it closes them as KILLED)"
    )
