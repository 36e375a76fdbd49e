"""The bad input catalogue (issue 8): every malformed spec, data folder or command line ends in a
clear message naming the field or file, exit code 2, no traceback, and nothing started: no MLflow
run and no Ray trial.

Spec rows run through ``lrsweep validate`` and ``lrsweep run`` in-process (typer's CliRunner) in a
temporary working directory whose MLflow store and Ray storage are checked afterwards; a handful
of rows run the real ``lrsweep`` executable to prove the exit code and the absence of a traceback
end to end.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.tracking import Tracker
from trainers import make_dataloaders

_SCRIPT = Path(sys.executable).with_name("lrsweep")
LRSWEEP = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "from sweeps.cli import app; app(prog_name='lrsweep')"]
)
COMMANDS = {command.name for command in app.registered_commands}

BASE: dict[str, Any] = {
    "name": "bad-input",
    "task": {"dataset": {"name": "digits"}, "image_size": 8, "epochs": 1},
    "seeds": [0],
    "strategies": [{"kind": "grid", "lr": {"min": 1.0e-3, "max": 1.0e-1, "points": 2}}],
}


# --- the harness ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Env:
    """A working directory with its own MLflow store; ``{tmp}`` in a row stands for ``root``."""

    root: Path

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def fill(self, text: str) -> str:
        return text.replace("{tmp}", str(self.root))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return Env(tmp_path)


def _mlflow_runs(env: Env) -> int:
    """Runs in the working directory's stores (the env's and the embedded default)."""
    count = 0
    for db in (env.root / "mlflow.db", env.root / ".lrsweep" / "mlflow.db"):
        if db.exists():
            with sqlite3.connect(db) as conn:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
                if "runs" in tables:
                    count += conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    return count


# Earlier test modules share one Ray session; end it, so these rows can prove none starts.
pytestmark = pytest.mark.usefixtures("no_ray_in_module")  # tests/conftest.py


def _ray_started() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def assert_refused(result: Any, env: Env, *messages: str) -> None:
    """Exit code 2, every message on stderr, no traceback, no MLflow run, no Ray trial."""
    output = result.output
    assert result.exit_code == 2, output
    assert result.exception is None or isinstance(result.exception, SystemExit), output
    for message in messages:
        assert env.fill(message) in result.stderr, result.stderr
    assert "Traceback" not in output
    assert _mlflow_runs(env) == 0
    assert not list(env.root.rglob("ray_results")), "a Ray results folder was created"
    assert not list(env.root.rglob("sweep.json")), "a sweep state file was written"
    assert not _ray_started()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def needs(command: str) -> None:
    if command not in COMMANDS:
        pytest.fail(f"`lrsweep {command}` does not exist yet (commands: {sorted(COMMANDS)})")


# --- specs ---------------------------------------------------------------------------------------

DROP = object()


def spec(*changes: tuple[str, Any]) -> str:
    """BASE as YAML with ``("task.epochs", 0)``-style changes (``DROP`` removes the key)."""
    data = copy.deepcopy(BASE)
    for path, value in changes:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        key: Any = int(last) if isinstance(node, list) else last
        if value is DROP:
            del node[key]
        else:
            node[key] = value
    return yaml.safe_dump(data, sort_keys=False)


def _billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SpecRow:
    """One malformed spec: the file's content (``None``: no file; ``b""``: bytes), the path given
    on the command line, ``--set`` overrides and the messages expected on stderr."""

    content: str | bytes | None
    messages: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    path: str = "{tmp}/spec.yaml"
    setup: Callable[[Path], None] | None = field(default=None, compare=False)


SPEC_ROWS: dict[str, SpecRow] = {
    # wrong types
    "epochs-not-a-number": SpecRow(
        spec(("task.epochs", "three")), ("task.epochs: must be a whole number, but got 'three'",)
    ),
    "epochs-a-float": SpecRow(
        spec(("task.epochs", 2.5)), ("task.epochs: must be a whole number, but got 2.5",)
    ),
    "lr-a-boolean": SpecRow(
        spec(("strategies.0.lr.min", True)), ("strategies.0.lr.min: must be a number",)
    ),
    "seeds-a-string": SpecRow(spec(("seeds", "0,1")), ("seeds: must be a list, but got '0,1'",)),
    "task-a-list": SpecRow(spec(("task", [1, 2])), ("task: must be a mapping",)),
    "lr-nan": SpecRow(
        spec(("strategies.0.lr.min", float("nan"))),
        ("strategies.0.lr.min: must be a finite number",),
    ),
    # unknown keys and values
    "unknown-top-level-key": SpecRow(
        spec(("strategy", "grid")),
        ("strategy: unknown key, did you mean 'strategies'? (accepted: name, task, seeds",),
    ),
    "unknown-nested-key": SpecRow(
        spec(("task.epoch", 3)),
        ("task.epoch: unknown key, did you mean 'epochs'? (accepted: dataset, model,",),
    ),
    "unknown-strategy-kind": SpecRow(
        spec(("strategies.0.kind", "bayes")), ("strategies.0.kind: unknown kind 'bayes'",)
    ),
    "unknown-optimizer": SpecRow(
        spec(("task.opt", "adamx")),
        ("task.opt: unknown value 'adamx' (accepted: adamw, adam, sgd)",),
    ),
    "missing-name": SpecRow(spec(("name", DROP)), ("name: is required",)),
    "name-with-spaces": SpecRow(spec(("name", "my sweep")), ("name: must match",)),
    "no-strategies": SpecRow(
        spec(("strategies", [])), ("strategies: must have at least 1 item(s)",)
    ),
    # ranges
    "grid-range-inverted": SpecRow(
        spec(("strategies.0.lr.min", 1.0), ("strategies.0.lr.max", 0.1)),
        ("strategies.0.lr: min must be below max, but got min=1.0 max=0.1",),
    ),
    "finder-range-inverted": SpecRow(
        spec(("strategies.0", {"kind": "lr_finder", "start_lr": 1.0, "end_lr": 0.1})),
        ("strategies.0: start_lr must be below end_lr",),
    ),
    "lr-negative": SpecRow(
        spec(("strategies.0.lr.min", -0.1)), ("strategies.0.lr.min: must be above 0",)
    ),
    "valid-pct-over-one": SpecRow(
        spec(("task.dataset.valid_pct", 1.5)), ("task.dataset.valid_pct: must be below 1",)
    ),
    "image-size-zero": SpecRow(
        spec(("task.image_size", 0)), ("task.image_size: must be at least 1, but got 0",)
    ),
    "freeze-epochs-not-below-epochs": SpecRow(
        spec(("task.fine_tune", {"freeze_epochs": 1})),
        ("task.fine_tune.freeze_epochs: must be below task.epochs=1",),
    ),
    "fractional-gpus-over-one": SpecRow(
        spec(("resources.gpu", 1.5)), ("resources.gpu: must be 0, a fraction in (0, 1]",)
    ),
    # seeds and sizes
    "empty-seeds": SpecRow(spec(("seeds", [])), ("seeds: must have at least 1 item(s)",)),
    "repeated-seeds": SpecRow(spec(("seeds", [0, 0])), ("seeds: each seed may appear once",)),
    "negative-seed": SpecRow(spec(("seeds", [-1])), ("seeds.0: must be at least 0",)),
    "huge-grid-points": SpecRow(
        spec(("strategies.0.lr.points", 10**9)),
        ("strategies.0.lr.points: must be at most 1000, but got 1000000000",),
    ),
    "huge-optuna-trials": SpecRow(
        spec(("strategies.0", {"kind": "optuna", "lr": {"min": 0.1, "max": 1}, "trials": 10**7})),
        ("strategies.0.trials: must be at most 10000",),
    ),
    # paths and URIs in the spec
    "image-folder-missing": SpecRow(
        spec(("task.dataset", {"name": "image_folder", "path": "{tmp}/no-such-folder"})),
        ("task.dataset.path: folder '{tmp}/no-such-folder' does not exist",),
    ),
    "image-folder-without-path": SpecRow(
        spec(("task.dataset.name", "image_folder")),
        ("task.dataset.path: is required when name is image_folder",),
    ),
    "pretrained-file-missing": SpecRow(
        spec(("task.model.pretrained", "{tmp}/weights.pt")),
        ("task.model.pretrained: weights file '{tmp}/weights.pt' does not exist",),
    ),
    "tracking-uri-with-password": SpecRow(
        spec(("tracking.uri", "https://alice:hunter2@mlflow.example.com")),
        ("tracking.uri: must not contain a password",),
    ),
    "checkpoint-interval-negative": SpecRow(
        spec(("tracking.checkpoint_every_s", -1)),
        ("tracking.checkpoint_every_s: must be at least 0.0, but got -1.",),
    ),
    "flush-interval-not-a-number": SpecRow(
        spec(("tracking.flush_every_s", "soon")),
        ("tracking.flush_every_s:",),
    ),
    "storage-unknown-scheme": SpecRow(
        spec(("storage.path", "ftp://host/x")), ("storage.path: unknown scheme 'ftp'",)
    ),
    # the file itself
    "file-does-not-exist": SpecRow(
        None, ("spec file '{tmp}/nope.yaml' not found",), path="{tmp}/nope.yaml"
    ),
    "a-directory": SpecRow(
        None,
        ("spec path '{tmp}/folder' is not a file",),
        path="{tmp}/folder",
        setup=lambda root: (root / "folder").mkdir(),
    ),
    "yaml-bomb": SpecRow(
        _billion_laughs(), ("YAML aliases (*a) are not allowed in specs", "spec.yaml")
    ),
    "deeply-nested-yaml": SpecRow(
        "name: " + "[" * 20_000 + "]" * 20_000, ("spec.yaml': the YAML is nested too deeply",)
    ),
    "a-list-not-a-mapping": SpecRow(
        "- name: x\n- task: y\n", ("must hold a mapping (key: value lines)", "but holds a list")
    ),
    "a-bare-string": SpecRow("just some words\n", ("spec.yaml' must hold a mapping", "a str")),
    "empty-file": SpecRow("", ("spec file '{tmp}/spec.yaml' is empty",)),
    "binary-garbage": SpecRow(
        bytes(range(256)) * 4, ("spec file '{tmp}/spec.yaml' is not UTF-8 text",)
    ),
    "broken-yaml-syntax": SpecRow(
        "name: [unclosed\ntask: {\n", ("spec.yaml': not valid YAML", "line")
    ),
    "duplicate-key": SpecRow(
        spec() + "name: again\n", ("key 'name' appears twice in one mapping",)
    ),
    "over-one-megabyte": SpecRow(
        spec() + "# " + "x" * 1_000_001 + "\n", ("bytes; the limit is 1000000",)
    ),
    # --set
    "set-unknown-key": SpecRow(
        spec(), ("--set 'task.epoch=3'", "unknown key 'epoch' in task"), ("task.epoch=3",)
    ),
    "set-without-equals": SpecRow(
        spec(), ("--set 'task.epochs': expected key.path=value",), ("task.epochs",)
    ),
    "set-index-out-of-range": SpecRow(
        spec(), ("index 5 is out of range: strategies has 1 item(s)",), ("strategies.5.lr.min=1",)
    ),
    "set-wrong-type": SpecRow(
        spec(), ("task.epochs: must be a whole number, but got 'abc'",), ("task.epochs=abc",)
    ),
    # accepted once, then failed in every trial or after the parent run existed
    "finder-num-it-too-few-for-its-rule": SpecRow(
        spec(("strategies.0", {"kind": "lr_finder", "suggest": "slide", "num_it": 20})),
        ("strategies.0.num_it: 20 is too few for rule 'slide'", "at least 23"),
    ),
    "cpu-below-rays-smallest-amount": SpecRow(
        spec(("resources.cpu", 1.0e-5)), ("resources.cpu: 1e-05 is below 0.0001",)
    ),
    "pretrained-name-for-simple-cnn": SpecRow(
        spec(("task.model", {"arch": "simple_cnn", "pretrained": "IMAGENET1K_V1"})),
        ("task.model.pretrained: 'IMAGENET1K_V1' is no file here, and simple_cnn has no",),
    ),
    "image-folder-uri": SpecRow(
        spec(("task.dataset", {"name": "image_folder", "path": "s3://bucket/images"})),
        ("task.dataset.path: 's3://bucket/images' is a URI",),
    ),
    "accuracy-with-mode-min": SpecRow(
        spec(("early_stop", {"metric": "accuracy", "mode": "min"})),
        ("early_stop.mode: must be max for accuracy",),
    ),
    "name-of-dots": SpecRow(spec(("name", "..")), ("name: must hold a letter, digit, _ or -",)),
    "name-read-as-an-option": SpecRow(spec(("name", "-x")), ("name: must not start with '-'",)),
    # accepted, and the sweep's folder in Ray's storage was hidden
    "name-of-a-hidden-folder": SpecRow(
        spec(("name", ".hidden")),
        ("name: must not start with '.' (names become folders", "write e.g. 'hidden'"),
    ),
    # accepted, and `lrsweep report -x` (printed, quoted or not) read it as an option
    "experiment-read-as-an-option": SpecRow(
        spec(("tracking", {"experiment": "-x"})),
        ("tracking.experiment: must not start with '-'", "write e.g. 'x'"),
    ),
    # "not valid YAML: but found another document", without a word of how many or what to do
    "several-yaml-documents": SpecRow(
        spec() + "---\n" + spec(),
        ("spec.yaml': holds 2 YAML documents (the second starts at line 15), but must hold one",),
    ),
    "batch-of-one-image": SpecRow(
        spec(("task.batch_size", 1)), ("task.batch_size: must be at least 2: every model's head",)
    ),
    # crashed with a traceback
    "dataset-path-of-an-unknown-user": SpecRow(
        spec(("task.dataset", {"name": "image_folder", "path": "~no-such-user-lrsweep/data"})),
        ("task.dataset.path: '~no-such-user-lrsweep/data': '~no-such-user-lrsweep' is no known",),
    ),
    "dataset-path-name-too-long": SpecRow(
        spec(("task.dataset", {"name": "image_folder", "path": "{tmp}/" + "x" * 300})),
        ("task.dataset.path:", "cannot be looked at: File name too long"),
    ),
    "spec-path-name-too-long": SpecRow(
        None, ("cannot be read (File name too long)",), path="{tmp}/" + "x" * 300
    ),
    # a merge key's values give way silently to the mapping's own
    "yaml-merge-key": SpecRow(
        spec() + "<<: {seeds: [1]}\n", ("YAML merge keys (<<) are not allowed in specs",)
    ),
}


def _write_spec(row: SpecRow, env: Env) -> str:
    if row.setup is not None:
        row.setup(env.root)
    path = env.fill(row.path)
    if isinstance(row.content, bytes):
        Path(path).write_bytes(row.content)
    elif row.content is not None:
        Path(path).write_text(env.fill(row.content))
    return path


def _set_args(overrides: tuple[str, ...]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("row", list(SPEC_ROWS.values()), ids=list(SPEC_ROWS))
def test_bad_spec_is_refused_before_anything_starts(env: Env, row: SpecRow, command: str) -> None:
    needs(command)
    path = _write_spec(row, env)
    result = invoke(command, path, *_set_args(row.overrides))
    assert_refused(result, env, *row.messages)


# --- data ----------------------------------------------------------------------------------------


def _png(path: Path, mode: str = "RGB", size: int = 12, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}.get(mode, 1)
    pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)
    if mode == "P":
        image = image.convert("P")
    image.save(path)
    return path


def _classes(root: Path, counts: dict[str, int], mode: str = "RGB") -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _png(root / name / f"{i}.png", mode, seed=i)
    return root


def _corrupt(root: Path) -> None:
    _classes(root, {"a": 3, "b": 3})
    (root / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)


def _truncated(root: Path) -> None:
    _classes(root, {"a": 3, "b": 3})
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / "cut.png").write_bytes(good[: len(good) // 2])


def _train_without_valid(root: Path) -> None:
    _classes(root / "train", {"a": 2, "b": 2})


def _unknown_valid_class(root: Path) -> None:
    _classes(root / "train", {"a": 2, "b": 2})
    _classes(root / "valid", {"a": 1, "c": 1})


# (what to build under the dataset folder, the error, the message naming the folder or file)
DATA_ROWS: dict[str, tuple[Callable[[Path], Any], type[Exception], str]] = {
    "folder-missing": (lambda root: None, FileNotFoundError, "'{data}' does not exist"),
    "empty-folder": (lambda root: root.mkdir(), ValueError, "'{data}' has no class folders"),
    "class-with-no-images": (
        lambda root: (_classes(root, {"a": 2}), (root / "b").mkdir()),
        ValueError,
        "class folder '{data}/b' has no images",
    ),
    "class-with-only-text-files": (
        lambda root: (_classes(root, {"a": 2}), (root / "b").mkdir(), (root / "b/x.txt").touch()),
        ValueError,
        "class folder '{data}/b' has no images (accepted extensions: .bmp",
    ),
    "corrupt-png": (_corrupt, ValueError, "Could not read image file '{data}/b/bad.png'"),
    "truncated-png": (_truncated, ValueError, "Could not read image file '{data}/b/cut.png'"),
    "train-without-valid": (
        _train_without_valid,
        ValueError,
        "found '{data}/train' but not '{data}/valid'",
    ),
    "valid-class-unknown-to-train": (
        _unknown_valid_class,
        ValueError,
        "'{data}/valid/c' has no training counterpart",
    ),
}


@pytest.mark.parametrize("row", list(DATA_ROWS.values()), ids=list(DATA_ROWS))
def test_bad_image_folder_is_refused_naming_the_path(tmp_path: Path, row: tuple) -> None:
    build, error, message = row
    data = tmp_path / "data"
    build(data)
    with pytest.raises(error) as caught:
        make_dataloaders("image_folder", path=data, image_size=8, batch_size=4, seed=0)
    assert message.replace("{data}", str(data)) in str(caught.value)


def test_class_folder_with_one_image_is_warned_about_but_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _classes(tmp_path / "data", {"a": 4, "b": 1})
    with caplog.at_level(logging.WARNING, logger="trainers"):
        dls = make_dataloaders("image_folder", path=data, image_size=8, batch_size=4, seed=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("single image" in w and str(data / "b") in w for w in warnings), warnings
    # its one image trains: the validation set never measures the class, which is said too
    assert any("no validation image of class 'b'" in w for w in warnings), warnings
    assert dls.classes == ["a", "b"]
    images = sum(len(y) for _, y in dls.train) + sum(len(y) for _, y in dls.valid)
    assert images == 5


def test_a_class_missing_from_a_folders_own_valid_split_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """train/ has three classes, valid/ two: the third was never measured, without a word."""
    data = tmp_path / "data"
    _classes(data / "train", {"a": 3, "b": 3, "rare": 2})
    _classes(data / "valid", {"a": 2, "b": 2})
    with caplog.at_level(logging.WARNING, logger="trainers"):
        dls = make_dataloaders("image_folder", path=data, image_size=8, batch_size=4, seed=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert dls.classes == ["a", "b", "rare"]
    assert [w for w in warnings if "no validation image" in w] == [
        "image_folder: no validation image of class 'rare': the validation metrics never "
        "measure it (add images of it, to valid/ for a folder with its own split)."
    ]


def test_greyscale_rgba_palette_and_rgb_mixed_load_as_three_channels(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i, mode in enumerate(["L", "RGBA", "P", "RGB"] * 2):
        _png(data / ("a" if i % 2 else "b") / f"{mode}-{i}.png", mode, size=10 + i, seed=i)
    dls = make_dataloaders("image_folder", path=data, image_size=8, batch_size=4, seed=0)
    assert dls.in_channels == 3
    xb, _ = next(iter(dls.train))
    assert tuple(xb.shape[1:]) == (3, 8, 8) and xb.isfinite().all()
    assert sum(len(y) for _, y in dls.train) + sum(len(y) for _, y in dls.valid) == 8


IMAGE_FOLDER_RUN_ROWS: dict[str, tuple[Callable[[Path], Any], str]] = {
    "empty-folder": (lambda root: root.mkdir(), "'{data}' has no class folders"),
    "class-with-no-images": (
        lambda root: (_classes(root, {"a": 2}), (root / "b").mkdir()),
        "class folder '{data}/b' has no images",
    ),
    "corrupt-png": (_corrupt, "'{data}/b/bad.png'"),
}


# The data are read once on the driver (sweeps.preflight.check_local_data) before Ray starts or
# any MLflow experiment or run is created.
# ``lrsweep validate`` refuses them too (it passed them, exit 0, and run then refused them).
@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("row", list(IMAGE_FOLDER_RUN_ROWS.values()), ids=IMAGE_FOLDER_RUN_ROWS)
def test_run_refuses_a_bad_image_folder_before_starting(env: Env, row: tuple, command: str) -> None:
    needs("run")
    build, message = row
    data = env.root / "data"
    build(data)
    path = env.root / "spec.yaml"
    path.write_text(spec(("task.dataset", {"name": "image_folder", "path": str(data)})))
    result = invoke(command, str(path), "--set", "failure.max_failures=0")
    assert_refused(result, env, message.replace("{data}", str(data)))


def test_run_refuses_cpu_bf16_at_an_image_size_it_cannot_train(env: Env) -> None:
    needs("run")
    path = env.root / "spec.yaml"
    path.write_text(spec(("task.accelerator", {"amp": "bf16"})))  # BASE: simple_cnn at 8 px
    result = invoke("run", str(path))
    assert_refused(
        result,
        env,
        "task.accelerator.amp: bf16 with resources.gpu: 0 trains on the CPU",
        "task.image_size 8",
        "'body.3.0'",
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            ("task.dataset", {"name": "shapes", "options": {"n_classes": 7}}),
            "task.dataset: the trials could not build 'shapes': shapes n_classes must be",
        ),
        (
            ("task.dataset", {"name": "digits", "path": "/"}),
            "task.dataset: the trials could not build 'digits': path is only used by the",
        ),
        (
            ("task.dataset", {"name": "shapes", "options": {"n_per_class": 1}}),
            "task.dataset: the trials could not split 'shapes' into training and validation",
        ),
        (
            ("task.model", {"arch": "resnet18", "pretrained": "IMAGENET1K_V3"}),
            "task.model.pretrained: pretrained='IMAGENET1K_V3' is neither an existing file nor",
        ),
    ],
    ids=[
        "dataset-option-value",
        "dataset-path-it-does-not-read",
        "dataset-with-nothing-to-hold-out",
        "torchvision-weights-name",
    ],
)
@pytest.mark.parametrize("command", ["run", "validate"])
def test_run_refuses_what_every_trial_would_fail_on_before_starting(
    env: Env, changes: tuple[str, Any], message: str, command: str
) -> None:
    needs("run")
    path = env.root / "spec.yaml"
    path.write_text(spec(changes))
    result = invoke(command, str(path), "--set", "failure.max_failures=0")
    assert_refused(result, env, message)


# --- other commands ------------------------------------------------------------------------------


@pytest.fixture
def store(env: Env) -> Env:
    """One finished sweep in the env's store: a parent run and a completed grid trial."""
    tracker = Tracker(env.tracking_uri)
    tracker.ensure_experiment("other-sweep")
    experiment = tracker.ensure_experiment("digits-lr")
    parent = tracker.start_run(experiment, run_name="sweep", tags={"sweeps.kind": "sweep"})
    child = tracker.start_run(experiment, run_name="trial", parent_run_id=parent)
    tracker.log_params(child, {"strategy": "grid", "lr": 0.01, "seed": 0})
    tracker.set_tags(child, {"sweeps.strategy": "grid", "sweeps.stop_reason": "completed"})
    tracker.log_metrics(child, [("best/valid_loss", 0.3, 0), ("best/error_rate", 0.1, 0)])
    tracker.end_run(child, "FINISHED")
    tracker.end_run(parent, "FINISHED")
    return env


def _runs_unchanged(env: Env) -> None:
    with sqlite3.connect(env.root / "mlflow.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2


BEST_ROWS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "unknown-experiment": (
        ["best", "digits-typo"],
        ("digits-typo", "digits-lr", "other-sweep"),
    ),
    "unknown-metric": (
        ["best", "digits-lr", "--metric", "valid_los"],
        ("has metric 'valid_los'", "metrics present", "valid_loss", "error_rate"),
    ),
    "unknown-strategy": (
        ["best", "digits-lr", "--strategy", "bayes"],
        ("strategy 'bayes'", "grid"),
    ),
    "unknown-mode": (["best", "digits-lr", "--mode", "sideways"], ("--mode", "sideways")),
    "unknown-format": (["best", "digits-lr", "--format", "xml"], ("--format", "xml")),
}


@pytest.mark.parametrize("row", list(BEST_ROWS.values()), ids=list(BEST_ROWS))
def test_best_refuses_unknown_names_listing_what_exists(store: Env, row: tuple) -> None:
    args, messages = row
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for message in messages:
        assert message in result.stderr, result.stderr
    _runs_unchanged(store)


def test_best_without_a_store_says_where_it_looked(env: Env) -> None:
    result = invoke("best", "digits-lr", "--tracking-uri", f"sqlite:///{env.root}/none.db")
    assert_refused(result, env, "No MLflow store at", "none.db", "--tracking-uri")
    assert not (env.root / "none.db").exists()


@pytest.fixture
def suite(env: Env) -> Path:
    (env.root / "spec.yaml").write_text(spec())
    path = env.root / "suite.yaml"
    path.write_text(
        yaml.safe_dump({"name": "night", "entries": [{"name": "tiny", "spec_path": "spec.yaml"}]})
    )
    return path


NIGHTLY_ROWS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "set-unknown-entry": (
        ["--set", "digits.task.epochs=2"],
        ("--set 'digits.task.epochs=2': no suite entry named 'digits'", "tiny"),
    ),
    "set-unknown-key": (
        ["--set", "tiny.task.epoch=2"],
        ("--set 'tiny.task.epoch=2'", "unknown key 'epoch'"),
    ),
    "set-wrong-type": (
        ["--set", "tiny.task.epochs=two"],
        ("entries.tiny.spec.task.epochs: must be a whole number",),
    ),
}


@pytest.mark.parametrize("row", list(NIGHTLY_ROWS.values()), ids=list(NIGHTLY_ROWS))
def test_nightly_refuses_bad_overrides_before_running(env: Env, suite: Path, row: tuple) -> None:
    needs("nightly")
    args, messages = row
    result = invoke("nightly", str(suite), *args)
    assert_refused(result, env, *messages)
    assert not (env.root / "nightly-report").exists()


def test_nightly_refuses_a_missing_suite_file(env: Env) -> None:
    needs("nightly")
    result = invoke("nightly", str(env.root / "nightly.yml"))
    assert_refused(result, env, "suite file '{tmp}/nightly.yml' not found")


OTHER_ROWS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "resume-unknown-sweep": (
        ["resume", "nope"],
        (
            "'nope' has no sweep to resume",
            "none",
            "storage.path",
            "pass that folder or URI with --storage-path",
        ),
    ),
    "report-unknown-experiment": (
        ["report", "nope"],
        ("experiment 'nope' does not exist", "experiments there"),
    ),
    "run-no-spec-argument": (["run"], ("Missing argument 'spec'",)),
    "run-unknown-option": (
        ["run", "{tmp}/spec.yaml", "--epochs", "3"],
        ("No such option: --epochs",),
    ),
}


@pytest.mark.parametrize("row", list(OTHER_ROWS.values()), ids=list(OTHER_ROWS))
def test_other_commands_refuse_unknown_names(env: Env, row: tuple) -> None:
    args, messages = row
    needs(args[0])
    (env.root / "spec.yaml").write_text(spec())
    result = invoke(*(env.fill(arg) for arg in args))
    assert_refused(result, env, *messages)


LR_FIND_ROWS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "image-size-zero": (
        ["--image-size", "0"],
        ("--image-size must be a positive integer, but got 0",),
    ),
    "batch-size-negative": (["--batch-size", "-1"], ("--batch-size must be a positive integer",)),
    "batch-size-one": (
        ["--batch-size", "1"],
        ("--batch-size must be at least 2", "BatchNorm", "but got 1"),
    ),
    "unknown-dataset": (
        ["--dataset", "imagenet-typo"],
        ("--dataset must be one of", "'imagenet-typo'"),
    ),
    "unknown-arch": (["--arch", "vgg99"], ("--arch must be one of", "'vgg99'")),
    "unknown-rule": (
        ["--suggest", "bogus"],
        ("--suggest: Unknown suggestion rule 'bogus'", "valley, steep"),
    ),
    "too-few-iterations": (["--num-it", "3"], ("--num-it=3 is too few",)),
    "bf16-image-too-small-on-the-cpu": (
        ["--amp", "bf16"],
        ("--amp bf16 with --image-size 8:", "1-pixel-wide input"),
    ),
    "lr-range-inverted": (
        ["--start-lr", "1", "--end-lr", "0.1"],
        ("--end-lr must be greater than --start-lr",),
    ),
    "plot-folder-missing": (["--out", "{tmp}/no/plot.png"], ("--out '{tmp}/no/plot.png'",)),
    "image-folder-without-path": (
        ["--dataset", "image_folder"],
        ("--dataset image_folder needs --path, the folder holding its images",),
    ),
    "image-folder-empty": (
        ["--dataset", "image_folder", "--path", "{tmp}/data/empty"],
        ("image_folder '{tmp}/data/empty' has no class folders",),
    ),
    "image-folder-class-without-images": (
        ["--dataset", "image_folder", "--path", "{tmp}/data/classes"],
        ("class folder '{tmp}/data/classes/b' has no images",),
    ),
    "image-folder-corrupt-png": (
        ["--dataset", "image_folder", "--path", "{tmp}/data/corrupt"],
        ("Could not read image file '{tmp}/data/corrupt/b/bad.png'",),
    ),
}


@pytest.mark.parametrize("row", list(LR_FIND_ROWS.values()), ids=list(LR_FIND_ROWS))
def test_lr_find_refuses_bad_options_and_data(env: Env, row: tuple) -> None:
    needs("lr-find")
    args, messages = row
    data = env.root / "data"
    (data / "empty").mkdir(parents=True)
    _classes(data / "classes", {"a": 2})
    (data / "classes" / "b").mkdir()
    _corrupt(data / "corrupt")
    base = ["--dataset", "digits", "--arch", "simple_cnn", "--image-size", "8", "--num-it", "10"]
    result = invoke("lr-find", *base, *(env.fill(arg) for arg in args))
    assert_refused(result, env, *messages)
    assert not (env.root / "lr_find.png").exists()


# --- the real executable: exit code 2 and no traceback, end to end ----------------------------

REAL_ROWS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "run-missing-file": (
        ["run", "{tmp}/missing.yaml"],
        ("spec file '{tmp}/missing.yaml' not found",),
    ),
    "best-unknown-experiment": (["best", "nope"], ("'nope'", "digits-lr")),
}


@pytest.mark.slow
@pytest.mark.parametrize("row", list(REAL_ROWS.values()), ids=list(REAL_ROWS))
def test_real_cli_exits_2_without_a_traceback(env: Env, row: tuple) -> None:
    args, messages = row
    needs(args[0])
    Tracker(env.tracking_uri).ensure_experiment("digits-lr")
    done = subprocess.run(
        [*LRSWEEP, *(env.fill(arg) for arg in args)],
        cwd=env.root,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    for message in messages:
        assert env.fill(message) in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert _mlflow_runs(env) == 0
    assert not list(env.root.rglob("ray_results"))
