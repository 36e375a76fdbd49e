"""The cluster checks that need Ray: its nodes, a probe task on each, and connection errors.

The only Ray imports of :mod:`sweeps.preflight` live here (``ray``, ``ray.exceptions``, the
node-affinity scheduling strategy, and - guarded, as it is private - the autoscaler's node-group
config from ``ray._private.state``).
"""

from __future__ import annotations

import logging
import os
import platform
import re
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import ray
import yaml
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sweeps.preflight._report import NodeInfo, PreflightError
from sweeps.spec import StorageSpec, SweepSpec

__all__ = [
    "alive_nodes",
    "autoscaler_groups",
    "explain_connect_error",
    "head_address",
    "head_answers",
    "probe_nodes",
]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120.0
"""How long each node has to start a worker and answer the probe (runtime envs can be slow)."""

_UNCOUNTED = ("memory", "object_store_memory")
_HEAD_RESOURCE = "node:__internal_head__"
_MARKERS = ".lrsweep-preflight-"
_INSTALL_HINT = (
    "Run lrsweep on the cluster (`ray job submit --working-dir . -- lrsweep run SPEC`), or use "
    "the image built from infra/docker/Dockerfile on every node and on this machine."
)


def alive_nodes() -> list[NodeInfo]:
    """The alive nodes of the connected cluster, head first, with their total resources."""
    nodes = []
    for entry in ray.nodes():
        if not entry.get("Alive"):
            continue
        raw = entry.get("Resources") or {}
        nodes.append(
            NodeInfo(
                node_id=str(entry["NodeID"]),
                address=str(entry.get("NodeManagerAddress", "")),
                hostname=str(entry.get("NodeManagerHostname", "")),
                resources={
                    name: float(amount)
                    for name, amount in raw.items()
                    if not name.startswith("node:") and name not in _UNCOUNTED
                },
                labels=dict(entry.get("Labels") or {}),
                is_head=_HEAD_RESOURCE in raw,
            )
        )
    return sorted(nodes, key=lambda node: not node.is_head)


BOOTSTRAP_CONFIG = Path.home() / "ray_bootstrap_config.yaml"
"""Where ``ray up`` leaves the cluster config on the head node (the autoscaler reads it)."""


def autoscaler_groups(bootstrap_config: Path = BOOTSTRAP_CONFIG) -> list[NodeInfo]:
    """Worker groups an autoscaler may still start, so a trial that fits one is not refused.

    Two sources, either may be absent: the node groups an autoscaler publishes in Ray's GCS
    (a private Ray API: any failure, as under Ray Client, means none), and on the head of a
    ``ray up`` cluster the ``available_node_types`` of ``~/ray_bootstrap_config.yaml``.
    KubeRay publishes neither to the driver: give its GPU group ``minReplicas: 1``.
    """
    groups = [*_gcs_groups(), *_bootstrap_groups(bootstrap_config)]
    return list({group.node_id: group for group in groups}.values())


def _gcs_groups() -> list[NodeInfo]:
    try:
        from ray._private import state as ray_state

        config = ray_state.state.get_cluster_config()
    except Exception as error:  # private API: absent or changed is the same as no autoscaler
        logger.debug("no autoscaler node groups readable from the GCS: %s", error)
        return []
    if config is None:
        return []
    return [
        _group(group.name, group.resources)
        for group in config.node_group_configs
        if group.max_count != 0
    ]


def _bootstrap_groups(path: Path) -> list[NodeInfo]:
    if not path.is_file():
        return []
    try:
        config = yaml.safe_load(path.read_text())
        head_type = config.get("head_node_type")
        types = config.get("available_node_types") or {}
        default_max = int(config.get("max_workers", 0))
        return [
            _group(name, node_type.get("resources") or {})
            for name, node_type in types.items()
            if name != head_type and int(node_type.get("max_workers", default_max)) > 0
        ]
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError) as error:
        logger.warning("could not read the autoscaler config %s: %s", path, error)
        return []


def _group(name: str, resources: Mapping[str, float]) -> NodeInfo:
    return NodeInfo(
        node_id=f"group:{name}",
        address="",
        hostname=name,
        resources={key: float(amount) for key, amount in resources.items()},
        can_start=True,
    )


CREDENTIAL_VARS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
)
"""The environment variables MLflow's client authenticates to a server with; a trial on a
cluster reads them from its own node's environment (lrsweep never ships their values)."""


def _make_probe() -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """The probe body, made inside a function so that cloudpickle ships it by value.

    It must run on a worker that cannot import lrsweep (that is one thing it checks), so it uses
    only the standard library and ``ray``.
    """

    def probe(checks: Mapping[str, Any]) -> dict[str, Any]:
        import importlib.util
        import os
        import platform
        import socket

        import ray as worker_ray

        problems: list[str] = []
        missing = [
            name for name in ("sweeps", "trainers") if importlib.util.find_spec(name) is None
        ]
        if missing:
            problems.append(f"cannot import lrsweep ({', '.join(missing)} not found)")
        folder = checks.get("dataset_path")
        if folder and not os.path.isdir(folder):
            problems.append(f"task.dataset.path: folder {folder!r} does not exist")
        elif folder and not any(entry.is_dir() for entry in os.scandir(folder)):
            problems.append(f"task.dataset.path: folder {folder!r} has no class sub-folders")
        lacking = [name for name in checks.get("credential_vars", []) if not os.environ.get(name)]
        if lacking:
            problems.append(
                "the MLflow server needs credentials this node's trials lack "
                f"({', '.join(lacking)} set here, not in its workers' environment): start its "
                "Ray with them, e.g. "
                f"`{' '.join(f'{name}=...' for name in lacking)} ray start ...` (on Kubernetes, "
                "a Secret as env of the Ray pods)"
            )
        marker_dir = checks.get("marker_dir")
        if marker_dir:
            try:
                os.makedirs(marker_dir, exist_ok=True)
                with open(os.path.join(marker_dir, checks["node_id"]), "w") as marker:
                    marker.write(socket.gethostname())
            except OSError as error:
                problems.append(f"storage.path: cannot write under {marker_dir!r}: {error}")
        return {
            "ray_version": worker_ray.__version__,
            "python_version": platform.python_version(),
            "problems": problems,
        }

    return probe


def _make_lister() -> Callable[[str], list[str]]:
    """Lists and removes the storage markers; shipped by value like the probe."""

    def list_and_remove(marker_dir: str) -> list[str]:
        import os
        import shutil

        names = sorted(os.listdir(marker_dir)) if os.path.isdir(marker_dir) else []
        shutil.rmtree(marker_dir, ignore_errors=True)
        return names

    return list_and_remove


def _on(node: NodeInfo) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)


def _shared_local_storage(storage: StorageSpec) -> str | None:
    path = storage.path
    if not storage.shared or path is None:
        return None
    return unquote(urlsplit(path).path) if path.startswith("file:") else path


def _checks(spec: SweepSpec, storage: StorageSpec, token: str) -> dict[str, Any]:
    dataset = spec.task.dataset
    checks: dict[str, Any] = {}
    if dataset.name == "image_folder" and dataset.path and "://" not in dataset.path:
        checks["dataset_path"] = dataset.path
    shared = _shared_local_storage(storage)
    if shared:
        checks["marker_dir"] = str(Path(shared) / f"{_MARKERS}{token}")
    return checks


def probe_nodes(
    spec: SweepSpec,
    nodes: Sequence[NodeInfo],
    *,
    storage: StorageSpec | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
    tracking_uri: str | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Run one probe task on every node: versions, lrsweep importable, dataset folder, storage.

    Checks that a worker on each node runs this process's Ray version and Python minor version,
    can import lrsweep, sees an ``image_folder`` dataset folder with class sub-folders, and, for
    a local ``storage.path`` marked shared, can write there; then one task on the head checks it
    sees every node's write (the folder really is shared). With an ``http(s)`` tracking URI and
    MLflow credentials in this process's environment, each node's workers must have the same
    variables set (their names are sent, never their values): trials read them from their own
    node's environment, and a server running basic auth refused every trial (HTTP 401).

    Returns:
        ``(Ray version per node name, warnings)``.

    Raises:
        PreflightError: listing every problem with the node it was found on, or naming the
            nodes that did not answer within ``timeout_s``.
    """
    token = uuid.uuid4().hex[:12]
    checks = _checks(spec, storage or spec.storage, token)
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        checks["credential_vars"] = [name for name in CREDENTIAL_VARS if os.environ.get(name)]
    probe = ray.remote(num_cpus=0, max_retries=0)(_make_probe())
    refs = [
        probe.options(scheduling_strategy=_on(node)).remote({**checks, "node_id": node.node_id})
        for node in nodes
    ]
    _, not_ready = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if not_ready:
        late = [node.name for node, ref in zip(nodes, refs, strict=True) if ref in not_ready]
        for ref in not_ready:
            ray.cancel(ref, force=True)
        raise PreflightError(
            f"Node(s) {', '.join(late)} did not run a probe task within {timeout_s:.0f} s: their "
            "workers cannot start (see `ray status` and the raylet logs on those nodes)."
        )
    versions: dict[str, str] = {}
    problems: list[str] = []
    warnings: list[str] = []
    for node, ref in zip(nodes, refs, strict=True):
        try:
            answer = ray.get(ref)
        except RayError as error:
            problems.append(f"{node.name}: the probe task failed: {_last_line(error)}")
            continue
        versions[node.name] = answer["ray_version"]
        problems += [f"{node.name}: {text}" for text in answer["problems"]]
        version_problems, version_warnings = _version_problems(node.name, answer)
        problems += version_problems
        warnings += version_warnings
    if "marker_dir" in checks:
        unshared = _unshared_nodes(checks["marker_dir"], nodes)  # also removes the markers
        problems += [] if problems else unshared
    if problems:
        hint = _INSTALL_HINT if any("cannot import lrsweep" in text for text in problems) else ""
        raise PreflightError(
            "The cluster is not ready for this sweep:\n  " + "\n  ".join(problems) + f"\n{hint}"
        )
    return versions, warnings


def _version_problems(name: str, answer: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` from comparing a node's versions with this process's."""
    mine_ray, mine_py = ray.__version__, platform.python_version()
    theirs_ray, theirs_py = answer["ray_version"], answer["python_version"]
    problems, warnings = [], []
    if theirs_ray != mine_ray:
        problems.append(
            f"runs Ray {theirs_ray}, but this process runs Ray {mine_ray}; install "
            f"ray[tune]=={theirs_ray} here or use the cluster's image"
        )
    if theirs_py.split(".")[:2] != mine_py.split(".")[:2]:
        problems.append(f"runs Python {theirs_py}, but this process runs Python {mine_py}")
    elif theirs_py != mine_py:
        warning = f"{name} runs Python {theirs_py}, this process {mine_py} (patch level differs)"
        logger.warning(warning)
        warnings.append(warning)
    return [f"{name}: {text}" for text in problems], warnings


def _unshared_nodes(marker_dir: str, nodes: Sequence[NodeInfo]) -> list[str]:
    head = nodes[0]
    lister = ray.remote(num_cpus=0, max_retries=0)(_make_lister())
    try:
        names: list[str] = ray.get(lister.options(scheduling_strategy=_on(head)).remote(marker_dir))
    except RayError as error:
        return [f"{head.name}: listing {marker_dir!r} failed: {_last_line(error)}"]
    folder = str(Path(marker_dir).parent)
    return [
        f"{node.name}: storage.path {folder!r} is marked shared, but what this node writes there "
        f"is not visible on {head.name}; mount the same filesystem at that path on every node, "
        "or use s3:// / gs://"
        for node in nodes
        if node.node_id not in set(names)
    ]


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


_VERSION_LINE = re.compile(r"Ray:\s*(\S+)\s+Python:\s*(\S+)")


ANSWER_TIMEOUT_S = 5.0
"""How long :func:`head_answers` waits for the head's port to accept a connection."""


def head_address(address: str) -> str | None:
    """``host:port`` that ``address`` reaches (``auto``: ``RAY_ADDRESS`` or the cluster this
    machine belongs to, as Ray resolves it), or None when it cannot be told here."""
    if address.startswith("ray://"):
        return address.removeprefix("ray://").split("/", 1)[0] or None
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address)
    except Exception:  # no cluster to find for auto, or Ray's internals moved: ray.init says
        return None


def head_answers(host_port: str, timeout: float = ANSWER_TIMEOUT_S) -> str | None:
    """None when something accepts a TCP connection at ``host_port``, else why not.

    ``ray.init`` retries an address where nothing listens for about 14 minutes before it
    gives up (a typo in ``--address``); a refused or unresolvable address is known at once.
    """
    host, _, port = host_port.rpartition(":")
    if not port.isdigit():  # ray://HOST: gRPC would try port 443, not Ray Client's
        return "no port given: Ray Client listens at ray://HOST:10001, a head at HOST:6379"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except (OSError, ValueError) as error:
        return str(error) or type(error).__name__


def explain_connect_error(
    error: BaseException, address: str | None, *, answers: str | None = None
) -> PreflightError:
    """A clear :class:`PreflightError` for a failure to connect to the Ray cluster at ``address``.

    Ray refuses a driver (or a Ray Client, ``ray://``) whose Ray or Python version differs from
    the cluster's with a ``Version mismatch`` RuntimeError; this names both versions and what to
    do. When ``answers`` (the ``host:port`` that accepted a connection before ``ray.init``)
    is given, the head is there: the message names token authentication, which Ray reports
    only in its own log. Any other failure is reported with the address and how to start or
    find a cluster.

    Example:
        >>> try:
        ...     ray.init(address)  # doctest: +SKIP
        ... except Exception as error:
        ...     raise explain_connect_error(error, address) from error
    """
    where = address or "this machine"
    text = str(error)
    versions = _VERSION_LINE.findall(text)
    if "version mismatch" in text.lower() and len(versions) >= 2:
        (cluster_ray, cluster_py), (mine_ray, mine_py) = versions[0], versions[1]
        return PreflightError(
            f"Ray version mismatch with the cluster at {where}: the cluster runs Ray {cluster_ray} "
            f"on Python {cluster_py}, this process Ray {mine_ray} on Python {mine_py}. Install "
            f"ray[tune]=={cluster_ray} on Python {cluster_py} here, or run lrsweep on the "
            "cluster itself: `ray job submit --working-dir . -- lrsweep run SPEC`."
        )
    if answers is not None:
        token = (
            "set RAY_AUTH_MODE=token for lrsweep too (the token is read from "
            "~/.ray/auth_token or RAY_AUTH_TOKEN)"
            if os.environ.get("RAY_AUTH_MODE", "").lower() != "token"
            else "RAY_AUTH_MODE=token is set here: check that the token (~/.ray/auth_token or "
            "RAY_AUTH_TOKEN) is the head's"
        )
        return PreflightError(
            f"Cannot connect to the Ray cluster at {where}: {_last_line(error)}. The head "
            f"answers at {answers}, so the address is right. If it runs with token "
            f"authentication (Ray's log says 'InvalidAuthToken'), {token}; else check Ray's "
            "log above for why it refused this driver."
        )
    return PreflightError(
        f"Cannot connect to the Ray cluster at {where}: {_last_line(error)}. Start one "
        "(`ray start --head`, `ray up infra/ray/cluster.yaml`, or the KubeRay RayCluster in "
        "infra/k8s/) or fix --address: `auto` joins the cluster this machine belongs to, "
        "ray://HOST:10001 connects through Ray Client."
    )
