"""``lrsweep lr-find``: suggestions table, plot and curve files; bad input exits 2."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sweeps.cli import app
from trainers import LRFindResult

BASE = ["lr-find", "--dataset", "digits", "--arch", "simple_cnn", "--image-size", "8"]


def test_lr_find_prints_each_rule_and_writes_plot_and_curve(tmp_path):
    # paths past the 80 columns of a pipe: printed whole, one line each, for a script to read
    folder = tmp_path / "a-folder-name-long-enough-to-wrap" / "at-eighty-columns-in-a-pipe"
    folder.mkdir(parents=True)
    out, curve = folder / "lr_find.png", folder / "lr_find.json"
    args = [*BASE, "--num-it", "40", "--suggest", "valley", "--suggest", "minimum"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--json", str(curve)])
    assert result.exit_code == 0, result.output
    saved = LRFindResult.from_json(curve)
    assert list(saved.suggestions) == ["valley", "minimum"]
    for name, lr in saved.suggestions.items():
        assert f"{name}" in result.stdout and f"{lr:.3e}" in result.stdout
    assert f"Plot: {out}" in result.stdout.splitlines()
    assert f"Curve: {curve}" in result.stdout.splitlines()
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_lr_find_runs_with_the_accelerator_options_of_a_sweep(tmp_path):
    # bf16 autocast and channels_last work on a CPU too; the curve stays finite
    curve = tmp_path / "lr_find.json"
    # 16 px: at 8 px simple_cnn's bf16 loss turns NaN within a few steps on the CPU (README)
    args = [*BASE, "--image-size", "16", "--num-it", "20", "--amp", "bf16", "--channels-last"]
    result = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "x.png"), "--json", str(curve)]
    )
    assert result.exit_code == 0, result.output
    saved = LRFindResult.from_json(curve)
    assert len(saved.losses) >= 5
    assert all(math.isfinite(loss) for loss in saved.losses[:5])


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused only without CUDA")
def test_lr_find_refuses_fp16_without_cuda_naming_the_option(tmp_path):
    args = [*BASE, "--amp", "fp16", "--out", str(tmp_path / "x.png")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "--amp" in result.stderr and "needs a CUDA device" in result.stderr.replace("\n", " ")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "digitz"], r"dataset must be one of"),
        (["--arch", "vgg"], r"arch must be one of"),
        (["--suggest", "vally"], r"--suggest: Unknown suggestion rule 'vally'; choose one of"),
        (["--num-it", "1"], r"Error: --num-it must be an integer >= 2, but got 1"),
        (
            ["--num-it", "5"],
            r"Error: --num-it=5 is too few for suggestion rule 'valley': after dropping the "
            r"first --num-it // 10 ",
        ),
        (["--div-factor", "1"], r"Error: --div-factor must be a number > 1, but got 1.0"),
        (["--start-lr", "0"], r"Error: --start-lr must be a finite number > 0, but got 0"),
        (
            ["--start-lr", "1", "--end-lr", "0.1"],
            r"--end-lr must be greater than --start-lr, but got --start-lr=1.0, --end-lr=0.1",
        ),
        (["--out", "/no/such/folder/x.png"], r"--out '/no/such/folder/x.png': the folder"),
        # a folder no one can write in (root included): refused before the test, not after it
        (["--out", "/proc/x.png"], r"--out '/proc/x.png': cannot write in the folder '/proc'"),
        (["--json", "/proc/x.json"], r"--json '/proc/x.json': cannot write in the folder"),
        (["--image-size", "0"], r"--image-size must be a positive integer"),
        (["--batch-size", "0"], r"--batch-size must be a positive integer"),
        (["--amp", "fp8"], r"--amp / --channels-last / --compile: amp must be None, 'bf16'"),
        (
            ["--opt", "rmsprop"],
            r"--opt must be one of \['adamw', 'adam', 'sgd'\], but got 'rmsprop'",
        ),
        (["--wd", "-1"], r"--wd must be a number in \[0, 10\] \(as task\.wd\), but got -1\.0"),
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


def test_a_curve_no_rule_can_read_is_still_plotted_and_saved(tmp_path):
    """A test that diverges at once (start at lr 1) leaves 2 points, too few for ``slide``:
    exit 2 as before, but the curve the test measured is kept (plot and JSON) instead of
    thrown away, and the advice names the command's own options (``--div-factor`` is one)."""
    out, curve = tmp_path / "x.png", tmp_path / "x.json"
    args = [*BASE, "--num-it", "40", "--start-lr", "1", "--end-lr", "1000", "--suggest", "slide"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--json", str(curve)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert "Suggestion rule 'slide' needs at least 16 usable points" in message
    assert "(--num-it)" in message and "a higher --div-factor" in message
    assert f"plotted in '{out}' and saved in '{curve}'" in message
    saved = LRFindResult.from_json(curve)
    assert saved.stopped_early and saved.num_it_run < 16 and saved.suggestions == {}
    assert out.read_bytes()[:4] == b"\x89PNG"


DIGITS_SPEC = Path(__file__).resolve().parents[2] / "sweeps" / "specs" / "digits.yaml"


@pytest.mark.parametrize("fine_tune", [False, True])
def test_lr_find_of_a_spec_runs_the_range_test_its_finder_trials_run(
    tmp_path: Path, fine_tune: bool
) -> None:
    """--spec: the spec's data, model and optimizer, its lr_finder arm's num_it, its first seed,
    and for a fine-tune the frozen model, as sweeps.trial builds and freezes them: a user
    range-testing a sweep's task with --dataset/--arch got a fresh AdamW model's curve."""
    from sweeps import _fitting
    from sweeps.spec import load_spec

    overrides = ["task.image_size=8", "strategies.0.num_it=30", "task.opt=sgd", "seeds=[3]"]
    if fine_tune:
        overrides.append("task.fine_tune={freeze_epochs: 1}")
    curve = tmp_path / "c.json"
    sets = [arg for override in overrides for arg in ("--set", override)]
    result = CliRunner().invoke(
        app,
        [
            "lr-find",
            "--spec",
            str(DIGITS_SPEC),
            *sets,
            "--out",
            str(tmp_path / "c.png"),
            "--json",
            str(curve),
        ],
    )
    assert result.exit_code == 0, result.output
    saved = LRFindResult.from_json(curve)
    assert saved.num_it == 30
    task = load_spec(DIGITS_SPEC, overrides=overrides).task
    learn = _fitting.learner(task, _fitting.dataloaders(task, 3), 3)
    assert learn.opt_name == "sgd"
    if fine_tune:
        learn.freeze()
    expected = learn.lr_find(1e-7, 10.0, 30, suggest=())
    assert saved.raw_losses == expected.raw_losses  # the very curve, bit for bit
    # the arm's rules (the spec's suggest list), not valley alone
    rules = load_spec(DIGITS_SPEC, overrides=overrides).strategies[0].suggest
    assert sorted(saved.suggestions) == sorted(rules) and len(rules) > 1
    assert all(rule in result.stdout for rule in rules)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--spec", str(DIGITS_SPEC), "--arch", "resnet18", "--image-size", "8"],
            r"--spec sets the task, so --arch \(task\.model\.arch\), --image-size "
            r"\(task\.image_size\) cannot be given beside it",
        ),
        (
            ["--spec", str(DIGITS_SPEC), "--opt", "sgd", "--wd", "0"],
            r"--opt \(task\.opt\), --wd \(task\.wd\) cannot be given beside it",
        ),
        (
            ["--spec", str(DIGITS_SPEC), "--set", "task.epochs=0"],
            r"--spec: invalid spec .*task\.epochs: must be at least 1",
        ),
        (
            ["--dataset", "digits", "--arch", "simple_cnn", "--set", "task.epochs=1"],
            r"--set changes a spec: give the spec with --spec",
        ),
        (["--dataset", "digits"], r"give --dataset and --arch .*, or --spec"),
        (  # a suite's errors alone (task: is required, entries: unknown key) did not say so
            ["--spec", str(DIGITS_SPEC.with_name("nightly.yaml"))],
            r"entries: unknown key .* Hint: this looks like a nightly suite, whose entries "
            r"each name a spec: give one of them to --spec \(its spec_path, and its overrides "
            r"as --set\)",
        ),
    ],
)
def test_lr_find_of_a_spec_refuses_what_does_not_fit_it(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["lr-find", *args, "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2, result.output
    assert re.search(message, " ".join(result.stderr.split())), result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="refused only without a GPU")
def test_lr_find_of_a_gpu_spec_without_a_gpu_is_refused_saying_how_to_test_on_the_cpu(
    tmp_path: Path,
) -> None:
    """The test ran on the CPU without a word, a curve of other numbers than the GPU trials'."""
    args = ["--spec", str(DIGITS_SPEC), "--set", "resources.gpu=1", "--num-it", "30"]
    result = CliRunner().invoke(app, ["lr-find", *args, "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2, result.output
    assert re.search(
        r"--spec: its trials train on a GPU \(resources\.gpu: 1\) and this machine has none, .* "
        r"pass --set resources\.gpu=0 to test training on the CPU",
        " ".join(result.stderr.split()),
    )
    assert not (tmp_path / "x.png").exists()


def test_lr_find_takes_the_optimizer_and_weight_decay_a_task_would(tmp_path: Path) -> None:
    """Without --spec the test always ran AdamW with wd 0.01: an SGD sweep's range test could
    not be tried from the command line."""
    from trainers import Learner, build_model, make_dataloaders, seed_everything

    curve = tmp_path / "c.json"
    args = [*BASE, "--num-it", "20", "--opt", "sgd", "--wd", "0", "--json", str(curve)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    dls = make_dataloaders("digits", image_size=8, batch_size=64, seed=0)
    seed_everything(0)
    model = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    learn = Learner(model, dls, seed=0, progress=False, opt="sgd", wd=0.0)
    assert learn.opt_name == "sgd" and learn.wd == 0.0
    expected = learn.lr_find(1e-7, 10.0, 20, suggest=())
    assert LRFindResult.from_json(curve).raw_losses == expected.raw_losses


@pytest.mark.parametrize(
    ("last", "said"),
    [
        (9.0, "Stopped early: the loss diverged at lr 1.000e-02."),
        (math.inf, "Stopped early: the loss diverged at lr 1.000e-02."),  # fastai's test holds
        (math.nan, "Stopped early: the loss turned nan at lr 1.000e-02 without rising first"),
    ],
)
def test_an_early_stop_is_called_a_divergence_only_when_the_loss_rose(
    last: float, said: str
) -> None:
    """A loss that turned NaN without rising past div_factor times its best was printed as
    "the loss diverged", pointing at the rates where the model or loss function is to blame."""
    from sweeps.cli._lr_find import _stop_line

    losses = (2.0, 1.5, last)
    result = LRFindResult((1e-4, 1e-3, 1e-2), losses, losses, stopped_early=True, num_it_run=3)
    assert _stop_line(result).startswith(said)
