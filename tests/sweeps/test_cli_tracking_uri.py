"""Tracking URIs through the real ``lrsweep`` command line (typer's CliRunner).

Every place a URI comes from (``--tracking-uri``, the spec's ``tracking.uri``,
``MLFLOW_TRACKING_URI``) goes through one check: a password, a file store or ``sqlite://x.db`` is
refused, and a server that does not answer stops ``run``, ``best`` and ``report`` before anything
starts. A refusal is exit 2, a message on stderr naming the URI without its password and what to
do, no traceback, no MLflow run and no Ray. A bare ``postgresql://`` store opens with psycopg2.
The hints printed after a sweep name the store and the Ray storage it used.
"""

from __future__ import annotations

import json
import shlex
import socket
import sqlite3
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from _cli_helpers import tiny_spec
from _server_helpers import PG, drop_database, postgres_up
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.cli._run import browse_hint
from sweeps.run import default_storage
from sweeps.server import ensure_backend_store
from sweeps.spec import SpecError, load_spec
from sweeps.tracking import (
    Tracker,
    TrackingUriError,
    check_tracking_server,
    check_tracking_uri,
    default_tracking_uri,
    redact_uri,
    resolve_tracking_uri,
)

PASSWORD = "s3cret-pw"
SPEC = tiny_spec("uri-check")
# Ends the shared Ray, so these tests can prove none starts; the sweeps at the end of this module
# start it again (``ray_running``, tests/conftest.py).
pytestmark = pytest.mark.usefixtures("no_ray_in_module")  # tests/conftest.py


@pytest.fixture
def work(empty_workdir: Path) -> Path:
    """An empty working directory with the spec in it and no MLflow variable set."""
    (empty_workdir / "spec.yaml").write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    return empty_workdir


def closed_port() -> int:
    """A local TCP port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _mlflow_runs(root: Path) -> int:
    count = 0
    for db in root.rglob("*.db"):
        with sqlite3.connect(db) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            if "runs" in tables:
                count += conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    return count


def assert_refused(result: Any, root: Path, *messages: str) -> None:
    """Exit 2, each message on stderr, no password, no traceback, no run, no Ray, no sweep."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    stderr = " ".join(result.stderr.split())
    for message in messages:
        assert message in stderr, stderr
    assert PASSWORD not in result.output
    assert "Traceback" not in result.output
    assert _mlflow_runs(root) == 0
    assert not list(root.rglob("sweep.json")), "a sweep state file was written"
    ray = sys.modules.get("ray")
    assert not (ray is not None and ray.is_initialized()), "Ray was started"


# --- 1. a server that does not answer -----------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "best", "report"])
def test_an_unreachable_server_is_refused_before_anything_starts(work: Path, command: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    first = str(work / "spec.yaml") if command == "run" else "uri-check"
    result = invoke(command, first, "--tracking-uri", url)
    assert_refused(
        result, work, f"Cannot reach the MLflow server {url}", "connection refused",
        "given by --tracking-uri", "Start it", "check the host and port",
    )  # fmt: skip


@pytest.mark.parametrize("command", ["run", "best", "report"])
@pytest.mark.parametrize(
    ("uri", "words"),
    [
        (
            "mysql://u@127.0.0.1/db",
            ("the Python database driver 'MySQLdb'", "pip install mysqlclient"),
        ),
        ("mysql+pymysql://u@127.0.0.1/db", ("'pymysql'", "pip install PyMySQL")),
        ("mysql+nosuchdriver://u@127.0.0.1/db", ("SQLAlchemy has no database driver",)),
    ],
)
def test_a_database_whose_driver_is_missing_is_refused_before_anything_starts(
    work: Path, command: str, uri: str, words: tuple[str, ...]
) -> None:
    """MLflow printed ``ModuleNotFoundError: No module named 'MySQLdb'`` as a traceback."""
    first = str(work / "spec.yaml") if command == "run" else "uri-check"
    result = invoke(command, first, "--tracking-uri", uri)
    assert_refused(result, work, "--tracking-uri", *words)


def test_an_unreachable_server_from_the_environment_is_named_as_such(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    result = invoke("run", str(work / "spec.yaml"))
    assert_refused(result, work, f"Cannot reach the MLflow server {url}", "MLFLOW_TRACKING_URI")


def test_nightly_still_counts_an_unreachable_store_as_a_failed_night(work: Path) -> None:
    suite = work / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "n", "entries": [{"name": "t", "spec_path": "s"}]}))
    result = invoke("nightly", str(suite), "--tracking-uri", f"http://127.0.0.1:{closed_port()}")
    assert result.exit_code == 3, result.output
    assert "Cannot reach the MLflow server" in result.stderr
    assert "Traceback" not in result.output


def test_any_http_answer_counts_as_a_reachable_server() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer_404() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer_404, daemon=True)
        thread.start()
        check_tracking_server(f"http://127.0.0.1:{port}", source="--tracking-uri")
        thread.join(timeout=5)


class _Answering:
    """An HTTP server on a free local port answering every request with ``status`` and
    ``body``: a wrong port or path behind a proxy (404), a server whose store fails (500), a
    web page where MLflow should be (200, HTML)."""

    def __init__(self, status: int, body: bytes) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # http.server calls them by these names

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("command", ["run", "best", "report"])
@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (404, b"not here", ("HTTP 404", "no MLflow tracking server is at that address")),
        (500, b"boom", ("HTTP 500", "its own database or artifact store is failing")),
        (200, b"<html>hello</html>", ("a page that is not MLflow's JSON",)),
    ],
    ids=["404", "500", "html"],
)
def test_an_address_that_answers_but_is_no_mlflow_server_is_refused_at_once(
    work: Path, command: str, status: int, body: bytes, words: tuple[str, ...]
) -> None:
    """A 404 or an HTML page gave a traceback and exit 1; a 500, the same after five minutes
    of MLflow's retries."""
    server = _Answering(status, body)
    try:
        first = str(work / "spec.yaml") if command == "run" else "uri-check"
        result = invoke(command, first, "--tracking-uri", server.url)
    finally:
        server.close()
    assert_refused(result, work, f"{server.url}, given by --tracking-uri", *words)


def test_a_port_that_does_not_speak_http_is_named_so() -> None:
    """PostgreSQL's port given as http://: "Start it (lrsweep server --port 5432)" was wrong."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def hang_up() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                conn.recv(4096)
                conn.close()

        threading.Thread(target=hang_up, daemon=True).start()
        with pytest.raises(TrackingUriError, match="is no HTTP server") as caught:
            check_tracking_server(f"http://127.0.0.1:{port}", source="--tracking-uri")
    assert "postgresql://USER@HOST:PORT/DATABASE" in str(caught.value)
    assert "Start it" not in str(caught.value)


def test_a_host_and_port_without_a_scheme_suggests_http_first(work: Path) -> None:
    result = invoke("best", "uri-check", "--tracking-uri", "127.0.0.1:5601")
    assert_refused(result, work, "has no scheme: for an MLflow server write http://127.0.0.1:5601")


# --- 2. credentials in a URI, from every source ------------------------------------------------

SECRET_URI = f"http://alice:{PASSWORD}@127.0.0.1:{closed_port()}"


@pytest.mark.parametrize(
    ("args", "source"),
    [
        (["run", "{spec}", "--tracking-uri", SECRET_URI], "--tracking-uri"),
        (["run", "{spec}", "--set", f"tracking.uri={SECRET_URI}"], "tracking.uri"),
        (["best", "uri-check", "--tracking-uri", SECRET_URI], "--tracking-uri"),
        (["report", "uri-check", "--tracking-uri", SECRET_URI], "--tracking-uri"),
        (["resume", "uri-check", "--tracking-uri", SECRET_URI], "--tracking-uri"),
        (["ui", "--tracking-uri", SECRET_URI], "--tracking-uri"),
        (["validate", "{spec}", "--set", f"tracking.uri={SECRET_URI}"], "tracking.uri"),
    ],
    ids=["run-flag", "run-spec", "best", "report", "resume", "ui", "validate-spec"],
)
def test_a_password_in_the_uri_is_refused_without_echoing_it(
    work: Path, args: list[str], source: str
) -> None:
    result = invoke(*(arg.replace("{spec}", str(work / "spec.yaml")) for arg in args))
    assert_refused(
        result, work, source, "must not contain a password",
        "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    )  # fmt: skip


@pytest.mark.parametrize("command", ["run", "best"])
def test_a_password_in_mlflow_tracking_uri_is_refused_without_echoing_it(
    work: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SECRET_URI)
    first = str(work / "spec.yaml") if command == "run" else "uri-check"
    result = invoke(command, first)
    assert_refused(result, work, "MLFLOW_TRACKING_URI", "must not contain a password")


@pytest.mark.parametrize(
    "uri",
    [SECRET_URI, "postgresql://mlflow:{pw}@db:5432/mlflow", "postgresql://db/mlflow?password={pw}"],
    ids=["http-userinfo", "postgresql-userinfo", "postgresql-query"],  # the port is random
)
def test_tracker_and_check_refuse_a_password_and_never_repeat_it(uri: str) -> None:
    uri = uri.replace("{pw}", PASSWORD)
    with pytest.raises(TrackingUriError, match="must not contain a password") as caught:
        Tracker(uri)
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in redact_uri(uri)
    with pytest.raises(SpecError, match=r"tracking\.uri: must not contain a password"):
        load_spec({**SPEC, "tracking": {"uri": uri}})


# --- 3. a bare postgresql:// store opens with psycopg2 -----------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_tracker_logs_to_a_bare_postgresql_uri(scheme: str) -> None:
    postgres_up()
    name = f"lrsweep_test_{uuid.uuid4().hex[:8]}"
    uri = f"{PG.replace('postgresql', scheme, 1)}/{name}"
    ensure_backend_store(uri)  # creates the empty database, as `lrsweep server` does
    try:
        tracker = Tracker(uri)
        assert tracker.bulk_metrics  # the SQL path, not log_batch
        experiment = tracker.ensure_experiment("pg-direct")
        run_id = tracker.start_run(experiment, run_name="trial")
        tracker.log_metrics(run_id, [("valid_loss", 0.5, 0), ("valid_loss", 0.25, 1)])
        tracker.end_run(run_id)
        assert tracker.metric_history(run_id, "valid_loss") == [(0, 0.5), (1, 0.25)]
        assert Tracker(uri).get_run(run_id).info.status == "FINISHED"
    finally:
        drop_database(name)


@pytest.mark.parametrize("command", ["report", "nightly"])
def test_a_postgresql_uri_with_its_own_connect_timeout_is_checked_not_a_traceback(
    work: Path, command: str
) -> None:
    """The check passed ``connect_timeout`` twice to psycopg2 (TypeError, exit 1: "regressed"
    to whoever schedules the night); the URI's own value is the one used."""
    postgres_up()
    missing = f"lrsweep_absent_{uuid.uuid4().hex[:8]}"
    check_tracking_server(f"{PG}/postgres?connect_timeout=3")  # one that opens passes
    suite = work / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "n", "entries": [{"name": "t", "spec_path": "s"}]}))
    first = "uri-check" if command == "report" else str(suite)
    result = invoke(command, first, "--tracking-uri", f"{PG}/{missing}?connect_timeout=3")
    assert result.exit_code == (2 if command == "report" else 3), result.output
    assert f'database "{missing}" does not exist' in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["report", "nightly"])
def test_a_postgresql_uri_libpq_refuses_is_bad_input_not_a_traceback(
    work: Path, command: str
) -> None:
    """A NUL in a parameter: libpq raises ValueError, which was a traceback (exit 1); now the
    store is refused as any store that cannot be opened (nightly: a failed night)."""
    suite = work / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "n", "entries": [{"name": "t", "spec_path": "s"}]}))
    first = "uri-check" if command == "report" else str(suite)
    result = invoke(command, first, "--tracking-uri", f"{PG}/postgres?sslmode=%00")
    assert result.exit_code == (2 if command == "report" else 3), result.output  # as any store
    assert "cannot be read" in result.stderr and "Traceback" not in result.output


# --- 4. a folder (MLflow's file store) ----------------------------------------------------------


@pytest.mark.parametrize("value", ["{tmp}/fsstore", "file://{tmp}/fsstore", "mlruns"])
def test_a_folder_as_tracking_uri_fails_validation_suggesting_sqlite(
    work: Path, value: str
) -> None:
    value = value.replace("{tmp}", str(work))
    folder = value.removeprefix("file://")
    result = invoke("validate", str(work / "spec.yaml"), "--set", f"tracking.uri={value}")
    assert_refused(result, work, "tracking.uri", "file store", f"sqlite:///{folder}/mlflow.db")


def test_a_folder_given_to_run_is_refused_before_anything_starts(work: Path) -> None:
    result = invoke("run", str(work / "spec.yaml"), "--tracking-uri", str(work / "fsstore"))
    assert_refused(result, work, "--tracking-uri", f"sqlite:///{work}/fsstore/mlflow.db")
    assert not (work / "fsstore").exists()


@pytest.mark.parametrize("other", ["text", "database"])
@pytest.mark.parametrize("command", ["run", "nightly", "resume"])
def test_a_file_that_is_no_mlflow_store_is_refused_by_the_writers_untouched(
    work: Path, command: str, other: str
) -> None:
    # run and resume died in a traceback ("file is not a database"), nightly as a crashed night
    # (exit 3, its traceback); another program's database had MLflow's tables written into it
    target = work / ("notes.txt" if other == "text" else "inventory.db")
    if other == "text":
        target.write_text("not a database\n", encoding="utf-8")
    else:
        with sqlite3.connect(target) as conn:
            conn.execute("CREATE TABLE items (name TEXT)")
    before = target.read_bytes()
    suite = work / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "n", "entries": [{"spec_path": "spec.yaml"}]}))
    first = {"run": str(work / "spec.yaml"), "nightly": str(suite), "resume": "uri-check"}
    result = invoke(command, first[command], "--tracking-uri", f"sqlite:///{target.name}")
    assert_refused(result, work, f"--tracking-uri sqlite:///{target.name}: {target} is not an")
    assert target.read_bytes() == before
    assert not (work / f".{target.name}.lock").exists()


# --- 5. sqlite:// with two slashes --------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["run", "{spec}", "--tracking-uri", "sqlite://relative.db"],
        ["best", "uri-check", "--tracking-uri", "sqlite://relative.db"],
        ["validate", "{spec}", "--set", "tracking.uri=sqlite://relative.db"],
        ["ui", "--tracking-uri", "sqlite://relative.db"],
    ],
    ids=["run", "best", "validate", "ui"],
)
def test_sqlite_with_two_slashes_is_refused_showing_the_right_form(
    work: Path, args: list[str]
) -> None:
    result = invoke(*(arg.replace("{spec}", str(work / "spec.yaml")) for arg in args))
    assert_refused(
        result, work, "two slashes", "sqlite:///relative.db", "sqlite:////abs/path/mlflow.db"
    )
    assert "ArgumentError" not in result.output


@pytest.mark.parametrize(
    ("uri", "fine"),
    [
        ("sqlite:///relative.db", True),
        ("sqlite:////abs/path.db", True),
        ("postgresql+psycopg2://postgres@127.0.0.1:5432/x", True),
        ("https://mlflow.example:5000/prefix", True),
        ("databricks", True),
        ("sqlite://", False),
        ("http://", False),
        ("htp://host:5000", False),
        (f"http://alice:{PASSWORD}@[::1", False),  # unparseable: refused, password not shown
        (f"https://{PASSWORD}@mlflow.example:5000", False),  # a token as the user
        (f"https://mlflow.example:5000/?token={PASSWORD}", False),
    ],
)
def test_check_tracking_uri_table(uri: str, fine: bool) -> None:
    if fine:
        assert check_tracking_uri(uri) == uri
    else:
        with pytest.raises(TrackingUriError, match=r"The tracking URI") as caught:
            check_tracking_uri(uri)
        assert PASSWORD not in str(caught.value)


# --- 6. the browse hint names a store that is not the default -----------------------------------


def test_browse_hint_names_the_store_unless_it_is_the_default(work: Path) -> None:
    assert browse_hint(default_tracking_uri(work)).startswith("Browse the runs: lrsweep ui   (")
    other = f"sqlite:///{work}/elsewhere/mlflow.db"
    assert f"lrsweep ui --tracking-uri {other}" in browse_hint(other)
    # a server serves its own UI: `lrsweep ui --tracking-uri http://...` only said to open it
    assert (
        browse_hint("http://mlflow:5000") == "Browse the runs: open http://mlflow:5000 in a browser"
    )
    # a database's user is who `lrsweep ui` must connect as (without it, the OS user); an
    # http(s) user may be a token
    pg = "postgresql://alice@127.0.0.1:5432/alice_db"
    assert f"lrsweep ui --tracking-uri {pg}" in browse_hint(pg)
    token = browse_hint("https://tok@mlflow.example.com")  # shown without its user
    assert token == "Browse the runs: open https://mlflow.example.com in a browser"


def test_resolve_makes_a_relative_sqlite_uri_absolute_whoever_gives_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_sweep(spec, tracking_uri="sqlite:///x.db")`` and a relative ``MLFLOW_TRACKING_URI``
    under ``lrsweep nightly`` reached the trials as given (only the CLI options and the spec's
    field were made absolute), so every trial opened an empty database of its own."""
    monkeypatch.chdir(tmp_path)
    expected = f"sqlite:///{tmp_path.resolve()}/team/mlflow.db"
    assert resolve_tracking_uri("sqlite:///team/mlflow.db") == expected
    assert resolve_tracking_uri("sqlite:///mlflow.db", cwd="/srv") == "sqlite:////srv/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///team/mlflow.db")
    assert resolve_tracking_uri() == resolve_tracking_uri(None, "") == expected
    for kept in ("sqlite:////abs/mlflow.db", "http://mlflow:5000", "postgresql://u@db/x"):
        assert resolve_tracking_uri(kept) == kept


# --- real sweeps: the hints after `lrsweep run` -------------------------------------------------


def _hint_args(stderr: str) -> list[str]:
    """The arguments of the ``lrsweep resume ...`` command printed on stderr."""
    line = next(x for x in stderr.splitlines() if "lrsweep resume" in x)
    return shlex.split(line.split("lrsweep resume", 1)[1])


def test_run_prints_a_browse_hint_naming_a_non_default_store(ray_running: None, work: Path) -> None:
    uri = f"sqlite:///{work}/team/mlflow.db"
    result = invoke("run", str(work / "spec.yaml"), "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    output = " ".join(result.stdout.split())
    assert f"Browse the runs: lrsweep ui --tracking-uri {uri}" in output, output


@pytest.mark.parametrize("given_by", ["--tracking-uri", "MLFLOW_TRACKING_URI"])
def test_a_relative_sqlite_uri_is_the_one_every_trial_logs_to(
    ray_running: None, work: Path, monkeypatch: pytest.MonkeyPatch, given_by: str
) -> None:
    """``sqlite:///relative.db`` is relative to the working directory of ``lrsweep run``; the
    trials, in working directories of their own, opened another, empty database there and
    every trial failed ("No Experiment with id=1 exists")."""
    uri = "sqlite:///team/mlflow.db"
    args = ["run", str(work / "spec.yaml")]
    if given_by == "--tracking-uri":
        args += ["--tracking-uri", uri]
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(work / "team" / "mlflow.db") as conn:
        statuses = sorted(row[0] for row in conn.execute("SELECT status FROM runs"))
    assert statuses == ["FINISHED", "FINISHED"]  # the sweep's run and its one trial's
    shown = " ".join(result.stdout.split())
    store = f"sqlite:///{work.resolve()}/team/mlflow.db"
    if given_by == "--tracking-uri":
        assert f"lrsweep ui --tracking-uri {store}" in shown, shown
    else:  # a plain `lrsweep ui` reads the same variable, so opens this very store
        assert f"Browse the runs: lrsweep ui (or: mlflow ui --backend-store-uri {store})" in shown


def test_resume_hint_carries_a_non_default_storage_path_that_finds_the_sweep(
    ray_running: None, work: Path
) -> None:
    """Every trial fails (a range test that diverges at once, from lr 1: no rule can read its
    two points, which no check before the sweep knows), so the hint is printed; the printed
    command resumes that very sweep (the same sweep id fails again), a bare one not."""
    storage = work / "elsewhere"
    finder = {"kind": "lr_finder", "suggest": ["valley"], "start_lr": 1.0, "end_lr": 1000.0}
    failing = {
        **SPEC,
        "strategies": [finder | {"num_it": 30}],
        "failure": {"max_failures": 0},
        "storage": {"path": str(storage)},
    }
    (work / "spec.yaml").write_text(yaml.safe_dump(failing), encoding="utf-8")
    result = invoke("run", str(work / "spec.yaml"))
    assert result.exit_code == 1, result.output
    args = _hint_args(result.stderr)
    assert args == ["uri-check", "--storage-path", str(storage)], result.stderr
    # the report's note gives that same command, read from the tags of the sweep's run
    report = invoke("report", "uri-check", "--format", "json")
    assert f"`lrsweep resume {shlex.join(args)}` retries" in json.loads(report.stdout)["note"]
    (state,) = storage.rglob("sweep.json")
    sweep_id = json.loads(state.read_text())["sweep_id"]
    assert storage.resolve() != default_storage()

    bare = invoke("resume", "uri-check")
    assert bare.exit_code == 2 and "no sweep to resume" in bare.stderr, bare.output
    again = invoke("resume", *args)
    assert again.exit_code == 1, again.output
    assert f"every trial of sweep {sweep_id} failed" in " ".join(again.stderr.split())

    # another store than the sweep's: a traceback (MLflow's "No Experiment with id=...") that
    # created the missing database on its way; now a refusal naming both stores
    missing = work / "other.db"
    elsewhere = invoke("resume", *args, "--tracking-uri", f"sqlite:///{missing}")
    said = " ".join(elsewhere.stderr.split())
    assert elsewhere.exit_code == 2 and "Traceback" not in elsewhere.output, elsewhere.output
    assert f"there is no MLflow store at {missing}; resume it with that store" in said, said
    assert "the sweep logged to sqlite:///" in said and not missing.exists()
    Tracker(f"sqlite:///{missing}")  # a store, without the sweep's runs
    elsewhere = invoke("resume", *args, "--tracking-uri", f"sqlite:///{missing}")
    said = " ".join(elsewhere.stderr.split())
    assert elsewhere.exit_code == 2 and "Traceback" not in elsewhere.output, elsewhere.output
    assert f"sqlite:///{missing} holds no run " in said and "--storage-path" not in said, said
    # no --tracking-uri, and the sweep's own store is gone: no advice to pass that very store
    (store,) = work.rglob("mlflow.db")
    store.rename(work / "moved.db")
    gone = invoke("resume", *args)
    said = " ".join(gone.stderr.split())
    assert gone.exit_code == 2 and "its runs are gone with it" in said, gone.output
    assert "--tracking-uri" not in said and not store.exists()


@pytest.mark.parametrize(
    ("uri", "stored"),
    [
        # resume connects as the user the sweep ran as (it connected as the OS user before)
        ("postgresql://mlflow@db:5432/mlflow", "postgresql://mlflow@db:5432/mlflow"),
        ("postgresql://mlflow@db/x?sslpassword=k", "postgresql://mlflow@db/x?sslpassword=***"),
        ("https://tok3n@mlflow.example.com", "https://mlflow.example.com"),  # may be a token
        ("sqlite:////srv/lrsweep/mlflow.db", "sqlite:////srv/lrsweep/mlflow.db"),
    ],
)
def test_sweep_json_keeps_the_database_user_a_resume_connects_as(uri: str, stored: str) -> None:
    from sweeps.run import stored_tracking_uri

    assert stored_tracking_uri(uri) == stored


@pytest.mark.parametrize(
    ("address", "tail"),
    [
        (None, ""),
        ("local", ""),
        ("auto", " --address auto"),
        ("10.0.0.5:6379", " --address 10.0.0.5:6379"),
        ("ray://head:10001", " --address ray://head:10001"),
    ],
)
def test_the_resume_hint_of_a_cluster_sweep_resumes_it_on_that_cluster(
    address: str | None, tail: str
) -> None:
    """A user's cluster sweep, stopped by SIGTERM, printed `lrsweep resume NAME`: typed as
    given, it started a Ray of its own on the user's machine and trained the rest there."""
    from sweeps.run import resume_hint

    sweep_dir = default_storage() / "digits-lr" / "20261206-000000-abcdef"
    assert resume_hint("digits-lr", sweep_dir, address) == f"lrsweep resume digits-lr{tail}"


def test_default_storage_inside_a_ray_jobs_working_dir_copy_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`ray job submit --working-dir .` runs lrsweep in a copy Ray makes per upload: the
    default ./.lrsweep/ray_results there was lost with it, and `lrsweep resume` found nothing."""
    from sweeps.run import run_sweep

    job_copy = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_0a1b2c"
    job_copy.mkdir(parents=True)
    monkeypatch.chdir(job_copy)
    closed = f"http://127.0.0.1:{closed_port()}"  # refused next: nothing starts
    with caplog.at_level("WARNING", logger="sweeps.run"), pytest.raises(TrackingUriError):
        run_sweep(SPEC, tracking_uri=closed)
    assert "inside the copy of the working directory Ray made for this job" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sweeps.run"), pytest.raises(TrackingUriError):
        run_sweep(SPEC, tracking_uri=closed, storage_path=tmp_path / "kept")
    assert "working directory Ray made" not in caplog.text
