"""``python -m sweeps.cli ...``: the ``lrsweep`` command, where its script is not on PATH."""

from sweeps.cli import app

app(prog_name="lrsweep")
