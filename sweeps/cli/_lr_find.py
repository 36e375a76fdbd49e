"""``lrsweep lr-find``: the LR range test alone, its suggestions and its plot."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from sweeps.cli import app
from sweeps.cli._lr_find_files import checked_outputs, kept, save
from sweeps.cli._options import looks_like_suite
from sweeps.spec import SUGGESTION_RULES as RULES  # names for --help without torch (tested)

if TYPE_CHECKING:  # torch and matplotlib load when the command runs, not for --help
    from trainers import Learner, LRFindResult

_OPTIONS = ("dataset", "arch", "seed")
_COMPOUND = ("image_size", "batch_size", "num_it", "start_lr", "end_lr", "div_factor")
_NAMED = re.compile(
    rf"(?<![-\w.])(?:({'|'.join(_COMPOUND)})(?!\w)|({'|'.join(_OPTIONS)})(?= must|=|,))"
)


def _as_options(message: str) -> str:
    """The trainers' messages name Python parameters (``num_it must ...``, ``the first
    num_it // 10``); say ``--num-it``. Plain words (``seed``) only where they name the argument
    (``seed must``, ``seed=``), not in prose."""
    return _NAMED.sub(lambda m: "--" + (m.group(1) or m.group(2)).replace("_", "-"), message)


def _fail(error: Exception) -> typer.Exit:
    """Print a user error (no traceback) and return the exit to raise (status 2)."""
    text = f"Error: {_as_options(str(error))}"
    Console(stderr=True, soft_wrap=True).print(text, markup=False, highlight=False)
    return typer.Exit(2)


def _print_result(result: LRFindResult, out: Path, json_out: Path | None) -> None:
    console = Console()
    table = Table(title=f"LR range test: {result.num_it_run} iterations")
    table.add_column("rule")
    table.add_column("suggested lr (top layer group)", justify="right")
    for name, lr in result.suggestions.items():
        table.add_row(name, f"{lr:.3e}")
    console.print(table)
    if result.stopped_early:
        console.print(_stop_line(result))
    console.print(f"Plot: {out}", markup=False, highlight=False, soft_wrap=True)
    if json_out is not None:
        console.print(f"Curve: {json_out}", markup=False, highlight=False, soft_wrap=True)


def _stop_line(result: LRFindResult) -> str:
    """Why the test stopped early: a divergence, or a loss that turned NaN (or -inf) without
    rising first, which no learning rate explains (it was called a divergence)."""
    last = result.losses[-1]
    if math.isnan(last) or last == -math.inf:
        return (
            f"Stopped early: the loss turned {last} at lr {result.lrs[-1]:.3e} without rising "
            "first (no divergence): if that rate is low, check the model's output and the loss "
            "function on a training batch."
        )
    return f"Stopped early: the loss diverged at lr {result.lrs[-1]:.3e}."


_TASK_OPTIONS = {
    "dataset": "task.dataset.name",
    "arch": "task.model.arch",
    "image_size": "task.image_size",
    "batch_size": "task.batch_size",
    "path": "task.dataset.path",
    "amp": "task.accelerator.amp",
    "channels_last": "task.accelerator.channels_last",
    "compile_model": "task.accelerator.compile",
    "opt": "task.opt",
    "wd": "task.wd",
}
"""The options a spec's task replaces, and the field to --set instead."""

_IMAGE_SIZE = 32  # --image-size's default, without --spec
_BATCH_SIZE = 64  # --batch-size's


@dataclass(frozen=True)
class _Options:
    """The task options as given (None, False: not given), in :data:`_TASK_OPTIONS`' order."""

    dataset: str | None
    arch: str | None
    image_size: int | None
    batch_size: int | None
    path: Path | None
    amp: str | None
    channels_last: bool
    compile_model: bool
    opt: str | None
    wd: float | None


@dataclass
class _Test:
    """The range test's settings: the spec's lr_finder arm's, the command line's, or fastai's."""

    num_it: int = 100
    start_lr: float = 1e-7
    end_lr: float = 10.0
    suggest: tuple[str, ...] = ("valley",)


def _from_spec(
    spec_path: Path, overrides: list[str], seed: int | None, given: Mapping[str, object]
) -> tuple[Learner, _Test, int]:
    """The Learner a sweep's ``lr_finder`` trial of ``seed`` runs its range test on (the spec's
    data, model, pretrained weights, optimizer, accelerator and threads; frozen for a
    fine-tune), the test settings of the spec's first ``lr_finder`` arm, and the seed.

    Raises:
        ValueError: a task option given beside --spec (naming the field to --set instead), an
            invalid spec (its errors, as ``lrsweep validate`` lists them), or a spec whose
            trials train on a GPU on a machine without one.
    """
    import torch

    from sweeps import _fitting
    from sweeps.spec import SpecError, load_spec

    clashing = [name for name, value in given.items() if value is not None and value is not False]
    if clashing:
        fields = ", ".join(
            f"--{name.removesuffix('_model').replace('_', '-')} ({_TASK_OPTIONS[name]})"
            for name in clashing
        )
        raise ValueError(
            f"--spec sets the task, so {fields} cannot be given beside it: change the spec, "
            "or pass --set FIELD=VALUE."
        )
    try:
        spec = load_spec(spec_path, overrides=overrides)
    except SpecError as error:
        hint = (
            "\nHint: this looks like a nightly suite, whose entries each name a spec: give one "
            "of them to --spec (its spec_path, and its overrides as --set)."
            if looks_like_suite(error)
            else ""
        )
        raise ValueError(f"--spec: {error}{hint}") from None
    gpu = spec.resources.gpu
    if gpu > 0 and not torch.cuda.is_available():
        raise ValueError(
            f"--spec: its trials train on a GPU (resources.gpu: {gpu:g}) and this machine has "
            "none, so the curve would not be theirs: run lr-find where they run, or pass "
            "--set resources.gpu=0 to test training on the CPU."
        )
    test = _Test()
    arm = next((a for a in spec.strategies if a.kind == "lr_finder"), None)
    if arm is not None:
        test = _Test(arm.num_it, arm.start_lr, arm.end_lr, tuple(arm.suggest))
    chosen = spec.seeds[0] if seed is None else seed
    torch.set_num_threads(max(1, int(spec.resources.cpu)))  # as a trial: the same curve
    task = spec.task
    dls = _fitting.dataloaders(task, chosen)
    # as a trial: Ray shows a trial of resources.gpu: 0 no GPU, though this machine may have one
    learn = _fitting.learner(task, dls, chosen, device=None if gpu > 0 else "cpu")
    _fitting.at_stage(learn, task, dls)  # as a trial: on the first epochs' image size
    if task.fine_tune is not None:
        learn.freeze()  # as a trial: a transfer task's range test runs on the frozen model
    return learn, test, chosen


def _check_what_to_test(
    spec_path: Path | None, overrides: list[str] | None, *, dataset: str | None, arch: str | None
) -> None:
    """Raise ValueError unless the command names a spec, or --dataset and --arch, to test."""
    if spec_path is None and overrides:
        raise ValueError("--set changes a spec: give the spec with --spec.")
    if spec_path is None and (dataset is None or arch is None):
        raise ValueError(
            "give --dataset and --arch (the data and model to test), or --spec with a "
            "sweep spec whose task to test."
        )


def _checked_test(
    test: _Test,
    num_it: int | None,
    start_lr: float | None,
    end_lr: float | None,
    suggest: list[str] | None,
    *,
    div_factor: float,
) -> _Test:
    """``test`` with the settings given here instead, checked before any data is read."""
    from trainers.lr_finder import check_lr_find_args

    test = _Test(
        test.num_it if num_it is None else num_it,
        test.start_lr if start_lr is None else start_lr,
        test.end_lr if end_lr is None else end_lr,
        tuple(suggest) if suggest else test.suggest,
    )
    try:
        check_lr_find_args(
            test.start_lr, test.end_lr, test.num_it, div_factor, suggest=test.suggest
        )
    except ValueError as error:
        if str(error).startswith("Unknown suggestion rule"):
            raise ValueError(f"--suggest: {error}") from None
        raise
    return test


def _check_options(options: _Options) -> None:
    """Raise ValueError for a task option a task would refuse, before any data is read."""
    from trainers._training import OPTIMIZERS

    if options.batch_size == 1:  # as task.batch_size: a batch of one fails its first step
        raise ValueError(
            "--batch-size must be at least 2: every model's head has BatchNorm, which "
            "cannot train on one image a batch, but got 1"
        )
    opt, wd = options.opt, options.wd
    if opt is not None and opt not in OPTIMIZERS:
        raise ValueError(f"--opt must be one of {list(OPTIMIZERS)}, but got {opt!r}.")
    if wd is not None and not (math.isfinite(wd) and 0 <= wd <= 10):
        raise ValueError(f"--wd must be a number in [0, 10] (as task.wd), but got {wd}.")
    if options.dataset == "image_folder" and options.path is None:
        raise ValueError("--dataset image_folder needs --path, the folder holding its images.")


def _from_options(options: _Options, seed: int | None) -> Learner:
    """The fresh Learner of --dataset and --arch, with the task options (or their defaults).

    Raises:
        ValueError: an option a task would refuse (:func:`_check_options`), data that cannot be
            loaded, or accelerator options the Learner refuses.
    """
    from trainers import build_model, make_dataloaders, seed_everything
    from trainers.learner import Learner

    image_size = _IMAGE_SIZE if options.image_size is None else options.image_size
    batch_size = _BATCH_SIZE if options.batch_size is None else options.batch_size
    seed = 0 if seed is None else seed
    dataset, arch, path = options.dataset, options.arch, options.path
    assert dataset is not None and arch is not None  # checked first (_check_what_to_test)
    _check_options(options)
    try:
        dls = make_dataloaders(
            dataset, image_size=image_size, batch_size=batch_size, seed=seed, path=path
        )
    except RuntimeError as error:  # a torchvision set neither under --path nor downloadable
        raise ValueError(f"--dataset {dataset} (--path): {error}") from None
    seed_everything(seed)
    model = build_model(arch, dls.n_classes, in_channels=dls.in_channels)
    try:
        return Learner(
            model,
            dls,
            seed=seed,
            progress=False,
            opt=options.opt or "adamw",
            wd=0.01 if options.wd is None else options.wd,
            amp=options.amp,
            channels_last=options.channels_last,
            compile=options.compile_model,
        )
    except ValueError as error:  # the accelerator options are the Learner's only input
        raise ValueError(f"--amp / --channels-last / --compile: {error}") from None


@app.command("lr-find")
def lr_find_command(
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="digits, shapes, image_folder, ...")
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="simple_cnn, resnet18 or resnet34.")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", help="Image side in pixels (default 32).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Images per batch (default 64).")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help="Seeds data split, init and order (default 0; with --spec its first)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to save the plot.")] = Path(
        "lr_find.png"
    ),
    num_it: Annotated[
        int | None, typer.Option("--num-it", help="Iterations of the test (default 100).")
    ] = None,
    start_lr: Annotated[
        float | None, typer.Option("--start-lr", help="First learning rate (default 1e-7).")
    ] = None,
    end_lr: Annotated[
        float | None, typer.Option("--end-lr", help="Last learning rate (default 10).")
    ] = None,
    div_factor: Annotated[
        float,
        typer.Option("--div-factor", help="Stop once the smoothed loss passes this x its best."),
    ] = 4.0,
    suggest: Annotated[
        list[str] | None,
        typer.Option("--suggest", help=f"Rule, repeatable: {', '.join(RULES)}."),
    ] = None,
    path: Annotated[
        Path | None, typer.Option("--path", help="Data folder (image_folder, torchvision).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also save the curve as JSON here.")
    ] = None,
    amp: Annotated[
        str | None,
        typer.Option("--amp", help="Mixed precision: bf16 (CPU, Ampere+ GPUs) or fp16 (CUDA)."),
    ] = None,
    channels_last: Annotated[
        bool, typer.Option("--channels-last", help="NHWC memory format (faster on GPUs).")
    ] = False,
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (slow first steps).")
    ] = False,
    opt: Annotated[
        str | None,
        typer.Option("--opt", help="Optimizer: adamw (default), adam or sgd, as task.opt."),
    ] = None,
    wd: Annotated[
        float | None,
        typer.Option("--wd", help="Weight decay (default 0.01), as task.wd."),
    ] = None,
    spec_path: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            help="Test a sweep spec's task as its lr_finder trials do (its data, model, weights, "
            "optimizer, accelerator; frozen for a fine-tune), instead of --dataset/--arch.",
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="With --spec: override a field, e.g. --set task.image_size=16."),
    ] = None,
) -> None:
    """Run the LR range test on a fresh model and print what each rule suggests.

    --amp, --channels-last, --compile: test as a sweep's task.accelerator trains. --spec: the
    very range test a sweep's lr_finder trial runs (num_it, start_lr, end_lr and the suggestion
    rules from its first lr_finder arm unless given here).
    """
    from trainers.suggestions import CurveTooShort  # torch loads before logging is set

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        _check_what_to_test(spec_path, overrides, dataset=dataset, arch=arch)
        options = _Options(
            dataset, arch, image_size, batch_size, path, amp, channels_last, compile_model, opt, wd
        )
        out, json_out = checked_outputs(out, json_out)
        test = _Test()
        if spec_path is not None:
            learn, test, seed = _from_spec(spec_path, overrides or [], seed, asdict(options))
        test = _checked_test(test, num_it, start_lr, end_lr, suggest, div_factor=div_factor)
        if spec_path is None:
            learn = _from_options(options, seed)
        try:
            result = learn.lr_find(
                test.start_lr, test.end_lr, test.num_it, div_factor=div_factor, suggest=test.suggest
            )
        except CurveTooShort as error:  # the curve is kept: it shows why, and answers other rules
            raise ValueError(f"{error}{kept(error.curve, out, json_out)}") from None
        except ValueError as error:  # bf16 on the CPU refuses images too small (the first step)
            if amp is None:  # always so with --spec, which refuses --amp beside it
                raise
            size = _IMAGE_SIZE if image_size is None else image_size
            raise ValueError(f"--amp {amp} with --image-size {size}: {error}") from None
        save(result, out, json_out)
    except (ValueError, OSError) as error:  # OSError: a file that cannot be read or written
        raise _fail(error) from None
    _print_result(result, out, json_out)
