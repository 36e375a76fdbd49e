"""What ``lr_find`` takes: its defaults, the checks of its arguments, its exponential schedule
and the names of its suggestion rules.

:mod:`trainers.lr_finder` re-exports every public name here (``check_lr_find_args``,
``exponential_lrs``, ``rule_name``, ``Suggest`` and the defaults), which is where callers import
them from.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trainers._numbers import is_real as _is_real
from trainers.suggestions import SUGGESTIONS, CurveTooShort, get_suggestion

__all__ = [
    "BETA",
    "DIV_FACTOR",
    "END_LR",
    "NUM_IT",
    "START_LR",
    "Suggest",
    "check_lr_find_args",
    "check_num_it",
    "check_rates",
    "exponential_lrs",
    "rule_functions",
    "rule_name",
    "spread",
]

Suggest = str | Callable[..., Any] | Sequence[str | Callable[..., Any]] | None
"""``suggest``: rule names, or the rule functions ``trainers`` exports; None for none."""

START_LR, END_LR, NUM_IT, DIV_FACTOR, BETA = 1e-7, 10.0, 100, 4.0, 0.98
"""``lr_find``'s defaults (fastai's), shared with :func:`check_lr_find_args`."""


def exponential_lrs(start_lr: float, end_lr: float, num_it: int) -> list[float]:
    """The range test's schedule: ``start_lr * (end_lr / start_lr) ** (i / (num_it - 1))``.

    Unlike fastai (``i / num_it``) the last iteration runs at ``end_lr`` exactly.

    Raises:
        ValueError: If ``start_lr`` or ``end_lr`` is not a finite number > 0, ``end_lr`` is not
            greater than ``start_lr``, or ``num_it`` is not an integer >= 2.
    """
    start, end = check_rates(start_lr, end_lr)
    n = check_num_it(num_it)
    return spread(start, end, n)


def spread(start: float, end: float, n: int) -> list[float]:
    """``n`` rates from ``start`` to ``end`` on the log scale; a range too narrow for ``n``
    distinct floats is refused (the suggestion rules need strictly increasing rates)."""
    lrs = [start * (end / start) ** (i / (n - 1)) for i in range(n)]
    if any(b <= a for a, b in itertools.pairwise(lrs)):
        raise ValueError(
            f"end_lr={end!r} is too close to start_lr={start!r} for num_it={n}: some rates "
            "would repeat. Widen the range or lower num_it."
        )
    return lrs


def check_rates(start_lr: Any, end_lr: Any) -> tuple[float, float]:
    """``start_lr`` and ``end_lr`` as floats: finite, > 0, ``end_lr > start_lr``."""
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if not (_is_real(value) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, but got {value!r}.")
    if not end_lr > start_lr:
        raise ValueError(f"end_lr must be greater than start_lr, but got {start_lr=}, {end_lr=}.")
    return float(start_lr), float(end_lr)


def check_num_it(num_it: Any) -> int:
    """``num_it`` as an int: an integer >= 2 (Python's or NumPy's)."""
    if not (isinstance(num_it, numbers.Integral) and _is_real(num_it) and int(num_it) >= 2):
        raise ValueError(f"num_it must be an integer >= 2, but got {num_it!r}.")
    return int(num_it)


def check_lr_find_args(
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    num_it: int = NUM_IT,
    div_factor: float = DIV_FACTOR,
    beta: float = BETA,
    suggest: Suggest = ("valley",),
) -> dict[str, Callable[..., float]]:
    """Validate ``lr_find``'s arguments (``fit_recipe`` checks its own before it freezes
    anything); return :func:`rule_functions` of ``suggest``.

    Raises:
        ValueError: naming the argument, as :func:`lr_find` does.
    """
    start, end = check_rates(start_lr, end_lr)
    n = check_num_it(num_it)
    lrs = np.asarray(spread(start, end, n))
    if not (_is_real(div_factor) and div_factor > 1):
        raise ValueError(f"div_factor must be a number > 1, but got {div_factor!r}.")
    if not (_is_real(beta) and 0 <= beta < 1):
        raise ValueError(f"beta must be a number in [0, 1), but got {beta!r}.")
    rules = rule_functions(suggest)
    for name, rule in rules.items():
        try:
            rule(lrs, np.linspace(2.0, 1.0, n), skip_start=n // 10)
        except CurveTooShort as err:
            raise ValueError(
                f"num_it={num_it} is too few for suggestion rule {name!r}: after dropping the "
                f"first num_it // 10 and the last 5 points it keeps {err.n_usable}, and it "
                f"needs {err.needed}."
            ) from err
    return rules


def rule_functions(suggest: Suggest) -> dict[str, Callable[..., float]]:
    """Each rule of ``suggest`` by name, in the order given, a repeat dropped: the registered
    function for a name or a rule function, and a ``functools.partial`` of a rule function as
    given (``partial(slide, lr_diff=5)``: fastai's ``lr_find`` takes such partials too, named by
    their function).

    Raises:
        ValueError: for an unknown name, a function that is no rule, a partial of one with
            positional arguments, the trim (``skip_start`` / ``skip_end``: lr_find's own) or an
            argument the rule does not take, and one name given twice with other arguments (a
            result holds one rate per name).
    """
    if suggest is None:
        given = []
    elif isinstance(suggest, str) or callable(suggest):
        given = [suggest]
    else:
        given = list(suggest)
    rules: dict[str, Callable[..., float]] = {}
    for entry in given:
        name, rule = _rule_of(entry)
        if name in rules and not _same_rule(rules[name], rule):
            raise ValueError(
                f"suggest names rule {name!r} twice with other arguments ({rules[name]!r} and "
                f"{rule!r}), but a result holds one rate per rule name: give one of them."
            )
        rules.setdefault(name, rule)
    return rules


def _rule_of(entry: Any) -> tuple[str, Callable[..., float]]:
    """``(name, function)`` of one entry of ``suggest`` (see :func:`rule_functions`)."""
    if not (isinstance(entry, functools.partial) and entry.func in SUGGESTIONS.values()):
        name = rule_name(entry)
        return name, get_suggestion(name)
    name = rule_name(entry.func)
    tuning = [
        p.name
        for p in inspect.signature(entry.func).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in _TRIM
    ]
    wrong = sorted(set(entry.keywords) - set(tuning))
    if entry.args or wrong:
        raise ValueError(
            f"suggest got {entry!r}: a partial of rule {name!r} takes keyword arguments only, "
            f"of {tuning or 'which it has none'}, but it gives "
            f"{wrong or list(entry.args)!r} (lr_find trims the curve itself, as fastai's)."
        )
    return name, entry


_TRIM = ("skip_start", "skip_end")
"""Keywords of every rule that lr_find sets (fastai's cut), never a partial."""


def _same_rule(a: Callable[..., float], b: Callable[..., float]) -> bool:
    """One rule with the same arguments (a partial without keywords is its function)."""

    def key(rule: Callable[..., float]) -> tuple[Any, dict[str, Any]]:
        if isinstance(rule, functools.partial):
            return rule.func, dict(rule.keywords)
        return rule, {}

    return key(a) == key(b)


def rule_name(rule: Any) -> str:
    """A rule's name: a name as given, or the name of a rule function ``trainers`` exports
    (``suggest=(valley, steep)``, fastai's ``suggest_funcs`` spelling)."""
    if isinstance(rule, str):
        return rule
    for name, registered in SUGGESTIONS.items():
        if rule is registered:
            return name
    raise ValueError(
        f"suggest must hold rule names from {list(SUGGESTIONS)} or those rules' functions "
        f"(trainers.valley, ...), but got {rule!r}: a rule of your own reads the curve itself "
        "(result.lrs, result.losses)."
    )
