"""The command line as a demanding user meets it: ``lrsweep resume`` on a sweep whose saved
state no longer loads, ``lr-find`` output files, ``--set`` on text fields and dotted keys, and
the command printed after a failed sweep. Every refusal: exit 2, a message naming what to fix,
no traceback."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from _cli_helpers import assert_refused, invoke, tiny_spec
from rich.console import Console

from sweeps._ray import TrialOutcome
from sweeps.cli._run import finish, rerun_hint
from sweeps.run import SweepResult, default_storage
from sweeps.spec import load_spec

pytestmark = pytest.mark.usefixtures("no_ray_in_module")  # tests/conftest.py

LR_FIND = ["lr-find", "--dataset", "digits", "--arch", "simple_cnn", "--image-size", "8"]


# --- lrsweep resume: a saved state that no longer loads ------------------------------------------


def _saved_sweep(name: str, state: dict[str, Any] | str) -> Path:
    """A ``sweep.json`` in the default storage, as ``lrsweep run`` leaves an unfinished sweep."""
    folder = default_storage() / name / "20250101-000000-abcdef"
    folder.mkdir(parents=True)
    text = state if isinstance(state, str) else json.dumps(state)
    (folder / "sweep.json").write_text(text, encoding="utf-8")
    return folder


def _state(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": spec["name"],
        "sweep_id": "20250101-000000-abcdef",
        "spec": spec,
        "tracking_uri": "sqlite:///never-opened.db",
        "experiment_id": "1",
        "parent_run_id": "0" * 32,
        "finished": False,
    }


def test_resume_whose_data_folder_is_gone_names_the_field_without_a_traceback(
    empty_workdir: Path,
) -> None:
    images = empty_workdir / "images"
    images.mkdir()
    spec = tiny_spec("gone")
    spec["task"]["dataset"] = {"name": "image_folder", "path": str(images)}
    _saved_sweep("gone", _state(load_spec(spec).resolved()))
    shutil.rmtree(images)
    result = invoke("resume", "gone")
    assert_refused(result, "gone", "task.dataset.path", "lrsweep run")
    assert not (empty_workdir / "never-opened.db").exists()


def test_resume_of_a_damaged_sweep_json_names_the_file_without_a_traceback(
    empty_workdir: Path,
) -> None:
    folder = _saved_sweep("broken", '{"spec": ')
    result = invoke("resume", "broken")
    assert_refused(result, f"{folder}, has a damaged sweep.json", "lrsweep run")
    direct = invoke("resume", str(folder))  # the folder itself
    assert_refused(direct, f"a sweep.json under {folder} is not valid JSON", "lrsweep run")


def test_a_relative_or_home_storage_folder_becomes_absolute(
    empty_workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray Tune's pyarrow.fs refuses a relative path ("URI has empty scheme"): `lrsweep resume
    # .lrsweep/ray_results/NAME/ID` failed with a traceback and closed the sweep's run FAILED
    from sweeps._location import storage_root

    assert storage_root("runs/x") == empty_workdir / "runs" / "x"
    monkeypatch.setenv("HOME", str(empty_workdir / "home"))
    assert storage_root("~/ray") == empty_workdir / "home" / "ray"
    assert storage_root("s3://bucket/sweeps/") == "s3://bucket/sweeps"


def test_a_damaged_older_sweep_json_does_not_block_resuming_a_newer_sweep(
    empty_workdir: Path,
) -> None:
    from sweeps import _location
    from sweeps.run import _find_sweep

    older = _saved_sweep("two", '{"spec": ')
    newer = older.with_name("20250102-000000-abcdef")
    newer.mkdir()
    (newer / "sweep.json").write_text(json.dumps(_state({"name": "two"})), encoding="utf-8")
    found, state = _find_sweep("two", _location.storage_root(default_storage()))
    assert str(found) == str(newer) and state["finished"] is False


# --- lrsweep lr-find: output files ---------------------------------------------------------------


@pytest.mark.skipif(shutil.which("xelatex") is not None, reason="xelatex can write .pgf")
def test_lr_find_refuses_a_pgf_plot_without_latex_before_the_test(tmp_path: Path) -> None:
    out = tmp_path / "x.pgf"
    result = invoke(*LR_FIND, "--num-it", "10", "--out", str(out))
    assert_refused(result, "--out", ".pgf", "xelatex")
    assert not out.exists()


def test_lr_find_refuses_the_same_file_for_plot_and_curve(tmp_path: Path) -> None:
    same = tmp_path / "lr_find.png"
    result = invoke(*LR_FIND, "--num-it", "10", "--out", str(same), "--json", str(same))
    assert_refused(result, "--json", "--out", "same file")
    assert not same.exists()


# --- --set: text fields and dotted keys ----------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "read", "expected"),
    [
        ("tracking.experiment=007", lambda s: s.tracking.experiment, "007"),
        ("name=2024", lambda s: s.name, "2024"),
        ("name=1.10", lambda s: s.name, "1.10"),
        ("tracking.experiment=null", lambda s: s.tracking.experiment, None),
        ("task.epochs=3", lambda s: s.task.epochs, 3),
        ("task.dataset.options.channels=3", lambda s: s.task.dataset.options["channels"], 3),
    ],
)
def test_set_keeps_text_that_looks_like_a_number_for_a_text_field(
    override: str, read: Any, expected: Any
) -> None:
    value = read(load_spec(tiny_spec("t"), overrides=[override]))
    assert value == expected and type(value) is type(expected)


def test_set_reaches_a_label_key_holding_dots(empty_workdir: Path) -> None:
    override = "resources.node_labels.ray.io/accelerator-type=A100"
    spec = load_spec(tiny_spec("t"), overrides=[override])
    assert spec.resources.node_labels == {"ray.io/accelerator-type": "A100"}


def test_rerun_hint_hides_secrets_given_with_set() -> None:
    hint = rerun_hint(
        Path("spec.yaml"),
        [
            "task.dataset.options.api_token=tok-123",
            "task.dataset.options.url=https://u:pw-456@host/data",
        ],
    )
    assert "tok-123" not in hint and "pw-456" not in hint
    assert "lrsweep run spec.yaml --set" in hint and "***" in hint


def test_rerun_hint_keeps_the_cluster_and_the_store_it_was_given() -> None:
    """Typed as printed, it ran on a Ray of its own and logged to the embedded store."""
    hint = rerun_hint(
        Path("s.yaml"), ["name=x"], address="10.0.0.5:6379", tracking_uri="http://mlflow:5000"
    )
    assert hint == (
        "lrsweep run s.yaml --set name=x --address 10.0.0.5:6379 --tracking-uri http://mlflow:5000"
    )


# --- lrsweep run: a sweep where some trials failed -----------------------------------------------


def _sweep_result(storage: Path, **fields: Any) -> SweepResult:
    """Sweep ``t`` (its folder under ``storage``), with ``fields`` (trials, report, ...)."""
    return SweepResult(
        name="t",
        sweep_id="20250101-000000-abcdef",
        experiment="t",
        experiment_id="1",
        parent_run_id="p" * 32,
        tracking_uri="sqlite:///x.db",
        sweep_dir=storage / "t" / "20250101-000000-abcdef",
        **fields,
    )


def test_a_sweep_with_some_failed_trials_lists_their_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = SimpleNamespace(
        experiment="t",
        group_table=lambda: (["arm", "valid_loss"], [["fixed", "0.5 (1/2)"]]),
        no_trials="",  # it has rows to print
    )
    result = _sweep_result(
        Path("sweeps"),
        trials={
            "fixed": [
                TrialOutcome("t_1", {}, "TERMINATED", ended=True),
                TrialOutcome("t_2", {}, "ERROR", error="CUDA out of memory", ended=True),
            ]
        },
        report=report,  # type: ignore[arg-type]
        resumable=True,
    )
    finish(Console(file=io.StringIO()), result)  # exit 0: the comparison stands
    stderr = " ".join(capsys.readouterr().err.split())
    assert "1 of 2 trials failed" in stderr and "1 trial(s) (t_2): CUDA out of memory" in stderr
    assert "The sweep stays resumable: fix the cause, then retry them with: lrsweep resume t" in (
        stderr
    )

    # an arm that lost every trial: the report is printed, but the exit says it is incomplete
    result.trials["grid"] = [
        TrialOutcome("t_3", {}, "ERROR", error="bad data", ended=True),
        TrialOutcome("t_4", {}, "ERROR", error="bad data", ended=True),
    ]
    out = io.StringIO()
    with pytest.raises(typer.Exit) as stopped:
        finish(Console(file=out), result)
    assert stopped.value.exit_code == 1
    stderr = " ".join(capsys.readouterr().err.split())
    assert "every trial of arm 'grid' failed, so the comparison has no numbers for it" in stderr
    assert "lrsweep resume t" in stderr and "fixed" in out.getvalue()  # the table was printed
    # trials failed for good (a range test too short for its rule): a resume fails them again
    with pytest.raises(typer.Exit):
        finish(Console(file=io.StringIO()), replace(result, resumable=False), rerun="lrsweep run x")
    stderr = " ".join(capsys.readouterr().err.split())
    assert "lrsweep resume" not in stderr and "stays resumable" not in stderr
    assert "failed for good (a resume would fail them again)" in stderr
    assert "in the spec and run it again: lrsweep run x" in stderr


def test_a_sweep_without_address_says_it_does_not_join_ray_address(tmp_path: Path) -> None:
    """A Ray user's exported RAY_ADDRESS was ignored without a word: the sweep started a Ray of
    its own (as it must: --address is how a sweep joins a cluster)."""
    import os
    import subprocess
    import sys

    code = (
        "import logging, ray\nlogging.basicConfig(level=logging.WARNING)\n"
        "from sweeps import _ray\n_ray.init_ray(num_cpus=1)\n"
        "print('local', ray.get_runtime_context().gcs_address)\nray.shutdown()"
    )
    env = {**os.environ, "RAY_ADDRESS": "192.0.2.2:6399", "PYTHONPATH": str(Path.cwd())}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said = " ".join(done.stderr.split())
    assert "RAY_ADDRESS=192.0.2.2:6399 is set, but this sweep starts a Ray of its own" in said
    assert "--address auto joins the cluster RAY_ADDRESS names" in said
    assert ":6399" not in done.stdout  # it started its own (not the head RAY_ADDRESS names)


def _three_seed_report() -> Any:
    from sweeps.report import GroupRow, Report

    def group(name: str, kind: str, lr: float, loss: float, error: float) -> GroupRow:
        return GroupRow(
            name, kind, 3, 3, lr, loss, 0.0150, error, 0.0070, loss - 0.0345, 100 * error - 1.1,
            36, 256, 43.4, 0.15,
        )  # fmt: skip

    groups = [
        group("optuna", "optuna", 1.28e-2, 0.0345, 0.0111),
        group("lr_finder:minimum", "lr_finder", 2.92e-2, 0.2595, 0.0817),
    ]
    return Report(experiment="digits-lr", parent_run_id="abc", groups=groups, trials=[])


@pytest.mark.parametrize("width", [80, 100, 200])
def test_the_comparison_is_readable_in_a_narrow_terminal(width: int) -> None:
    """At 80 columns every cell of the 11-column table was cut to "…": no number and no finder
    rule (`lr_…`) could be read. A narrow terminal gets the columns that answer the question."""
    from sweeps.cli._run import print_report

    console = Console(width=width, file=io.StringIO(), record=True)
    print_report(console, _three_seed_report())
    text = console.export_text()
    table = [line for line in text.splitlines() if "`lrsweep report" not in line]
    assert "…" not in text and max(len(line) for line in table) <= width
    for cell in ("lr_finder:minimum", "2.92e-02", "0.2595", "8.17%"):
        assert cell in text, text
    if width == 200:  # the whole table fits
        assert "regret (error pp)" in text and "0.2595 ± 0.0150" in text
    else:
        assert "left out; `lrsweep report digits-lr --out DIR` writes every column" in " ".join(
            text.split()
        )


def test_a_narrow_terminals_hint_names_the_sweep_run_when_the_experiment_has_others() -> None:
    """`lrsweep report NAME --run-id OLDER` in a narrow terminal said to run `lrsweep report
    NAME --out DIR` for every column: that writes the latest sweep's report, not this one's."""
    from sweeps.cli._run import print_report

    console = Console(width=80, file=io.StringIO(), record=True)
    print_report(console, replace(_three_seed_report(), other_sweeps=1))
    said = console.export_text()
    # on one line, left for the terminal to wrap: a line break of rich's inside the command
    # went with it when copied, and the shell ran `lrsweep report digits-lr --run-id` alone
    assert "`lrsweep report digits-lr --run-id abc --out DIR` writes every column" in said


def test_an_interrupted_sweeps_resume_command_is_printed_on_one_line(tmp_path: Path) -> None:
    """rich broke "continue it with: lrsweep resume ..." at the console's width, inside the
    command (between `--storage-path` and its folder): copied from the terminal, the shell ran
    half of it. The terminal wraps it now."""
    storage = tmp_path / "a rather long storage folder for the ray results of this sweep"
    result = _sweep_result(storage, trials={}, interrupted=True, stop_signal="SIGINT")
    out = io.StringIO()
    with pytest.raises(typer.Exit) as stopped:
        finish(Console(file=out, width=80), result)
    assert stopped.value.exit_code == 130
    command = f"lrsweep resume t --storage-path '{storage}'"
    assert any(
        line.endswith(f"continue it with: {command}") for line in out.getvalue().splitlines()
    )
