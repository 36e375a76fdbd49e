"""The range test's loop and the rules' reading of the curve it records.

:func:`trainers.lr_finder.lr_find` runs :func:`run` between ``learn.snapshot()`` and
``learn.restore(...)``; :meth:`trainers.lr_finder.LRFindResult.suggest` applies the rules with
:func:`apply_rules`, which explains a curve too short for a rule in terms of the run (a first
loss already non-finite, a loss <= 0 that stopped the divergence test, a divergence).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from trainers.errors import TrainingDiverged
from trainers.suggestions import CurveTooShort

if TYPE_CHECKING:
    from trainers.learner import Learner

__all__ = ["NOT_FINITE_AT_START_ADVICE", "apply_rules", "cycle", "not_finite_at_start", "run"]


def cycle(loader: Any) -> Iterator[Any]:
    """Batches of ``loader`` forever, starting a new pass (and shuffle) when one ends."""
    while True:
        n_batches = 0
        for batch in loader:
            n_batches += 1
            yield batch
        if n_batches == 0:
            raise ValueError("learn.dls.train yields no batches; the range test needs some.")


def run(
    learn: Learner,
    schedule: list[float],
    ratios: list[float],
    *,
    stop_div: bool,
    div_factor: float,
    beta: float,
) -> tuple[list[float], list[float], list[float], bool, int]:
    """The training loop; returns rates, raw losses, smoothed losses, stopped early, and the
    length fastai's recorder would have: ``num_it`` when the loss turned non-finite without
    exceeding ``div_factor`` times its best (fastai runs on), else the iterations run."""
    learn.model.train()
    lrs: list[float] = []
    raw: list[float] = []
    smooth: list[float] = []
    avg, best = 0.0, math.inf
    batches = cycle(learn.dls.train)
    for i, lr in enumerate(schedule):
        learn.set_lrs([lr * r for r in ratios])
        xb, yb = next(batches)
        try:
            loss = float(learn.one_batch(xb, yb, where=f"lr_find's iteration {i} (lr {lr:.3g})"))
        except TrainingDiverged as err:
            loss = float(err.loss)
        avg = beta * avg + (1 - beta) * loss
        smoothed = avg / (1 - beta ** (i + 1))
        lrs.append(lr)
        raw.append(loss)
        smooth.append(smoothed)
        best = min(best, smoothed)  # a NaN leaves it as it was, as fastai's `<` test does
        if stop_div and smoothed > div_factor * best:
            return lrs, raw, smooth, i < len(schedule) - 1, len(lrs)
        if not math.isfinite(smoothed):
            # fastai does not stop here (NaN > 4 * best is False): its recorder runs on to
            # num_it with non-finite losses, which its [:-5] and NaN cut then drop.
            return lrs, raw, smooth, i < len(schedule) - 1, len(schedule)
    return lrs, raw, smooth, False, len(lrs)


def apply_rules(
    rules: Mapping[str, Callable[..., float]],
    lrs: list[float],
    smooth: list[float],
    *,
    num_it: int,
    stopped: bool,
    skip_end: int,
    non_positive_stop: bool,
    best: float,
) -> dict[str, float]:
    """Apply each rule with fastai's trim; explain a too-short curve in terms of the run."""
    out: dict[str, float] = {}
    for name, rule in rules.items():
        try:
            out[name] = rule(lrs, smooth, skip_start=num_it // 10, skip_end=skip_end)
        except CurveTooShort as err:
            why, advice = err.why, None
            if smooth and not math.isfinite(smooth[0]):
                why += f"; {not_finite_at_start(smooth[0], lrs[0])}"
                advice = NOT_FINITE_AT_START_ADVICE
            elif non_positive_stop:
                why += (
                    f"; the test stopped after {len(lrs)} of num_it={num_it} iterations because "
                    f"the best smoothed loss is {best:.3g}, and with a loss <= 0 the divergence "
                    "test (loss > div_factor * best) holds at once: pass stop_div=False"
                )
            elif stopped and (math.isnan(smooth[-1]) or smooth[-1] == -math.inf):
                # +inf passes fastai's divergence test (smoothed > div_factor * best); these not
                why += (
                    f"; the loss turned {smooth[-1]} at iteration {len(lrs) - 1} of "
                    f"num_it={num_it}, at lr {lrs[-1]:.2e}, without first rising past "
                    "div_factor times its best (no divergence)"
                )
                advice = (
                    "If that rate is high, lower end_lr; if it is low, check the model's output "
                    "and the loss function on that batch: more iterations or another "
                    "div_factor would give the same."
                )
            elif stopped:
                why += (
                    f"; the loss diverged after {len(lrs)} of num_it={num_it} iterations, at "
                    f"lr {lrs[-1]:.2e}, so start_lr or end_lr may be too high"
                )
            raise CurveTooShort(
                err.rule, err.n_points, err.n_usable, err.needed, why, advice
            ) from err
    return out


NOT_FINITE_AT_START_ADVICE = (
    "Check what gives that loss, on one training batch: the model's output (NaN/inf from a log "
    "of 0, a division by 0, an overflow in a layer of one's own), the loss function, and the "
    "weights (a fit that diverged leaves those of its last step: load a checkpoint or rebuild "
    "the model). More iterations or other rates would give the same."
)
"""What to do about a loss not finite at the range test's first iteration."""


def not_finite_at_start(loss: float, lr: float) -> str:
    """Why a loss not finite at the first iteration is no rate's fault (images holding NaN/inf
    are refused before, by :func:`trainers._loop.check_finite_input`)."""
    return (
        f"the loss was {loss} at lr_find's first iteration (lr {lr:.2e}), computed before the "
        "test's first step, so no learning rate is the cause: the model, its weights or the "
        "loss function is"
    )
