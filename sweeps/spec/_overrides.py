"""``--set key.path=value`` overrides, applied to the raw spec mapping before validation.

Each value is parsed as one YAML value with the spec loader (``3`` is an int, ``[0, 1]`` a list,
``null`` None); nothing is evaluated and ``!!python`` tags are refused. A text field keeps a
number or boolean as typed (``name=2024`` is ``"2024"``, ``tracking.experiment=007`` is
``"007"``), since the shell has taken the quotes that would say so. In a mapping of single values
(``resources.node_labels``, ``resources.custom``) the rest of the path is one key, dots and all:
``resources.node_labels.ray.io/accelerator-type=A100``. The key path is checked
against the spec's schema, not against the file, so a field the file leaves at its default can
still be set; an unknown key is an error listing the keys accepted at that level. A mapping
value replaces the whole section (``tracking={checkpoints: none}`` drops the file's
``tracking.uri``); set one field of it with its own path (``tracking.checkpoints=none``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from sweeps.spec._errors import SpecError, did_you_mean, short_value
from sweeps.spec._redact import REDACTED, SECRET_KEY, redact, redact_text
from sweeps.spec._schema import child_type, field_names, is_model, tagged_members, unwrap
from sweeps.spec._sweep import SweepSpec
from sweeps.spec._yaml import parse_yaml

__all__ = ["apply_overrides", "apply_overrides_collecting", "shown_override"]

MAX_OVERRIDE_CHARS = 10_000


class _OverrideError(Exception):
    """One override cannot be applied; the message says why."""


def apply_overrides(
    spec: Mapping[str, Any], overrides: Iterable[str], *, root: type[BaseModel] | None = None
) -> dict[str, Any]:
    """Return a copy of ``spec`` with every ``key.path=value`` override applied.

    Example:
        >>> apply_overrides({"name": "a", "seeds": [0]}, ["seeds=[0, 1]"])["seeds"]
        [0, 1]

    Args:
        spec: The raw spec mapping (as read from YAML); it is not modified.
        overrides: Strings such as ``task.epochs=3``, ``strategies.1.lr.points=5`` or
            ``seeds=[0,1]``. List items are addressed by index.
        root: The model whose schema the paths are checked against (default ``SweepSpec``).

    Returns:
        The new mapping; validate it with ``load_spec`` (types are checked there).

    Raises:
        SpecError: listing every override that is malformed, names an unknown key or an index
            out of range, or whose value is not plain YAML.
    """
    data, errors = apply_overrides_collecting(spec, overrides, root=root)
    if errors:
        raise SpecError(errors, source="--set")
    return data


def apply_overrides_collecting(
    spec: Mapping[str, Any],
    overrides: Iterable[str] | None,
    *,
    root: type[BaseModel] | None = None,
    entry: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Like :func:`apply_overrides`, but apply the valid overrides and return the errors of the
    others, so that a caller can report them together with the spec's own errors.

    ``overrides`` is a list of strings (None: none); one string, or an item that is no string,
    is an error line, not a traceback (from Python, ``overrides="seeds=[0]"`` was read one
    character at a time).

    ``entry``: the suite entry a ``lrsweep nightly --set`` was routed to; its errors show the
    override as typed, ``<entry>.<key.path>=<value>``.
    """
    root = SweepSpec if root is None else root
    data = copy.deepcopy(dict(spec))
    if isinstance(overrides, str):  # iterated, each of its characters was an override
        shown = _hidden(overrides, "")[0]
        return data, [
            f"overrides: must be a list of key.path=value strings, but got one string "
            f"{shown!r}; write [{shown!r}]."
        ]
    errors = []
    for override in overrides or ():  # None: none
        if not isinstance(override, str):
            errors.append(
                f"overrides: each must be a key.path=value string, such as 'task.epochs=3', "
                f"but got {type(override).__name__} {short_value(override)}."
            )
            continue
        try:
            _apply_one(data, override, root)
        except _OverrideError as error:
            shown, message = _hidden(override, str(error))
            shown = shown if entry is None else f"{entry}.{shown}"
            errors.append(f"--set {shown!r}: {message}.")
    return data, errors


def shown_override(override: str) -> str:
    """``override`` as it may be printed (in a command to run again, say): the value under a
    secret-looking key is ``***``, and so is a password in a URL."""
    return _hidden(override, "")[0]


def _hidden(override: str, message: str) -> tuple[str, str]:
    """The override and its error as they may be printed: a value under a secret-looking key
    (``*password*``, ``*token*`` ...) is ``***`` wherever it appears, a URL's password too."""
    key, sep, raw = override.partition("=")
    if not sep or not raw.strip():
        return override, message
    if SECRET_KEY.search(key):
        return f"{key}={REDACTED}", message.replace(raw.strip(), REDACTED)
    # redact: the value as one URL (a password holding a space too); redact_text: every URL
    # inside it, as in ``{path: s3://b/x?secret_key=...}``, and in the message
    shown = redact_text(redact(raw), keep_user=True)
    message = message.replace(raw, shown) if shown != raw else message
    return f"{key}={shown}", redact_text(message, keep_user=True)


def _apply_one(data: dict[str, Any], override: str, root: type[BaseModel]) -> None:
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise _OverrideError("expected key.path=value, e.g. task.epochs=3")
    if len(raw) > MAX_OVERRIDE_CHARS:
        raise _OverrideError(f"the value is longer than {MAX_OVERRIDE_CHARS} characters")
    parts = key.split(".")
    if any(not part.strip() for part in parts):
        raise _OverrideError(f"the key {key!r} has an empty part")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except ValueError as error:
        raise _OverrideError(f"the value is refused: {error}") from None
    changed = copy.deepcopy(data)  # a refused override leaves nothing half-set behind
    _set_path(changed, [part.strip() for part in parts], value, raw, root)
    data.clear()
    data.update(changed)


def _set_path(
    data: dict[str, Any], parts: list[str], value: Any, raw: str, root: type[BaseModel]
) -> None:
    node: Any = data
    tp: Any = root
    depth = 0
    while True:
        here = ".".join(parts[:depth]) or "the top level"
        owner = _concrete(tp, node, here)
        if _holds_scalars(owner):  # the rest is one key: label keys hold dots (ray.io/...)
            parts = [*parts[:depth], ".".join(parts[depth:])]
        step = _step(owner, node, parts[depth], here)
        if depth == len(parts) - 1 and step == "kind":
            _check_new_kind(tagged_members(tp), node, value, here)
        tp = child_type(owner, step)
        if depth == len(parts) - 1:
            node[step] = _as_text(value, raw) if unwrap(tp) is str else value
            return
        child = node[step] if _has(node, step) else None
        if not isinstance(child, dict | list):
            if get_origin(unwrap(tp)) is list:
                where = ".".join(parts[: depth + 1])
                raise _OverrideError(
                    f"{where} holds no list to index into; set the whole list: {where}=[...]"
                )
            child = _default_mapping(owner, step)
            node[step] = child
        node = child
        depth += 1


def _check_new_kind(members: Mapping[str, Any], node: Any, kind: Any, here: str) -> None:
    """Refuse ``here.kind=NEW`` when ``here`` keeps keys of its old kind that NEW does not take
    (``task.schedule.kind=sgdr`` over a one-cycle ``pct_start``), or takes with another meaning
    (a field whose default differs: one-cycle's ``pct_start`` 0.25 is its warm-up, flat-cos's
    0.75 its flat part): the error names them and the override that replaces the mapping."""
    if not members or not isinstance(node, dict) or kind not in members:
        return
    new = members[kind].model_fields
    lacking = [key for key in node if key != "kind" and key not in new]
    was = node.get("kind")
    old = members.get(was) if isinstance(was, str) and was != kind else None
    other = [  # shared names that mean something else in the new kind
        key
        for key in node
        if old is not None
        and key != "kind"
        and key in new
        and key in old.model_fields
        and new[key].default != old.model_fields[key].default
    ]
    said = []
    if lacking:
        said.append(f"{', '.join(map(str, lacking))}, which kind {kind!r} does not take")
    if other:
        said.append(
            f"{', '.join(map(str, other))}, which kind {kind!r} takes with another meaning "
            f"(its default: {', '.join(repr(new[key].default) for key in other)})"
        )
    if said:
        raise _OverrideError(
            f"{here} also sets {'; and '.join(said)}; replace the whole mapping instead: "
            f"--set '{here}={{kind: {kind}, ...}}'"
        )


def _holds_scalars(tp: Any) -> bool:
    """True for ``dict[str, X]`` whose values are single values (no model, list or mapping)."""
    tp = unwrap(tp)
    if get_origin(tp) is not dict:
        return False
    values = unwrap(get_args(tp)[1])
    return not (
        values is Any
        or is_model(values)
        or tagged_members(values)
        or get_origin(values) in (dict, list)
    )


def _as_text(value: Any, raw: str) -> Any:
    """The text as typed where a text field gets a YAML number or boolean (``name=2024``,
    ``tracking.experiment=007``): the shell has already taken the quotes that would keep it
    text. ``null`` and an explicit tag (``!!int 3``) keep their value."""
    text = raw.strip()
    if isinstance(value, bool | int | float) and not text.startswith("!"):
        return text
    return value


def _concrete(tp: Any, node: Any, here: str) -> Any:
    """Resolve a tagged union to the member that the data's ``kind`` selects."""
    members = tagged_members(tp)
    if not members:
        return unwrap(tp)
    kind = node.get("kind") if isinstance(node, dict) else None
    if kind not in members:
        raise _OverrideError(
            f"{here} has kind {kind!r}; set {here}.kind first (accepted: {', '.join(members)})"
        )
    return members[kind]


def _step(tp: Any, node: Any, part: str, here: str) -> str | int:
    if is_model(tp):
        if part not in tp.model_fields:
            accepted = ", ".join(field_names(tp))
            hint = did_you_mean(part, tp.model_fields)
            raise _OverrideError(f"unknown key {part!r} in {here}{hint} (accepted: {accepted})")
        return part
    if get_origin(tp) is list:
        if not part.isdigit():
            raise _OverrideError(f"{here} is a list; {part!r} is not an index (0, 1, ...)")
        index = int(part)
        size = len(node) if isinstance(node, list) else 0
        if index >= size:
            raise _OverrideError(f"index {index} is out of range: {here} has {size} item(s)")
        return index
    if get_origin(tp) is dict or tp is Any:
        return part
    raise _OverrideError(f"{here} is a single value and has no key {part!r}")


def _has(node: Any, step: str | int) -> bool:
    if isinstance(node, list):
        return isinstance(step, int) and step < len(node)
    return step in node


def _default_mapping(owner: Any, step: str | int) -> dict[str, Any]:
    """A mapping to fill in where the data has none, holding the default's ``kind`` if it has one.

    So ``task.schedule.pct_start=0.3`` works on a spec that leaves ``schedule`` at its default.
    """
    if not (is_model(owner) and isinstance(step, str)):
        return {}
    default = owner.model_fields[step].get_default(call_default_factory=True)
    kind = getattr(default, "kind", None)
    return {"kind": kind} if isinstance(default, BaseModel) and kind is not None else {}
