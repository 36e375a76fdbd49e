"""fast.ai's rules of thumb for reading training curves, automated.

``diagnose(history)`` reads the per-epoch records a Learner keeps (``train_loss``,
``valid_loss``; other keys are ignored) and names the most likely problem:

=================  ======================================================================
``lr_too_high``    a loss is NaN/inf, the training loss rose above ``explode_ratio`` times
                   ``start_loss`` (when given: the loss before the first step), or the
                   validation loss exploded: at some epoch it is more than ``explode_ratio``
                   times the first epoch's training loss (or ``start_loss``, when lower) while
                   the training loss has not fallen by that factor (the overfitting pattern
                   has), unless the explosion comes after the best epoch, the training loss
                   fell since then and the run matches ``overfitting`` (a steady climb, not a
                   blow-up).
``overfitting``    the best validation loss is ``rise_epochs`` or more epochs old, the last one
                   is more than ``min_rise`` (relative) above it, and the training loss did not
                   rise meanwhile by more than ``min_rise`` times the first training loss (so a
                   memorised training set, its loss flat near zero, counts); or, in a run of 3
                   or more epochs, the validation loss rose at every epoch after the first, to
                   more than ``min_rise`` above it, while the training loss fell.
``too_few_epochs`` one epoch only, or the last epoch still cut the validation loss by
                   ``fast_improvement`` (relative) or more.
``lr_too_low``     ``min_epochs_too_low`` epochs or more, the training loss still above the
                   validation loss, and the validation loss never fell faster than
                   ``slow_improvement`` per epoch (geometric mean over any ``window`` epochs).
``ok``             none of the above (the reason says when the run is too short for
                   ``lr_too_low`` to be judged).
=================  ======================================================================

The rules are checked in that order; the first that matches is the diagnosis. The default
thresholds come from real runs of the small CNN on ``digits`` and ``shapes`` at rates from
1e-5 to 3 and for 1 to 30 epochs: ``scripts/diagnose_evidence.py`` regenerates them into
``tests/trainers/data/diagnose_thresholds.json``, and the tests check that the defaults label
every recorded run as intended. The margins seen there: explosion ratios of 4 and more for rates
50x and more above the valley suggestion, 2.2 at most otherwise; best per-epoch improvement 20%
at most for rates 60x and more below it, 56% and more for good rates on the full split (25% on a
180-image split with 3 steps an epoch, where training loss far below validation loss rules out
``lr_too_low``); last-epoch improvement 10% at most when training had converged or crawled, 49%
and more when stopped too soon; overfitting runs 32% and more above their best, 4 and more
epochs on, good runs at most 11% and 1 epoch.

Limits: a net stuck at chance level by a rate so high that its units died (flat losses, no
explosion) looks like ``lr_too_low`` or ``ok``; a run that raised ``TrainingDiverged`` has no
record of the bad epoch, so pass its partial history with a NaN record appended if known. The
rules see losses only, never the error rate, and the recorded runs train from scratch: a
pretrained model fine-tuned with augmentation (training loss above validation loss, already
near its floor after the first epoch, so improving only a few percent an epoch) is labelled
``lr_too_low``; and a rate only ~10x too low, whose first epochs fall fast from chance level as
any rate's do, is ``ok`` (one-cycle at 1e-4 on digits: 3.3% error against 0.3% at 1e-2): one
curve cannot show it, other rates beside it can. A training loss above the validation loss does
not single it out either: with augmentation the good rate's run has that at every epoch too.
Epoch numbers in the evidence and the reason
count epoch records from 0 in the order given, not the records' ``epoch`` field (which restarts
at every ``fit`` call).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainers._numbers import is_real as _is_real

__all__ = ["LABELS", "Diagnosis", "diagnose"]

logger = logging.getLogger(__name__)

LABELS = ("lr_too_high", "overfitting", "too_few_epochs", "lr_too_low", "ok")
"""Every label :func:`diagnose` returns, in the order its rules are checked."""


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose` concluded.

    Attributes:
        label: One of :data:`LABELS`.
        reason: One sentence for a person, with the numbers that decided.
        evidence: The measurements every rule looked at (name -> number), whatever the label.
    """

    label: str
    reason: str
    evidence: dict[str, float | int] = field(default_factory=dict)


def diagnose(
    history: Iterable[Mapping[str, Any]],
    *,
    explode_ratio: float = 3.0,
    rise_epochs: int = 3,
    min_rise: float = 0.1,
    fast_improvement: float = 0.2,
    slow_improvement: float = 0.3,
    min_epochs_too_low: int = 3,
    window: int = 3,
    start_loss: float | None = None,
) -> Diagnosis:
    """Label a training run from its per-epoch history (see the module docstring for the rules).

    Args:
        history: Per-epoch records with ``train_loss`` and ``valid_loss`` (``learn.history``),
            in a sequence or any iterable (read once); records whose ``epoch`` is None
            (``fit_recipe``'s step markers) are skipped, and so is an epoch a ``CancelEpoch``
            left unmeasured (``"cancelled": True`` with a NaN loss, as the Recorder writes it).
        explode_ratio: Validation loss above this times the first training loss, with the
            training loss not down by the same factor, means the rate is too high; > 1.
        rise_epochs: Epochs since the best validation loss that count as "rising"; >= 1.
        min_rise: Relative rise of the last validation loss above the best; >= 0.
        fast_improvement: Last-epoch relative drop of the validation loss that means "still
            improving fast"; in (0, 1).
        slow_improvement: Best per-epoch relative drop below which improvement is "slow";
            in (0, 1).
        min_epochs_too_low: Fewest epochs before a run is called ``lr_too_low``; >= 2.
        window: Epochs over which the per-epoch drop is averaged (geometric mean); >= 1.
        start_loss: The training loss before the first step (a sweep's trial records it as
            ``train_loss_at_start``), or None. A rate so high that the first epoch already blew
            up leaves no sane first-epoch loss to compare with: ``start_loss`` is that
            reference. NaN counts as not given.

    Returns:
        The :class:`Diagnosis`.

    Raises:
        ValueError: If ``history`` is a single mapping, not iterable, or has no measured epoch
            record (none, or only cancelled ones), a record is not a mapping, lacks
            ``train_loss`` / ``valid_loss`` (the message lists the keys it has) or holds a
            non-number there, or a threshold is not a number in its range.

    Example:
        >>> diagnose([{"train_loss": 2.0, "valid_loss": 1.0}]).label
        'too_few_epochs'
    """
    _check_thresholds(
        explode_ratio,
        rise_epochs,
        min_rise,
        fast_improvement,
        slow_improvement,
        min_epochs_too_low,
        window,
    )
    if start_loss is not None and not _is_real(start_loss):
        raise ValueError(f"start_loss must be a number or None, but got {start_loss!r}.")
    start = float(start_loss) if start_loss is not None else math.nan
    train, valid = _losses(history)
    evidence = _measure(train, valid, explode_ratio=explode_ratio, window=window, start=start)
    label, reason = _decide(
        evidence,
        rise_epochs=rise_epochs,
        min_rise=min_rise,
        fast_improvement=fast_improvement,
        slow_improvement=slow_improvement,
        min_epochs_too_low=min_epochs_too_low,
        explode_ratio=explode_ratio,
    )
    logger.debug("diagnose: %s (%s)", label, reason)
    return Diagnosis(label, reason, evidence)


def _check_thresholds(
    explode_ratio: float,
    rise_epochs: int,
    min_rise: float,
    fast_improvement: float,
    slow_improvement: float,
    min_epochs_too_low: int,
    window: int,
) -> None:
    if not (_is_real(explode_ratio) and explode_ratio > 1):
        raise ValueError(f"explode_ratio must be > 1, but got {explode_ratio=}.")
    if not (_is_real(min_rise) and min_rise >= 0):
        raise ValueError(f"min_rise must be >= 0, but got {min_rise=}.")
    for name, value in (
        ("fast_improvement", fast_improvement),
        ("slow_improvement", slow_improvement),
    ):
        if not (_is_real(value) and 0 < value < 1):
            raise ValueError(f"{name} must be in (0, 1), but got {value!r}.")
    for name, value, low in (
        ("rise_epochs", rise_epochs, 1),
        ("min_epochs_too_low", min_epochs_too_low, 2),
        ("window", window, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, but got {value!r}.")


def _losses(history: Iterable[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    if isinstance(history, Mapping | str | bytes) or not isinstance(history, Iterable):
        raise ValueError(
            "history must be a sequence of per-epoch records (learn.history), but got a "
            f"{type(history).__name__}."
        )
    records = list(history)  # an iterator is read once, here
    train, valid = [], []
    cancelled = 0
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(
                f"history[{i}] must be a mapping (one epoch's record), but got "
                f"{type(record).__name__}."
            )
        if "epoch" in record and record["epoch"] is None:  # a fit_recipe step marker
            continue
        missing = [k for k in ("train_loss", "valid_loss") if k not in record]
        if missing:
            raise ValueError(
                f"history[{i}] lacks {missing}; diagnose needs train_loss and valid_loss, and "
                f"the record has {sorted(record)}."
            )
        losses = _number(record, "train_loss", i), _number(record, "valid_loss", i)
        if record.get("cancelled") is True and not all(map(math.isfinite, losses)):
            cancelled += 1
            continue  # a CancelEpoch left it unmeasured (NaN), not blown up
        train.append(losses[0])
        valid.append(losses[1])
    if not valid and cancelled:
        raise ValueError(
            f"every epoch record of history ({cancelled}) was cancelled before its losses were "
            "measured; diagnose needs at least one measured epoch."
        )
    if not valid:
        raise ValueError("history has no epoch record; diagnose needs at least one.")
    return train, valid


def _number(record: Mapping[str, Any], key: str, i: int) -> float:
    value = record[key]
    if isinstance(value, bool | str | bytes) or value is None:
        raise ValueError(f"history[{i}][{key!r}] must be a number, but got {value!r}.")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"history[{i}][{key!r}] must be a number, but got {value!r}.") from exc


def _measure(
    train: list[float], valid: list[float], *, explode_ratio: float, window: int, start: float
) -> dict[str, float | int]:
    """Every number the rules use; NaN where it is undefined. ``start``: the loss before the
    first step, NaN when unknown."""
    n = len(valid)
    ev: dict[str, float | int] = {"n_epochs": n, "last_train_loss": train[-1]}
    ev["last_valid_loss"] = valid[-1]
    bad = [i for i in range(n) if not (math.isfinite(train[i]) and math.isfinite(valid[i]))]
    ev["first_non_finite_epoch"] = bad[0] if bad else -1
    if bad:
        return ev
    known_start = math.isfinite(start) and start > 0
    # the first epoch's mean training loss, unless the loss at the start is lower (an epoch
    # that already blew up is no reference for a blow-up)
    ref = min(train[0], start) if known_start else train[0]
    ev["start_loss"] = start if known_start else math.nan
    ev["train_rise_over_start"] = max(train) / start if known_start else math.nan
    ev["explosion_ratio"] = max(v / ref for v in valid) if ref > 0 else math.inf
    exploded = [
        i for i in range(n) if valid[i] > explode_ratio * ref and train[i] * explode_ratio > ref
    ]
    ev["explosion_epoch"] = exploded[0] if exploded else -1
    best = min(range(n), key=valid.__getitem__)
    ev["best_epoch"], ev["best_valid_loss"] = best, valid[best]
    ev["epochs_since_best"] = n - 1 - best
    ev["rise_since_best"] = _rel(valid[-1] - valid[best], valid[best])
    ev["train_change_since_best"] = _rel(train[-1] - train[best], train[best])
    # as a fraction of the first training loss: near zero, a loss's own relative change is noise
    ev["train_rise_since_best"] = _rel(train[-1] - train[best], ref)
    ev["last_improvement"] = _rel(valid[-2] - valid[-1], valid[-2]) if n > 1 else math.nan
    ev["rises_every_epoch"] = int(n > 1 and all(valid[i + 1] > valid[i] for i in range(n - 1)))
    w = min(window, n - 1)
    # a per-epoch rate needs two positive losses (a custom loss may go negative)
    rates = [
        1 - (valid[i + w] / valid[i]) ** (1 / w)
        for i in range(n - w)
        if w and valid[i] > 0 and valid[i + w] > 0
    ]
    ev["best_improvement"] = max(rates) if rates else math.nan
    ev["train_minus_valid"] = train[-1] - valid[-1]
    return ev


def _rel(delta: float, base: float) -> float:
    return delta / base if base > 0 else math.nan


def _rose_from_the_start(ev: dict[str, float | int], min_rise: float) -> bool:
    """A run too short for ``rise_epochs`` whose validation loss rose at every epoch after its
    first (best at epoch 0, 3 epochs or more, more than ``min_rise`` above it at the end) while
    the training loss fell: it was called ``ok``."""
    return bool(
        ev["best_epoch"] == 0
        and ev["n_epochs"] >= 3
        and ev["rises_every_epoch"]
        and ev["rise_since_best"] > min_rise
        and ev["train_change_since_best"] < 0
    )


def _decide(ev: dict[str, float | int], **t: Any) -> tuple[str, str]:
    """The rules, in order; returns ``(label, reason)``.

    One helper per label, tried in the order of :data:`LABELS`: each returns None when none of
    its rules matches, and the first that matches decides.
    """
    return (
        _lr_too_high(
            ev,
            explode_ratio=t["explode_ratio"],
            rise_epochs=t["rise_epochs"],
            min_rise=t["min_rise"],
        )
        or _overfitting(ev, rise_epochs=t["rise_epochs"], min_rise=t["min_rise"])
        or _too_few_epochs(ev, fast_improvement=t["fast_improvement"])
        or _lr_too_low(
            ev,
            min_epochs_too_low=t["min_epochs_too_low"],
            slow_improvement=t["slow_improvement"],
        )
        or _ok(ev, min_epochs_too_low=t["min_epochs_too_low"])
    )


def _overfits(ev: dict[str, float | int], *, rise_epochs: int, min_rise: float) -> bool:
    """The best validation loss is ``rise_epochs`` or more epochs old, the last is more than
    ``min_rise`` above it, and the training loss did not rise by more than ``min_rise`` times
    the first training loss meanwhile."""
    return (
        ev["epochs_since_best"] >= rise_epochs
        and ev["rise_since_best"] > min_rise
        and ev["train_rise_since_best"] <= min_rise
    )


def _lr_too_high(
    ev: dict[str, float | int], *, explode_ratio: float, rise_epochs: int, min_rise: float
) -> tuple[str, str] | None:
    """``lr_too_high``'s rules, in order: a loss not finite, the training loss up more than
    ``explode_ratio`` times its value before the first step, the validation loss exploded (not
    as an overfitting climb); None when none matches."""
    if ev["first_non_finite_epoch"] != -1:
        return "lr_too_high", f"a loss is not finite at epoch {ev['first_non_finite_epoch']}."
    if ev["train_rise_over_start"] > explode_ratio:  # NaN (no start loss) compares False
        return "lr_too_high", (
            f"the training loss rose to {ev['train_rise_over_start']:.3g}x its value before the "
            f"first step ({ev['start_loss']:.3g}; > {explode_ratio})."
        )
    # a climb that starts after the best epoch while the training loss keeps falling is
    # overfitting, however high it goes; an explosion before it, or with training, is not
    overfit_climb = (
        _overfits(ev, rise_epochs=rise_epochs, min_rise=min_rise)
        and ev["explosion_epoch"] > ev["best_epoch"]
        and ev["train_change_since_best"] < 0
    )
    if ev["explosion_epoch"] != -1 and not overfit_climb:
        return "lr_too_high", (
            f"the validation loss exploded at epoch {ev['explosion_epoch']}: up to "
            f"{ev['explosion_ratio']:.3g}x the first training loss (> {explode_ratio})."
        )
    return None


def _overfitting(
    ev: dict[str, float | int], *, rise_epochs: int, min_rise: float
) -> tuple[str, str] | None:
    """``overfitting``'s rules, in order: the validation loss rose from the start
    (:func:`_rose_from_the_start`), or rose since a best epoch long enough ago
    (:func:`_overfits`); None when neither matches."""
    if _rose_from_the_start(ev, min_rise):
        return "overfitting", (
            f"the validation loss rose in each of the {ev['n_epochs'] - 1} epochs after the "
            f"first, to {ev['rise_since_best']:.0%} above it, while the training loss fell: "
            "the model fits the training set, not the validation set, from the start (too "
            "many epochs for this data, or a rate too high for it: try fewer or a lower one)."
        )
    if _overfits(ev, rise_epochs=rise_epochs, min_rise=min_rise):
        trend = "kept falling" if ev["train_change_since_best"] < 0 else "stayed flat"
        return "overfitting", (
            f"the validation loss is {ev['rise_since_best']:.0%} above its best (epoch "
            f"{ev['best_epoch']}, {ev['epochs_since_best']} epochs ago) while the training "
            f"loss {trend}."
        )
    return None


def _too_few_epochs(
    ev: dict[str, float | int], *, fast_improvement: float
) -> tuple[str, str] | None:
    """``too_few_epochs``: one epoch only, or the last one still cut the validation loss by
    ``fast_improvement`` or more; None otherwise."""
    if ev["n_epochs"] == 1:
        return "too_few_epochs", "one epoch is too few to judge; train for more."
    if ev["last_improvement"] >= fast_improvement:
        return "too_few_epochs", (
            f"the last epoch still cut the validation loss by {ev['last_improvement']:.0%} "
            f"(>= {fast_improvement:.0%}); train for more epochs."
        )
    return None


def _lr_too_low(
    ev: dict[str, float | int], *, min_epochs_too_low: int, slow_improvement: float
) -> tuple[str, str] | None:
    """``lr_too_low``: ``min_epochs_too_low`` epochs or more, the training loss above the
    validation loss, which never fell faster than ``slow_improvement`` per epoch; None
    otherwise."""
    if (
        ev["n_epochs"] >= min_epochs_too_low
        and ev["train_minus_valid"] > 0
        and ev["best_improvement"] < slow_improvement
    ):
        return "lr_too_low", (
            f"after {ev['n_epochs']} epochs the validation loss never fell faster than "
            f"{ev['best_improvement']:.0%} per epoch (< {slow_improvement:.0%}) and the "
            "training loss is still above it."
        )
    return None


def _ok(ev: dict[str, float | int], *, min_epochs_too_low: int) -> tuple[str, str]:
    """``ok``, when no other rule matched; the reason says when the run is too short for
    ``lr_too_low`` to be judged."""
    if ev["n_epochs"] < min_epochs_too_low:
        return "ok", (
            "no sign of a too high rate, of overfitting or of stopping early; "
            f"{ev['n_epochs']} epochs are too few to judge a too low rate (it takes "
            f"{min_epochs_too_low}): compare the error rate with chance."
        )
    return "ok", "no sign of a too high or too low rate, of overfitting or of stopping early."
