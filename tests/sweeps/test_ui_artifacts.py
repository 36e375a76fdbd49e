"""``lrsweep ui`` on a PostgreSQL store shows the artifacts its runs logged: those a run wrote
itself from where they are, those a tracking server keeps from that server's folder."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from _server_helpers import PG, drop_database, free_port, lrsweep_ui, postgres_up, run_lrsweep

from sweeps.server import ensure_backend_store
from sweeps.tracking import Tracker

pytestmark = pytest.mark.slow


@pytest.fixture
def store() -> Iterator[str]:
    """A new PostgreSQL store, dropped afterwards."""
    postgres_up()
    database = f"lrsweep_ui_{uuid.uuid4().hex[:8]}"
    uri = f"{PG}/{database}"
    ensure_backend_store(uri)
    try:
        yield uri
    finally:
        drop_database(database)


def _run_with_note(tracker: Tracker, experiment_id: str, text: str) -> str:
    run_id = tracker.start_run(experiment_id, run_name=text)
    tracker.end_run(run_id)
    return run_id


def _note(url: str, run_id: str) -> str:
    got = requests.get(f"{url}/get-artifact", params={"path": "note.txt", "run_uuid": run_id})
    return got.text if got.status_code == 200 else f"HTTP {got.status_code}: {got.text}"


def test_a_run_that_logged_its_own_artifacts_shows_them_and_nothing_is_made_here(
    store: str, tmp_path: Path
) -> None:
    """The UI served a folder .lrsweep/artifacts it made wherever it was typed."""
    tracker = Tracker(store)
    run_id = _run_with_note(tracker, tracker.ensure_experiment("own"), "own")
    tracker.log_text(run_id, "logged by the run", "note.txt")
    with lrsweep_ui(tmp_path, "--tracking-uri", store) as url:
        assert _note(url, run_id) == "logged by the run"
    assert [p.name for p in tmp_path.iterdir()] == ["ui.log"]


def test_runs_logged_through_a_server_need_its_artifacts_folder(store: str, tmp_path: Path) -> None:
    """Their mlflow-artifacts:/ files were looked for in ./.lrsweep/artifacts: the UI showed
    every such run without a single artifact."""
    tracker = Tracker(store)
    # what `lrsweep server --artifacts-destination SERVED` leaves: the store names the files
    # mlflow-artifacts:/..., the server keeps them under SERVED
    served = tmp_path / "served"
    experiment_id = tracker.client.create_experiment(
        "team", artifact_location="mlflow-artifacts:/t"
    )
    run_id = _run_with_note(tracker, experiment_id, "served")
    (served / "t" / run_id / "artifacts").mkdir(parents=True)
    (served / "t" / run_id / "artifacts" / "note.txt").write_text("kept by the server")
    here = tmp_path / "elsewhere"
    here.mkdir()
    done = run_lrsweep("ui", "--tracking-uri", store, "--port", str(free_port()), cwd=here)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--tracking-uri {store}: the runs of 'team' were logged through an MLflow server" in (
        " ".join(done.stderr.split())
    )
    assert "--artifacts-destination" in done.stderr and "Traceback" not in done.stderr
    assert list(here.iterdir()) == []
    with lrsweep_ui(here, "--tracking-uri", store, "--artifacts-destination", str(served)) as url:
        assert _note(url, run_id) == "kept by the server"
