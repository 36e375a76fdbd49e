"""``lrsweep server`` against the machine's PostgreSQL: served artifacts and basic auth, for real.

One server is started (module scope) with ``--auth`` on a database the test creates and drops;
it serves artifacts from a temporary folder.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import requests
import typer
from _server_helpers import (
    CLI,
    PG,
    REPO,
    RunningServer,
    clean_env,
    drop_database,
    free_port,
    lrsweep_server,
    postgres_up,
)
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException

from sweeps.cli import app
from sweeps.server import (
    MLFLOW_STOCK_ADMIN_PASSWORD,
    ServerConfig,
    ServerConfigError,
    ensure_backend_store,
    prepare_server,
)
from sweeps.tracking import Tracker

pytestmark = pytest.mark.slow

ADMIN = "sweepadmin"
PASSWORD = "s3cret-" + uuid.uuid4().hex  # unique, so finding it anywhere is a real leak


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("server")
    env = clean_env(MLFLOW_AUTH_ADMIN_USERNAME=ADMIN, MLFLOW_AUTH_ADMIN_PASSWORD=PASSWORD)
    with lrsweep_server(root, "--auth", env=env) as running:
        yield running


@pytest.fixture
def as_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)


def test_server_created_and_migrated_its_postgres_database(server: RunningServer) -> None:
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=server.database)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'")
        assert cur.fetchone()[0] == 1  # MLflow migrated the new database
    conn.close()


def test_unauthenticated_client_is_refused(server: RunningServer, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    response = requests.get(f"{server.url}/api/2.0/mlflow/experiments/search?max_results=5")
    assert response.status_code == 401
    wrong = requests.get(
        f"{server.url}/api/2.0/mlflow/experiments/search?max_results=5",
        auth=(ADMIN, "not-the-password"),
    )
    assert wrong.status_code == 401
    with pytest.raises(MlflowException, match=r"401|nauthorized|credentials"):
        MlflowClient(tracking_uri=server.url).create_experiment("nobody")


def test_authenticated_client_logs_and_artifacts_go_through_the_server(
    server: RunningServer, as_admin: None, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri=server.url)
    exp_id = client.create_experiment("team-sweep")
    parent = client.create_run(exp_id, tags={"sweeps.kind": "sweep"})
    run = client.create_run(exp_id, tags={"mlflow.parentRunId": parent.info.run_id})
    run_id = run.info.run_id
    client.log_param(run_id, "lr", "0.003")
    client.set_tag(run_id, "sweeps.strategy", "grid")
    client.log_metric(run_id, "valid_loss", 0.5, step=0)
    client.log_metric(run_id, "train_loss", 0.9, step=7)
    client.log_metric(run_id, "train_loss", 0.8, step=3)
    remote = Tracker(server.url)
    assert remote.last_steps(run_id) == {"valid_loss": 0, "train_loss": 7}
    pending = client.create_logged_model(exp_id, name="model", source_run_id=run_id)
    assert not remote.has_model(run_id)  # PENDING (an upload cut off) is not a model
    client.finalize_logged_model(pending.model_id, LoggedModelStatus.READY)
    assert remote.has_model(run_id)  # searched over REST
    report = tmp_path / "report.md"
    report.write_text("# all good\n")
    client.log_artifact(run_id, str(report))
    client.set_terminated(run_id)

    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = list(server.artifacts.rglob("report.md"))
    assert len(stored) == 1 and stored[0].read_text() == "# all good\n"
    assert [f.path for f in client.list_artifacts(run_id)] == ["report.md"]

    data = client.get_run(run_id).data
    assert data.params == {"lr": "0.003"}
    assert data.metrics == {"valid_loss": 0.5, "train_loss": 0.9}
    leaked = [
        str(path)
        for path in server.artifacts.parent.rglob("*")
        if path.is_file() and path.suffix != ".db" and PASSWORD in path.read_text(errors="ignore")
    ]
    assert leaked == []
    for text in (*data.params.values(), *data.tags.values(), *data.params, *data.tags):
        assert PASSWORD not in text
    assert PASSWORD not in server.log.read_text()


def test_server_refuses_missing_short_or_stock_admin_password(tmp_path: Path) -> None:
    config = ServerConfig(artifacts_destination=str(tmp_path / "a"), auth=True)
    with pytest.raises(ServerConfigError, match=r"MLFLOW_AUTH_ADMIN_PASSWORD.*not set"):
        prepare_server(config, environ={})
    with pytest.raises(ServerConfigError, match="stock default"):
        prepare_server(config, environ={"MLFLOW_AUTH_ADMIN_PASSWORD": MLFLOW_STOCK_ADMIN_PASSWORD})
    with pytest.raises(ServerConfigError, match="at least 12 characters"):
        prepare_server(config, environ={"MLFLOW_AUTH_ADMIN_PASSWORD": "short"})
    # the example files' placeholders, copied and not edited (a helper's find): public values
    example = Path(__file__).resolve().parents[2] / "infra" / "k8s" / "secrets.example.yaml"
    placeholders = dict(
        line.strip().split(": ", 1)
        for line in example.read_text().splitlines()
        if line.strip().startswith(("MLFLOW_AUTH_ADMIN_PASSWORD:", "MLFLOW_FLASK_SERVER_SECRET"))
    )
    good = {"MLFLOW_AUTH_ADMIN_PASSWORD": "a-real-long-admin-password"}
    for name, value in placeholders.items():
        with pytest.raises(ServerConfigError, match=f"{name} still holds the CHANGE-ME"):
            prepare_server(config, environ={**good, name: value})
    assert len(placeholders) == 2
    assert not (tmp_path / "a").exists()  # refused before creating anything


def test_cli_refuses_stock_password_with_exit_code_2(tmp_path: Path) -> None:
    env = clean_env(MLFLOW_AUTH_ADMIN_PASSWORD=MLFLOW_STOCK_ADMIN_PASSWORD)
    done = subprocess.run(
        [sys.executable, "-c", CLI, "server", "--auth", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "stock default password" in done.stderr
    assert "Traceback" not in done.stderr


def test_launch_keeps_secrets_off_the_command_line(tmp_path: Path) -> None:
    backend = f"sqlite:///{tmp_path / 'm.db'}"
    launch = prepare_server(
        ServerConfig(
            backend_store_uri=backend,
            artifacts_destination=str(tmp_path / "art"),
            port=5123,
            auth=True,
        ),
        environ={"MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD},
    )
    argv = " ".join(launch.argv)
    assert "--app-name basic-auth" in argv and "--serve-artifacts" in argv
    assert "--host 127.0.0.1" in argv and launch.url == "http://127.0.0.1:5123"
    assert PASSWORD not in argv and backend not in argv
    assert launch.env["MLFLOW_BACKEND_STORE_URI"] == backend
    assert PASSWORD not in str(dict(launch.env))
    ini = launch.auth_config_path.read_text()
    assert PASSWORD not in ini and "admin_username = admin" in ini
    assert launch.auth_config_path.parent == tmp_path / "auth"  # beside the artifacts folder
    assert f"sqlite:///{tmp_path / 'auth' / 'basic_auth.db'}" in ini


def test_the_csrf_key_is_kept_across_launches_and_its_file_made_private(tmp_path: Path) -> None:
    config = ServerConfig(
        backend_store_uri=f"sqlite:///{tmp_path / 'm.db'}",
        artifacts_destination=str(tmp_path / "art"),
        auth=True,
    )
    environ = {"MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD}
    first = prepare_server(config, environ=environ).env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    key_file = tmp_path / "auth" / "flask_secret_key"
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(first) == 64
    key_file.chmod(0o644)  # as a copy with `cp` or a restore from a backup leaves it
    again = prepare_server(config, environ=environ).env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert again == first
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_auth_db_elsewhere_writes_nothing_beside_the_artifacts(tmp_path: Path) -> None:
    launch = prepare_server(
        ServerConfig(
            backend_store_uri=f"sqlite:///{tmp_path / 'm.db'}",
            artifacts_destination=str(tmp_path / "art"),
            auth=True,
            auth_db_uri=f"sqlite:///{tmp_path / 'users' / 'auth.db'}",
        ),
        environ={
            "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
        },
    )
    try:
        assert not (tmp_path / "auth").exists()
        assert (
            launch.scratch_dir is not None and launch.auth_config_path.parent == launch.scratch_dir
        )
        assert f"database_uri = sqlite:///{tmp_path / 'users' / 'auth.db'}" in (
            launch.auth_config_path.read_text()
        )
        assert launch.env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "k" * 32
    finally:
        shutil.rmtree(launch.scratch_dir)


def test_postgres_database_is_created_when_missing() -> None:
    postgres_up()
    name = f"lrsweep_test_{uuid.uuid4().hex[:8]}"
    try:
        ensure_backend_store(f"{PG}/{name}")
        ensure_backend_store(f"{PG}/{name}")  # second call: already there, no error
        psycopg2.connect(host="127.0.0.1", user="postgres", dbname=name).close()
    finally:
        drop_database(name)
    with pytest.raises(ServerConfigError, match="Cannot connect to PostgreSQL"):
        ensure_backend_store("postgresql://postgres@127.0.0.1:1/x")


def test_systemd_unit_runs_a_valid_server_command_with_credentials_from_its_env_file() -> None:
    infra = REPO / "infra" / "mlflow"
    unit = (infra / "lrsweep-mlflow.service").read_text().replace("\\\n", " ")
    settings = dict(
        line.split("=", 1)
        for line in (infra / "mlflow.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert {"PGPASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= set(
        settings
    )
    assert all(not settings[key] for key in settings if "PASSWORD" in key or "SECRET" in key)
    assert "EnvironmentFile=/etc/lrsweep/mlflow.env" in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    argv = [re.sub(r"\$\{(\w+)\}", lambda m: settings[m.group(1)], arg) for arg in argv]
    assert argv[1:2] == ["server"] and "--auth" in argv
    command = typer.main.get_command(app).commands["server"]  # type: ignore[attr-defined]
    params = command.make_context("server", argv[2:]).params
    assert params["backend_store_uri"].startswith("postgresql://mlflow@")
    assert (
        params["host"] == "127.0.0.1" and params["port"] == 5000 and params["auth"]
    )  # behind the TLS proxy on the same host
