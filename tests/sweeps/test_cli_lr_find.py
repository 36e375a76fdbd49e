"""``lrsweep lr-find``: suggestions table, plot and curve files; bad input exits 2."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from sweeps.cli import app
from trainers import LRFindResult

BASE = ["lr-find", "--dataset", "digits", "--arch", "simple_cnn", "--image-size", "8"]


def test_lr_find_prints_each_rule_and_writes_plot_and_curve(tmp_path):
    out, curve = tmp_path / "lr_find.png", tmp_path / "lr_find.json"
    args = [*BASE, "--num-it", "40", "--suggest", "valley", "--suggest", "minimum"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--json", str(curve)])
    assert result.exit_code == 0, result.output
    saved = LRFindResult.from_json(curve)
    assert list(saved.suggestions) == ["valley", "minimum"]
    for name, lr in saved.suggestions.items():
        assert f"{name}" in result.stdout and f"{lr:.3e}" in result.stdout
    assert f"Plot: {out}" in result.stdout
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "digitz"], r"dataset must be one of"),
        (["--arch", "vgg"], r"arch must be one of"),
        (["--suggest", "vally"], r"Unknown suggestion rule 'vally'; choose one of valley"),
        (["--num-it", "1"], r"num_it must be an integer >= 2"),
        (["--start-lr", "1", "--end-lr", "0.1"], r"end_lr must be greater than start_lr"),
        (["--out", "/no/such/folder/x.png"], r"--out '/no/such/folder/x.png': the folder"),
        (["--image-size", "0"], r"image_size must be a positive integer"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(tmp_path, extra, message):
    args = [*BASE, "--out", str(tmp_path / "x.png"), *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stderr.startswith("Error: ")
    assert re.search(message, result.stderr.replace("\n", " "))
    assert not (tmp_path / "x.png").exists()
