"""Starting and stopping a real ``lrsweep server`` on the machine's PostgreSQL, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import requests

REPO = Path(__file__).resolve().parents[2]
PG = "postgresql://postgres@127.0.0.1:5432"
CLI = "from sweeps.cli import app; app(prog_name='lrsweep')"


@dataclass(frozen=True)
class RunningServer:
    """A started server: its URL, database, artifact folder, captured output and the session
    of its processes (``kill_all(session_pids(sid))`` takes it away)."""

    url: str
    database: str
    artifacts: Path
    log: Path
    sid: int


def endless_sweep_spec(name: str, strategies: list[dict[str, Any]]) -> dict[str, Any]:
    """A sweep whose trials run far longer than a test waits (2000 epochs, no stoppers), for
    tests that stop it from outside; ``valid_loss`` reaches MLflow after the first epoch."""
    return {
        "name": name,
        "task": {
            "dataset": {
                "name": "shapes", "valid_pct": 0.25, "seed": 3, "options": {"n_per_class": 16}
            },
            "image_size": 12,
            "batch_size": 12,
            "epochs": 2000,
            "schedule": {"kind": "constant"},
        },
        "seeds": [0],
        "strategies": strategies,
        "early_stop": None,
        "divergence": None,
        "tracking": {"flush_every_s": 0},
        "resources": {"cpu": 1},
        "failure": {"max_failures": 0},
    }  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_up() -> None:
    """Start the machine's PostgreSQL cluster if it is not answering."""
    try:
        psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres").close()
    except psycopg2.OperationalError:
        version = os.listdir("/etc/postgresql")[0]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True
        )


def drop_database(name: str) -> None:
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@contextmanager
def new_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database named ``prefix`` plus a random suffix; dropped after."""
    postgres_up()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    try:
        yield name
    finally:
        drop_database(name)


def wait_until_serving(proc: subprocess.Popen, log: Path, url: str, timeout_s: float) -> None:
    """Wait until the command ``proc`` (output in ``log``) says it serves at ``url``."""
    deadline = time.monotonic() + timeout_s
    while f"MLflow is serving at {url}" not in log.read_text():
        assert proc.poll() is None, f"exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{url} not up:\n{log.read_text()}"
        time.sleep(0.3)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any MLflow variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return env | {"PYTHONPATH": str(REPO)} | extra


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the CLI stops mlflow), then SIGKILL whatever is left of its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def lrsweep_server(
    root: Path, *args: str, env: dict[str, str], timeout_s: float = 120.0
) -> Iterator[RunningServer]:
    """``lrsweep server ARGS`` on a new PostgreSQL database, dropped afterwards."""
    postgres_up()
    database = f"lrsweep_test_{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    artifacts = root / "artifacts"
    log = root / "server.log"
    command = [sys.executable, "-c", CLI, "server", "--backend-store-uri", f"{PG}/{database}"]
    command += ["--artifacts-destination", str(artifacts), "--port", str(port), "--workers", "1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_serving(proc, log, url, timeout_s)
        assert requests.get(f"{url}/health", timeout=5).status_code == 200
        yield RunningServer(url=url, database=database, artifacts=artifacts, log=log, sid=proc.pid)
    finally:
        stop(proc)
        drop_database(database)


def session_pids(sid: int) -> set[int]:
    """Every live (not zombie) process of session ``sid``."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            pids.add(int(entry.name))
    return pids


def kill_all(pids: set[int]) -> None:
    """SIGKILL each of ``pids`` still alive."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_lrsweep(*args: str, cwd: Path, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """`lrsweep ARGS` in its own session; whatever it started is killed when it is done, or
    past ``timeout_s`` (its output so far is returned)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, *args],
        env=clean_env(),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_all(session_pids(proc.pid))
        out, err = proc.communicate()
    finally:
        kill_all(session_pids(proc.pid))
        proc.kill()
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@contextmanager
def lrsweep_ui(cwd: Path, *args: str, timeout_s: float = 120.0) -> Iterator[str]:
    """``lrsweep ui ARGS`` on a free port, typed in ``cwd``; yields its address once it serves.
    Its output is in ``cwd/ui.log``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = cwd / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLI, "ui", "--port", str(port), *args],
            env=clean_env(),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_serving(proc, log, url, timeout_s)
        yield url
    finally:
        stop(proc)
