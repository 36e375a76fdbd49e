"""A local run: this machine is a one-node cluster, checked before Ray starts."""

from __future__ import annotations

import logging
import os
import socket

from sweeps.preflight._report import NodeInfo, PreflightError
from sweeps.preflight._resources import check_fit
from sweeps.spec import SweepSpec

__all__ = ["check_local_resources", "local_node"]

logger = logging.getLogger(__name__)


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _gpu_count() -> int:
    import torch  # the trainers need it anyway; imported here so `import sweeps.preflight` is light

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_node(*, num_cpus: int | None = None, num_gpus: int | None = None) -> NodeInfo:
    """This machine as Ray would start it: its CPUs and CUDA GPUs, no custom resources or labels.

    Args:
        num_cpus: CPUs Ray will be given (default: those this process may use).
        num_gpus: GPUs Ray will be given (default: CUDA devices visible to PyTorch).
    """
    cpus = _cpu_count() if num_cpus is None else num_cpus
    gpus = _gpu_count() if num_gpus is None else num_gpus
    resources = {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus else {})}
    return NodeInfo(
        node_id="local",
        address="127.0.0.1",
        hostname=socket.gethostname(),
        resources=resources,
        is_head=True,
    )


def check_local_resources(
    spec: SweepSpec, *, num_cpus: int | None = None, num_gpus: int | None = None
) -> int:
    """Refuse at once a local sweep whose trials this machine cannot run.

    Without this, Ray would leave such trials pending forever (``gpu: 1`` on a laptop with no
    GPU, ``cpu: 8`` on 4 cores, a custom resource or node label no local node has).

    Example:
        >>> check_local_resources(load_spec("sweeps/specs/digits.yaml"))  # doctest: +SKIP
        2

    Args:
        spec: The sweep.
        num_cpus: CPUs Ray will be started with (default: detected).
        num_gpus: GPUs Ray will be started with (default: CUDA devices PyTorch sees).

    Returns:
        How many trials fit on this machine at once.

    Raises:
        PreflightError: naming the resource, what a trial asks and what this machine has.
    """
    node = local_node(num_cpus=num_cpus, num_gpus=num_gpus)
    try:
        _, slots = check_fit(spec.resources, [node])
    except PreflightError as error:
        raise PreflightError(
            f"{error}\nThis is a local run (no --address): {node.name} is the only node. Pass "
            "--address auto or ray://HOST:10001 to run on a Ray cluster that has the resources."
        ) from None
    logger.debug("local run on %s: %d trial(s) at once", node.name, slots)
    return slots
