"""``lrsweep resume`` as a demanding user meets it: a finished sweep given by its folder, a sweep
whose MLflow run was deleted, two resumes of one sweep started together, a mistyped
``--storage-path``. Each is refused (exit 2, a message saying what to do) before Ray starts or
any run changes."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import assert_refused, invoke, tiny_spec

from sweeps import run as run_module
from sweeps.run import SweepRunning, default_storage, resume_sweep
from sweeps.spec import load_spec
from sweeps.tracking import Tracker

pytestmark = pytest.mark.usefixtures("no_ray_in_module")  # tests/conftest.py


def _saved_sweep(name: str, uri: str, *, finished: bool = False) -> tuple[Path, dict[str, Any]]:
    """A sweep as ``lrsweep run`` leaves it in the default storage: its parent run in ``uri``
    (closed KILLED, or FINISHED) and its ``sweep.json``."""
    tracker = Tracker(uri)
    experiment_id = tracker.ensure_experiment(name)
    run_id = tracker.start_run(experiment_id, run_name=name, tags={"sweeps.kind": "sweep"})
    tracker.end_run(run_id, "FINISHED" if finished else "KILLED")
    folder = default_storage() / name / "20250101-000000-abcdef"
    folder.mkdir(parents=True)
    state = {
        "name": name,
        "sweep_id": folder.name,
        "spec": load_spec(tiny_spec(name)).resolved(),
        "tracking_uri": uri,
        "experiment_id": experiment_id,
        "parent_run_id": run_id,
        "finished": finished,
    }
    (folder / "sweep.json").write_text(json.dumps(state), encoding="utf-8")
    return folder, state


def test_a_finished_sweep_given_by_its_folder_is_refused_as_by_its_name(
    empty_workdir: Path, tracking_uri: str
) -> None:
    # by its folder, a finished sweep was "resumed": Ray started, its FINISHED run was reopened
    # and closed again (its end, the sweep's wall time, moved to now) and its report rewritten
    folder, state = _saved_sweep("done", tracking_uri, finished=True)
    before = Tracker(tracking_uri).get_run(state["parent_run_id"]).info
    result = invoke("resume", str(folder))
    assert_refused(
        result,
        f"the sweep in {folder} finished: there is nothing to resume",
        f"lrsweep report done --run-id {state['parent_run_id']}",  # the default store
        "lrsweep run SPEC",
    )
    after = Tracker(tracking_uri).get_run(state["parent_run_id"]).info
    assert (after.status, after.end_time) == (before.status, before.end_time)
    by_name = invoke("resume", "done")
    assert_refused(by_name, "has only finished sweeps", "nothing to resume")


@pytest.mark.parametrize("deleted", ["run", "experiment"])
def test_a_sweep_whose_mlflow_run_was_deleted_is_refused_with_how_to_restore_it(
    empty_workdir: Path, tracking_uri: str, deleted: str
) -> None:
    # MLflow refuses to reopen a deleted run: the resume ended in a traceback (exit 1)
    _, state = _saved_sweep("gone", tracking_uri)
    tracker = Tracker(tracking_uri)
    if deleted == "run":
        tracker.client.delete_run(state["parent_run_id"])
        restore = f"mlflow runs restore --run-id {state['parent_run_id']}"
    else:
        tracker.client.delete_experiment(state["experiment_id"])
        restore = f"mlflow experiments restore --experiment-id {state['experiment_id']}"
    result = invoke("resume", "gone")
    assert_refused(
        result, f"was deleted in {tracking_uri}", f"MLFLOW_TRACKING_URI={tracking_uri} {restore}"
    )
    run = tracker.get_run(state["parent_run_id"]).info
    assert (run.status, run.lifecycle_stage) == ("KILLED", "deleted")


class _Stop(Exception):
    """Ends a resume in the test at its preflight, before Ray starts."""


def test_a_second_resume_started_while_the_first_is_starting_is_refused(
    empty_workdir: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first resume wrote driver.json only after its checks (store, data, preflight): a
    # second one started meanwhile found no driver and ran every trial a second time
    _saved_sweep("twice", tracking_uri)
    first_checking, first_may_go = threading.Event(), threading.Event()
    calls: list[str] = []

    def preflight(*args: Any, **kwargs: Any) -> None:
        who = threading.current_thread().name
        calls.append(who)
        if who == "first":
            first_checking.set()
            assert first_may_go.wait(30)
        raise _Stop(who)

    monkeypatch.setattr(run_module, "_preflight", preflight)
    outcome: list[BaseException] = []

    def first() -> None:
        try:
            resume_sweep("twice")
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=first, name="first")
    thread.start()
    try:
        assert first_checking.wait(30)
        with pytest.raises(SweepRunning, match=r"is still running .*would run its trials twice"):
            resume_sweep("twice")
    finally:
        first_may_go.set()
        thread.join(30)
    assert calls == ["first"] and isinstance(outcome[0], _Stop)
    with pytest.raises(_Stop):  # the first let go of the sweep: a resume now goes on
        resume_sweep("twice")


def test_a_storage_path_that_does_not_exist_is_said_so(empty_workdir: Path) -> None:
    # it read "no sweep to resume under .../ray_result; sweeps there: none", as if the storage
    # were there and empty
    typo = empty_workdir / ".lrsweep" / "ray_result"
    result = invoke("resume", "tiny", "--storage-path", str(typo))
    assert_refused(result, f"no sweep to resume under {typo}: that folder does not exist")
    assert "sweeps there" not in result.stderr
