"""``connect`` and ``check_cluster``: the preflight steps that run against a live Ray."""

from __future__ import annotations

import logging

import ray

from sweeps import _ray
from sweeps.preflight._cluster import (
    PROBE_TIMEOUT_S,
    alive_nodes,
    autoscaler_groups,
    explain_connect_error,
    head_address,
    head_answers,
    probe_nodes,
)
from sweeps.preflight._report import PreflightReport
from sweeps.preflight._resources import check_fit
from sweeps.preflight._storage import (
    check_artifacts_shared,
    check_storage_shared,
    check_tracking_reachable,
)
from sweeps.spec import StorageSpec, SweepSpec
from sweeps.tracking import resolve_tracking_uri

__all__ = ["check_cluster", "connect"]

logger = logging.getLogger(__name__)


def connect(address: str) -> None:
    """Connect this process to the Ray cluster at ``address`` (``auto``, ``ray://HOST:10001``).

    Raises:
        PreflightError: when Ray cannot connect, with Ray's version-mismatch error (Ray and
            Ray Client refuse a client whose Ray or Python version differs from the cluster's)
            rewritten to name both versions and what to do.
    """
    target = head_address(address)
    if target is not None:
        why = head_answers(target)
        if why is not None:  # ray.init would retry for ~14 minutes before saying so
            given = address.removeprefix("ray://").split("/", 1)[0]
            # Ray connects to 127.0.0.1 / localhost by this node's IP: a port bound to the
            # loopback alone (a dashboard's) does not answer there
            rewritten = (
                f", where Ray connects for {given}: a port bound to 127.0.0.1 only, such as "
                "the dashboard's, is not a Ray head"
                if target != given
                else ""
            )
            raise explain_connect_error(
                ConnectionError(f"nothing answers at {target} ({why}){rewritten}"), address
            )
    try:
        _ray.init_ray(address)
    except Exception as error:  # any connection failure is reported the same way
        raise explain_connect_error(error, address, answers=target) from error


def check_cluster(
    spec: SweepSpec,
    *,
    address: str | None,
    tracking_uri: str | None,
    storage: StorageSpec | None = None,
    probe_timeout_s: float = PROBE_TIMEOUT_S,
) -> PreflightReport:
    """Check the connected Ray cluster can run ``spec``; call it after connecting, before trials.

    Checks, cheapest first:

    1. one trial's resources (``cpu``, fractional ``gpu``, ``custom``, ``node_labels``) fit on
       some alive node's *total* resources, or on an autoscaler group that may start (then a
       warning); otherwise trials would stay pending forever;
    2. with more than one node alive, or trials that fit an autoscaler group (a node not
       started yet): the tracking store is not a SQLite file or local folder
       (a server naming ``localhost`` is a warning), a database store's experiment does not keep
       its artifacts on this machine's disk, and ``storage.path`` is shared;
    3. on a cluster (``address`` given): a probe task on every node checks its Ray and Python
       versions against this process, that lrsweep is importable there, that an
       ``image_folder`` dataset folder exists there, and that a shared local ``storage.path``
       really is shared. A local run (``address=None``) skips the probes: it is this machine.

    Args:
        spec: The sweep.
        address: What was connected to (``auto``, ``ray://...``), or None for Ray on this
            machine.
        tracking_uri: The resolved tracking URI; None resolves it as the sweep would
            (``spec.tracking.uri``, ``MLFLOW_TRACKING_URI``, the embedded store).
        storage: Ray's storage when the caller overrides ``spec.storage`` (``run_sweep``'s
            ``storage_path``); None checks ``spec.storage``.
        probe_timeout_s: How long each node has to answer its probe.

    Returns:
        The nodes, where a trial fits, how many trials run at once, versions and warnings.

    Raises:
        PreflightError: for the first failed check, every problem of that check listed.
        RuntimeError: if Ray is not initialised (connect first).
    """
    if not ray.is_initialized():
        raise RuntimeError("check_cluster needs a connected Ray: call connect(address) first.")
    nodes = alive_nodes()
    groups = autoscaler_groups()
    trial_nodes, slots = check_fit(spec.resources, [*nodes, *groups])
    # A trial that fits a group the autoscaler may start can run on a machine not alive yet
    # (on a fresh `ray up` cluster, every trial does): the checks that a second machine makes
    # (a SQLite store, storage on one disk) count it.
    machines = len(nodes) + any(group.name in trial_nodes for group in groups)
    warnings: list[str] = []
    if slots == 0:
        warning = (
            f"No alive node fits a trial yet; trials wait until the autoscaler starts one of: "
            f"{', '.join(trial_nodes)}."
        )
        logger.warning(warning)
        warnings.append(warning)
    uri = tracking_uri or resolve_tracking_uri(spec.tracking.uri)
    warnings += check_tracking_reachable(uri, alive_nodes=machines)
    check_artifacts_shared(uri, spec.experiment_name, alive_nodes=machines)
    storage = storage or spec.storage
    check_storage_shared(storage, alive_nodes=machines)
    versions: dict[str, str] = {}
    if address is not None:
        versions, probe_warnings = probe_nodes(
            spec, nodes, storage=storage, timeout_s=probe_timeout_s, tracking_uri=uri
        )
        warnings += probe_warnings
    report = PreflightReport(
        address=address,
        nodes=tuple(nodes),
        trial_nodes=trial_nodes,
        trial_slots=slots,
        client_ray_version=ray.__version__,
        cluster_ray_versions=versions,
        warnings=tuple(warnings),
    )
    logger.info(
        "preflight passed on %s: %d node(s) alive, %d trial(s) at once",
        address or "this machine",
        len(nodes),
        slots,
    )
    return report
