"""The smallest sweep the CLI tests run or refuse (one 1-epoch trial on 8 px digits), and a
fresh interpreter for a test's script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_script(code: str, *args: str, timeout: float = 400) -> Any:
    """Run ``code`` in a fresh interpreter (``sys.argv[1:]`` = ``args``) with the repository
    importable; assert it exits 0, and return the JSON its stdout's last line holds."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def tiny_spec(name: str) -> dict[str, Any]:
    """A spec of one fixed-LR trial that fails the sweep at once (``max_failures: 0``)."""
    return {
        "name": name,
        "task": {"dataset": {"name": "digits"}, "image_size": 8, "epochs": 1, "batch_size": 256},
        "seeds": [0],
        "strategies": [{"kind": "fixed", "lr": 0.01}],
        "failure": {"max_failures": 0},
    }


def invoke(*args: str) -> Any:
    """``lrsweep ARGS`` through typer's runner, in this process."""
    from typer.testing import CliRunner

    from sweeps.cli import app

    return CliRunner().invoke(app, list(args))


def assert_refused(result: Any, *messages: str) -> None:
    """Exit 2 with an ``Error:`` on stderr holding each of ``messages``, and no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    stderr = " ".join(result.stderr.split())
    assert stderr.startswith("Error: "), stderr
    for message in messages:
        assert message in stderr, stderr
