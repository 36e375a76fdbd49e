"""Ray's storage on S3 behind a URI whose query names the endpoint (MinIO's way), against a real
S3 API server on this machine (moto's ``moto_server``, the ``s3_endpoint`` fixture): the sweep's
name and id go into the path, not after the query, and an endpoint that does not answer is
refused before any run. A whole sweep stored there: ``test_sweep_resize_tta.py``."""

from __future__ import annotations

import pytest
from _s3_helpers import S3_KEYS, free_port, s3_root

from sweeps import _location as location
from sweeps.preflight import PreflightError
from sweeps.run import run_sweep
from sweeps.tracking import Tracker

pytestmark = pytest.mark.slow

SPEC = {
    "name": "s3-sweep",
    "task": {"dataset": {"name": "shapes"}, "image_size": 8, "epochs": 2},
    "seeds": [0],
    "strategies": [{"kind": "fixed", "lr": 1e-2}],
}


def test_paths_join_before_the_query(s3_endpoint: str) -> None:
    root = location.storage_root(s3_root(s3_endpoint) + "&region=us-east-1")
    folder = location.child(root, "lr", "20261207-000000-abcdef")
    assert folder.startswith(f"s3://{S3_KEYS}sweeps/lrsweep/lr/20261207-000000-abcdef?endpoint_")
    location.write_text(folder, "sweep.json", "{}")
    assert location.read_text(folder, "sweep.json") == "{}"
    assert location.subfolders(location.child(root, "lr")) == ["20261207-000000-abcdef"]
    assert location.parent(folder, 2) == root
    assert "testing-secret" not in location.shown(folder)


def test_storage_that_cannot_be_written_is_refused_before_any_run(tracking_uri: str) -> None:
    """A typo in the query (``endpoint_overide``): ``pyarrow.fs`` refuses it at once. An endpoint
    that does not answer is refused the same way, after the AWS SDK's retries (about 15 s: not
    run here)."""
    root = s3_root(f"127.0.0.1:{free_port()}", prefix="x").replace("override", "overide")
    refused = r"storage\.path s3://sweeps/x\?.*cannot be written \(.*endpoint_overide"
    with pytest.raises(PreflightError, match=refused) as caught:
        run_sweep(SPEC, tracking_uri=tracking_uri, storage_path=root)
    assert "testing-secret" not in str(caught.value)
    client = Tracker(tracking_uri).client
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not experiments or not client.search_runs(experiments)
