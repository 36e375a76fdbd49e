"""The ``lrsweep`` command. Each sub-command lives in its own module and registers on ``app``."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lrsweep",
    help="Is the LR a range test picks as good as a grid or Optuna search finds, and at what cost?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Sub-commands register themselves on import; one line per module.
