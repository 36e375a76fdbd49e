"""A real small sweep (one grid arm, 2 trials) against ``lrsweep server --auth`` on PostgreSQL.

The sweep runs in its own process (as ``lrsweep run`` would, with its own local Ray and the
credentials in its environment only); ``lrsweep best`` asks from another fresh process; the best
model is loaded back from the server and scored on the validation set.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import torch
import yaml
from _server_helpers import CLI, PG, RunningServer, clean_env, lrsweep_server
from mlflow import MlflowClient

from sweeps.tracking import Tracker, mlflow_tracking_uri
from trainers import make_dataloaders

pytestmark = pytest.mark.slow

ADMIN = "teamadmin"
PASSWORD = "pw-" + uuid.uuid4().hex
NAME = "server-sweep"
DATASET = {"name": "shapes", "valid_pct": 0.25, "seed": 3, "options": {"n_per_class": 16}}
SPEC: dict[str, Any] = {
    "name": NAME,
    "task": {
        "dataset": DATASET,
        "image_size": 12,
        "batch_size": 12,
        "epochs": 2,
        "schedule": {"kind": "constant"},
    },
    "seeds": [0],
    "strategies": [
        {"kind": "grid", "lr": {"min": 3e-3, "max": 3e-2, "points": 2}},
    ],
    "resources": {"cpu": 1},
    "failure": {"max_failures": 0},
}
SWEEP = """
import sys, yaml
from sweeps.run import run_sweep
spec, uri, storage = yaml.safe_load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
result = run_sweep(spec, tracking_uri=uri, storage_path=storage)
print("PARENT", result.parent_run_id, "TRIALS", result.n_trials, "INTERRUPTED", result.interrupted)
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The server, and the sweep's output once it has run against it."""
    root = tmp_path_factory.mktemp("server-sweep")
    server_env = clean_env(MLFLOW_AUTH_ADMIN_USERNAME=ADMIN, MLFLOW_AUTH_ADMIN_PASSWORD=PASSWORD)
    with lrsweep_server(root, "--auth", env=server_env) as server:
        spec_file = root / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(SPEC))
        client_env = clean_env(MLFLOW_TRACKING_USERNAME=ADMIN, MLFLOW_TRACKING_PASSWORD=PASSWORD)
        # The sweep's own working directory: nothing may be written there as MLflow data.
        work = root / "work"
        work.mkdir()
        done = subprocess.run(
            [sys.executable, "-c", SWEEP, str(spec_file), server.url, str(root / "ray")],
            cwd=work,
            env=client_env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        yield {"server": server, "env": client_env, "work": work, "out": done.stdout + done.stderr}


@pytest.fixture
def client(swept: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    return MlflowClient(tracking_uri=swept["server"].url)


def _children(client: MlflowClient) -> list[Any]:
    exp = client.get_experiment_by_name(NAME)
    runs = client.search_runs([exp.experiment_id])
    return [run for run in runs if "mlflow.parentRunId" in run.data.tags]


def test_sweep_logged_through_the_server(swept: dict[str, Any], client: MlflowClient) -> None:
    server: RunningServer = swept["server"]
    assert "TRIALS 2 INTERRUPTED False" in swept["out"]
    exp = client.get_experiment_by_name(NAME)
    assert exp.artifact_location.startswith("mlflow-artifacts:/")
    children = _children(client)
    assert len(children) == 2
    assert all(run.info.status == "FINISHED" for run in children)
    assert all(run.info.artifact_uri.startswith("mlflow-artifacts:/") for run in children)
    # Checkpoints, models and the report reached the server's artifact folder, not the client's.
    assert len(list(server.artifacts.rglob("checkpoints/epoch-001/*"))) >= 2
    assert list(server.artifacts.rglob("report.html"))
    assert len(list(server.artifacts.rglob("MLmodel"))) == 2  # one best model per trial
    assert not (swept["work"] / "mlruns").exists() and not (swept["work"] / "mlartifacts").exists()


def test_best_from_a_fresh_process_is_the_right_trial_and_its_model_reproduces_accuracy(
    swept: dict[str, Any], client: MlflowClient
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CLI, "best", NAME, "--metric", "accuracy", "--mode", "max"],
        cwd=swept["work"],
        env=swept["env"] | {"MLFLOW_TRACKING_URI": swept["server"].url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    best = json.loads(done.stdout)
    scored = [r for r in _children(client) if "best/accuracy" in r.data.metrics]
    top = max(r.data.metrics["best/accuracy"] for r in scored)
    assert best["value"] == pytest.approx(top)
    assert best["run_id"] in {
        r.info.run_id for r in scored if r.data.metrics["best/accuracy"] == top
    }

    import mlflow.pytorch

    with mlflow_tracking_uri(swept["server"].url):
        model = mlflow.pytorch.load_model(best["model_uri"])
    dls = make_dataloaders(
        "shapes",
        image_size=12,
        batch_size=12,
        valid_pct=DATASET["valid_pct"],
        seed=DATASET["seed"],
        **DATASET["options"],
    )
    model.eval()
    with torch.no_grad():
        predictions = model(dls.valid_images).argmax(dim=1)
    accuracy = (predictions == dls.valid_labels).float().mean().item()
    assert accuracy == pytest.approx(best["metrics"]["accuracy"], abs=1e-6)
    # lrsweep's own loader reads the weights-only export through the server's artifact proxy
    from sweeps import load_predictor

    predictor = load_predictor(best["model_uri"], tracking_uri=swept["server"].url, device="cpu")
    with torch.no_grad():
        assert torch.equal(predictor.model(dls.valid_images), model(dls.valid_images))


def test_best_on_the_servers_database_says_to_ask_the_server_for_the_spec(
    swept: dict[str, Any],
) -> None:
    """The runs are in the database, their artifacts behind the server (``mlflow-artifacts:``):
    ``--format spec`` said the sweep had no spec.yaml, after MLflow's several lines of advice.
    Now one line says the artifacts are read through the server, at its http:// address."""
    database = f"{PG}/{swept['server'].database}"
    done = subprocess.run(
        [sys.executable, "-c", CLI, "best", NAME, "--format", "spec", "--tracking-uri", database],
        cwd=swept["work"],
        env=swept["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    error = " ".join(done.stderr.split())
    assert "its spec.yaml cannot be read (its artifacts are kept by an MLflow server" in error
    assert "pass the server's http(s):// address as --tracking-uri" in error
    assert "export MLFLOW_TRACKING_URI" not in error  # MLflow's own advice, for another case


def test_password_is_nowhere_in_runs_artifacts_or_logs(
    swept: dict[str, Any], client: MlflowClient
) -> None:
    exp = client.get_experiment_by_name(NAME)
    for run in client.search_runs([exp.experiment_id]):
        fields = [*run.data.params.items(), *run.data.tags.items()]
        assert not [kv for kv in fields if PASSWORD in kv[0] or PASSWORD in kv[1]]
    server: RunningServer = swept["server"]
    secret = PASSWORD.encode()
    leaked = [p for p in server.artifacts.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert leaked == []
    assert PASSWORD not in server.log.read_text()
    assert PASSWORD not in swept["out"]
    assert not [
        p for p in Path(swept["work"]).rglob("*") if p.is_file() and secret in p.read_bytes()
    ]


@contextmanager
def _proxy_losing_the_first_reply_to(upstream: str, path_end: str) -> Iterator[tuple[str, list]]:
    """A real HTTP proxy to ``upstream`` that forwards the first request whose path ends with
    ``path_end`` and then drops the connection, as a network fault after the server acted."""
    lost: list[str] = []

    class Forward(BaseHTTPRequestHandler):
        def forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            skip = {"host", "content-length", "connection", "accept-encoding"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            reply = requests.request(
                self.command, upstream + self.path, data=body, headers=headers, timeout=30
            )
            if self.path.endswith(path_end) and not lost:
                lost.append(self.path)
                self.close_connection = True
                return  # the server acted; its reply never reaches the client
            self.send_response(reply.status_code)
            for key, value in reply.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.content)))
            self.end_headers()
            self.wfile.write(reply.content)

        do_GET = do_POST = do_PATCH = do_DELETE = forward

        def log_message(self, *_: Any) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}", lost
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_a_run_whose_create_reply_was_lost_exists_once(
    swept: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server made the run, the reply was lost and the request sent again (by MLflow's
    HTTP client, or lrsweep's retry): the experiment still holds that one run."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    server: RunningServer = swept["server"]
    with _proxy_losing_the_first_reply_to(server.url, "/runs/create") as (url, lost):
        tracker = Tracker(url)
        experiment_id = tracker.ensure_experiment(f"lost-reply-{uuid.uuid4().hex[:6]}")
        run_id = tracker.start_run(experiment_id, run_name="once")
        assert lost, "the proxy lost no reply: the fault did not happen"
        runs = tracker.search_runs(experiment_id)
    assert [run.info.run_id for run in runs] == [run_id]
    assert runs[0].info.status == "RUNNING" and runs[0].info.run_name == "once"
