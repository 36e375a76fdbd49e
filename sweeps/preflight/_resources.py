"""Does one trial fit on some node? Pure functions over :class:`NodeInfo` records.

A trial asks for one bundle (``resources.cpu``, ``resources.gpu``, ``resources.custom``) on one
node that carries ``resources.node_labels``; it fits on a node whose *total* resources cover the
bundle (what is free right now does not matter: busy nodes free up, missing resources never
appear). Label values follow Ray's label-selector syntax: ``value``, ``!value``, ``in(a,b)``,
``!in(a,b)``; a missing label never equals a value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from sweeps.preflight._report import NodeInfo, PreflightError
from sweeps.spec import ResourcesSpec

__all__ = ["check_fit", "label_matches", "node_shortfalls", "trial_request", "trial_slots"]

_EPS = 1e-9
_FIELDS = {"CPU": "resources.cpu", "GPU": "resources.gpu"}
_HINT = (
    "Lower the request in the spec, or add a node that has it (`ray start --num-cpus/--num-gpus/"
    "--resources/--labels`, or a worker group in infra/ray/cluster.yaml or "
    "infra/k8s/raycluster.yaml)."
)


def trial_request(resources: ResourcesSpec) -> dict[str, float]:
    """The Ray resource bundle of one trial, with Ray's names (``CPU``, ``GPU``, custom ones).

    Example:
        >>> trial_request(ResourcesSpec(cpu=2, gpu=0.25, custom={"A100": 1}))
        {'CPU': 2.0, 'GPU': 0.25, 'A100': 1.0}
    """
    request = {"CPU": float(resources.cpu)}
    if resources.gpu:
        request["GPU"] = float(resources.gpu)
    request.update({name: float(amount) for name, amount in resources.custom.items()})
    return request


def label_matches(selector: str, value: str | None) -> bool:
    """True when a node label ``value`` (None: the node lacks the label) satisfies ``selector``.

    Example:
        >>> label_matches("in(a100, h100)", "h100"), label_matches("!spot", None)
        (True, True)
    """
    negate = selector.startswith("!")
    body = selector[1:] if negate else selector
    if body.startswith("in(") and body.endswith(")"):
        hit = value is not None and value in {item.strip() for item in body[3:-1].split(",")}
    else:
        hit = value == body
    return hit != negate


def node_shortfalls(
    request: Mapping[str, float], labels: Mapping[str, str], node: NodeInfo
) -> list[str]:
    """What ``node`` lacks for one trial, one phrase per resource or label; empty: it fits.

    Labels are not checked on an autoscaler group (its labels are unknown until it starts).
    """
    shortfalls = [
        f"{name} {_fmt(node.resources.get(name, 0.0))} of {_fmt(amount)}"
        for name, amount in request.items()
        if node.resources.get(name, 0.0) + _EPS < amount
    ]
    if not node.can_start:
        shortfalls += [
            f"label {key}={node.labels.get(key)!r} (wants {selector!r})"
            for key, selector in labels.items()
            if not label_matches(selector, node.labels.get(key))
        ]
    return shortfalls


def trial_slots(request: Mapping[str, float], node: NodeInfo) -> int:
    """How many trials ``node`` holds at once by its total resources (0 if one does not fit)."""
    if not request:
        return 0
    return min(
        math.floor(node.resources.get(name, 0.0) / amount + _EPS)
        for name, amount in request.items()
    )


def check_fit(resources: ResourcesSpec, nodes: Sequence[NodeInfo]) -> tuple[tuple[str, ...], int]:
    """The nodes one trial fits on and the trials the alive ones hold at once.

    Args:
        resources: The spec's per-trial resources.
        nodes: Alive nodes, plus autoscaler groups (``can_start``) that may start later.

    Returns:
        ``(names of fitting nodes, trial slots on alive fitting nodes)``.

    Raises:
        PreflightError: when no node fits, naming each resource or label that no node has,
            what was asked and what the largest node has; or, when each is on some node but no
            node has them all, what each node lacks.
    """
    request = trial_request(resources)
    fitting = [node for node in nodes if not node_shortfalls(request, resources.node_labels, node)]
    if fitting:
        slots = sum(trial_slots(request, node) for node in fitting if not node.can_start)
        return tuple(node.name for node in fitting), slots
    raise PreflightError(_no_fit_message(request, resources.node_labels, nodes))


def _no_fit_message(
    request: Mapping[str, float], labels: Mapping[str, str], nodes: Sequence[NodeInfo]
) -> str:
    alive = [node for node in nodes if not node.can_start]
    head = f"No node can run a trial of this sweep ({len(alive)} alive node(s))"
    if not nodes:
        return f"{head}: the cluster reports no alive node. Start one, or check the address."
    problems = [
        _resource_problem(name, amount, nodes)
        for name, amount in request.items()
        if all(node.resources.get(name, 0.0) + _EPS < amount for node in nodes)
    ]
    problems += [
        _label_problem(key, selector, alive)
        for key, selector in labels.items()
        if alive and not any(label_matches(selector, node.labels.get(key)) for node in alive)
    ]
    if not problems:
        asked = ", ".join(f"{name}: {_fmt(amount)}" for name, amount in request.items())
        problems = [f"each resource is on some node, but no node has all of {{{asked}}}"] + [
            f"{node.name} lacks {', '.join(node_shortfalls(request, labels, node))}"
            for node in nodes
        ]
    return f"{head}:\n  " + "\n  ".join(problems) + f"\n{_HINT}"


def _resource_problem(name: str, amount: float, nodes: Sequence[NodeInfo]) -> str:
    largest = max(nodes, key=lambda node: node.resources.get(name, 0.0))
    field = _FIELDS.get(name, f"resources.custom.{name}")
    has = largest.resources.get(name, 0.0)
    where = f" ({largest.name})" if has else ""
    return (
        f"{field} asks for {_fmt(amount)} {name} per trial, but the largest node has "
        f"{_fmt(has)}{where}"
    )


def _label_problem(key: str, selector: str, nodes: Sequence[NodeInfo]) -> str:
    seen = sorted({node.labels[key] for node in nodes if key in node.labels})
    values = ", ".join(repr(value) for value in seen) if seen else "none: no node has the label"
    return (
        f"resources.node_labels.{key} asks for {selector!r}, but no alive node matches "
        f"(values on the nodes: {values})"
    )


def _fmt(amount: float) -> str:
    return f"{amount:g}"
