"""Ray's storage on S3 behind a URI whose query names the endpoint (MinIO's way), against a real
S3 API server on this machine (moto's ``moto_server``): the sweep's name and id go into the
path, not after the query, and an endpoint that does not answer is refused before any run."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweeps import _location as location
from sweeps.clean import STATE_FILE
from sweeps.cli import app
from sweeps.preflight import PreflightError
from sweeps.progress import SweepProgress
from sweeps.run import run_sweep
from sweeps.tracking import Tracker

pytestmark = pytest.mark.slow

SPEC = {
    "name": "s3-sweep",
    "task": {
        "dataset": {"name": "shapes", "options": {"n_per_class": 8}},
        "image_size": 8,
        "batch_size": 8,
        "epochs": 2,
    },
    "seeds": [0],
    "strategies": [{"kind": "fixed", "lr": 1e-2}],
    "early_stop": None,
    "failure": {"max_failures": 0},
}
KEYS = "testing:testing-secret@"  # moto takes any; in the URI, so Ray's workers have them


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a fresh S3 API server with a bucket ``sweeps``."""
    port = _free_port()
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        import pyarrow.fs

        fs, _ = pyarrow.fs.FileSystem.from_uri(
            f"s3://{KEYS}sweeps?endpoint_override=127.0.0.1:{port}&scheme=http"
            "&allow_bucket_creation=true"
        )
        fs.create_dir("sweeps")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _root(endpoint: str) -> str:
    return f"s3://{KEYS}sweeps/lrsweep?endpoint_override={endpoint}&scheme=http"


def test_paths_join_before_the_query(s3_endpoint: str) -> None:
    root = location.storage_root(_root(s3_endpoint) + "&region=us-east-1")
    folder = location.child(root, "lr", "20261207-000000-abcdef")
    assert folder.startswith(f"s3://{KEYS}sweeps/lrsweep/lr/20261207-000000-abcdef?endpoint_")
    location.write_text(folder, "sweep.json", "{}")
    assert location.read_text(folder, "sweep.json") == "{}"
    assert location.subfolders(location.child(root, "lr")) == ["20261207-000000-abcdef"]
    assert location.parent(folder, 2) == root


def test_a_sweep_keeps_its_ray_storage_on_s3_and_clean_lists_it(
    ray_running: None, tracking_uri: str, s3_endpoint: str
) -> None:
    root = _root(s3_endpoint)
    result = run_sweep(
        SPEC, tracking_uri=tracking_uri, storage_path=root, progress=SweepProgress(live=False)
    )
    assert not result.failed and not result.interrupted
    (run,) = Tracker(tracking_uri).child_runs(result.experiment_id, result.parent_run_id)
    assert (run.info.status, run.data.tags["sweeps.stop_reason"]) == ("FINISHED", "completed")
    assert "testing-secret" not in json.dumps(run.data.params)
    (sweep_id,) = location.subfolders(location.child(root, "s3-sweep"))
    state = json.loads(location.read_text(location.child(root, "s3-sweep", sweep_id), STATE_FILE))
    assert state["finished"] is True
    listed = CliRunner().invoke(app, ["clean", "--storage-path", root])
    assert listed.exit_code == 0, listed.output
    assert f"s3-sweep  {sweep_id}  finished" in listed.output
    assert "testing-secret" not in listed.output


def test_an_endpoint_that_does_not_answer_is_refused_before_any_run(tracking_uri: str) -> None:
    root = f"s3://{KEYS}sweeps/x?endpoint_override=127.0.0.1:{_free_port()}&scheme=http"
    refused = r"storage\.path s3://sweeps/x\?.*cannot be written"
    with pytest.raises(PreflightError, match=refused) as caught:
        run_sweep(SPEC, tracking_uri=tracking_uri, storage_path=root)
    assert "testing-secret" not in str(caught.value)
    tracker = Tracker(tracking_uri)
    assert tracker.client.search_experiments() == [] or all(
        not tracker.client.search_runs([e.experiment_id])
        for e in tracker.client.search_experiments()
    )
