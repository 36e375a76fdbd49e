"""Installing and removing a Learner's callbacks, and the event table its dispatch reads.

``Learner.add_cb`` / ``remove_cb`` run :func:`check_new_callback` / :func:`check_removable`
and rebuild ``learn._handlers`` with :func:`handlers_by_event` (event -> the callbacks defining
it, so an event no callback defines costs one lookup in ``Learner._call``);
``Learner.added_cbs`` / ``removed_cbs`` are :func:`added` / :func:`removed`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from trainers.callbacks import EVENTS, Callback

if TYPE_CHECKING:
    from trainers.learner import Learner

__all__ = ["added", "check_new_callback", "check_removable", "handlers_by_event", "removed"]


def check_new_callback(cb: Any, installed: Sequence[Callback]) -> None:
    """Refuse a non-Callback, one already ``installed``, or one with a public ``before_*`` /
    ``after_*`` method that is no event (a misspelt or fastai-only event such as
    ``after_create``), which would otherwise never run."""
    if not isinstance(cb, Callback):
        raise ValueError(f"callbacks must be Callback instances, but got {cb!r}.")
    if any(c is cb for c in installed):
        raise ValueError(f"callback {cb.name} is already installed.")
    unknown = sorted(
        name
        for name in dir(cb)
        if name.startswith(("before_", "after_"))
        and name not in EVENTS
        and callable(getattr(cb, name, None))
    )
    if unknown:
        raise ValueError(
            f"callback {cb.name} defines {unknown}, which no Learner event calls; rename "
            f"them to events from {list(EVENTS)} (or to names not starting with "
            "before_/after_)."
        )


def check_removable(cb: Callback, installed: list[Callback], *, recorder: Callback) -> None:
    """Refuse the ``recorder`` (it builds ``learn.history``) and a callback not ``installed``."""
    if cb is recorder:
        raise ValueError("the Recorder cannot be removed: it builds learn.history.")
    if not any(c is cb for c in installed):
        raise ValueError(f"callback {cb!r} is not installed; installed: {installed}.")


def handlers_by_event(
    cbs: Sequence[Callback],
) -> dict[str, list[tuple[Callback, Callable[[], Any]]]]:
    """Map each event to the callbacks defining it, so unused events cost one lookup."""
    return {
        event: [(cb, getattr(cb, event)) for cb in cbs if callable(getattr(cb, event, None))]
        for event in EVENTS
    }


@contextlib.contextmanager
def added(learn: Learner, cbs: Sequence[Callback]) -> Iterator[Learner]:
    """Install ``cbs`` for the duration of a ``with`` block."""
    for cb in cbs:
        learn.add_cb(cb)
    try:
        yield learn
    finally:
        for cb in cbs:
            learn.remove_cb(cb)


@contextlib.contextmanager
def removed(learn: Learner, cbs: Sequence[Callback]) -> Iterator[Learner]:
    """Uninstall ``cbs`` for the duration of a ``with`` block, then put them back."""
    for cb in cbs:
        learn.remove_cb(cb)
    try:
        yield learn
    finally:
        for cb in cbs:
            learn.add_cb(cb)
