"""Review of ``lrsweep server`` / ``lrsweep ui``: faults caused for real (processes, sockets, the
machine's PostgreSQL), one test per defect found."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import psycopg2
import pytest
import requests
from _server_helpers import (
    CLI,
    PG,
    RunningServer,
    clean_env,
    drop_database,
    free_port,
    kill_all,
    lrsweep_server,
    postgres_up,
    run_lrsweep,
    session_pids,
    stop,
)

from sweeps import _server_setup
from sweeps import server as server_module
from sweeps.server import ServerConfig, ServerConfigError, ensure_backend_store, prepare_server

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-" + uuid.uuid4().hex


def _wait_gone(sid: int, timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while (left := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.3)
    return left


def _port_closed(url: str) -> bool:
    try:
        requests.get(f"{url}/health", timeout=2)
    except requests.ConnectionError:
        return True
    return False


def _database_exists(name: str) -> bool:
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None
    finally:
        conn.close()


# --- signals: no process of the server outlives `lrsweep server` -------------------------------


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, RunningServer]]:
    """A server with 2 workers; yields the `lrsweep server` process too (its session id)."""
    captured: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):  # the helper's Popen is the `lrsweep server` one
        proc = real_popen(*args, **kwargs)
        captured.append(proc)
        return proc

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", recording_popen)
        with lrsweep_server(tmp_path, "--workers", "2", env=clean_env()) as running:
            patch.undo()
            proc = next(p for p in captured if "server" in p.args)
            try:
                yield proc, running
            finally:
                kill_all(session_pids(proc.pid))


def test_terminal_hangup_stops_mlflow_and_its_workers(started) -> None:
    """SIGHUP to the foreground group (a closed terminal / ssh session) killed lrsweep and the
    `mlflow server` process, while uvicorn (which takes SIGHUP as 'restart the workers') kept
    serving the port as an orphan."""
    proc, running = started
    os.killpg(proc.pid, signal.SIGHUP)
    proc.wait(timeout=60)
    left = _wait_gone(proc.pid, timeout_s=40)
    assert left == set() and _port_closed(running.url)


def test_a_hung_mlflow_is_killed_with_its_workers(started) -> None:
    """When `mlflow server` ignored SIGTERM, only it was SIGKILLed: its uvicorn workers were
    orphaned and went on serving the port."""
    proc, running = started
    mlflow_pid = next(
        pid
        for pid in session_pids(proc.pid)
        if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1] == str(proc.pid)
    )
    os.kill(mlflow_pid, signal.SIGSTOP)  # hung: SIGTERM stays pending
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    left = _wait_gone(proc.pid, timeout_s=20)
    assert left == set() and _port_closed(running.url)


# --- --allowed-hosts ------------------------------------------------------------------------


def test_allowed_hosts_adds_to_localhost_and_private_addresses(tmp_path: Path) -> None:
    """`--allowed-hosts mlflow.team.example` replaced MLflow's defaults: the address lrsweep
    prints (http://127.0.0.1:PORT) answered 403 to every request but /health."""
    with lrsweep_server(tmp_path, "--allowed-hosts", "mlflow.team.example", env=clean_env()) as s:
        search = f"{s.url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert requests.get(search, timeout=10).status_code == 200
        named = requests.get(search, headers={"Host": "mlflow.team.example"}, timeout=10)
        assert named.status_code == 200
        private = requests.get(search, headers={"Host": "10.1.2.3:5000"}, timeout=10)
        assert private.status_code == 200
        other = requests.get(search, headers={"Host": "evil.example"}, timeout=10)
        assert other.status_code == 403


# --- readiness ----------------------------------------------------------------------------------


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


def test_readiness_probe_does_not_go_through_an_http_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With `http_proxy` set (and no `no_proxy`), the probe of the child's own 127.0.0.1 went
    to the proxy, so a running server was reported as 'did not answer'."""
    httpd = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        server_module.wait_until_ready(url, sleeper, timeout_s=5)
    finally:
        sleeper.kill()
        sleeper.wait()
        httpd.shutdown()
        httpd.server_close()


# --- the artifact root and the backend store URI --------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        "/proc/lrsweep-artifacts",
        "{tmp}/a-file/artifacts",
        "/proc",
        "postgresql://postgres@127.0.0.1/x",  # accepted: every artifact upload then failed, 500
        "nosuch://bucket/path",
    ],
)
def test_an_unusable_artifacts_destination_is_refused_before_the_database_is_made(
    tmp_path: Path, where: str
) -> None:
    """A folder that cannot be made (or written) ended in a traceback, after the PostgreSQL
    database had been created; a database URL started a server no artifact could be logged to."""
    postgres_up()
    (tmp_path / "a-file").write_text("x")
    database = f"lrsweep_test_{uuid.uuid4().hex[:8]}"
    try:
        done = run_lrsweep(
            "server",
            "--backend-store-uri",
            f"{PG}/{database}",
            "--artifacts-destination",
            where.format(tmp=tmp_path),
            "--port",
            str(free_port()),
            cwd=tmp_path,
        )
        assert done.returncode == 2, done.stderr
        assert "--artifacts-destination" in done.stderr and "Traceback" not in done.stderr
        assert not _database_exists(database)
        if where.startswith("postgresql"):
            assert "is a database; MLflow keeps artifacts in a folder or an object store" in (
                done.stderr
            )
        if where.startswith("nosuch"):
            assert "MLflow stores no artifacts at nosuch://" in done.stderr and "s3://" in (
                done.stderr
            )
    finally:
        drop_database(database)


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("postgresql://postgres@127.0.0.1:notaport/mlflow", "port"),
        ("sqlite:////proc/lrsweep-nowhere/mlflow.db", "cannot create"),
        # mlflow server printed a traceback and exited 1 (systemd retried it for good), after
        # the artifacts folder had been made
        ("sqlite://x.db", "two slashes"),
        ("mlflow-folder", "is a folder"),
        # a tracking server given as the store: mlflow server's traceback, exit 1
        ("http://127.0.0.1:5999", "not a database"),
        # engines MLflow serves, whose Python driver is not installed: MLflow's traceback
        # (ModuleNotFoundError), exit 1, after the artifacts folder had been made
        ("mysql://u@localhost/db", "pip install mysqlclient"),
        ("mssql+pyodbc://u@h/db", "pip install pyodbc"),
        ("mysql+nosuchdriver://u@h/db", "no database driver"),
    ],
)
def test_an_unusable_backend_store_uri_is_refused_naming_the_option(
    tmp_path: Path, uri: str, words: str
) -> None:
    done = run_lrsweep(
        "server", "--backend-store-uri", uri, "--port", str(free_port()), cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert "--backend-store-uri" in done.stderr and words in done.stderr.lower()
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".lrsweep").exists()


@pytest.mark.parametrize("option", ["--backend-store-uri", "--auth-db-uri"])
def test_a_store_uri_mlflow_cannot_open_is_refused_before_anything_is_made(
    tmp_path: Path, option: str
) -> None:
    artifacts = tmp_path / "artifacts"
    field = {"--backend-store-uri": "backend_store_uri", "--auth-db-uri": "auth_db_uri"}[option]
    uris = {"backend_store_uri": f"sqlite:///{tmp_path}/m.db", field: "sqlite://x.db"}
    config = ServerConfig(artifacts_destination=str(artifacts), auth=True, **uris)
    environ = {"MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-enough-password"}
    with pytest.raises(ServerConfigError, match=rf"^{option}: 'sqlite://x.db' has two slashes"):
        prepare_server(config, environ=environ)
    assert not artifacts.exists() and not (tmp_path / "m.db").exists()


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5999", "https://alice@mlflow.team.example"])
def test_an_mlflow_server_as_the_store_is_refused_naming_a_database_to_use(
    tmp_path: Path, uri: str
) -> None:
    artifacts = tmp_path / "artifacts"
    config = ServerConfig(backend_store_uri=uri, artifacts_destination=str(artifacts))
    with pytest.raises(ServerConfigError, match=r"^--backend-store-uri") as refused:
        prepare_server(config, environ={})
    message = str(refused.value)
    assert "not a database" in message and "postgresql://" in message and "sqlite:///" in message
    assert "alice" not in message  # a user (or a token) given in the URI is not repeated
    assert not artifacts.exists()


def test_a_folder_as_the_store_is_offered_a_database_in_it_not_a_server(tmp_path: Path) -> None:
    config = ServerConfig(
        backend_store_uri=str(tmp_path / "runs"), artifacts_destination=str(tmp_path / "a")
    )
    with pytest.raises(ServerConfigError, match="is a folder") as refused:
        prepare_server(config, environ={})
    assert f"sqlite:///{tmp_path}/runs/mlflow.db" in str(refused.value)
    assert "http" not in str(refused.value)  # a server cannot be where a server keeps its runs


def test_every_store_mlflow_serves_still_passes_the_check(tmp_path: Path) -> None:
    """What a sweep cannot log to directly may still be a server's store: an in-memory SQLite
    (and MLflow's MSSQL engine where its driver is installed: see the refusals above); and the
    usual SQLite file and PostgreSQL database."""
    postgres_up()
    database = f"lrsweep_test_{uuid.uuid4().hex[:8]}"
    stores = ["sqlite:///rel.db", "sqlite:///:memory:", "sqlite://"]
    try:
        for uri in [*stores, f"{PG}/{database}?connect_timeout=3"]:
            config = ServerConfig(backend_store_uri=uri, artifacts_destination=str(tmp_path / "a"))
            launch = prepare_server(config)
            assert launch.env["MLFLOW_BACKEND_STORE_URI"].endswith(uri.split("://", 1)[1])
        assert _database_exists(database)
    finally:
        drop_database(database)


@pytest.mark.parametrize("command", ["server", "ui"])
@pytest.mark.parametrize("port", ["-1", "0", "70000"])
def test_a_port_out_of_range_is_named_as_such_not_as_an_unknown_host(
    tmp_path: Path, command: str, port: str
) -> None:
    """``--port -1`` was reported as "--host '127.0.0.1' cannot be resolved"."""
    from typer.testing import CliRunner

    from sweeps.cli import app

    args = [command, "--port", port]
    if command == "ui":
        (tmp_path / "ui.db").touch()  # a store that is there: the port is what is wrong
        args += ["--tracking-uri", f"sqlite:///{tmp_path}/ui.db"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"--port must be between 1 and 65535, but got {port}." in result.stderr
    assert "cannot be resolved" not in result.stderr


def test_a_postgres_that_never_answers_is_refused_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Something listens on the port but never speaks (a hung PostgreSQL, a firewall that
    swallows packets): `lrsweep server` waited without end."""
    # read where the connection is made (sweeps.server only re-exports it)
    monkeypatch.setattr(_server_setup, "POSTGRES_CONNECT_TIMEOUT_S", 2)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ServerConfigError, match=r"--backend-store-uri .*timeout"):
            ensure_backend_store(f"postgresql://postgres@127.0.0.1:{port}/mlflow")
        assert time.monotonic() - started < 20


def test_a_postgres_not_up_yet_is_a_failed_start_not_a_configuration_error(
    tmp_path: Path,
) -> None:
    """Exit 2 means "fix the configuration": the systemd unit (RestartPreventExitStatus=2) never
    restarts it. A PostgreSQL that is down or still booting exited 2 too, so a server started
    before its database stayed dead until someone restarted it by hand."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    uri = f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    done = run_lrsweep(
        "server", "--backend-store-uri", uri, "--port", str(free_port()), cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    assert "Cannot connect to PostgreSQL for --backend-store-uri" in done.stderr
    assert "PostgreSQL runs there" in done.stderr and "Traceback" not in done.stderr
    assert "See its output above" not in done.stderr  # mlflow server never started
    refused = f"postgresql://no_such_role_{uuid.uuid4().hex[:8]}@{PG.split('@')[1]}/mlflow"
    done = run_lrsweep(
        "server", "--backend-store-uri", refused, "--port", str(free_port()), cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr  # a user PostgreSQL refuses: fix the setup
    assert "does not exist" in done.stderr
    unit = (Path(__file__).resolve().parents[2] / "infra/mlflow/lrsweep-mlflow.service").read_text()
    (prevent,) = [
        line for line in unit.splitlines() if line.startswith("RestartPreventExitStatus=")
    ]
    assert "1" not in prevent.partition("=")[2].split()


# --- what --auth leaves on disk ---------------------------------------------------------------


def test_the_auth_folder_holding_password_hashes_is_private(tmp_path: Path) -> None:
    """`auth/` (basic_auth.db: the users' password hashes) was made with the umask's 0755, so
    MLflow's database in it was readable by every local user."""
    launch = prepare_server(
        ServerConfig(
            backend_store_uri=f"sqlite:///{tmp_path / 'm.db'}",
            artifacts_destination=str(tmp_path / "art"),
            auth=True,
        ),
        environ={"MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD},
    )
    assert launch.auth_config_path is not None
    auth_dir = launch.auth_config_path.parent
    assert stat.S_IMODE(auth_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(launch.auth_config_path.stat().st_mode) == 0o600


# --- lrsweep ui ---------------------------------------------------------------------------------


def test_ui_in_a_folder_without_a_store_says_so_and_creates_none(tmp_path: Path) -> None:
    """`lrsweep ui` outside the folder a sweep ran in made an empty ./.lrsweep store and served
    it without a word (`lrsweep report` and `best` refuse it, naming --tracking-uri)."""
    done = run_lrsweep("ui", "--port", str(free_port()), cwd=tmp_path, timeout_s=30)
    assert done.returncode == 2, done.stderr
    assert f"No MLflow store at {tmp_path / '.lrsweep' / 'mlflow.db'}" in done.stderr
    assert "--tracking-uri" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / ".lrsweep").exists()


def test_killing_lrsweep_outright_stops_mlflow_and_its_workers(started) -> None:
    """`kill -9` of `lrsweep server` (its process group, as a supervisor's last resort does)
    must not leave MLflow serving the port without anyone to stop it."""
    proc, running = started
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    left = _wait_gone(proc.pid, timeout_s=40)
    assert left == set() and _port_closed(running.url)


def test_ui_on_a_sqlite_file_that_is_not_there_is_refused_and_creates_nothing(
    tmp_path: Path,
) -> None:
    """A typo in --tracking-uri made and served an empty store (with its artifacts folder),
    where `report` and `best` refuse the same URI."""
    uri = f"sqlite:///{tmp_path}/typo/x.db"
    done = run_lrsweep("ui", "--tracking-uri", uri, "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--tracking-uri: No MLflow store at {tmp_path}/typo/x.db" in done.stderr
    assert not (tmp_path / "typo").exists()


def test_ui_started_with_sigint_ignored_still_stops_on_sigint(tmp_path: Path) -> None:
    """A script's `&` job inherits SIGINT ignored: `kill -INT` left the UI serving."""
    (tmp_path / "ui.db").touch()
    uri, port = f"sqlite:///{tmp_path}/ui.db", free_port()
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLI, "ui", "--port", str(port), "--tracking-uri", uri],
            env=clean_env(),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        deadline = time.monotonic() + 120
        while f"MLflow is serving at http://127.0.0.1:{port}" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, log.read_text()
        with socket.socket() as probe:  # mlflow is gone: nothing listens on the port again
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
            probe.bind(("127.0.0.1", port))
            probe.listen()
    finally:
        stop(proc)
