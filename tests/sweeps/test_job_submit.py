"""``ray job submit`` of a small sweep to a local Ray head, as ``infra/README.md`` documents.

The head is ``ray.cluster_utils.Cluster`` with the dashboard (the job server) on a free port and
Ray's files in a private ``RAY_TMPDIR``, so other processes' ``ray.init()`` on this machine do
not join it. The job is submitted through the dashboard's HTTP API with a small ``working_dir``
(the spec alone, not the repository: ``.venv`` lives inside it) and the README's entrypoint,
``lrsweep run SPEC --address auto --tracking-uri ...``: the job's driver runs on the head, where
Ray sets ``RAY_ADDRESS`` to this cluster, and ``lrsweep`` is the installed console script.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow import MlflowClient
from ray._private.utils import get_dashboard_dependency_error
from ray.cluster_utils import Cluster
from ray.job_submission import JobStatus, JobSubmissionClient

from sweeps import _ray
from sweeps.spec import load_spec

pytestmark = pytest.mark.slow

if (missing := get_dashboard_dependency_error()) is not None:
    pytest.skip(
        f"ray job submit needs Ray's job server, from ray[default]: {missing}",
        allow_module_level=True,
    )

DIGITS = Path(__file__).resolve().parents[2] / "sweeps" / "specs" / "digits.yaml"
VENV_BIN = Path(sys.executable).parent
EPOCHS = 2
TRIALS = 2
JOB_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def processes_under(root: Path) -> list[str]:
    """Command lines of the processes that name ``root`` (the head's Ray processes do)."""
    found = subprocess.run(["pgrep", "-af", str(root)], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if line.strip()]


def connect(url: str, timeout_s: float = 60) -> JobSubmissionClient:
    """A job client for ``url`` once the dashboard answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return JobSubmissionClient(url)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.fixture
def head() -> Iterator[dict[str, Any]]:
    """A one-node Ray head with the job server, in a private temp dir; nothing left after it."""
    was_running = ray.is_initialized()
    _ray.shutdown_ray()  # the session's local Ray (tests/conftest.py)
    root = Path(tempfile.mkdtemp(prefix="lrsweep-js-", dir="/tmp"))  # short: socket paths
    port = free_port()
    cluster = None
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RAY_TMPDIR", str(root))
            cluster = Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": 2,
                    "include_dashboard": True,
                    "dashboard_host": "127.0.0.1",
                    "dashboard_port": port,
                    # Not Ray's fixed 52365: another Ray on this machine may hold it.
                    "dashboard_agent_listen_port": free_port(),
                },
            )
            yield {"url": f"http://127.0.0.1:{port}", "gcs": cluster.gcs_address, "root": root}
    finally:
        if cluster is not None:
            cluster.shutdown()
        deadline = time.monotonic() + 30
        while (left := processes_under(root)) and time.monotonic() < deadline:
            time.sleep(0.5)
        shutil.rmtree(root, ignore_errors=True)
        if was_running:
            _ray.init_ray(num_cpus=2)
    assert not left, "the Ray head left processes behind:\n" + "\n".join(left)


def write_spec(folder: Path, storage: Path) -> Any:
    data = load_spec(DIGITS).resolved()
    data.update(
        name="job-submit",
        seeds=[0],
        strategies=[{"kind": "grid", "lr": {"min": 1e-3, "max": 1e-2, "points": TRIALS}}],
        resources={"cpu": 1},
        storage={"path": str(storage)},
        early_stop=None,
    )
    data["task"] = {**data["task"], "image_size": 8, "epochs": EPOCHS, "augment": None}
    spec = load_spec(data)
    folder.mkdir()
    (folder / "spec.yaml").write_text(spec.to_yaml())
    return spec


def wait_for_job(client: JobSubmissionClient, job_id: str) -> JobStatus:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            return status
        time.sleep(1)
    return client.get_job_status(job_id)


def test_ray_job_submit_runs_a_sweep_on_the_head(head: dict[str, Any], tmp_path: Path):
    spec = write_spec(tmp_path / "job", head["root"] / "ray_results")
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = connect(head["url"])
    job_id = client.submit_job(
        entrypoint=f"lrsweep run spec.yaml --address auto --tracking-uri {tracking_uri}",
        runtime_env={
            "working_dir": str(tmp_path / "job"),
            "env_vars": {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        },
    )
    try:
        status = wait_for_job(client, job_id)
        logs = client.get_job_logs(job_id)
        assert status == JobStatus.SUCCEEDED, f"job {job_id} is {status}:\n{logs[-5000:]}"
    finally:
        if not client.get_job_status(job_id).is_terminal():
            client.stop_job(job_id)

    # ``--address auto`` joined this head (Ray sets RAY_ADDRESS for a job's driver).
    assert f"Connecting to existing Ray cluster at address: {head['gcs']}" in logs, logs[-5000:]
    assert "job-submit: LR finder vs search" in logs, logs[-5000:]  # the comparison table
    assert re.search(r"\bgrid\s.*\s2\s", logs), logs[-5000:]  # its row: the grid's 2 trials
    reported = re.search(rf"{TRIALS} trials; report on run (\w+)", logs)
    assert reported, logs[-5000:]
    parent_id = reported.group(1)

    store = MlflowClient(tracking_uri)
    experiment = store.get_experiment_by_name(spec.experiment_name)
    assert experiment is not None
    parent = store.get_run(parent_id)
    assert parent.info.experiment_id == experiment.experiment_id
    assert parent.info.status == "FINISHED"
    children = store.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert len(children) == TRIALS
    assert {run.info.status for run in children} == {"FINISHED"}
    for run in children:
        assert len(store.get_metric_history(run.info.run_id, "valid_loss")) == EPOCHS
