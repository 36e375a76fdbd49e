"""Learning-rate suggestion rules: pure functions ``(lrs, losses) -> float``, one file each.

Every rule follows the fastai 2.x function of the same name (``fastai.callback.schedule``),
ignores the first ``len(lrs) // 10`` and last 5 points as fastai's ``lr_find`` does, cuts the
curve at the first NaN/inf loss, and raises :class:`CurveTooShort` when too little is left.

Example:
    >>> from trainers.suggestions import get_suggestion
    >>> get_suggestion("minimum")([1e-3, 1e-2, 1e-1], [2.0, 1.0, 3.0], skip_end=0)
    0.001
"""

from __future__ import annotations

from trainers.suggestions._base import SKIP_END, CurveTooShort, SuggestionRule, prepare_curve
from trainers.suggestions._minimum import minimum
from trainers.suggestions._slide import slide
from trainers.suggestions._steep import steep
from trainers.suggestions._valley import valley

SUGGESTIONS: dict[str, SuggestionRule] = {
    "valley": valley,
    "steep": steep,
    "minimum": minimum,
    "slide": slide,
}
"""Every rule by name; ``lr_find(suggest=...)`` and the CLI accept these names."""


def get_suggestion(name: str) -> SuggestionRule:
    """Return the rule registered under ``name``.

    Raises:
        ValueError: If ``name`` is not registered; the message lists the names that are.
    """
    if not isinstance(name, str) or name not in SUGGESTIONS:  # a list: no TypeError
        raise ValueError(
            f"Unknown suggestion rule {name!r}; choose one of {', '.join(SUGGESTIONS)}."
        )
    return SUGGESTIONS[name]


__all__ = [
    "SKIP_END",
    "SUGGESTIONS",
    "CurveTooShort",
    "SuggestionRule",
    "get_suggestion",
    "minimum",
    "prepare_curve",
    "slide",
    "steep",
    "valley",
]
