"""The nightly suite file: several sweep specs run together, with regression thresholds.

```yaml
name: nightly
thresholds: {error_rate_points: 2.0, wall_time_pct: 25, scale_time_by_reference: true}
entries:
  - name: digits-cnn
    spec_path: digits.yaml          # relative to the suite file
    overrides: ["task.epochs=3"]
  - name: inline
    spec: {name: tiny, task: {dataset: {name: shapes}}, strategies: [{kind: lr_finder}]}
```
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, model_validator

from sweeps.spec._errors import SpecError, format_validation_error, short_value
from sweeps.spec._overrides import _hidden, apply_overrides_collecting
from sweeps.spec._sweep import SweepSpec
from sweeps.spec._task import local_path
from sweeps.spec._types import Int, Name, Number, SpecModel, field_error
from sweeps.spec._yaml import read_mapping

__all__ = ["DEFAULT_BASELINE_NIGHTS", "Suite", "SuiteEntry", "Thresholds", "load_suite"]

DEFAULT_BASELINE_NIGHTS = 7
"""Earlier completed nights whose median a night is judged against (``--baseline-nights``)."""

ALL_ENTRIES = "*"
"""The entry name of an override meant for every entry: ``*.storage.path=/mnt/shared/ray``."""
_ENTRY_PREFIX = re.compile(r"^entries\.(\d+)(?=[.:])")


class Thresholds(SpecModel):
    """How much worse than the baseline (median of earlier nights) a figure may get.

    Attributes:
        error_rate_points: Best error rate per strategy, in percentage points.
        wall_time_pct: Sweep wall time, in percent of the baseline.
        compute_pct: Compute seconds per strategy, in percent of the baseline.
        regret_points: LR-finder regret against the best strategy, in error-rate points.
        stopped_early_delta: Extra trials stopped early (rising loss or divergence).
        min_seconds: A time figure (compute, wall time) regresses only when it is also this many
            seconds above its baseline: on a sweep of a few seconds, start-up noise alone moves
            it by more than any percentage.
        scale_time_by_reference: Judge the time figures relative to the machine's speed: each
            baseline night's compute and wall time is scaled by tonight's machine-speed
            reference over that night's (a fixed workload timed as each night starts; see
            ``sweeps.nightly._reference``) before the percentages and ``min_seconds`` apply, so
            a night on a machine twice as slow is not a regression. Nights without a reference
            (recorded before it existed) are compared raw. ``false``: always raw.
    """

    error_rate_points: Number = Field(default=2.0, ge=0.0)
    wall_time_pct: Number = Field(default=25.0, ge=0.0)
    compute_pct: Number = Field(default=25.0, ge=0.0)
    regret_points: Number = Field(default=2.0, ge=0.0)
    stopped_early_delta: Int = Field(default=2, ge=0)
    min_seconds: Number = Field(default=5.0, ge=0.0)
    scale_time_by_reference: Annotated[bool, Field(strict=True)] = True


class SuiteEntry(SpecModel):
    """One sweep of the suite, validated, with where it came from.

    Attributes:
        name: Unique within the suite (defaults to the spec's name).
        spec: The validated spec, overrides applied.
        spec_path: The absolute spec file, or None for an inline spec.
        overrides: The suite file's ``key.path=value`` strings applied to it.
        extra_overrides: Those given on top of the suite file (``lrsweep nightly --set
            <entry>.key.path=value``), applied after ``overrides``, without the entry prefix.
        written_spec: The spec as the suite file writes it (``overrides`` applied, not
            ``extra_overrides``), which a what-if night of the entry is judged against; None
            when there are no ``extra_overrides`` (it is ``spec``) or when the suite file's own
            spec is invalid and only ``extra_overrides`` make it valid. Left out of dumps.
    """

    name: Name
    spec: SweepSpec
    spec_path: str | None = None
    overrides: list[str] = Field(default_factory=list)
    extra_overrides: list[str] = Field(default_factory=list)
    written_spec: SweepSpec | None = Field(default=None, exclude=True, repr=False)

    @property
    def spec_as_written(self) -> SweepSpec:
        """The spec without ``extra_overrides`` (``spec`` itself when there are none or the
        suite file's spec alone is invalid)."""
        return self.written_spec or self.spec


class Suite(SpecModel):
    """A validated suite: ``name`` (the experiment is ``nightly/<name>``), entries, thresholds."""

    name: Name
    entries: list[SuiteEntry] = Field(min_length=1)
    thresholds: Thresholds = Field(default_factory=Thresholds)


class _EntryInput(SpecModel):
    name: Name | None = None
    spec: dict[str, Any] | None = None
    spec_path: str | None = None
    overrides: list[str] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _one_source(self) -> _EntryInput:
        if (self.spec is None) == (self.spec_path is None):
            raise ValueError("give exactly one of spec (an inline mapping) or spec_path (a file)")
        if self.spec_path is not None and not self.spec_path.strip():  # "" read the folder
            raise field_error("spec_path", "must not be empty; give the spec file's path")
        return self


class _SuiteInput(SpecModel):
    name: Name
    entries: list[_EntryInput] = Field(min_length=1, max_length=100)
    thresholds: Thresholds = Field(default_factory=Thresholds)


def load_suite(
    source: str | os.PathLike[str] | Mapping[str, Any], *, overrides: Sequence[str] = ()
) -> Suite:
    """Read and validate a suite, loading every entry's spec.

    Example:
        >>> suite = load_suite(  # doctest: +SKIP
        ...     "sweeps/specs/nightly.yaml",
        ...     overrides=["digits-cnn-one-cycle.strategies.1={kind: fixed, lr: 2.0}"],
        ... )

    Args:
        source: A suite YAML file, or a parsed mapping (``spec_path`` is then relative to the
            current directory instead of the suite file's).
        overrides: ``<entry>.<key.path>=<value>`` strings applied to one entry's spec after the
            suite file's own overrides: ``<entry>`` is the entry's name (the longest name that
            matches wins when names share a prefix; ``*`` is every entry), the rest is a
            ``--set`` override of the spec.

    Raises:
        SpecError: listing every problem, each named ``entries.<name or index>.<field>``, e.g.
            ``entries.digits-cnn.spec.task.epochs: must be at least 1, but got 0.``; an override
            naming no entry is listed as ``--set '<override>': no suite entry named ...``.
    """
    if isinstance(source, Mapping):
        data, label, base = dict(source), None, Path.cwd()
    else:
        path = Path(source)
        data, label, base = read_mapping(path, what="suite"), str(path), path.parent
    try:
        raw = _SuiteInput.model_validate(data)
    except ValidationError as error:
        lines = format_validation_error(error, _SuiteInput)
        lines = [_name_entry(line, data) for line in lines]
        # the entries that are valid by themselves are loaded too: every problem at once
        _, names, more = _load_entries(_valid_entries(data), base, ())
        more += _duplicate_names(names)
        raise SpecError(list(dict.fromkeys(lines + more)), source=label, what="suite") from None
    entries, names, errors = _load_entries(list(enumerate(raw.entries)), base, overrides)
    errors += _duplicate_names(names)
    if errors:  # a --set on every entry (*) that fails fails once
        raise SpecError(list(dict.fromkeys(errors)), source=label, what="suite")
    return Suite(name=raw.name, entries=entries, thresholds=raw.thresholds)


def _valid_entries(data: Mapping[str, Any]) -> list[tuple[int, _EntryInput]]:
    """The entries of a suite that failed validation that are valid by themselves, with their
    places in the file."""
    entries = data.get("entries")
    valid = []
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        try:
            valid.append((index, _EntryInput.model_validate(entry)))
        except ValidationError:
            continue  # listed by the suite's own validation
    return valid


def _load_entries(
    raw_entries: Sequence[tuple[int, _EntryInput]], base: Path, overrides: Sequence[str]
) -> tuple[list[SuiteEntry], list[tuple[int, str]], list[str]]:
    """Every entry's spec loaded with its overrides (each entry with its place in the file),
    each entry's place and name as the suite will have it, and the error lines of those that
    fail.

    An error is placed at ``entries.<name>``, or ``entries.<place>`` for an unnamed entry and
    when two entries share the name (``_duplicate_names`` says so)."""
    sources: list[tuple[str | None, dict[str, Any]] | None] = []
    unread: list[list[str]] = []  # placed below, once the names are known
    for _, entry in raw_entries:
        try:
            sources.append(_entry_source(entry, base))
        except SpecError as error:
            unread.append(list(error.errors))
            sources.append(None)
    labels = [
        _entry_label(entry, source[1] if source else {}, index)
        for (index, entry), source in zip(raw_entries, sources, strict=True)
    ]
    shared = {label for label in labels if labels.count(label) > 1}
    places = [
        f"entries.{entry.name if entry.name and label not in shared else index}"
        for (index, entry), label in zip(raw_entries, labels, strict=True)
    ]
    lines = iter(unread)
    errors = [
        f"{where}.spec_path: {line}"
        for where, source in zip(places, sources, strict=True)
        if source is None
        for line in next(lines)
    ]
    extra, override_errors = _split_overrides(overrides, labels)
    errors += override_errors
    entries = []
    for place, (_, entry), source, label in zip(places, raw_entries, sources, labels, strict=True):
        if source is None:
            continue  # its file could not be read; the error is listed already
        try:
            entries.append(_load_entry(entry, *source, extra.get(label, []), place))
        except SpecError as error:
            errors += error.errors
    return entries, list(zip((index for index, _ in raw_entries), labels, strict=True)), errors


def _entry_source(entry: _EntryInput, base: Path) -> tuple[str | None, dict[str, Any]]:
    """The entry's spec file (absolute, or None when inline) and its raw mapping."""
    if entry.spec_path is None:
        return None, dict(entry.spec or {})
    try:
        path, absolute = local_path(entry.spec_path, Path.is_absolute)
    except ValueError as error:  # ~user with no such user
        raise SpecError(f"spec file {error}", source=entry.spec_path) from None
    path = path if absolute else base / path
    return str(path.resolve()), read_mapping(path)


def _entry_label(entry: _EntryInput, data: Mapping[str, Any], index: int) -> str:
    """The entry's name as the loaded suite will have it (its spec's name when unnamed)."""
    if entry.name:
        return entry.name
    name = data.get("name")
    return name if isinstance(name, str) and name else str(index)


def _split_overrides(
    overrides: Sequence[str] | None, labels: Sequence[str]
) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
    """Route each ``<entry>.<key.path>=<value>`` to its entry as (``<entry>`` as typed,
    ``<key.path>=<value>``); list those naming none."""
    routed: dict[str, list[tuple[str, str]]] = {}
    errors = []
    if isinstance(overrides, str):  # iterated, each of its characters was an override
        shown = _hidden(overrides, "")[0]
        return routed, [
            "overrides: must be a list of <entry>.key.path=value strings, but got one string "
            f"{shown!r}; write [{shown!r}]."
        ]
    for override in overrides or ():  # None: none
        if not isinstance(override, str):
            errors.append(
                "overrides: each must be an <entry>.key.path=value string, such as "
                f"'digits.task.epochs=3', but got {type(override).__name__} "
                f"{short_value(override)}."
            )
            continue
        key = override.partition("=")[0].strip()
        if key.startswith(ALL_ENTRIES + "."):
            for label in labels:
                rest = override.strip()[len(ALL_ENTRIES) + 1 :]
                routed.setdefault(label, []).append((ALL_ENTRIES, rest))
            continue
        matches = [label for label in labels if key.startswith(label + ".")]
        if not matches and key in (*labels, ALL_ENTRIES):  # was "no suite entry named" it
            what = "every entry (*)" if key == ALL_ENTRIES else f"the entry {key!r}"
            errors.append(
                f"--set {override!r}: names {what} but no field of a spec; write "
                f"{key}.<key.path>=<value>, e.g. {key}.task.epochs=3."
            )
            continue
        if not matches:
            errors.append(
                f"--set {override!r}: no suite entry named {key.split('.')[0]!r}; write "
                f"<entry>.<key.path>=<value> with one of the entries: {', '.join(labels)} "
                f"(or {ALL_ENTRIES} for all of them)."
            )
            continue
        label = max(matches, key=len)
        routed.setdefault(label, []).append((label, override.strip()[len(label) + 1 :]))
    return routed, errors


def _load_entry(
    entry: _EntryInput,
    spec_path: str | None,
    data: dict[str, Any],
    extra: list[tuple[str, str]],
    where: str,
) -> SuiteEntry:
    """The entry with its overrides applied: the suite file's, then ``lrsweep nightly --set``'s.

    Raises:
        SpecError: lines named ``<where>.overrides`` (the suite file's overrides),
            ``--set '<entry>.<key.path>=<value>'`` (the command line's, as typed) and
            ``<where>.spec.<field>`` (the spec they give).
    """
    changed, file_errors = apply_overrides_collecting(data, entry.overrides)
    errors = [f"{where}.overrides: {line.removeprefix('--set ')}" for line in file_errors]
    for typed, override in extra:
        changed, set_errors = apply_overrides_collecting(changed, [override], entry=typed)
        errors += set_errors
    try:
        spec = SweepSpec.model_validate(changed)
    except ValidationError as error:
        lines = format_validation_error(error, SweepSpec)
        raise SpecError([*errors, *(f"{where}.spec.{line}" for line in lines)]) from None
    if errors:
        raise SpecError(errors)
    return SuiteEntry(
        name=entry.name or spec.name,
        spec=spec,
        spec_path=spec_path,
        overrides=entry.overrides,
        extra_overrides=[override for _, override in extra],
        written_spec=_written_spec(entry, data) if extra else None,
    )


def _written_spec(entry: _EntryInput, data: dict[str, Any]) -> SweepSpec | None:
    """The entry's spec with the suite file's overrides alone, or None when that is invalid
    (the extra overrides are what make it valid: no night ran it as written)."""
    written, errors = apply_overrides_collecting(data, entry.overrides)
    if errors:
        return None
    try:
        return SweepSpec.model_validate(written)
    except ValidationError:
        return None


def _duplicate_names(names: Sequence[tuple[int, str]]) -> list[str]:
    """One line per name two or more entries share, with their places in the file (an entry
    whose spec could not be loaded counts by its ``name``)."""
    places: dict[str, list[int]] = {}
    for index, name in names:
        places.setdefault(name, []).append(index)
    return [
        f"entries.{name}.name: {len(found)} entries are named {name!r} (entries "
        f"{', '.join(map(str, found))} of the list); names must be unique."
        for name, found in places.items()
        if len(found) > 1
    ]


def _name_entry(line: str, data: Mapping[str, Any]) -> str:
    """Rewrite ``entries.3.`` to ``entries.<name>.`` when entry 3 has a usable name."""
    match = _ENTRY_PREFIX.match(line)
    entries = data.get("entries")
    if not match or not isinstance(entries, list):
        return line
    index = int(match.group(1))
    entry = entries[index] if index < len(entries) else None
    name = entry.get("name") if isinstance(entry, dict) else None
    if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        return f"entries.{name}" + line[match.end() :]
    return line
