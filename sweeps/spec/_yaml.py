"""Reading spec YAML safely: PyYAML's safe loader, minus aliases and duplicate keys, size-capped.

``yaml.safe_load`` never runs code (``!!python/...`` tags are refused) but still expands aliases:
a ten-line "billion laughs" file becomes a structure that takes minutes to walk. Specs need no
aliases, so :class:`SpecLoader` refuses every ``*alias`` and every ``<<`` merge key (whose keys
would silently give way to the mapping's own), and files above :data:`MAX_SPEC_BYTES` are refused
before parsing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode

from sweeps.spec._errors import SpecError

__all__ = ["MAX_SPEC_BYTES", "SpecLoader", "parse_yaml", "read_mapping"]

MAX_SPEC_BYTES = 1_000_000
"""The largest spec or suite file read (1 MB); real specs are a few hundred bytes."""
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
"""The tag PyYAML gives a ``<<`` key, whose mapping's keys give way to the mapping's own."""


class _Refused(yaml.YAMLError):
    """A construct that plain YAML allows but specs do not."""


class SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also refuses aliases, merge keys and keys repeated in a mapping,
    and reads every key as the text it is written as."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(
                f"YAML aliases (*{event.anchor}) are not allowed in specs; write the values out "
                f"(line {event.start_mark.line + 1})"
            )
        return super().compose_node(parent, index)

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node: MappingNode = super().compose_mapping_node(anchor)
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: {...}`: keys that may silently repeat others
                raise _Refused(
                    f"YAML merge keys (<<) are not allowed in specs; write the keys out "
                    f"(line {key_node.start_mark.line + 1})"
                )
            if isinstance(key_node, ScalarNode):
                # every key of a spec is a name: `on:`, `no:`, `null:` or `1:` is that text, not
                # YAML 1.1's true, false, None or 1 (which failed as "1: Keys should be strings")
                key_node.tag = _STR_TAG
                if key_node.value in seen:
                    raise _Refused(
                        f"key {key_node.value!r} appears twice in one mapping "
                        f"(line {key_node.start_mark.line + 1})"
                    )
                seen.add(key_node.value)
        return node


def _without_base_60(loader: type[yaml.SafeLoader]) -> None:
    """Read ``1:30`` as the text it looks like, not YAML 1.1's base-60 number 90, and ``010``
    as ten, not octal 8 (YAML 1.2 dropped both): a spec's ``epochs: 1:3`` or ``--set
    seeds=[1:0]`` became 63 epochs or seed 60 without a word; now the field refuses the text."""
    int_tag, float_tag = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
    loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (int_tag, float_tag)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    loader.add_implicit_resolver(
        int_tag,
        re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
        list("-+0123456789"),
    )
    loader.add_implicit_resolver(
        float_tag,
        re.compile(
            r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?
                |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )


_without_base_60(SpecLoader)


class _PlainDumper(yaml.SafeDumper):
    """Writes every value in full: no ``&anchor`` / ``*alias``, which :class:`SpecLoader`
    refuses (a spec object shared by two fields would otherwise be written as an alias)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any) -> str:
    """``data`` as YAML that :func:`parse_yaml` reads back (keys in their order, no aliases)."""
    return yaml.dump(data, Dumper=_PlainDumper, sort_keys=False)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with :class:`SpecLoader`.

    Raises:
        ValueError: with a one-line reason (bad syntax with its line, an alias, a repeated key,
            a ``!!python`` or other unknown tag, nesting too deep).
    """
    try:
        return yaml.load(text, Loader=SpecLoader)
    except _Refused as error:
        raise ValueError(str(error)) from None
    except yaml.constructor.ConstructorError as error:
        tag = getattr(error.problem_mark, "line", None)
        where = f" (line {tag + 1})" if tag is not None else ""
        raise ValueError(
            f"{error.problem}{where}; only plain YAML values are accepted, no !!python or "
            "other custom tags"
        ) from None
    except yaml.composer.ComposerError as error:
        if error.problem != "but found another document":
            raise ValueError(f"not valid YAML: {error}") from None
        raise ValueError(_several_documents(text, error.problem_mark)) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        tab = (
            "; YAML indents and separates with spaces: replace the tab"
            if "'\\t'" in str(error.problem)
            else ""
        )
        raise ValueError(f"not valid YAML: {error.problem}{where}{tab}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"not valid YAML: {error}") from None
    except RecursionError:
        raise ValueError("the YAML is nested too deeply") from None


def _several_documents(text: str, second: Any) -> str:
    """Why a text of several ``---`` documents is refused, with how many it holds: PyYAML's own
    "expected a single document in the stream" named neither."""
    count = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            count += isinstance(event, yaml.DocumentStartEvent)
    except yaml.YAMLError:  # a later document's syntax: count those before it
        pass
    line = f" (the second starts at line {second.line + 1})" if second is not None else ""
    return (
        f"holds {count} YAML documents{line}, but must hold one: a '---' line starts a new "
        "document; keep one mapping here and put each other document in a file of its own"
    )


def read_mapping(path: Path, *, what: str = "spec") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping at the top level.

    Args:
        path: The file.
        what: The word used in messages (``spec``, ``suite``).

    Raises:
        SpecError: naming the file when it is missing, not a file, unreadable, too big, not
            UTF-8, not valid YAML, empty, or not a mapping.
    """
    source = str(path)
    try:
        text = _read_text(path, what)
        data = parse_yaml(text)
    except UnicodeDecodeError:
        raise SpecError(
            f"{what} file {source!r} is not UTF-8 text", source=source, what=what
        ) from None
    except OSError as error:  # unreadable, a name too long ...
        raise SpecError(
            f"{what} file {source!r} cannot be read ({error.strerror or error}); check the "
            "path and its permissions",
            source=source,
            what=what,
        ) from None
    except SpecError:
        raise
    except ValueError as error:
        raise SpecError(f"{what} file {source!r}: {error}", source=source, what=what) from None
    if data is None:
        raise SpecError(f"{what} file {source!r} is empty", source=source, what=what)
    if not isinstance(data, dict):
        raise SpecError(
            f"{what} file {source!r} must hold a mapping (key: value lines) at the top level, "
            f"but holds a {type(data).__name__}",
            source=source,
            what=what,
        )
    return data


def _read_text(path: Path, what: str) -> str:
    """The file's text; SpecError when it is missing, not a file or too big (OSError passes)."""
    source = str(path)
    if not path.exists():
        raise SpecError(f"{what} file {source!r} not found", source=source, what=what)
    if not path.is_file():
        raise SpecError(f"{what} path {source!r} is not a file", source=source, what=what)
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            f"{what} file {source!r} is {size} bytes; the limit is {MAX_SPEC_BYTES}",
            source=source,
            what=what,
        )
    return path.read_text(encoding="utf-8")
