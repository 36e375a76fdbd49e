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
from sweeps.cli import _best as _best  # noqa: E402
from sweeps.cli import _clean as _clean  # noqa: E402
from sweeps.cli import _lr_find  # noqa: E402,F401
from sweeps.cli import _nightly as _nightly  # noqa: E402
from sweeps.cli import _predict as _predict  # noqa: E402
from sweeps.cli import _report as _report  # noqa: E402
from sweeps.cli import _resume as _resume  # noqa: E402
from sweeps.cli import _run as _run  # noqa: E402
from sweeps.cli import _server as _server  # noqa: E402
from sweeps.cli import _sweeps as _sweeps  # noqa: E402
from sweeps.cli import _ui as _ui  # noqa: E402
from sweeps.cli import _validate as _validate  # noqa: E402
