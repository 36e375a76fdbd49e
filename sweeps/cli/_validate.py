"""``lrsweep validate``: check a spec (or a nightly suite) and print it resolved, or its errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.syntax import Syntax

from sweeps.cli import app
from sweeps.cli._options import wrong_kind_hint
from sweeps.spec import SpecError, load_spec, load_suite, redact


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
) -> None:
    """Print the fully resolved spec (every default filled in, secrets hidden) and exit 0,
    or list every error, each naming its field, and exit 2."""
    try:
        if suite and overrides:
            raise SpecError("--set cannot be combined with --suite; put overrides in the suite")
        resolved, notes = _load(spec, overrides or [], suite=suite)
    except SpecError as error:
        message = (
            f"Error: {error}{wrong_kind_hint(error, spec, expected='suite' if suite else 'spec')}"
        )
        Console(stderr=True, soft_wrap=True).print(message, markup=False, highlight=False)
        raise typer.Exit(2) from None
    text = yaml.safe_dump(redact(resolved), sort_keys=False, default_flow_style=None)
    console = Console()
    if console.is_terminal:
        console.print(Syntax(text, "yaml", background_color="default"))
    else:
        sys.stdout.write(text)
    for note in notes:  # on stderr: stdout stays the YAML a script may read back
        Console(stderr=True, soft_wrap=True).print(f"Note: {note}", markup=False, highlight=False)


def _load(path: Path, overrides: list[str], *, suite: bool) -> tuple[dict[str, object], list[str]]:
    """The resolved spec (or suite) and its advice (for a suite, every entry's, named)."""
    if not suite:
        loaded = load_spec(path, overrides=overrides)
        return loaded.resolved(), loaded.advice()
    suite_spec = load_suite(path)
    notes = [f"entries.{e.name}: {note}" for e in suite_spec.entries for note in e.spec.advice()]
    return suite_spec.model_dump(mode="json"), notes
