"""Reading MLflow back: a search page by page, names listed in an error, values as logged.

Used by :class:`sweeps.tracking.Tracker` and the modules it delegates to; :mod:`sweeps.tracking`
re-exports the public names (``as_logged``, ``status_name``, ``finite_or_none``).
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from mlflow.entities import RunStatus

from sweeps._retry import retrying as _retrying

__all__ = [
    "SEARCH_PAGE",
    "SHOWN_NAMES",
    "all_pages",
    "as_logged",
    "finite_or_none",
    "shown_names",
    "status_name",
]

SEARCH_PAGE = 1000  # rows per search call (MLflow's own default and its REST maximum)
SHOWN_NAMES = 20  # experiment names an error message lists at most


def as_logged(value: float) -> float:
    """A metric value as it was logged: MLflow's SQL stores keep +-inf as +-1.797e308 (a finite
    float that would count as a real loss or accuracy), read back here as +-inf again."""
    value = float(value)
    return math.copysign(math.inf, value) if abs(value) >= sys.float_info.max else value


def status_name(status: int | str) -> str:
    """MLflow's status string for a ``RunStatus`` value or string."""
    return status if isinstance(status, str) else RunStatus.to_string(status)


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` when finite, else None (for summaries that must stay JSON-clean)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def all_pages(search: Callable[..., Any], *, what: str) -> list[Any]:
    """Every row of an MLflow search, page by page (``max_results`` and ``page_token``)."""
    rows: list[Any] = []
    token = None
    while True:
        page = _retrying(partial(search, max_results=SEARCH_PAGE, page_token=token), what=what)
        rows.extend(page)
        token = page.token
        if not token:
            return rows


def shown_names(name: str, names: list[str]) -> str:
    """``names`` in full when short, else the ones closest to ``name`` and how many there are."""
    if len(names) <= SHOWN_NAMES:
        return str(names)
    close = difflib.get_close_matches(name, names, n=SHOWN_NAMES, cutoff=0.5)
    near = f"the closest to {name!r}: {close}" if close else f"the first: {names[:SHOWN_NAMES]}"
    return f"{len(names)} experiments, {near}"
