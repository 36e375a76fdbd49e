"""What preflight found: the error it raises and the report it returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["NodeInfo", "PreflightError", "PreflightReport"]


class PreflightError(ValueError):
    """The sweep's setup cannot work here; nothing was started. The CLI exits 2 on it.

    The message names what is wrong (the spec field, the node, the path) and what to do.
    """


@dataclass(frozen=True)
class NodeInfo:
    """One Ray node, or a node group an autoscaler can start, as preflight sees it.

    Attributes:
        node_id: Ray's node id (hex); for an autoscaler group, ``group:<name>``.
        address: The node's IP address (empty for an autoscaler group).
        hostname: The node's host name (the group name for an autoscaler group).
        resources: Total resources with Ray's names (``CPU``, ``GPU``, custom ones).
        labels: Node labels (``ray.io/node-id`` and those given to ``ray start --labels``).
        is_head: True for the head node.
        can_start: True for an autoscaler node group that is not running yet.
    """

    node_id: str
    address: str
    hostname: str
    resources: Mapping[str, float]
    labels: Mapping[str, str] = field(default_factory=dict)
    is_head: bool = False
    can_start: bool = False

    @property
    def name(self) -> str:
        """``hostname (ip, node <id prefix>)``, or ``autoscaler group <name>``; for messages.

        The id prefix tells apart nodes that share a host (``ray start`` twice on one machine).
        """
        if self.can_start:
            return f"autoscaler group {self.hostname!r}"
        where = ", ".join(part for part in (self.address, f"node {self.node_id[:8]}") if part)
        return f"{self.hostname} ({where})"


@dataclass(frozen=True)
class PreflightReport:
    """The cluster a sweep is about to run on, once every check has passed.

    Attributes:
        address: The address that was connected to (None: Ray on this machine).
        nodes: Alive nodes, head first.
        trial_nodes: Names of the nodes (or autoscaler groups) one trial fits on.
        trial_slots: How many trials the alive nodes hold at once (by resources alone).
        client_ray_version: ``ray.__version__`` of this process.
        cluster_ray_versions: Ray version per node name (empty when nodes were not probed).
        warnings: Problems that do not stop the sweep (also logged).
    """

    address: str | None
    nodes: tuple[NodeInfo, ...]
    trial_nodes: tuple[str, ...]
    trial_slots: int
    client_ray_version: str
    cluster_ray_versions: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def multi_node(self) -> bool:
        """True when more than one node is alive: workers may not see the driver's disk."""
        return len(self.nodes) > 1
