"""Walk the spec models' type tree by field path, for error messages and ``--set`` overrides.

Pydantic reports an error at a location such as ``("strategies", 1, "grid", "lr")``: the
``"grid"`` step is the discriminator tag of a tagged union, which the user never wrote. These
helpers follow such paths through the annotations so a message can drop the tag and list the keys
accepted at that level.
"""

from __future__ import annotations

from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

__all__ = ["accepted_literals", "child_type", "field_names", "is_model", "tagged_members", "unwrap"]


def unwrap(tp: Any) -> Any:
    """Strip ``Annotated[...]`` and ``Optional[...]`` wrappers; other unions stay as they are."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, UnionType):
            members = [arg for arg in get_args(tp) if arg is not NoneType]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def is_model(tp: Any) -> bool:
    """True for a pydantic model class (after unwrapping)."""
    tp = unwrap(tp)
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def tagged_members(tp: Any) -> dict[str, type[BaseModel]]:
    """``{kind: model}`` for a union of models told apart by a ``kind`` literal, else ``{}``."""
    tp = unwrap(tp)
    if get_origin(tp) not in (Union, UnionType):
        return {}
    members: dict[str, type[BaseModel]] = {}
    for member in get_args(tp):
        if is_model(member) and "kind" in member.model_fields:
            for tag in get_args(member.model_fields["kind"].annotation):
                members[str(tag)] = member
    return members


def field_names(tp: Any) -> list[str]:
    """The keys a model accepts, in declaration order; ``[]`` for anything else."""
    tp = unwrap(tp)
    return list(tp.model_fields) if is_model(tp) else []


def child_type(tp: Any, part: str | int) -> Any | None:
    """The annotation of ``part`` inside ``tp``; None when ``tp`` has no such child.

    Args:
        tp: A model class, ``list[...]``, ``dict[str, ...]`` or ``Any`` (possibly wrapped).
        part: A field name or dict key (str), or a list index (int).
    """
    tp = unwrap(tp)
    if tp is Any:
        return Any
    if is_model(tp):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return None if field is None else field.annotation
    origin = get_origin(tp)
    if origin is list and isinstance(part, int):
        return get_args(tp)[0]
    if origin is dict and isinstance(part, str):
        return get_args(tp)[1]
    return None


def accepted_literals(tp: Any) -> list[str]:
    """The values of a ``Literal[...]`` annotation (or a list of them); ``[]`` otherwise."""
    tp = unwrap(tp)
    if get_origin(tp) is list:
        tp = unwrap(get_args(tp)[0])
    if get_origin(tp) is Literal:
        return [str(value) for value in get_args(tp)]
    return []
