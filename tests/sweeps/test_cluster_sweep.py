"""A sweep on a real two-node Ray cluster, logging to a real MLflow server.

The cluster is ``ray.cluster_utils.Cluster`` on this machine: a head and a worker node with one
CPU each, the worker on its own loopback address (127.0.0.2) so the two nodes have different IPs
and every trial's ``sweeps.node`` tag tells them apart. The tracking store is ``mlflow server``
with served artifacts (SQLite behind it), so trials reach it over HTTP and upload checkpoints
through it, as on a real cluster. Storage for Ray Tune is a folder marked shared.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow import MlflowClient
from ray.cluster_utils import Cluster

from sweeps import _ray
from sweeps.preflight import PreflightError
from sweeps.run import run_sweep
from sweeps.server import ServerConfig, prepare_server, start_server, stop_server, wait_until_ready
from sweeps.spec import load_spec

pytestmark = pytest.mark.slow

DIGITS = Path(__file__).resolve().parents[2] / "sweeps" / "specs" / "digits.yaml"
WORKER_IP = "127.0.0.2"
EPOCHS = 2
# Four trials on two one-CPU nodes: even if a loaded machine starts one node's actor late, the
# other node cannot run all four before it comes up.
TRIALS = 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def setup() -> Iterator[dict[str, Any]]:
    """An MLflow server and a two-node Ray cluster, with Ray's files in a private temp dir.

    A private ``RAY_TMPDIR`` keeps ``Cluster`` from advertising itself in
    ``/tmp/ray/ray_current_cluster`` to other processes' ``ray.init()`` on this machine.
    """
    was_running = ray.is_initialized()
    _ray.shutdown_ray()
    root = Path(tempfile.mkdtemp(prefix="lrsweep-cs-", dir="/tmp"))  # short: socket paths
    launch = prepare_server(
        ServerConfig(
            backend_store_uri=f"sqlite:///{root}/mlflow.db",
            artifacts_destination=str(root / "served"),
            port=free_port(),
            workers=1,
        )
    )
    with (root / "server.log").open("wb") as log, pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", str(root))
        server = start_server(launch, output=log)
        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
        )
        try:
            cluster.add_node(num_cpus=1, node_ip_address=WORKER_IP)
            cluster.wait_for_nodes()
            wait_until_ready(launch.url, server)
            yield {"address": cluster.address, "url": launch.url, "root": root}
        finally:
            _ray.shutdown_ray()
            cluster.shutdown()
            stop_server(server)
    shutil.rmtree(root, ignore_errors=True)
    if was_running:
        _ray.init_ray(num_cpus=2)  # the session's local Ray (tests/conftest.py)


def tiny_spec(root: Path, name: str, **resources: Any):
    data = load_spec(DIGITS).resolved()
    data.update(
        name=name,
        seeds=[0],
        strategies=[{"kind": "grid", "lr": {"min": 1e-3, "max": 1e-2, "points": TRIALS}}],
        resources={"cpu": 1, **resources},
        storage={"path": str(root / "ray"), "shared": True},
        early_stop=None,
    )
    data["task"] = {**data["task"], "epochs": EPOCHS, "augment": None}
    return load_spec(data)


def test_sweep_runs_on_both_nodes_and_every_trial_reaches_the_server(setup: dict[str, Any]):
    spec = tiny_spec(setup["root"], "cluster-sweep")
    result = run_sweep(spec, address=setup["address"], tracking_uri=setup["url"])
    assert result.n_trials == TRIALS and not result.interrupted

    client = MlflowClient(setup["url"])
    children = client.search_runs(
        [result.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    assert len(children) == TRIALS
    assert {run.info.status for run in children} == {"FINISHED"}
    nodes = {run.data.tags["sweeps.node"] for run in children}
    assert len(nodes) == 2, f"both trials ran on one node: {nodes}"  # one CPU per node
    assert any(WORKER_IP in node for node in nodes)
    for run in children:
        run_id = run.info.run_id
        assert len(client.get_metric_history(run_id, "valid_loss")) == EPOCHS
        assert len(client.get_metric_history(run_id, "train_loss")) > EPOCHS  # per step
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # through the server
        checkpoints = [item.path for item in client.list_artifacts(run_id, "checkpoints")]
        assert checkpoints, f"no checkpoint reached the server for {run_id}"
    served = list((setup["root"] / "served").rglob("*"))
    assert any("checkpoints" in path.parts for path in served)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (
            {"dataset": {"name": "shapes", "options": {"n_classes": 7}}},
            r"task\.dataset: the trials could not build 'shapes'",
        ),
        (
            {"model": {"arch": "resnet18", "pretrained": "NOPE_V9"}},
            r"task\.model\.pretrained: .*NOPE_V9",
        ),
    ],
    ids=["dataset-option", "weights-name"],
)
def test_inputs_every_node_would_refuse_fail_fast_on_a_cluster_too(
    setup: dict[str, Any], task: dict[str, Any], message: str
):
    """Such a value failed every trial on every node (each retried) after the runs existed."""
    spec = tiny_spec(setup["root"], "cluster-bad-input")
    data = spec.resolved()
    data["task"] = {**data["task"], **task}
    with pytest.raises(PreflightError, match=message):
        run_sweep(load_spec(data), address=setup["address"], tracking_uri=setup["url"])
    assert MlflowClient(setup["url"]).get_experiment_by_name(spec.experiment_name) is None


def test_resources_no_node_has_fail_fast_without_starting_anything(setup: dict[str, Any]):
    spec = tiny_spec(setup["root"], "cluster-gpu", gpu=1)
    with pytest.raises(
        PreflightError, match=r"resources\.gpu asks for 1 GPU .* largest node has 0"
    ):
        run_sweep(spec, address=setup["address"], tracking_uri=setup["url"])
    # refused before its experiment, its parent run or its Ray storage folder existed: no trial
    # was handed to Tune, where it would have waited for a GPU forever
    client = MlflowClient(setup["url"])
    assert client.get_experiment_by_name(spec.experiment_name) is None
    assert not (setup["root"] / "ray" / spec.name).exists()
