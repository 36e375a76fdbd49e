"""``lrsweep validate``: check a spec (or a nightly suite) and print it resolved, or its errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.syntax import Syntax

from sweeps._data_notes import data_notes
from sweeps.cli import app
from sweeps.cli._options import TextOrJson, print_note, wrong_kind_hint
from sweeps.spec import SpecError, SweepSpec, load_spec, load_suite, redact
from sweeps.spec._errors import error_field

if TYPE_CHECKING:  # torch: only for a spec whose data are read
    from trainers.data import ImageSource


@app.command("validate")
def validate_command(
    spec: Annotated[Path, typer.Argument(help="The spec YAML file (or a suite with --suite).")],
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a field, e.g. --set task.epochs=3 --set 'seeds=[0,1]'. Repeatable.",
        ),
    ] = None,
    suite: Annotated[
        bool, typer.Option("--suite", help="SPEC is a nightly suite file (entries + thresholds).")
    ] = False,
    output_format: Annotated[
        TextOrJson,
        typer.Option("--format", help="text (YAML) | json (one object: ok, errors or the plan)."),
    ] = TextOrJson.text,
) -> None:
    """Check a spec: print it resolved and exit 0, or list every error and exit 2.

    The resolved spec has every default filled in and secrets hidden; each error names its
    field. What `lrsweep run` refuses before Ray starts is refused here too: a local image
    folder's unreadable files, a weights file that does not load into the model, bf16 the CPU
    cannot train. What it notes is a `Note:` line on stderr, as `lrsweep run` prints it: a
    setting that cannot work as meant, and what the data's size makes pointless (a validation
    set under 100 images, a batch size that leaves an epoch under 4 steps; not counted for a
    torchvision dataset).

    ``--format json`` prints one object on stdout, exit status unchanged: ``ok``, ``errors``
    (each ``{"field": path or null, "message": ...}``), ``hint`` (or null), and for a valid
    spec ``resolved`` (the resolved spec or suite), ``notes``, ``arms`` (each ``{"entry":
    suite entry or null, "arm", "kind", "trials"}``, as `lrsweep run` plans them) and
    ``trials`` (their sum); null (or []) for an invalid one."""
    as_json = output_format is TextOrJson.json
    try:
        if suite and overrides:
            raise SpecError("--set cannot be combined with --suite; put overrides in the suite")
        resolved, notes, planned = _load(spec, overrides or [], suite=suite)
    except _Refused as error:  # what lrsweep run would refuse before any trial
        if as_json:
            _print_json(errors=[error_field(str(error))])
            raise typer.Exit(2) from None
        Console(stderr=True, soft_wrap=True).print(f"Error: {error}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except SpecError as error:
        hint = wrong_kind_hint(error, spec, expected="suite" if suite else "spec")
        if as_json:
            _print_json(errors=error.fields(), hint=hint.removeprefix("\nHint: ") or None)
            raise typer.Exit(2) from None
        message = f"Error: {error}{hint}"
        Console(stderr=True, soft_wrap=True).print(message, markup=False, highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        _print_json(resolved=redact(resolved), notes=notes, arms=_arms(planned))
        return
    text = yaml.safe_dump(redact(resolved), sort_keys=False, default_flow_style=None)
    console = Console()
    if console.is_terminal:
        console.print(Syntax(text, "yaml", background_color="default"))
    else:
        sys.stdout.write(text)
    for note in notes:  # on stderr: stdout stays the YAML a script may read back
        print_note(note)


def _print_json(
    *,
    errors: Sequence[tuple[str | None, str]] = (),
    hint: str | None = None,
    resolved: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
    arms: Sequence[dict[str, Any]] = (),
) -> None:
    """The ``--format json`` object (see ``validate_command``) on stdout."""
    shown = {
        "ok": not errors,
        "errors": [{"field": field, "message": message} for field, message in errors],
        "hint": hint,
        "resolved": resolved,
        "notes": list(notes),
        "arms": list(arms),
        "trials": sum(arm["trials"] for arm in arms) if not errors else None,
    }
    typer.echo(json.dumps(shown, indent=2))


def _arms(specs: list[tuple[str | None, SweepSpec]]) -> list[dict[str, Any]]:
    """Each arm of each spec with the trials `lrsweep run` plans for it (this imports Ray's
    search spaces, nothing is started)."""
    from sweeps.strategies import plan

    return [
        {"entry": entry, "arm": arm.arm_name, "kind": arm.kind, "trials": arm.n_trials()}
        for entry, spec in specs
        for arm in plan(spec)
    ]


class _Refused(Exception):
    """A valid spec that ``lrsweep run`` refuses at once (its preflight, run here too)."""


def _load(
    path: Path, overrides: list[str], *, suite: bool
) -> tuple[dict[str, object], list[str], list[tuple[str | None, SweepSpec]]]:
    """The resolved spec (or suite), its advice (for a suite, every entry's, named) and the
    sweep specs it holds, each with its suite entry's name (None for a spec)."""
    if not suite:
        loaded = load_spec(path, overrides=overrides)
        _check_accelerator(loaded)
        source = _check_inputs(loaded)
        return loaded.resolved(), _notes(loaded, source), [(None, loaded)]
    suite_spec = load_suite(path)
    notes = []
    for entry in suite_spec.entries:
        _check_accelerator(entry.spec, f"entries.{entry.name}: ")
        source = _check_inputs(entry.spec, f"entries.{entry.name}: ")
        notes += [f"entries.{entry.name}: {note}" for note in _notes(entry.spec, source)]
    specs: list[tuple[str | None, SweepSpec]] = [(e.name, e.spec) for e in suite_spec.entries]
    return suite_spec.model_dump(mode="json"), notes, specs


def _notes(spec: SweepSpec, source: ImageSource | None) -> list[str]:
    """What ``run`` notes, in its order: the spec's advice, then what the data's size makes
    pointless (counted without torch for ``digits`` and ``shapes`` with no options; else from
    the labels of ``source``, the data ``_check_inputs`` opened, not opened again)."""
    return [*spec.advice(), *data_notes(spec, source=source)]


def _check_inputs(spec: SweepSpec, where: str = "") -> ImageSource | None:
    """``run``'s checks of a local sweep's data and weights: every image of a local
    ``image_folder`` decoded once, a weights file loaded into the model, a dataset's options
    tried. A torchvision weights name is looked up, not downloaded, and a torchvision dataset
    is not opened (a cluster's nodes fetch their own; ``run`` fetches both on this machine).
    Returns the dataset as it was opened, None when it was not."""
    dataset, pretrained = spec.task.dataset, spec.task.model.pretrained
    generated = dataset.name in ("digits", "shapes") and bool(dataset.options or dataset.path)
    folder = dataset.name == "image_folder" and dataset.path is not None
    if not (generated or folder or pretrained):
        return None  # nothing to read or try: validate stays quick (no torch, no Ray)
    from sweeps.preflight import PreflightError, check_local_data, check_local_weights

    try:
        source = check_local_data(spec, fetch=False)
        check_local_weights(spec, fetch=False, source=source)
    except PreflightError as error:
        raise _Refused(f"{where}{error}") from None
    return source


def _check_accelerator(spec: SweepSpec, where: str = "") -> None:
    """``run``'s check of bf16 on the CPU (it builds the model, so torch is imported only for
    such a spec: validate stays quick for the others)."""
    if spec.task.accelerator.amp != "bf16" or spec.resources.gpu > 0:
        return
    from sweeps.preflight import PreflightError, check_accelerator

    try:
        check_accelerator(spec)
    except PreflightError as error:
        raise _Refused(f"{where}{error}") from None
