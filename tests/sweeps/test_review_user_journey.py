"""The README walked as a new user: the mistakes found there, through the real ``lrsweep`` CLI.

Each store is real (``lrsweep server --auth`` on the machine's PostgreSQL, a PostgreSQL
database that does not exist, SQLite stores in a temporary folder) and every command goes
through typer's CliRunner. A refusal is exit 2 (a nightly's unusable store: 3) with one message
on stderr that names the store and what to do: no traceback, no MLflow run, no Ray, nothing
created.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from _cli_helpers import tiny_spec
from _server_helpers import PG, RunningServer, clean_env, lrsweep_server, postgres_up
from mlflow import MlflowClient
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.tracking import TAG_KIND, Tracker, default_tracking_uri

ADMIN = "journeyadmin"
PASSWORD = "s3cret-" + uuid.uuid4().hex  # unique, so finding it in any output is a real leak
SPEC = tiny_spec("journey")
pytestmark = pytest.mark.usefixtures("no_ray_in_module")  # tests/conftest.py


@pytest.fixture
def work(empty_workdir: Path) -> Path:
    """An empty working directory holding the spec, with no MLflow variable set."""
    (empty_workdir / "spec.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    return empty_workdir


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """``lrsweep server --auth`` (README 'MLflow for a team') on a new PostgreSQL database."""
    root = tmp_path_factory.mktemp("auth-server")
    env = clean_env(MLFLOW_AUTH_ADMIN_USERNAME=ADMIN, MLFLOW_AUTH_ADMIN_PASSWORD=PASSWORD)
    with lrsweep_server(root, "--auth", env=env) as running:
        yield running


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def assert_refused(result: Any, *messages: str, code: int = 2) -> None:
    """Exit ``code``, each message on stderr, no password, no traceback, no Ray started."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    stderr = " ".join(result.stderr.split())
    for message in messages:
        assert message in stderr, stderr
    assert PASSWORD not in result.output
    assert "Traceback" not in result.output
    ray = sys.modules.get("ray")
    assert not (ray is not None and ray.is_initialized()), "Ray was started"


def _args(command: str, work: Path) -> list[str]:
    first = {"run": str(work / "spec.yaml"), "nightly": str(work / "suite.yaml")}
    return [command, first.get(command, "journey")]


# --- a server running basic auth, asked without (or with wrong) credentials ---------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "best", "report", "resume"])
@pytest.mark.parametrize("password", [None, "not-the-password"], ids=["no-login", "wrong-login"])
def test_an_auth_server_without_valid_credentials_is_refused_before_anything_starts(
    auth_server: RunningServer,
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    password: str | None,
) -> None:
    """It was MLflow's 401 traceback (exit 1) from the first call needing the store."""
    if password is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    result = invoke(*_args(command, work), "--tracking-uri", auth_server.url)
    why = "refused the credentials" if password else "needs a user name and password"
    assert_refused(
        result, f"The MLflow server {auth_server.url}, given by --tracking-uri", why,
        "HTTP 401", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    )  # fmt: skip
    assert not (work / ".lrsweep").exists()


@pytest.mark.slow
def test_nightly_counts_an_auth_server_refusing_it_as_a_failed_night(
    auth_server: RunningServer, work: Path
) -> None:
    (work / "suite.yaml").write_text(
        yaml.safe_dump({"name": "n", "entries": [{"name": "e", "spec_path": "spec.yaml"}]})
    )
    result = invoke(*_args("nightly", work), "--tracking-uri", auth_server.url)
    assert_refused(result, "needs a user name and password", code=3)


@pytest.mark.slow
def test_with_the_right_credentials_the_auth_server_is_used(
    auth_server: RunningServer, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    result = invoke("best", "journey", "--tracking-uri", auth_server.url)
    # Past the probe: the server itself answers that the experiment does not exist.
    assert_refused(result, "experiment 'journey' does not exist")


# --- a PostgreSQL tracking store that cannot be opened -----------------------------------------


@pytest.mark.parametrize("command", ["run", "best", "report"])
def test_a_postgres_database_that_does_not_exist_is_refused_at_once(
    work: Path, command: str
) -> None:
    """It was minutes of MLflow's retries, then a SQLAlchemy traceback (exit 1)."""
    postgres_up()
    name = f"lrsweep_missing_{uuid.uuid4().hex[:8]}"
    uri = f"{PG}/{name}"
    result = invoke(*_args(command, work), "--tracking-uri", uri)  # the probe's words, not MLflow's
    assert_refused(
        result, f"Cannot open the PostgreSQL tracking store {uri}, given by --tracking-uri",
        f'database "{name}" does not exist', f"createdb {name}",
        f"lrsweep server --backend-store-uri {uri}",
    )  # fmt: skip
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        assert cur.fetchone()[0] == 0  # nothing created it
    conn.close()


def test_a_postgres_user_that_does_not_exist_is_named_as_the_cause(work: Path) -> None:
    """The database exists and the user does not: the advice was `createdb` (of a database
    that is there) or `lrsweep server` (which creates no user)."""
    postgres_up()
    user = f"lrsweep_nobody_{uuid.uuid4().hex[:8]}"
    uri = f"postgresql://{user}@127.0.0.1:5432/postgres"
    result = invoke("best", "journey", "--tracking-uri", uri)
    assert_refused(
        result, f'role "{user}" does not exist', "asked to connect as is unknown to it",
        "postgresql://USER@HOST:PORT/DATABASE", "createuser NAME",
    )  # fmt: skip
    assert "createdb" not in result.output and "lrsweep server" not in result.output


def test_a_postgres_server_that_does_not_answer_is_refused(work: Path) -> None:
    from _server_helpers import free_port

    uri = f"postgresql://postgres@127.0.0.1:{free_port()}/mlflow"
    result = invoke("best", "journey", "--tracking-uri", uri)
    assert_refused(result, f"Cannot open the PostgreSQL tracking store {uri}", "Connection refused")


def test_a_postgres_uri_with_a_port_that_is_not_a_number_is_refused(work: Path) -> None:
    """SQLAlchemy's make_url raised inside the probe, which let MLflow print a traceback."""
    uri = "postgresql://postgres@127.0.0.1:54x2/mlflow"
    result = invoke("best", "journey", "--tracking-uri", uri)
    assert_refused(
        result, f"The PostgreSQL tracking store {uri}, given by --tracking-uri, cannot be read: "
        "its port is not a number", "postgresql://USER@HOST:PORT/DATABASE",
    )  # fmt: skip


# --- lrsweep ui on a server that does not answer ------------------------------------------------


def test_ui_refuses_a_server_that_does_not_answer(work: Path) -> None:
    """It printed "open http://127.0.0.1:PORT in a browser" and exited 0."""
    from _server_helpers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("ui", "--tracking-uri", url)
    assert_refused(result, f"Cannot reach the MLflow server {url}", "given by --tracking-uri")
    assert "in a browser" not in result.output


# --- lrsweep report in a folder without a store -------------------------------------------------


def test_report_in_a_folder_without_a_store_says_so_and_creates_none(work: Path) -> None:
    """It created an empty ./.lrsweep/mlflow.db, then said the experiment does not exist."""
    result = invoke("report", "journey")
    assert_refused(
        result,
        f"experiment 'journey' does not exist: No MLflow store at "
        f"{work / '.lrsweep' / 'mlflow.db'}",
        "pass --tracking-uri",
    )
    assert not (work / ".lrsweep").exists()
    best = invoke("best", "journey")  # the same words as lrsweep best
    assert_refused(best, f"No MLflow store at {work / '.lrsweep' / 'mlflow.db'}")


# --- the experiments a user names from the README ----------------------------------------------


@pytest.fixture
def store(work: Path) -> Tracker:
    """The embedded store with one sweep run of 'journey' and a nightly suite's experiments."""
    tracker = Tracker(default_tracking_uri(work))
    experiment = tracker.ensure_experiment("journey")
    parent = tracker.start_run(experiment, run_name="journey-1", tags={TAG_KIND: "sweep"})
    tracker.end_run(parent)
    night = tracker.ensure_experiment("nightly/suite")
    tracker.end_run(tracker.start_run(night, run_name="night", tags={"nightly.status": "passed"}))
    tracker.ensure_experiment("nightly/suite/entry-a")
    tracker.ensure_experiment("nightly/suite/entry-b")
    return tracker


def test_best_run_id_error_does_not_promise_the_latest_sweep(store: Tracker) -> None:
    """Without --run-id, best ranks every sweep of the experiment (README 'Best config'), but
    the message said "leave --run-id out for the latest" (lrsweep report's behaviour)."""
    result = invoke("best", "journey", "--run-id", "deadbeef")
    assert_refused(result, "run deadbeef is not a sweep run of experiment 'journey'")
    stderr = " ".join(result.stderr.split())
    assert "for the latest" not in stderr
    assert "leave --run-id out to rank the trials of every sweep of the experiment" in stderr


@pytest.mark.parametrize("command", ["report", "best"])
def test_a_nightly_suites_own_experiment_points_to_its_entries(
    store: Tracker, command: str
) -> None:
    """README: each entry's sweep is in nightly/<suite>/<entry>; nightly/<suite> holds the
    nights. Naming the latter said "experiment 1 has no sweep run" (report) or "no finished
    trial ... none" (best), without where the sweeps are."""
    result = invoke(command, "nightly/suite")
    assert_refused(
        result, "'nightly/suite'",
        "Its sweeps are in the experiments ['nightly/suite/entry-a', 'nightly/suite/entry-b']",
    )  # fmt: skip


def test_sweeps_of_a_nightly_suites_own_experiment_points_to_its_entries(store: Tracker) -> None:
    """`lrsweep sweeps nightly/suite`, the command that lists run ids, said only "has no sweep
    run", where `report` and `best` name the entries' experiments."""
    result = invoke("sweeps", "nightly/suite")
    assert result.exit_code == 0, result.output
    assert "Experiment 'nightly/suite' has no sweep run. Its sweeps are in the experiments " in (
        result.stdout
    )
    assert "['nightly/suite/entry-a', 'nightly/suite/entry-b']" in result.stdout


def test_best_prints_no_download_progress_bar(store: Tracker, work: Path) -> None:
    """``lrsweep best`` reads spec.yaml back; MLflow drew a progress bar on stderr for it."""
    client = MlflowClient(tracking_uri=store.uri)
    experiment = store.experiment_id("journey")
    (parent,) = store.sweep_runs(experiment)
    spec = work / "spec.yaml"
    client.log_artifact(parent.info.run_id, str(spec))
    child = store.start_run(experiment, run_name="t", parent_run_id=parent.info.run_id)
    client.log_param(child, "lr", "0.01")
    client.log_param(child, "seed", "0")
    client.log_metric(child, "best/valid_loss", 0.5)
    store.end_run(child)
    result = invoke("best", "journey", "--format", "spec")
    assert result.exit_code == 0, result.output
    assert "kind: fixed" in result.stdout
    assert "Downloading artifacts" not in result.stderr, result.stderr
