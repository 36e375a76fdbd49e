"""``lrsweep clean`` on storage folders laid out as sweeps leave them (the real sweeps' folders
are cleaned in ``test_faults.py`` and, through ``pyarrow.fs``, in ``test_run_sweep.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from _s3_helpers import s3_root
from _store_helpers import logged_sweep
from typer.testing import CliRunner

from sweeps import _location as location
from sweeps.clean import DRIVER_FILE, driver_record, stored_sweeps
from sweeps.cli import app
from sweeps.tracking import Tracker

DAY = 86400


def _sweep(root: Path, name: str, sweep_id: str, *, state: str | None, age_days: float) -> Path:
    """A sweep folder: ``sweep.json`` (``state`` as given; None: none), one trial checkpoint of
    1000 bytes, every file last changed ``age_days`` ago."""
    folder = root / name / sweep_id
    checkpoint = folder / "tune" / "trial_0" / "checkpoint_000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.pt").write_bytes(b"\0" * 1000)
    if state is not None:
        (folder / "sweep.json").write_text(state, encoding="utf-8")
    past = time.time() - age_days * DAY
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (past, past))
    return folder


def _sized(root: Path, size_bytes: int, *, age_days: float) -> Path:
    """A damaged sweep (no ``sweep.json``) of exactly ``size_bytes`` (a sparse file: nothing is
    written), last changed ``age_days`` ago."""
    folder = root / "lr" / "20261101-000000-aaaaaa"
    (folder / "tune").mkdir(parents=True)
    with open(folder / "tune" / "model.pt", "wb") as file:
        file.truncate(size_bytes)
    past = time.time() - age_days * DAY
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (past, past))
    return folder


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    root = tmp_path / "ray_results"
    _sweep(root, "lr", "20261101-000000-aaaaaa", state='{"finished": false}', age_days=30)
    _sweep(root, "lr", "20261120-000000-bbbbbb", state='{"finished": true}', age_days=10)
    _sweep(root, "lr", "20261206-000000-cccccc", state='{"finished": false}', age_days=0.01)
    _sweep(root, "other", "20261102-000000-dddddd", state="{cut sh", age_days=20)
    (root / "notes").mkdir()  # not a sweep: left alone
    (root / "notes" / "x.txt").write_text("mine")
    return root


def test_stored_sweeps_tell_each_state_size_and_age(storage: Path) -> None:
    found = {sweep.sweep_id: sweep for sweep in stored_sweeps(storage)}
    assert sorted(found) == [
        "20261101-000000-aaaaaa", "20261102-000000-dddddd", "20261120-000000-bbbbbb",
        "20261206-000000-cccccc",
    ]  # fmt: skip
    assert found["20261101-000000-aaaaaa"].state == "resumable"
    assert found["20261120-000000-bbbbbb"].state == "finished"
    assert found["20261102-000000-dddddd"].state == "damaged"
    assert found["20261101-000000-aaaaaa"].size_bytes == 1000 + len('{"finished": false}')
    assert 29.9 < found["20261101-000000-aaaaaa"].age_days() < 30.1
    assert [s.sweep_id for s in stored_sweeps(storage, "other")] == ["20261102-000000-dddddd"]


def test_a_file_written_today_keeps_an_old_sweep(storage: Path) -> None:
    """The newest file counts: a sweep started long ago whose trials still write is recent."""
    folder = storage / "lr" / "20261101-000000-aaaaaa"
    (folder / "tune" / "trial_0" / "result.json").write_text("{}")
    (sweep,) = [s for s in stored_sweeps(storage, "lr") if s.folder == folder]
    assert sweep.age_days() < 0.01


def test_clean_without_yes_deletes_nothing_and_says_how(storage: Path) -> None:
    result = CliRunner().invoke(app, ["clean", "--storage-path", str(storage)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("20261101-000000-aaaaaa  resumable" in line and "delete" in line for line in lines)
    assert any(
        "20261206-000000-cccccc" in line and "keep (changed within 7" in line for line in lines
    )
    assert f"To delete the 3 marked (3.0 kB): lrsweep clean --storage-path {storage} --yes" in (
        result.output
    )
    assert len(stored_sweeps(storage)) == 4


def test_clean_yes_deletes_the_old_sweeps_only(storage: Path) -> None:
    result = CliRunner().invoke(
        app, ["clean", "--storage-path", str(storage), "--older-than", "15", "--yes"]
    )
    assert result.exit_code == 0, result.output
    assert "Deleted 2 sweep folders" in result.output, result.output
    assert "1 of them can no longer be resumed; their MLflow runs" in result.output
    # its sweep.json names no store, so its run cannot be tagged: said, and nothing else fails
    assert "lr 20261101-000000-aaaaaa: its sweep run could not be tagged" in result.stderr
    assert "(sweep.json names no tracking_uri and parent_run_id)" in result.stderr
    left = sorted(s.sweep_id for s in stored_sweeps(storage))
    assert left == ["20261120-000000-bbbbbb", "20261206-000000-cccccc"]
    assert not (storage / "other").exists()  # its only sweep went, so did its folder
    assert (storage / "notes" / "x.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("size_bytes", "shown"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (999_949, "999.9 kB"),
        (999_950, "1.0 MB"),  # was 1000.0 kB
        (999_949_999, "999.9 MB"),
        (999_950_000, "1.0 GB"),  # was 1000.0 MB
        (999_950_000_000, "1.0 TB"),  # was 1000.0 GB
    ],
)
def test_a_size_is_shown_in_the_largest_unit_it_reaches(
    tmp_path: Path, size_bytes: int, shown: str
) -> None:
    root = tmp_path / "ray_results"
    _sized(root, size_bytes, age_days=30)
    result = CliRunner().invoke(app, ["clean", "--storage-path", str(root)])
    assert result.exit_code == 0, result.output
    assert f" ago {shown} delete" in " ".join(result.output.split()), result.output


@pytest.mark.parametrize(
    ("age_days", "shown"),
    [
        (0, "0 min"),
        (59.4 / 1440, "59 min"),
        (59.6 / 1440, "1.0 h"),  # was 60 min
        (23.94 / 24, "23.9 h"),
        (23.96 / 24, "1.0 days"),  # was 24.0 hours
        (30, "30.0 days"),
    ],
)
def test_an_age_is_shown_in_the_largest_unit_it_reaches(
    tmp_path: Path, age_days: float, shown: str
) -> None:
    root = tmp_path / "ray_results"
    _sized(root, 1000, age_days=age_days)
    args = ["clean", "--storage-path", str(root), "--older-than", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f" damaged {shown} ago 1.0 kB delete" in " ".join(result.output.split()), result.output


@pytest.mark.parametrize(
    ("age_days", "shown"), [(-3 / 24, "3.0 h from now"), (-10 / DAY, "0 min ago")]
)
def test_a_change_dated_in_the_future_is_said_so_and_kept(
    tmp_path: Path, age_days: float, shown: str
) -> None:
    """A file dated ahead of this machine's clock (a node whose clock runs ahead wrote it to
    shared storage) was listed "-180 min ago", and one seconds ahead "-0 min ago"."""
    root = tmp_path / "ray_results"
    _sized(root, 1000, age_days=age_days)
    args = ["clean", "--storage-path", str(root), "--older-than", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f" damaged {shown} 1.0 kB keep (changed within 0 days)" in said, result.output


def test_the_text_listing_lines_up_its_columns(tmp_path: Path) -> None:
    """Each column started wherever the names before it ended: names of other lengths (and a
    sweep folder renamed by hand) pushed every column after them out of line."""
    root = tmp_path / "ray_results"
    _sweep(root, "lr", "20261101-000000-aaaaaa", state='{"finished": true}', age_days=30)
    _sweep(root, "a-much-longer-name", "20261120-000000-bbbbbb", state=None, age_days=0.001)
    _sweep(root, "mid-name", "kept-by-hand", state='{"finished": false}', age_days=2)
    running = _sweep(root, "x", "20261206-000000-cccccc", state='{"finished": false}', age_days=9)
    (running / DRIVER_FILE).write_text(json.dumps(driver_record()))
    (root / "x" / "20261206-000000-cccccc" / "tune" / "big.pt").write_bytes(b"\0" * 123_456)
    result = CliRunner().invoke(app, ["clean", "--storage-path", str(root)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if " ago " in line]
    ids = [line.split()[1] for line in lines]
    assert ids == [
        "20261120-000000-bbbbbb", "20261101-000000-aaaaaa", "kept-by-hand",
        "20261206-000000-cccccc",
    ], result.output  # fmt: skip
    states = ["damaged", "finished", "resumable", "running"]
    starts = {
        "id": {line.index(i) for line, i in zip(lines, ids, strict=True)},
        "state": {line.index(f" {s} ") for line, s in zip(lines, states, strict=True)},
        "age's end": {line.index(" ago ") for line in lines},
        "size's end": {line.index("B  ") for line in lines},
        "action": {line.index("  delete" if "delete" in line else "  keep") for line in lines},
    }
    assert {column: len(found) for column, found in starts.items()} == dict.fromkeys(starts, 1), (
        result.output
    )


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_clean_yes_removes_a_name_folder_it_emptied_whatever_the_storage_is(
    tmp_path: Path, as_uri: bool
) -> None:
    """Given as ``file://`` (a URI, read through ``pyarrow.fs``), --yes left the name's emptied
    folder behind, where the same folder given as a path lost it."""
    root = tmp_path / "ray_results"
    _sweep(root, "lr", "20261101-000000-aaaaaa", state='{"finished": true}', age_days=30)
    _sweep(root, "other", "20261102-000000-bbbbbb", state='{"finished": true}', age_days=30)
    _sweep(root, "other", "20261206-000000-cccccc", state='{"finished": true}', age_days=0.01)
    storage = f"file://{root}" if as_uri else str(root)
    result = CliRunner().invoke(app, ["clean", "--storage-path", storage, "--yes"])
    assert result.exit_code == 0, result.output
    assert "Deleted 2 sweep folders (2.0 kB)" in result.output
    assert sorted(p.name for p in root.iterdir()) == ["other"]
    assert [p.name for p in (root / "other").iterdir()] == ["20261206-000000-cccccc"]


@pytest.mark.slow
def test_clean_yes_removes_a_name_folder_it_emptied_on_s3(s3_endpoint: str) -> None:
    """On S3, the empty marker object pyarrow.fs leaves for a folder whose last file went kept
    the name listed as a folder."""
    root = location.storage_root(s3_root(s3_endpoint, "clean"))
    for name in ("lr", "other"):
        folder = location.child(root, name, "20261101-000000-aaaaaa")
        location.write_text(location.child(folder, "tune"), "model.pt", "x" * 1000)
        location.write_text(folder, "sweep.json", '{"finished": true}')
    args = ["clean", "lr", "--storage-path", root, "--older-than", "0", "--yes"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Deleted 1 sweep folder" in result.output
    assert location.subfolders(root) == ["other"]
    assert [s.name for s in stored_sweeps(root)] == ["other"]


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_clean_yes_leaves_a_name_folder_linked_elsewhere(tmp_path: Path, as_uri: bool) -> None:
    """A name's folder moved to another disk and linked back: deleting its last sweep tried to
    rmdir() the link, and the clean failed (exit 1, "could not delete" the sweep it had deleted)."""
    root, elsewhere = tmp_path / "ray_results", tmp_path / "big"
    folder = _sweep(
        elsewhere, "lr", "20261101-000000-aaaaaa", state='{"finished": true}', age_days=30
    )
    root.mkdir()
    (root / "lr").symlink_to(elsewhere / "lr", target_is_directory=True)
    storage = f"file://{root}" if as_uri else str(root)
    result = CliRunner().invoke(app, ["clean", "--storage-path", storage, "--yes"])
    assert result.exit_code == 0, result.output
    assert "Deleted 1 sweep folder (1.0 kB)" in result.output
    assert not folder.exists()
    assert (root / "lr").is_symlink() and (elsewhere / "lr").is_dir()


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_clean_yes_deletes_a_sweep_folder_linked_elsewhere(tmp_path: Path, as_uri: bool) -> None:
    """A sweep's folder moved to another disk and linked back: --yes deleted its sweep.json,
    then failed on rmtree() of the link (exit 1), and so did every clean after it. Given as
    ``file://``, pyarrow.fs deleted the link alone, and its files stayed."""
    root, elsewhere = tmp_path / "ray_results", tmp_path / "big"
    moved = _sweep(
        elsewhere, "lr", "20261101-000000-aaaaaa", state='{"finished": true}', age_days=30
    )
    (root / "lr").mkdir(parents=True)
    (root / "lr" / moved.name).symlink_to(moved, target_is_directory=True)
    storage = f"file://{root}" if as_uri else str(root)
    result = CliRunner().invoke(app, ["clean", "--storage-path", storage, "--yes"])
    assert result.exit_code == 0, result.output
    assert "Deleted 1 sweep folder (1.0 kB)" in result.output
    assert not moved.exists() and not (root / "lr").exists()
    assert stored_sweeps(root) == []


def test_a_deleted_sweep_whose_store_is_gone_is_deleted_with_a_warning(tmp_path: Path) -> None:
    """Its run cannot be tagged not resumable when its SQLite store was deleted: the folder
    goes, a warning names why, and no empty store is created in its place."""
    root = tmp_path / "ray_results"
    store = tmp_path / "gone" / "mlflow.db"
    state = {"finished": False, "tracking_uri": f"sqlite:///{store}", "parent_run_id": "abc"}
    folder = _sweep(root, "lr", "20261101-000000-aaaaaa", state=json.dumps(state), age_days=30)
    result = CliRunner().invoke(app, ["clean", "--storage-path", str(root), "--yes"])
    assert result.exit_code == 0, result.output
    assert not folder.exists() and not store.exists() and not store.parent.exists()
    assert "1 of them can no longer be resumed; their" in result.output
    assert f"could not be tagged sweeps.resumable=false (no MLflow store at {store}: deleted" in (
        " ".join(result.stderr.split())
    )


def test_a_folder_not_named_as_a_sweep_is_no_damaged_sweep_for_holding_a_tune_folder(
    tmp_path: Path,
) -> None:
    """A --storage-path pointed at other data (an ML project's own ``runs/exp1/tune``) listed
    its folders as damaged sweeps, and --yes deleted them."""
    root = tmp_path / "data"
    mine = root / "runs" / "exp1"
    (mine / "tune").mkdir(parents=True)
    (mine / "tune" / "results.csv").write_text("mine")
    past = time.time() - 30 * DAY
    os.utime(mine / "tune" / "results.csv", (past, past))
    damaged = _sweep(root, "lr", "20261101-000000-aaaaaa", state=None, age_days=30)
    assert [(s.name, s.sweep_id, s.state) for s in stored_sweeps(root)] == [
        ("lr", "20261101-000000-aaaaaa", "damaged")
    ]
    result = CliRunner().invoke(app, ["clean", "--storage-path", str(root), "--yes"])
    assert result.exit_code == 0, result.output
    assert "exp1" not in result.output and "Deleted 1 sweep folder" in result.output
    assert (mine / "tune" / "results.csv").read_text() == "mine" and not damaged.exists()


def test_clean_names_what_it_cannot_find(tmp_path: Path, storage: Path) -> None:
    result = CliRunner().invoke(app, ["clean", "nope", "--storage-path", str(storage)])
    assert result.exit_code == 2
    assert "no sweep called 'nope'" in result.stderr and "['lr', 'other']" in result.stderr
    assert "notes" not in result.stderr  # no sweep's folder
    empty = CliRunner().invoke(app, ["clean", "--storage-path", str(tmp_path / "none")])
    assert empty.exit_code == 0 and "No sweeps under" in empty.output
    # a folder that is not there (a typo) is said so: not taken for an empty one
    assert f"No sweeps under {tmp_path / 'none'}: no such folder (sweeps stored elsewhere" in (
        " ".join(empty.output.split())
    )
    (tmp_path / "none").mkdir()
    there = CliRunner().invoke(app, ["clean", "--storage-path", str(tmp_path / "none")])
    assert there.output == f"No sweeps under {tmp_path / 'none'}.\n"
    negative = CliRunner().invoke(
        app, ["clean", "--storage-path", str(storage), "--older-than", "-1"]
    )
    assert negative.exit_code == 2 and "--older-than" in negative.output


def test_clean_of_a_name_whose_folder_holds_no_sweep_does_not_list_it_as_one(
    storage: Path,
) -> None:
    """Its folder left with a file of the user's: "no sweep called 'mine' ...; sweeps there:
    ['lr', 'mine', 'notes', 'other']" named it among the sweeps."""
    (storage / "mine" / "kept").mkdir(parents=True)
    result = CliRunner().invoke(app, ["clean", "mine", "--storage-path", str(storage)])
    assert result.exit_code == 2, result.output
    assert f"no sweep called 'mine' under {storage}; sweeps there: ['lr', 'other']." in (
        " ".join(result.stderr.split())
    )


@pytest.mark.parametrize("name", ["../victim", "..", "lr/../../victim", "/tmp/victim"])
def test_a_name_that_would_leave_the_storage_root_is_refused(
    tmp_path: Path, storage: Path, name: str
) -> None:
    """A helper's `lrsweep clean ../../victim --yes` deleted a folder outside the root (and its
    parent) because it held a sweep.json."""
    victim = _sweep(tmp_path, "victim", "20250101-000000-aaaaaa", state="{}", age_days=30)
    if name.startswith("/"):
        name = str(victim.parent)
    result = CliRunner().invoke(
        app, ["clean", name, "--storage-path", str(storage), "--older-than", "0", "--yes"]
    )
    assert result.exit_code == 2, result.output
    assert f"NAME {name!r} is no sweep name" in result.stderr
    assert (victim / "sweep.json").exists()


def test_a_running_sweep_is_listed_running_and_never_deleted(storage: Path) -> None:
    """A helper's `lrsweep clean --older-than 0 --yes` deleted a sweep mid-run (every trial then
    failed); it was listed as "interrupted or failed"."""
    folder = storage / "lr" / "20261101-000000-aaaaaa"
    (folder / DRIVER_FILE).write_text(json.dumps(driver_record()))  # this process drives it
    (sweep,) = [s for s in stored_sweeps(storage, "lr") if s.folder == folder]
    assert sweep.state == "running"
    result = CliRunner().invoke(
        app, ["clean", "lr", "--storage-path", str(storage), "--older-than", "0", "--yes"]
    )
    assert result.exit_code == 0, result.output
    assert "20261101-000000-aaaaaa  running" in result.output and "keep (running)" in result.output
    assert folder.is_dir()
    dead = {**driver_record(), "pid": 2**22 + 12345}  # no such process
    (folder / DRIVER_FILE).write_text(json.dumps(dead))
    assert {s.state for s in stored_sweeps(storage, "lr") if s.folder == folder} == {"resumable"}


def test_resume_refuses_a_sweep_whose_driver_still_runs(
    storage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second driver restored the running sweep's Tuner: trials ran twice, the first
    driver's finished runs were deleted as unknown to the restored state, exit 0."""
    from sweeps.run import SweepNotFound, resume_sweep

    folder = storage / "lr" / "20261206-000000-cccccc"
    (folder / DRIVER_FILE).write_text(json.dumps(driver_record()))
    with pytest.raises(
        SweepNotFound, match=r"is still running \(process \d+ on this machine\)"
    ) as found:
        resume_sweep("lr", storage_path=storage, tracking_uri="sqlite:///unused.db")
    # the older interrupted sweep of that name is offered (a user who double-started, then
    # stopped the first), and the CLI adds no "it is elsewhere: --storage-path" hint
    older = storage / "lr" / "20261101-000000-aaaaaa"
    assert f"resumable by their folder: `lrsweep resume {older}`." in str(found.value)
    (storage.parent / ".lrsweep").mkdir()
    (storage.parent / ".lrsweep" / "ray_results").symlink_to(storage)  # the default storage
    monkeypatch.chdir(storage.parent)
    said = CliRunner().invoke(app, ["resume", "lr"])
    assert said.exit_code == 2 and "is still running" in said.stderr, said.output
    assert "is not here" not in said.stderr


def test_resume_says_when_a_newer_sweep_of_the_name_finished(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The latest unfinished sweep is resumed even when a newer one of the name finished; the
    user is told, since `lrsweep resume NAME` reads as "the latest sweep of NAME"."""
    from sweeps.run import _find_sweep

    root = tmp_path / "ray_results"
    older = _sweep(root, "lr", "20261101-000000-aaaaaa", state='{"finished": false}', age_days=3)
    newer = _sweep(root, "lr", "20261120-000000-bbbbbb", state='{"finished": true}', age_days=1)
    with caplog.at_level("WARNING", logger="sweeps.run"):
        assert _find_sweep("lr", root)[0] == older
    said = " ".join(caplog.text.split())
    assert f"resuming {older}, the latest sweep of that name that did not finish" in said, said
    assert f"1 newer sweep(s) of it finished since (the latest: {newer})" in said, said
    (newer / "sweep.json").write_text('{"finished": false}')
    caplog.clear()
    with caplog.at_level("WARNING", logger="sweeps.run"):
        assert _find_sweep("lr", root)[0] == newer
    assert "newer sweep" not in caplog.text


def test_clean_format_json_lists_every_sweep_with_its_action_and_deletes_nothing(
    storage: Path,
) -> None:
    result = CliRunner().invoke(app, ["clean", "--storage-path", str(storage), "--format", "json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)  # stdout is the JSON alone
    assert listed["storage_path"] == str(storage) and listed["older_than_days"] == 7.0
    by_id = {sweep["sweep_id"]: sweep for sweep in listed["sweeps"]}
    assert {i: (s["state"], s["action"]) for i, s in by_id.items()} == {
        "20261101-000000-aaaaaa": ("resumable", "delete"),
        "20261102-000000-dddddd": ("damaged", "delete"),
        "20261120-000000-bbbbbb": ("finished", "delete"),
        "20261206-000000-cccccc": ("resumable", "keep"),
    }
    oldest = by_id["20261101-000000-aaaaaa"]
    assert oldest["name"] == "lr" and oldest["folder"] == str(storage / "lr" / oldest["sweep_id"])
    assert oldest["size_bytes"] == 1000 + len('{"finished": false}')
    assert oldest["age_days"] == pytest.approx(30, abs=0.01)
    changed = datetime.fromisoformat(oldest["last_change"])
    assert changed.tzinfo is not None
    assert changed.timestamp() == pytest.approx(time.time() - 30 * DAY, abs=60)
    assert by_id["20261206-000000-cccccc"]["reason"] == "changed within 7 days"
    assert listed["command"] == f"lrsweep clean --storage-path {storage} --yes"
    assert listed["deleted"] == []
    assert len(stored_sweeps(storage)) == 4


def test_clean_format_json_yes_lists_what_it_deleted(storage: Path) -> None:
    args = ["clean", "--storage-path", str(storage), "--older-than", "15", "--yes"]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert listed["deleted"] == [
        str(storage / "lr" / "20261101-000000-aaaaaa"),
        str(storage / "other" / "20261102-000000-dddddd"),
    ]
    assert listed["command"] is None
    assert not any(Path(folder).exists() for folder in listed["deleted"])
    assert sorted(s.sweep_id for s in stored_sweeps(storage)) == [
        "20261120-000000-bbbbbb",
        "20261206-000000-cccccc",
    ]
    again = CliRunner().invoke(app, [*args, "--format", "json"])  # nothing old is left
    assert json.loads(again.stdout)["deleted"] == []
    assert {s["action"] for s in json.loads(again.stdout)["sweeps"]} == {"keep"}


def test_clean_format_json_keeps_a_running_sweep_and_says_why(storage: Path) -> None:
    folder = storage / "lr" / "20261101-000000-aaaaaa"
    (folder / DRIVER_FILE).write_text(json.dumps(driver_record()))
    args = ["clean", "lr", "--storage-path", str(storage), "--older-than", "0", "--yes"]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    (running,) = [s for s in listed["sweeps"] if s["folder"] == str(folder)]
    assert (running["state"], running["action"], running["reason"]) == (
        "running",
        "keep",
        "running",
    )
    assert str(folder) not in listed["deleted"] and folder.is_dir()


def test_clean_shows_a_uri_storages_folders_without_its_secrets(tmp_path: Path) -> None:
    """A storage URI's options may hold credentials (``?secret_key=``); --format json showed
    each sweep's folder, and the folders --yes deleted, with them."""
    root = tmp_path / "ray_results"
    folder = _sweep(root, "lr", "20261101-000000-aaaaaa", state='{"finished": true}', age_days=30)
    storage = f"file://{root}?secret_key=TOPSECRET123"
    shown = f"file://{folder}?secret_key=***"
    for yes in ([], ["--yes"]):
        args = ["clean", "--storage-path", storage, "--format", "json", *yes]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "TOPSECRET123" not in result.output
        listed = json.loads(result.stdout)
        assert [sweep["folder"] for sweep in listed["sweeps"]] == [shown]
    assert listed["deleted"] == [shown] and not folder.exists()


@contextlib.contextmanager
def _undeletable(folder: Path) -> Iterator[None]:
    """Nothing in ``folder`` can be deleted (a real EPERM): ``chattr +i`` for root, whom a
    read-only mode does not stop, else mode 555."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_deletion_that_fails_half_way_tags_the_sweep_it_cut_and_loses_no_warning(
    tmp_path: Path, tracking_uri: str
) -> None:
    """A folder that cannot be deleted whole stops clean (exit 1); the warning of a sweep
    deleted before it is still said, with what was deleted, and the sweep it cut, whose
    sweep.json is gone so that nothing resumes it any more, is tagged not resumable."""
    tracker = Tracker(tracking_uri)
    parent = tracker.start_run(tracker.ensure_experiment("lr"), run_name="sweep")
    root = tmp_path / "ray_results"
    untagged = _sweep(
        root, "lr", "20261101-000000-aaaaaa", state='{"finished": false}', age_days=30
    )
    state = {"finished": False, "tracking_uri": tracking_uri, "parent_run_id": parent}
    cut = _sweep(root, "lr", "20261102-000000-bbbbbb", state=json.dumps(state), age_days=30)
    with _undeletable(cut / "tune" / "trial_0"):
        result = CliRunner().invoke(app, ["clean", "--storage-path", str(root), "--yes"])
    assert result.exit_code == 1, result.output
    said = " ".join(result.stderr.split())
    assert "lr 20261101-000000-aaaaaa: its sweep run could not be tagged" in said, said
    assert f"Error: could not delete {cut}: " in said
    assert "(deleted before it: lr 20261101-000000-aaaaaa)" in said, said
    assert not untagged.exists() and not (cut / "sweep.json").exists()
    tags = tracker.get_run(parent).data.tags
    assert tags.get("sweeps.resumable") == "false" and "sweeps.cleaned" in tags
    (left,) = stored_sweeps(root)  # listed as damaged: a second clean finishes it
    assert (left.sweep_id, left.state) == ("20261102-000000-bbbbbb", "damaged")
    args = ["clean", "--storage-path", str(root), "--older-than", "0", "--yes"]  # changed now
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert not cut.exists()


def test_a_deletion_cut_by_ctrl_c_tags_the_sweep_it_cut(
    tmp_path: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in a long deletion left the sweep without its sweep.json (listed damaged, so the
    second clean tagged nothing either) and its run untagged: its report offered a resume."""
    from sweeps import _location

    tracker = Tracker(tracking_uri)
    parent = tracker.start_run(tracker.ensure_experiment("lr"), run_name="sweep")
    state = {"finished": False, "tracking_uri": tracking_uri, "parent_run_id": parent}
    root = tmp_path / "ray_results"
    cut = _sweep(root, "lr", "20261102-000000-bbbbbb", state=json.dumps(state), age_days=30)

    def interrupted(folder: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_location, "remove_folder", interrupted)
    result = CliRunner().invoke(app, ["clean", "--storage-path", str(root), "--yes"])
    assert result.exit_code == 130, result.output  # as Ctrl-C ends every command
    assert not (cut / "sweep.json").exists()
    tags = tracker.get_run(parent).data.tags
    assert tags.get("sweeps.resumable") == "false" and "sweeps.cleaned" in tags


@pytest.mark.parametrize(
    ("parent_status", "trial_status", "note"),
    [
        ("KILLED", "KILLED", "Incomplete: this sweep was interrupted (its run is KILLED)."),
        ("RUNNING", "RUNNING", "Incomplete: this sweep is still running (or its driver died"),
        ("FINISHED", "FAILED", "Partly failed: 1 of 2 trial runs failed (the first error: "),
        ("FAILED", "FAILED", "Failed: this sweep's run is FAILED (1 of 2 trial runs failed)"),
    ],
)
def test_the_report_of_a_cleaned_sweep_says_to_run_it_again_not_to_resume_it(
    tmp_path: Path, tracking_uri: str, parent_status: str, trial_status: str, note: str
) -> None:
    """Whatever left it resumable (interrupted, a driver that died, failed trials), once clean
    deleted its folder the report's note says so, and offers no `lrsweep resume`."""
    tracker = Tracker(tracking_uri)
    tags = {"sweeps.spec_name": "lr", "sweeps.resumable": "true"}
    parent = logged_sweep(
        tracker,
        "lr",
        tags,
        trial_status=trial_status,
        parent_status=parent_status,
        trial_error="RuntimeError('boom')",
    )
    state = {"finished": False, "tracking_uri": tracking_uri, "parent_run_id": parent}
    root = tmp_path / "ray_results"
    _sweep(root, "lr", "20261101-000000-aaaaaa", state=json.dumps(state), age_days=30)
    cleaned = CliRunner().invoke(app, ["clean", "--storage-path", str(root), "--yes"])
    assert cleaned.exit_code == 0 and "(tagged on 1 of their sweep runs" in cleaned.output
    report = CliRunner().invoke(app, ["report", "lr", "--tracking-uri", tracking_uri])
    assert report.exit_code == 0, report.output
    said = " ".join(report.stdout.split())
    assert note in said, said
    assert "its folder in ray's storage was deleted by `lrsweep clean` (" in said.lower(), said
    assert "UTC), so it cannot be resumed; " in said and "run the sweep again" in said, said
    assert "lrsweep resume" not in said, said


def test_a_sweep_whose_driver_lock_is_held_is_running_and_kept(storage: Path) -> None:
    """A resume holds the sweep's driver lock from the moment it chose the sweep, seconds before
    it writes driver.json (its store and data checks): clean listed the sweep as resumable and
    `--yes` deleted it under the starting resume."""
    import sys

    folder = storage / "lr" / "20261101-000000-aaaaaa"  # resumable, 30 days old
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from sweeps.clean import driver_lock\n"
            "with driver_lock(Path(sys.argv[1])):\n"
            "    print('held', flush=True); time.sleep(60)",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        found = {sweep.sweep_id: sweep.state for sweep in stored_sweeps(storage)}
        assert found["20261101-000000-aaaaaa"] == "running"
        cleaned = CliRunner().invoke(
            app, ["clean", "lr", "--storage-path", str(storage), "--older-than", "1", "--yes"]
        )
        assert cleaned.exit_code == 0, cleaned.output
        assert (folder / "sweep.json").is_file()  # kept
    finally:
        holder.kill()
        holder.wait()
    found = {sweep.sweep_id: sweep.state for sweep in stored_sweeps(storage)}
    assert found["20261101-000000-aaaaaa"] == "resumable"  # the lock went with its process
