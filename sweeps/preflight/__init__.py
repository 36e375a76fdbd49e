"""Preflight: refuse, before anything starts, a sweep that cannot work where it is about to run.

``run_sweep`` calls, in this order::

    check_accelerator(spec)                # CPU trials: amp bf16 at an image size it cannot train
    check_local_resources(spec)            # local run, before Ray starts: gpu: 1 with no GPU ...
    source = check_local_data(spec)        # local run: image_folder read once (empty, corrupt)
    check_local_weights(spec, source=source)  # local run: task.model.pretrained fits the arch
    check_portable_inputs(spec)            # cluster run: digits/shapes options, weights names
    connect(address)                       # cluster run: Ray's connection errors made clear
    check_cluster(spec, address=address, tracking_uri=tracking_uri, storage=...)
    data_notes(spec, source=source)        # advice on the data's size (no source: opened)
    check_artifact_location(tracking_uri)  # local store writable, enough free disk
    check_artifact_location(storage_root)  # Ray's local storage folder, the same

all before the MLflow experiment or parent run is created.

Each raises :class:`PreflightError` (a ``ValueError``; the CLI exits 2) whose message names
the spec field, node or path at fault and what to do. Nothing here starts trials, creates MLflow
runs or writes outside a probe file that is removed at once.

Example:
    >>> from sweeps.preflight import check_local_resources
    >>> from sweeps.spec import load_spec
    >>> spec = load_spec("sweeps/specs/digits.yaml", overrides=["resources.gpu=1"])
    >>> check_local_resources(spec, num_gpus=0)
    Traceback (most recent call last):
    PreflightError: No node can run a trial of this sweep (1 alive node(s)):
      resources.gpu asks for 1 GPU per trial, but the largest node has 0 ...
"""

from __future__ import annotations

from sweeps._data_notes import data_notes
from sweeps.preflight._accel import check_accelerator
from sweeps.preflight._check import check_cluster, connect
from sweeps.preflight._cluster import (
    PROBE_TIMEOUT_S,
    explain_connect_error,
    head_address,
    head_answers,
)
from sweeps.preflight._data import check_local_data, check_local_weights, check_portable_inputs
from sweeps.preflight._local import check_local_resources, local_node
from sweeps.preflight._report import NodeInfo, PreflightError, PreflightReport
from sweeps.preflight._resources import check_fit, label_matches, trial_request
from sweeps.preflight._storage import (
    check_artifact_location,
    check_artifacts_shared,
    check_storage_shared,
    check_storage_uri,
    check_tracking_reachable,
)

__all__ = [
    "PROBE_TIMEOUT_S",
    "NodeInfo",
    "PreflightError",
    "PreflightReport",
    "check_accelerator",
    "check_artifact_location",
    "check_artifacts_shared",
    "check_cluster",
    "check_fit",
    "check_local_data",
    "check_local_resources",
    "check_local_weights",
    "check_portable_inputs",
    "check_storage_shared",
    "check_storage_uri",
    "check_tracking_reachable",
    "connect",
    "data_notes",
    "explain_connect_error",
    "head_address",
    "head_answers",
    "label_matches",
    "local_node",
    "trial_request",
]
