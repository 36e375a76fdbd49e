"""Bug hunt in ``lrsweep server`` / ``lrsweep ui`` (a team MLflow server set up for real): one
test per defect found, each failing on the code before its fix."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from _server_helpers import (
    CLI,
    PG,
    clean_env,
    drop_database,
    free_port,
    kill_all,
    new_database,
    postgres_up,
    run_lrsweep,
    session_pids,
)

from sweeps.tracking import existing_store_uri

pytestmark = pytest.mark.slow


@pytest.fixture
def other_programs_database() -> Iterator[str]:
    """A PostgreSQL database holding one table of some other program."""
    with new_database("lrsweep_other") as name:
        with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=name) as conn:
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE invoices (id int)")
        conn.close()
        yield name


def _tables(database: str) -> set[str]:
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def test_ui_on_another_programs_postgres_database_is_refused_untouched(
    other_programs_database: str, tmp_path: Path
) -> None:
    """`lrsweep ui --tracking-uri postgresql://.../<another app's database>` created MLflow's ~40
    tables in that database and served it, where a SQLite file of another program is refused."""
    uri = f"{PG}/{other_programs_database}"
    done = run_lrsweep("ui", "--tracking-uri", uri, "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--tracking-uri: {uri} is not an MLflow store" in done.stderr
    assert "Traceback" not in done.stderr
    assert _tables(other_programs_database) == {"invoices"}


def test_reading_commands_refuse_another_programs_postgres_database(
    other_programs_database: str,
) -> None:
    """`report`, `best`, `sweeps` and `predict` read through ``existing_store_uri``: the same
    database is refused there before MLflow adds its tables; an empty one is a new store."""
    with pytest.raises(LookupError, match="not an MLflow store: that database holds another"):
        existing_store_uri(f"{PG}/{other_programs_database}")
    assert _tables(other_programs_database) == {"invoices"}
    with new_database("lrsweep_empty") as empty:
        assert existing_store_uri(f"{PG}/{empty}") == f"{PG}/{empty}"


# --- the artifacts destination ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("mlflow-artifacts:/x", "MLflow stores no artifacts at mlflow-artifacts://"),
        ("s3:/bucket/path", "write it as s3://BUCKET/PATH"),
        ("gs:bucket", "write it as gs://BUCKET/PATH"),
    ],
)
def test_a_uri_with_one_slash_is_no_folder_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, destination: str, message: str
) -> None:
    """`--artifacts-destination mlflow-artifacts:/x` (or `s3:/bucket`, one slash short) made the
    folders ./mlflow-artifacts:/x (./s3:/bucket) and served every artifact from there."""
    from sweeps.server import ServerConfig, ServerConfigError, prepare_server

    monkeypatch.chdir(tmp_path)
    config = ServerConfig(
        backend_store_uri=f"sqlite:///{tmp_path}/db/mlflow.db", artifacts_destination=destination
    )
    with pytest.raises(ServerConfigError, match=f"--artifacts-destination .*{message}"):
        prepare_server(config, environ={})
    assert list(tmp_path.iterdir()) == []


def test_a_file_uri_with_one_slash_is_that_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`file:/srv/artifacts` (one slash, as Python's Path.as_uri() of some tools writes it)
    became ./file:/srv/artifacts below the working directory."""
    from sweeps.server import ServerConfig, prepare_server

    monkeypatch.chdir(tmp_path)
    config = ServerConfig(
        backend_store_uri=f"sqlite:///{tmp_path}/db/mlflow.db",
        artifacts_destination=f"file:{tmp_path}/art",
    )
    launch = prepare_server(config, environ={})
    assert launch.artifacts_destination == str(tmp_path / "art")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "db"]


# --- the host ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["192.0.2.1", "no-such-host.invalid"])
def test_a_host_that_cannot_be_bound_is_refused_without_a_listening_warning(
    tmp_path: Path, host: str
) -> None:
    """`lrsweep server --host 192.0.2.1` (not this machine's) warned "listening on 192.0.2.1,
    not only this machine: anyone who reaches port ... can read, change and delete every run"
    and the 403 note, then refused the host: nothing ever listened."""
    done = run_lrsweep(
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
        "--host",
        host,
        "--port",
        str(free_port()),
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--host {host}" in done.stderr or f"--host {host!r}" in done.stderr
    assert "listening on" not in done.stderr and "Invalid Host header" not in done.stderr


def test_a_refused_store_on_another_host_warns_of_nothing(tmp_path: Path) -> None:
    """A refused setup starts no server, so there is no exposure to warn of."""
    done = run_lrsweep(
        "server",
        "--backend-store-uri",
        "sqlite://x.db",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sqlite:///" in done.stderr and "listening on" not in done.stderr


# --- how the backend store is shown ---------------------------------------------------------


def test_the_backend_store_is_shown_with_the_user_it_connects_as(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backend store: postgresql+psycopg2://127.0.0.1:5432/mlflow` dropped the user given and
    added a driver nobody typed: it read as a connection as the default user; errors (`role
    "x" does not exist`) named no user either. The password stays masked."""
    from sweeps.server import ServerConfig, ServerConfigError, prepare_server

    postgres_up()
    monkeypatch.chdir(tmp_path)
    database = f"lrsweep_shown_{uuid.uuid4().hex[:8]}"
    try:
        launch = prepare_server(ServerConfig(backend_store_uri=f"{PG}/{database}"), environ={})
        assert launch.backend_display == f"{PG}/{database}"
    finally:
        drop_database(database)
    role = f"nobody_{uuid.uuid4().hex[:6]}"
    uri = f"postgresql://{role}@127.0.0.1:5432/{database}"
    with pytest.raises(ServerConfigError, match=f"--backend-store-uri {uri}: "):
        prepare_server(ServerConfig(backend_store_uri=uri), environ={})


# --- reaching PostgreSQL ----------------------------------------------------------------------


def test_ctrl_c_while_postgres_is_reached_stops_at_once_leaving_nothing(tmp_path: Path) -> None:
    """Ctrl-C while `lrsweep server` connected to a PostgreSQL that did not answer waited for
    the connection's timeout (10 s; here the URI's 120 s) before anything stopped."""
    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/m?connect_timeout=120"
        proc = subprocess.Popen(
            [sys.executable, "-c", CLI, "server", "--backend-store-uri", uri],
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            silent.settimeout(120)
            peer, _ = silent.accept()  # lrsweep is connecting; kept open, never answered
            with peer:
                proc.send_signal(signal.SIGINT)
                stopped = time.monotonic()
                _, err = proc.communicate(timeout=30)
                waited_s = time.monotonic() - stopped
        finally:
            kill_all(session_pids(proc.pid))
            proc.kill()
            proc.wait()
    assert waited_s < 15 and proc.returncode == 0, (waited_s, proc.returncode, err)
    assert "Traceback" not in err and err.strip() == "", err
    assert list(tmp_path.iterdir()) == []  # the artifacts folder it had made is gone


def test_an_unknown_postgres_host_is_a_setup_to_fix(tmp_path: Path) -> None:
    """A host no DNS knows exited 1, which systemd's Restart=on-failure retried for good, with
    libpq's message and "check that PostgreSQL runs there"."""
    uri = "postgresql://mlflow@no-such-host.invalid/mlflow"
    done = run_lrsweep(
        "server", "--backend-store-uri", uri, "--port", str(free_port()), cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"Error: --backend-store-uri {uri}: the host 'no-such-host.invalid' is not known (no DNS "
        "name or /etc/hosts entry resolves it). Check the host name in the URI, or give the "
        "PostgreSQL server's address."
    )
