"""``load_spec``: a file or a mapping, plus ``--set`` overrides, to a validated ``SweepSpec``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sweeps.spec._errors import SpecError, format_validation_error
from sweeps.spec._overrides import apply_overrides_collecting
from sweeps.spec._sweep import SweepSpec
from sweeps.spec._yaml import read_mapping

__all__ = ["load_spec", "validate_spec"]

logger = logging.getLogger(__name__)


def load_spec(
    source: str | os.PathLike[str] | Mapping[str, Any], *, overrides: Sequence[str] = ()
) -> SweepSpec:
    """Read, override and validate a sweep spec.

    Example:
        >>> spec = load_spec("sweeps/specs/digits.yaml", overrides=["task.epochs=2"])
        >>> spec.task.epochs
        2

    Args:
        source: A YAML file (``str`` or path) or an already-parsed mapping such as
            ``SweepSpec.resolved()``.
        overrides: ``key.path=value`` strings applied before validation
            (see :func:`sweeps.spec.apply_overrides`).

    Returns:
        The validated, immutable spec. Local dataset, weights and storage paths are made
        absolute (relative ones are read from the current directory).

    Raises:
        SpecError: listing every problem: the file (missing, empty, not a mapping, not safe YAML,
            an alias, over 1 MB), the overrides, then every field that fails validation.
    """
    if isinstance(source, Mapping):
        data, label = dict(source), None
    else:
        path = Path(source)
        data, label = read_mapping(path), str(path)
    data, errors = apply_overrides_collecting(data, overrides)
    try:
        spec = validate_spec(data, source=label)
    except SpecError as error:
        raise SpecError([*errors, *error.errors], source=label) from None
    if errors:
        raise SpecError(errors, source=label)
    logger.debug("loaded spec %r from %s", spec.name, label or "a mapping")
    return spec


def validate_spec(data: Mapping[str, Any], *, source: str | None = None) -> SweepSpec:
    """Validate a raw spec mapping.

    Args:
        data: The mapping read from YAML.
        source: The file it came from, named in the error.

    Raises:
        SpecError: one line per invalid field.
    """
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, SweepSpec), source=source) from None
