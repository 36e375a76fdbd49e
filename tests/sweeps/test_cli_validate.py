"""``lrsweep validate``: exit 0 with the resolved spec, or 2 with every error and no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from sweeps._data_notes import data_notes
from sweeps.cli import app
from sweeps.spec import load_spec

SPECS = Path(__file__).resolve().parents[2] / "sweeps" / "specs"
SPEC = {
    "name": "cli",
    # a dataset read where the trials run (not opened by validate, as shapes is): its builder
    # is widened below to take a token, as a user's **kwargs builder would
    "task": {"dataset": {"name": "mnist", "options": {"api_token": "s3cr3t-value"}}},
    "strategies": [{"kind": "grid", "lr": {"min": 1.0e-3, "max": 1.0, "points": 3}}],
}


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def _invoke(*args: str):
    return CliRunner().invoke(app, ["validate", *args])


def test_valid_spec_prints_the_resolved_yaml_and_exits_0(
    spec_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mnist takes no api_token: widen the option check as a user's **kwargs builder would
    monkeypatch.setattr("sweeps.spec._task._dataset_options", lambda name: None)
    result = _invoke(
        str(spec_file),
        *("--set", "task.epochs=2", "--set", "seeds=[0, 1]", "--set", "early_stop={patience: 2}"),
    )
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    assert printed["task"]["epochs"] == 2 and printed["seeds"] == [0, 1]
    assert printed["early_stop"]["grace_epochs"] == 1
    assert printed["task"]["dataset"]["options"]["api_token"] == "***"
    assert "s3cr3t-value" not in result.output
    assert load_spec(printed).task.epochs == 2
    # valid but inert: early stopping with patience 2 needs 3 epochs; said on stderr only
    note = "Note: early_stop can never stop a trial: it needs more than 3 epochs"
    assert result.stderr.startswith(note)
    small = _invoke(str(spec_file), "--set", "task.image_size=4")
    assert small.exit_code == 0, small.output
    assert "Note: task.image_size: 4 px a side leaves each image 16 pixels" in small.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "task.epochs=0"], r"task.epochs: must be at least 1, but got 0."),
        (
            ["--set", "task.epoch=3"],
            r"unknown key 'epoch' in task, did you mean 'epochs'? (accepted: dataset, model,",
        ),
        (["--set", "resources.gpu=1.5"], r"resources.gpu: must be 0, a fraction in (0, 1]"),
        (["--set", "strategies.0.lr.min=2"], r"strategies.0.lr: min must be below max"),
    ],
)
def test_invalid_spec_exits_2_listing_the_field(
    spec_file: Path, args: list[str], message: str
) -> None:
    result = _invoke(str(spec_file), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    result = _invoke(str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "nope.yaml' not found" in result.stderr


def test_yaml_bomb_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text('a: &a ["x", "x"]\nb: [*a, *a]\n')
    result = _invoke(str(path))
    assert result.exit_code == 2
    assert "YAML aliases (*a) are not allowed" in result.stderr


def test_set_cannot_inject_code(spec_file: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = _invoke(
        str(spec_file), "--set", f'name=!!python/object/apply:os.system ["touch {marker}"]'
    )
    assert result.exit_code == 2
    assert "only plain YAML values are accepted" in result.stderr
    assert not marker.exists()


SHAPES_NOTE = (  # shapes' 3 x 100 images, 20% held out: 60
    "task.dataset: the validation set holds 60 images, so an error rate moves in steps of 1.7 "
    "points and strategies closer than that cannot be told apart; raise task.dataset.valid_pct "
    "(0.2) or add data"
)


def _note_lines(stderr: str) -> list[str]:
    return [line.removeprefix("Note: ") for line in stderr.splitlines() if line.startswith("Note:")]


def test_suite_validates_with_the_suite_flag() -> None:
    result = _invoke(str(SPECS / "nightly.yaml"), "--suite")
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    assert [entry["name"] for entry in printed["entries"]] == [
        "digits-cnn-one-cycle",
        "shapes-resnet18-sgdr",
    ]
    # no entry carries a setting that cannot work; shapes' validation set is small, as run says
    assert _note_lines(result.stderr) == [f"entries.shapes-resnet18-sgdr: {SHAPES_NOTE}"]


@pytest.mark.parametrize(
    ("name", "notes"), [("digits.yaml", []), ("shapes_resnet.yaml", [SHAPES_NOTE])]
)
def test_the_bundled_specs_carry_no_setting_that_cannot_work(name: str, notes: list[str]) -> None:
    result = _invoke(str(SPECS / name))
    assert result.exit_code == 0, result.output
    assert load_spec(SPECS / name).advice() == []
    assert _note_lines(result.stderr) == notes == data_notes(load_spec(SPECS / name))


@pytest.mark.parametrize(
    ("override", "note"),
    [
        (  # round(0.02 x 1,797) = 36 held out
            "task.dataset.valid_pct=0.02",
            "task.dataset: the validation set holds 36 images, so an error rate moves in steps "
            "of 2.8 points and strategies closer than that cannot be told apart; raise "
            "task.dataset.valid_pct (0.02) or add data",
        ),
        (  # 1,438 training images, 512 a batch
            "task.batch_size=512",
            "task.batch_size: 512 leaves an epoch of the 1438 training images 3 optimizer steps, "
            "too few for a schedule to shape (and a range test repeats those batches); lower "
            "task.batch_size",
        ),
    ],
    ids=["valid_pct", "batch_size"],
)
def test_validate_notes_what_the_datas_size_makes_pointless_as_run_does(
    override: str, note: str
) -> None:
    digits = str(SPECS / "digits.yaml")
    assert data_notes(load_spec(digits, overrides=[override])) == [note]  # what run logs
    result = _invoke(digits, "--set", override)
    assert result.exit_code == 0, result.output
    assert _note_lines(result.stderr) == [note]
    as_json = _invoke(digits, "--set", override, "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["notes"] == [note]


def test_validate_notes_each_suite_entrys_data_size_after_its_advice(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    entry = {"spec_path": str(SPECS / "digits.yaml")}
    small = ["task.epochs=2", "early_stop={patience: 2}", "task.batch_size=1024"]
    entries = [{"name": "plain", **entry}, {"name": "small", **entry, "overrides": small}]
    suite.write_text(yaml.safe_dump({"name": "s", "entries": entries}))
    result = _invoke(str(suite), "--suite")
    assert result.exit_code == 0, result.output
    notes = _note_lines(result.stderr)
    assert len(notes) == 2 and notes[0].startswith("entries.small: early_stop can never stop")
    steps = "entries.small: task.batch_size: 1024 leaves an epoch of the 1438 training images 2 "
    assert notes[1].startswith(steps)
    as_json = _invoke(str(suite), "--suite", "--format", "json")
    assert json.loads(as_json.stdout)["notes"] == notes


def test_validate_notes_a_small_image_folders_split_as_run_does(tmp_path: Path) -> None:
    for name in ("a", "b"):  # 2 x 10 images: 4 held out at valid_pct 0.2, 16 left to train
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (4, 4)).save(tmp_path / "images" / name / f"{i}.png")
    folder = f"task.dataset={{name: image_folder, path: {tmp_path / 'images'}}}"
    notes = data_notes(load_spec(SPECS / "digits.yaml", overrides=[folder]))
    assert [note.split(",")[0] for note in notes] == [
        "task.dataset: the validation set holds 4 images",
        "task.batch_size: 64 leaves an epoch of the 16 training images 1 optimizer step",
    ]
    result = _invoke(str(SPECS / "digits.yaml"), "--set", folder)
    assert result.exit_code == 0, result.output
    assert _note_lines(result.stderr) == notes
    as_json = _invoke(str(SPECS / "digits.yaml"), "--set", folder, "--format", "json")
    assert json.loads(as_json.stdout)["notes"] == notes


def test_suite_without_the_flag_exits_2_with_a_hint() -> None:
    result = _invoke(str(SPECS / "nightly.yaml"))
    assert result.exit_code == 2
    assert "Hint: this looks like a nightly suite" in result.stderr


def test_running_a_suite_as_a_spec_says_to_run_it_with_nightly() -> None:
    suite = SPECS / "nightly.yaml"
    result = CliRunner().invoke(app, ["run", str(suite)])
    assert result.exit_code == 2, result.output
    stderr = " ".join(result.stderr.split())
    assert f"Hint: this looks like a nightly suite; run it with: lrsweep nightly {suite}" in stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["validate", "--suite"], ["nightly"]])
def test_a_spec_given_as_a_suite_says_to_run_it_with_run(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nightly refuses before anything runs, but not in the repo
    spec = SPECS / "digits.yaml"
    result = CliRunner().invoke(app, [*command, str(spec)])
    assert result.exit_code == 2, result.output
    stderr = " ".join(result.stderr.split())
    assert f"Hint: this looks like a sweep spec, not a suite; run it with: lrsweep run {spec}" in (
        stderr
    )
    assert not (tmp_path / ".lrsweep").exists()


def test_bad_suite_exits_2_naming_entry_and_field(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    bad = {**SPEC, "seeds": []}
    path.write_text(json.dumps({"name": "n", "entries": [{"name": "e1", "spec": bad}]}))
    result = _invoke(str(path), "--suite")
    assert result.exit_code == 2
    assert "entries.e1.spec.seeds: must have at least 1 item" in result.stderr


def test_validate_refuses_a_cpu_bf16_spec_that_run_would_refuse(
    spec_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """validate passed a CPU bf16 spec at a size PyTorch's bf16 cannot train, which run then
    refused at once; the GPU section says validate checks the accelerator options."""
    monkeypatch.setattr("sweeps.spec._task._dataset_options", lambda name: None)  # api_token
    result = _invoke(
        str(spec_file), "--set", "task.image_size=8", "--set", "task.accelerator.amp=bf16"
    )
    assert result.exit_code == 2, result.output
    stderr = " ".join(result.stderr.split())
    assert stderr.startswith(
        "Error: task.accelerator.amp: bf16 with resources.gpu: 0 trains on the CPU, and at "
        "task.image_size 8:"
    )
    assert result.stdout == ""
    as_json = _invoke(
        str(spec_file),
        *("--set", "task.image_size=8", "--set", "task.accelerator.amp=bf16", "--format", "json"),
    )
    assert as_json.exit_code == 2, as_json.output
    (error,) = json.loads(as_json.stdout)["errors"]
    assert error["field"] == "task.accelerator.amp"
    assert error["message"].startswith("bf16 with resources.gpu: 0 trains on the CPU")
    fine = _invoke(
        str(spec_file), "--set", "task.image_size=16", "--set", "task.accelerator.amp=bf16"
    )
    assert fine.exit_code == 0, fine.output


def test_format_json_of_a_valid_spec_holds_the_resolved_spec_notes_and_trials_per_arm(
    spec_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sweeps.spec._task._dataset_options", lambda name: None)  # api_token
    args = ("--set", "seeds=[0, 1]", "--set", "task.epochs=2", "--set", "early_stop={patience: 2}")
    result = _invoke(str(spec_file), *args, "--format", "json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["ok"], shown["errors"], shown["hint"]) == (True, [], None)
    assert shown["resolved"] == yaml.safe_load(_invoke(str(spec_file), *args).stdout)
    assert shown["resolved"]["task"]["dataset"]["options"]["api_token"] == "***"
    assert "s3cr3t-value" not in result.output
    assert shown["notes"][0].startswith("early_stop can never stop a trial")
    assert result.stderr == ""  # the notes are in the JSON
    # 3 grid points x 2 seeds
    assert shown["arms"] == [{"entry": None, "arm": "grid", "kind": "grid", "trials": 6}]
    assert shown["trials"] == 6


def test_format_json_of_a_suite_counts_each_entrys_arms() -> None:
    result = _invoke(str(SPECS / "nightly.yaml"), "--suite", "--format", "json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    for entry in shown["resolved"]["entries"]:
        spec = entry["spec"]
        arms = [arm for arm in shown["arms"] if arm["entry"] == entry["name"]]
        assert [arm["kind"] for arm in arms] == [arm["kind"] for arm in spec["strategies"]]
        (grid,) = [arm for arm in arms if arm["kind"] == "grid"]
        (grid_spec,) = [arm for arm in spec["strategies"] if arm["kind"] == "grid"]
        assert grid["trials"] == grid_spec["lr"]["points"] * len(spec["seeds"])
    assert shown["trials"] == sum(arm["trials"] for arm in shown["arms"])


@pytest.mark.parametrize(
    ("args", "errors", "hint"),
    [
        (
            ["--set", "task.epochs=0", "--set", "strategies.0.lr.min=2"],
            [
                ("task.epochs", "must be at least 1, but got 0."),
                ("strategies.0.lr", "min must be below max"),
            ],
            None,
        ),
        (
            ["--set", "task.epoch=3"],
            [
                (
                    "task.epoch",
                    "--set 'task.epoch=3': unknown key 'epoch' in task, did you mean 'epochs'? "
                    "(accepted:",
                )
            ],
            None,
        ),
        (["--set", "x"], [(None, "--set 'x': expected key.path=value")], None),
        ([str(SPECS / "nightly.yaml")], [("entries", "unknown key")], "this looks like a nightly"),
    ],
)
def test_format_json_of_an_invalid_spec_exits_2_with_each_errors_field(
    spec_file: Path, args: list[str], errors: list[tuple[str | None, str]], hint: str | None
) -> None:
    own = bool(args) and args[-1].endswith(".yaml")  # a file of its own instead of spec_file
    spec, args = (args[-1], args[:-1]) if own else (str(spec_file), args)
    result = _invoke(spec, *args, "--format", "json")
    assert result.exit_code == 2, result.output
    shown = json.loads(result.stdout)
    assert shown["ok"] is False and shown["resolved"] is None and shown["trials"] is None
    found = [(error["field"], error["message"]) for error in shown["errors"]]
    for field, message in errors:
        assert any(f == field and m.startswith(message) for f, m in found), found
    assert (shown["hint"] or "").startswith(hint or "") and (hint is None) == (
        shown["hint"] is None
    )
    assert result.stderr == ""


def test_validate_counts_shapes_with_options_as_run_does() -> None:
    # 2 x 20 images, 20% held out: 8; 32 training images at 64 a batch is 1 step
    shapes = "task.dataset={name: shapes, options: {n_classes: 2, n_per_class: 20}}"
    notes = data_notes(load_spec(SPECS / "digits.yaml", overrides=[shapes]))
    assert [note.split(",")[0] for note in notes] == [
        "task.dataset: the validation set holds 8 images",
        "task.batch_size: 64 leaves an epoch of the 32 training images 1 optimizer step",
    ]
    result = _invoke(str(SPECS / "digits.yaml"), "--set", shapes)
    assert result.exit_code == 0, result.output
    assert _note_lines(result.stderr) == notes
