"""Building blocks shared by the spec models: the frozen base model and constrained field types.

Integers and booleans are strict (``epochs: true`` or ``epochs: 2.5`` is an error, not ``1`` or
``2``); numbers accept integers and numeric strings such as ``"1e-5"`` (PyYAML reads ``1e-5``
without a dot as a string) but never booleans, NaN or infinities.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "NAME_PATTERN",
    "Int",
    "Name",
    "Number",
    "SpecModel",
    "field_error",
    "not_an_option",
]

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
"""Sweep, arm and suite entry names: letters, digits, ``_``, ``.`` and ``-``."""


def _plain_number(value: Any) -> Any:
    """Refuse booleans, NaN and infinities before any range check can misreport them."""
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "must be a number, not true/false")
    if isinstance(value, int) and not _fits_a_float(value):  # 1 and 400 zeros: a number, too big
        raise PydanticCustomError("finite_number", "must be a finite number")
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value  # pydantic reports it as not a number
    if isinstance(number, float) and not math.isfinite(number):
        raise PydanticCustomError("finite_number", "must be a finite number")
    return value


def _fits_a_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


Int = Annotated[int, Strict()]
"""A whole number; ``true`` and ``2.5`` are refused."""

Number = Annotated[float, BeforeValidator(_plain_number), AllowInfNan(False)]
"""A finite real number; integers and numeric strings are accepted, booleans, NaN and inf not."""


def _usable_name(name: str) -> str:
    """Refuse ``.`` and ``..``: names become folders (a sweep's, in Ray's storage), and these
    two would be the folder itself and its parent; any other leading ``.``, which made a hidden
    folder (``ls`` and file browsers left the sweep out); and a leading ``-``, which ``lrsweep
    resume NAME`` would read as an option."""
    if name.strip(".") == "":
        raise ValueError(
            "must hold a letter, digit, _ or - (names become folders, and '.' and '..' are the "
            f"folder itself and its parent), but got {name!r}"
        )
    if name.startswith("."):
        raise ValueError(
            f"must not start with '.' (names become folders, and one starting with '.' is "
            f"hidden from ls and file browsers), but got {name!r}; write e.g. "
            f"{name.lstrip('.-') or 'x'!r}"
        )
    return not_an_option(name)


def not_an_option(name: str) -> str:
    """Refuse a leading ``-`` (a name's, ``tracking.experiment``'s): ``lrsweep resume NAME``,
    ``lrsweep report EXPERIMENT`` and the commands lrsweep prints with it (resume, report, sweeps)
    would read it as an option, quoted or not."""
    if name.startswith("-"):
        raise ValueError(
            f"must not start with '-' (lrsweep resume, report and best, given it, and the "
            f"commands lrsweep prints with it would read it as an option, quoted or not), but "
            f"got {name!r}; write e.g. {name.lstrip('-.') or 'x'!r}"
        )
    return name


NAME_MAX = 100
"""The longest name (a sweep's, an arm's, a suite's) a spec accepts."""
Name = Annotated[
    str,
    Field(pattern=NAME_PATTERN, min_length=1, max_length=NAME_MAX),
    AfterValidator(_usable_name),
]
"""A name made of ``[A-Za-z0-9_.-]``, at most :data:`NAME_MAX` characters, not dots alone,
not starting with ``.`` or ``-``."""


class SpecModel(BaseModel):
    """Base of every spec model: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def field_error(field: str, message: str) -> PydanticCustomError:
    """An error that a model-level validator raises on behalf of one of its fields.

    Pydantic locates a model validator's error at the model; ``sweeps.spec`` appends ``field`` to
    that location when it formats the error, so the user reads ``task.dataset.path: ...``.

    Args:
        field: The field name (or dotted sub-path) inside the model being validated.
        message: What is wrong and what is accepted.

    Returns:
        The error to raise.
    """
    return PydanticCustomError("spec_field", "{message}", {"field": field, "message": message})
