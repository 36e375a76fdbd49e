"""``preflight.data_notes``: settings the data's size makes pointless, noted (never refused)."""

from __future__ import annotations

import inspect
import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _cli_helpers import tiny_spec
from PIL import Image
from typer.testing import CliRunner

from sweeps import run as run_module
from sweeps._data_notes import (
    DIGITS_CLASS_COUNTS,
    SHAPES_DEFAULTS,
    split_sizes,
    steps_per_epoch,
)
from sweeps.cli import app
from sweeps.preflight import data_notes
from sweeps.spec import load_spec
from sweeps.tracking import Tracker
from trainers.data import make_dataloaders, open_dataset
from trainers.data._shapes import Shapes
from trainers.data._split import stratified_split
from trainers.models import build_model

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "sweeps" / "specs" / "digits.yaml"


def _notes(*overrides: str) -> list[str]:
    return data_notes(load_spec(DIGITS, overrides=list(overrides)))


def test_the_demo_spec_draws_no_note() -> None:
    assert _notes() == []


def test_a_validation_set_under_100_images_is_noted_with_its_step() -> None:
    # digits: 1,797 images; round(0.055 x 1797) = 99 held out, round(0.056 x 1797) = 101
    (note,) = _notes("task.dataset.valid_pct=0.055")
    assert note == (
        "task.dataset: the validation set holds 99 images, so an error rate moves in steps of "
        "1 points and strategies closer than that cannot be told apart; raise "
        "task.dataset.valid_pct (0.055) or add data"
    )
    assert _notes("task.dataset.valid_pct=0.056") == []
    (note,) = _notes("task.dataset.valid_pct=0.01")
    assert "holds 18 images, so an error rate moves in steps of 5.6 points" in note
    (note,) = _notes("task.dataset.valid_pct=0.0001")  # round(0.18) = 0: one image held out
    assert "holds 1 image, so an error rate moves in steps of 100 points" in note  # not 1e+02


def test_a_batch_size_that_leaves_an_epoch_a_few_steps_is_noted() -> None:
    # 1,438 training images: 480 a batch is 3 steps; 479 too (3 x 479 + 1: the training loader
    # drops a last batch of one image); 478 is 4
    for batch_size in (480, 479):
        (note,) = _notes(f"task.batch_size={batch_size}")
        assert note.startswith(
            f"task.batch_size: {batch_size} leaves an epoch of the 1438 training images 3 "
            "optimizer steps"
        )
    assert _notes("task.batch_size=478") == []
    (note,) = _notes("task.batch_size=4096")
    assert "1438 training images 1 optimizer step, too few" in note


def test_an_image_folders_own_valid_split_is_counted(tmp_path: Path) -> None:
    for split, count in (("train", 30), ("valid", 3)):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (4, 4)).save(tmp_path / split / name / f"{i}.png")
    dataset = f"task.dataset={{name: image_folder, path: {tmp_path}}}"
    (note,) = _notes(dataset, "task.batch_size=8")
    assert note.startswith("task.dataset: the validation set holds 6 images")
    assert note.endswith("add images to its valid/ folder")


def test_a_run_notes_the_datas_size_before_any_run_exists(tmp_path: Path) -> None:
    spec = load_spec(DIGITS, overrides=["task.dataset.valid_pct=0.01"])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    notes: list[str] = []
    run_module._preflight(spec, uri, tmp_path / "ray", address=None, on_note=notes.append)
    assert [note.split(",")[0] for note in notes] == [
        "task.dataset: the validation set holds 18 images"
    ]
    assert not (tmp_path / "mlflow.db").exists()


def test_run_prints_the_notes_validate_prints_not_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`run` logged its notes as "WARNING sweeps.run: spec NAME: ..." lines, `validate` printed
    them as "Note: ..." lines: now both print the same Note lines (advice, not a warning)."""
    blocker = tmp_path / "a-file"  # refused after the notes, before Ray or any run
    blocker.write_text("not a folder", encoding="utf-8")
    # 2 epochs: early_stop (patience 2) can never stop a trial; 18 validation images
    overrides = ["--set", "task.epochs=2", "--set", "task.dataset.valid_pct=0.01"]
    checked = CliRunner().invoke(app, ["validate", str(DIGITS), *overrides])
    assert checked.exit_code == 0, checked.output
    notes = [line for line in checked.stderr.splitlines() if line.startswith("Note: ")]
    assert [note.split(":")[1] for note in notes] == [
        " early_stop can never stop a trial",
        " task.dataset",
    ]
    store = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    with caplog.at_level(logging.WARNING):
        ran = CliRunner().invoke(
            app, ["run", str(DIGITS), *overrides, "--set", f"storage.path={blocker}/ray", *store]
        )
    assert ran.exit_code == 2, ran.output
    assert "Ray's checkpoint folder (storage.path)" in ran.stderr
    assert [line for line in ran.stderr.splitlines() if line.startswith("Note: ")] == notes
    noted = [note.removeprefix("Note: ") for note in notes]
    assert not [r for r in caplog.records if any(n in r.getMessage() for n in noted)]


def test_nightly_prints_each_entrys_notes_as_validate_suite_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`nightly` left its sweeps' notes to the logger: bare "spec NAME: ..." lines from
    Python's last-resort handler, where `validate --suite` prints "Note: entries.NAME: ..."."""
    blocker = tmp_path / "a-file"  # the entry's sweep is refused after its notes, before Ray
    blocker.write_text("not a folder", encoding="utf-8")
    overrides = ["task.epochs=2", "task.dataset.valid_pct=0.01"]
    suite = tmp_path / "suite.yaml"
    entry = {"name": "tiny", "spec_path": str(DIGITS), "overrides": overrides}
    suite.write_text(json.dumps({"name": "notes", "entries": [entry]}), encoding="utf-8")
    checked = CliRunner().invoke(app, ["validate", "--suite", str(suite)])
    assert checked.exit_code == 0, checked.output
    notes = [line for line in checked.stderr.splitlines() if line.startswith("Note: ")]
    assert [note.split(":")[1:3] for note in notes] == [
        [" entries.tiny", " early_stop can never stop a trial"],
        [" entries.tiny", " task.dataset"],
    ]
    args = ["nightly", str(suite), "--set", f"tiny.storage.path={blocker}/ray"]
    args += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    with caplog.at_level(logging.WARNING):
        night = CliRunner().invoke(app, [*args, "--report-dir", str(tmp_path / "report")])
    assert night.exit_code == 3, night.output  # the entry's sweep could not start: failed
    assert [line for line in night.stderr.splitlines() if line.startswith("Note: ")] == notes
    noted = [note.split(": ", 2)[2] for note in notes]
    assert not [r for r in caplog.records if any(n in r.getMessage() for n in noted)]


def _lrsweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``lrsweep`` command in a fresh interpreter, its output as a person sees it."""
    return subprocess.run(
        [sys.executable, "-m", "sweeps.cli", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_resume_prints_the_data_notes_as_run_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A resume runs the preflight again: its data notes were "WARNING sweeps.run" lines too."""
    spec = load_spec(DIGITS, overrides=["task.dataset.valid_pct=0.01"])
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(store)  # a store without the sweep's runs: refused after the preflight
    sweep_dir = tmp_path / "ray" / spec.name / "20260101-000000-abcdef"
    sweep_dir.mkdir(parents=True)
    state = {"name": spec.name, "sweep_id": sweep_dir.name, "spec": spec.resolved()}
    state |= {"tracking_uri": store, "experiment_id": "1", "parent_run_id": "0" * 32}
    (sweep_dir / "sweep.json").write_text(json.dumps(state | {"finished": False}))
    with caplog.at_level(logging.WARNING):
        resumed = CliRunner().invoke(app, ["resume", str(sweep_dir)])
    assert resumed.exit_code == 2, resumed.output
    assert "holds no run" in " ".join(resumed.stderr.split()), resumed.stderr
    notes = data_notes(spec)
    assert notes[0].startswith("task.dataset: the validation set holds 18 images")
    said = [line.removeprefix("Note: ") for line in resumed.stderr.splitlines()]
    assert [line for line in said if line in notes] == notes
    assert not [r for r in caplog.records if any(n in r.getMessage() for n in notes)]


def _folder_with_a_class_of_one(data: Path) -> Path:
    """An image folder of 31 images: class ``many`` of 30, class ``one`` of a single image."""
    for name, count in (("many", 30), ("one", 1)):
        (data / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (4, 4)).save(data / name / f"{i}.png")
    return data


def _single_image_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum("has a single image" in record.getMessage() for record in caplog.records)


def test_data_notes_count_an_opened_folder_without_opening_it_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _folder_with_a_class_of_one(tmp_path / "images")
    spec = load_spec(DIGITS, overrides=[f"task.dataset={{name: image_folder, path: {data}}}"])
    with caplog.at_level(logging.WARNING, logger="trainers"):
        alone = data_notes(spec)  # a cluster's driver reads no data: here it is opened (warned)
    assert _single_image_warnings(caplog) == 1
    assert alone[0].startswith("task.dataset: the validation set holds 6 images")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trainers"):
        source = open_dataset("image_folder", path=data)  # as the preflight's data check did
        assert data_notes(spec, source=source) == alone
    assert _single_image_warnings(caplog) == 1


@pytest.mark.parametrize("command", ["validate", "run"])
def test_an_image_folders_class_of_a_single_image_is_warned_of_once(
    tmp_path: Path, command: str
) -> None:
    """The data check opened the folder, then the weights check (for the data's channels) and
    data_notes (for its labels) opened it again, and each warned of the class of one image."""
    data = _folder_with_a_class_of_one(tmp_path / "images")
    weights = tmp_path / "weights.pt"
    torch.save(build_model("simple_cnn", 2, in_channels=3).state_dict(), weights)
    args = [command, str(DIGITS), "--set", f"task.dataset={{name: image_folder, path: {data}}}"]
    args += ["--set", f"task.model.pretrained={weights}"]
    if command == "run":  # refused after the data's checks and notes: no Ray, no run
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder", encoding="utf-8")
        args += ["--set", f"storage.path={blocker}/ray"]
        args += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    done = _lrsweep(tmp_path, *args)
    assert done.returncode == (0 if command == "validate" else 2), done.stderr
    assert f"{data / 'one'} has a single image" in done.stderr
    assert done.stderr.count("has a single image") == 1, done.stderr
    # the notes are still counted, from the labels the data check read, and read as notes
    assert "\nNote: task.dataset: the validation set holds 6 images" in done.stderr, done.stderr
    assert "WARNING sweeps.run" not in done.stderr


@pytest.mark.slow
def test_the_trials_of_a_local_sweep_do_not_repeat_the_datas_warnings(tmp_path: Path) -> None:
    """The driver's data check warned of the class of one image; each trial's worker, opening
    the same folder, warned of it again (and of that class's missing validation image)."""
    spec = tiny_spec("one-image-class")
    spec["task"]["dataset"] = {"name": "image_folder", "path": str(tmp_path / "images")}
    _folder_with_a_class_of_one(tmp_path / "images")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    done = _lrsweep(
        tmp_path, "run", "spec.yaml", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("has a single image") == 1, done.stderr
    assert done.stderr.count("no validation image of class 'one'") == 1, done.stderr


@pytest.mark.parametrize("batch_size", [478, 479, 480, 719, 720, 1437, 1438])
def test_the_noted_steps_are_the_trials_training_loaders(batch_size: int) -> None:
    # 1,438 training images: at 479 and 1,437 a batch the last batch holds one image, which
    # the training loader drops (BatchNorm); the note counted it as a step
    dls = make_dataloaders("digits", image_size=8, batch_size=batch_size, valid_pct=0.2, seed=42)
    steps = len(dls.train)
    assert steps_per_epoch(len(dls.train.labels), batch_size) == steps
    notes = _notes(f"task.batch_size={batch_size}")
    if steps >= 4:
        assert notes == []
    else:
        plural = "s" if steps > 1 else ""
        (note,) = notes
        assert f"1438 training images {steps} optimizer step{plural}," in note


def _random_counts(rng: random.Random) -> list[int]:
    return [rng.choice([0, 1, 1, 2, 3, 5, 8, 13, 40, 101]) for _ in range(rng.randint(2, 12))]


def test_the_torch_free_split_sizes_are_the_trials_split_on_many_counts() -> None:
    rng = random.Random(0)
    tried = 0
    for _ in range(400):
        counts = _random_counts(rng)
        valid_pct = rng.choice([0.001, 0.01, 0.05, 0.1, 0.15, 0.2, 1 / 3, 0.5, 0.7, 0.99])
        labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        try:
            train_idx, valid_idx = stratified_split(labels, valid_pct=valid_pct, seed=tried)
        except ValueError:  # every class holds a single image: both refuse
            with pytest.raises(ValueError, match="leaves no validation images"):
                split_sizes(counts, valid_pct)
            continue
        assert split_sizes(counts, valid_pct) == (len(train_idx), len(valid_idx)), (
            counts,
            valid_pct,
        )
        tried += 1
    assert tried > 300


def test_the_known_class_counts_are_the_datasets_own() -> None:
    from sklearn.datasets import load_digits

    target = load_digits().target
    assert [int((target == digit).sum()) for digit in range(10)] == list(DIGITS_CLASS_COUNTS)
    assert open_dataset("digits").labels.bincount().tolist() == list(DIGITS_CLASS_COUNTS)
    defaults = inspect.signature(Shapes).parameters
    assert {key: defaults[key].default for key in SHAPES_DEFAULTS} == SHAPES_DEFAULTS
