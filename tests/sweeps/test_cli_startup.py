"""The ``lrsweep`` command starts light: ``--help``, ``validate``, ``clean``, ``server``, ``ui``
and ``best`` need neither torch nor Ray (``best`` loads MLflow), so they answer in a fraction of
the seconds those imports take; ``run``, ``resume``, ``report``, ``nightly`` and ``lr-find``
load them when they run. Checked in fresh interpreters, by the modules they hold (not by a
timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.cli._lr_find import RULES
from trainers.suggestions import SUGGESTIONS

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "mlflow", "matplotlib", "pandas", "trainers")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cli(*args: str) -> str:
    return (
        "from sweeps.cli import app\n"
        f"try:\n    app({list(args)!r}, prog_name='lrsweep')\n"
        "except SystemExit as stop:\n    assert stop.code in (0, None), stop.code"
    )


def test_importing_the_command_loads_no_torch_ray_or_mlflow() -> None:
    assert _loaded_after("import sweeps.cli") == []


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["run", "--help"],
        ["lr-find", "--help"],
        ["nightly", "--help"],
        ["validate", "sweeps/specs/digits.yaml"],
        ["validate", "sweeps/specs/digits.yaml", "--set", "task.batch_size=512"],  # a data note
        ["validate", "sweeps/specs/shapes_resnet.yaml"],  # its data note: counted without torch
        ["validate", "--suite", "sweeps/specs/nightly.yaml"],
        ["clean", "--storage-path", "/nonexistent/ray_results"],  # took 8-17 s of imports
    ],
    ids=" ".join,
)
def test_help_and_validate_load_no_torch_ray_or_mlflow(args: list[str]) -> None:
    assert _loaded_after(_cli(*args)) == []


def test_lr_find_help_and_the_spec_name_every_suggestion_rule() -> None:
    """The torch-free list the CLI and the spec check against is the trainers' own."""
    assert RULES == tuple(SUGGESTIONS)


def test_each_commands_summary_in_the_command_list_is_one_sentence() -> None:
    """``lrsweep --help`` lists each command by its docstring's first paragraph, keeping its
    line breaks: a summary that runs over lines came out broken mid-sentence in the list."""
    import typer.main

    group = typer.main.get_command(__import__("sweeps.cli", fromlist=["app"]).app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        summary = (command.help or "").strip().split("\n\n")[0]
        assert summary, name
        assert "\n" not in summary, f"{name}: {summary!r}"


def test_python_m_sweeps_cli_is_the_lrsweep_command(tmp_path: Path) -> None:
    """Where the ``lrsweep`` script is not on PATH (a venv not activated, a container's other
    Python), ``python -m sweeps.cli`` is the same command (it had no ``__main__``)."""
    done = subprocess.run(
        [sys.executable, "-m", "sweeps.cli", "validate", str(REPO / "sweeps/specs/digits.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "name: digits-lr" in done.stdout
    usage = subprocess.run(
        [sys.executable, "-m", "sweeps.cli", "nope"], capture_output=True, text=True, timeout=120
    )
    assert usage.returncode == 2 and "Usage: lrsweep" in usage.stderr
