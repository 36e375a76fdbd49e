"""``SpecError`` and the translation of pydantic's errors into ``field.path: message`` lines."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from sweeps.spec._redact import redact
from sweeps.spec._schema import accepted_literals, child_type, field_names, tagged_members

__all__ = ["SpecError", "error_field", "format_validation_error", "short_value"]

_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown key",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "greater_than": "must be above {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be below {lt}",
    "less_than_equal": "must be at most {le}",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} items",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "must match {pattern}",
}
_PATTERN_WORDS = {
    r"^[A-Za-z0-9_.-]+$": "letters, digits, _, . and - only: no spaces",
    r"^[A-Za-z0-9_./-]+$": "letters, digits, _, ., - and / only: no spaces",
}
"""The name patterns of the spec in words (``Name``, ``tracking.experiment``)."""
_NO_INPUT = frozenset({"missing", "extra_forbidden", "too_long", "too_short"})
_YAML_BOOLEANS = "YAML reads unquoted yes, no, on and off as true/false; quote a word meant as text"


class SpecError(ValueError):
    """A spec, suite or override is invalid. The message lists every problem found.

    Each line reads ``field.path: message (accepted: ...)``, e.g.
    ``strategies.1.lr: min must be below max, but got min=1.0 max=0.1.``

    Attributes:
        errors: One line per problem, without the header.
        source: The file (or ``--set`` option) the problems come from, when there is one.
        what: What was invalid, as the header names it: ``spec`` or ``suite``.
    """

    def __init__(
        self, errors: str | Sequence[str], *, source: str | None = None, what: str = "spec"
    ) -> None:
        self.errors: tuple[str, ...] = (errors,) if isinstance(errors, str) else tuple(errors)
        self.source = source
        self.what = what
        count = len(self.errors)
        where = f" {source!r}" if source else ""
        header = f"invalid {what}{where}: {count} error{'s' if count != 1 else ''}"
        super().__init__("\n  ".join([header, *self.errors]))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.errors, self.source, self.what))

    def fields(self) -> list[tuple[str | None, str]]:
        """Each line of :attr:`errors` as ``(field path, message)`` (see :func:`error_field`).

        Example:
            >>> SpecError("task.epochs: must be at least 1, but got 0.").fields()
            [('task.epochs', 'must be at least 1, but got 0.')]
        """
        return [error_field(line) for line in self.errors]


def error_field(line: str) -> tuple[str | None, str]:
    """One error line as ``(field path, message)``.

    The path is what the line starts with before ``: `` (``task.epochs``, ``(top level)``), the
    message the rest; an override's line (``--set 'task.epoch=3': unknown key ...``) gives the
    override's key and the whole line; a line about the file itself (``spec file 'x.yaml' not
    found``) gives None and the whole line.
    """
    if field := _FIELD_LINE.match(line):
        return field["path"], field["message"]
    if override := _OVERRIDE_LINE.match(line):
        return override["key"].strip(), line
    return None, line


_FIELD_LINE = re.compile(r"(?P<path>[\w-]+(?:\.[^\s:]+)*|\(top level\)): (?P<message>.*)", re.S)
"""A line ``field.path: message`` (path parts are names, indexes or mapping keys)."""
_OVERRIDE_LINE = re.compile(r"--set ['\"](?P<key>[^='\"]+)=")
"""A line about one ``--set 'key.path=value'`` override."""


def _rebuild(
    cls: type[SpecError], errors: tuple[str, ...], source: str | None, what: str
) -> SpecError:
    return cls(errors, source=source, what=what)


def format_validation_error(error: ValidationError, root: type[Any]) -> list[str]:
    """One ``field.path: message`` line per error that pydantic found while validating ``root``.

    Args:
        error: Raised by ``root.model_validate``.
        root: The model class that was validated (paths are followed through its annotations).
    """
    return [_format_one(details, root) for details in error.errors()]


def _format_one(details: ErrorDetails, root: type[Any]) -> str:
    parts, tp, parent = _clean_loc(details["loc"], root)
    kind = details["type"]
    ctx = details.get("ctx") or {}
    accepted: Iterable[str] = ()
    if kind == "spec_field":
        parts += str(ctx["field"]).split(".")
        message = str(ctx["message"])
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("kind")
        tag = ctx.get("tag")
        message = f"unknown kind {tag!r}" if tag is not None else "is required"
        accepted = tagged_members(tp)
    elif kind == "extra_forbidden":
        accepted = field_names(parent)
        message = "unknown key" + did_you_mean(str(parts[-1]) if parts else "", accepted)
    elif kind == "literal_error":
        message = f"unknown value {short_value(details['input'])}"
        accepted = accepted_literals(tp) or [str(ctx.get("expected", ""))]
    elif kind == "value_error":
        message = details["msg"].removeprefix("Value error, ")
    else:
        template = _MESSAGES.get(kind)
        message = template.format(**ctx) if template else details["msg"]
        if kind == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERN_WORDS:
            message += f" ({_PATTERN_WORDS[str(ctx['pattern'])]})"
        if kind not in _NO_INPUT and "but got" not in message:
            message += f", but got {short_value(details['input'])}"
    if kind == "string_type" and isinstance(details["input"], bool):
        message += f" ({_YAML_BOOLEANS})"
    message += _list_hint(kind, details["input"], in_list=bool(parts) and type(parts[-1]) is int)
    return _line(parts, message, list(accepted))


def _list_hint(kind: str, value: Any, *, in_list: bool) -> str:
    """How to write the list a text was meant as: ``seeds=0,1`` (a text, not a list) and
    ``seeds=[0 1]`` (one item, ``'0 1'``) were refused without a word of YAML's list syntax."""
    if not isinstance(value, str) or len(value) > 60:
        return ""
    items = value.replace(",", " ").split()
    if kind == "list_type" and "," in value:
        return f" (a list is written in brackets: [{', '.join(items)}])"
    numbers = len(items) > 1 and all(_is_number(item) for item in items)
    if in_list and kind in _NUMBER_KINDS and numbers and "," not in value:
        return f" (list items are separated by commas: [{', '.join(items)}])"
    return ""


_NUMBER_KINDS = frozenset({"int_type", "int_parsing", "float_type", "float_parsing"})


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _clean_loc(
    loc: tuple[str | int, ...], root: type[Any]
) -> tuple[list[str | int], Any | None, Any | None]:
    """Drop union tags from ``loc``; return it with the type at ``loc`` and at its parent."""
    tp: Any | None = root
    parent: Any | None = None
    parts: list[str | int] = []
    for part in loc:
        members = tagged_members(tp) if tp is not None else {}
        if isinstance(part, str) and part in members:
            tp = members[part]
            continue
        parent = tp
        tp = child_type(tp, part) if tp is not None else None
        parts.append(part)
    return parts, tp, parent


def _line(parts: Sequence[str | int], message: str, accepted: Sequence[str]) -> str:
    path = ".".join(str(part) for part in parts) or "(top level)"
    # one full stop off, not an ellipsis: a value cut by short_value ends in "...", and losing it
    # left a long text's quote open and a huge number looking exact
    text = message[:-1] if message.endswith(".") and not message.endswith("...") else message
    line = f"{path}: {text}"
    if accepted:
        line += f" (accepted: {', '.join(accepted)})"
    return line if line.endswith("...") else line + "."


def did_you_mean(key: str, accepted: Iterable[str]) -> str:
    """``, did you mean 'epochs'?`` for a key close to one accepted (``epoch``, ``batchsize``),
    else nothing."""
    close = difflib.get_close_matches(key, list(accepted), n=1, cutoff=0.75)
    return f", did you mean {close[0]!r}?" if close else ""


def short_value(value: Any) -> str:
    """The refused value as the message quotes it: secrets masked, cut to 60 characters."""
    text = repr(redact(value))
    return text if len(text) <= 60 else text[:57] + "..."
