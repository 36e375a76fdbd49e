"""fast.ai's eight steps to a world-class image classifier, as one call.

The steps (fast.ai 2018, lesson 2), and how :func:`fit_recipe` runs them:

1. Augmentation on, precompute on: the head first trains on cached body activations when the
   data has no augmentation and the body has seen data (``precompute=True``; a randomly
   initialised body's BatchNorm layers would normalise nothing), else on the batches.
2. ``lr_find`` on the frozen model (step ``lr_find_frozen``).
3. Train the head one-cycle for ``head_epochs`` epochs at that suggestion (step ``head``).
4. Train the head again with augmentation, SGDR with ``cycle_len=1`` for ``augment_epochs``
   epochs (step ``head_augment``); when the data has no augmentation, ``augment`` is switched on
   for this step and the following ones, and switched off again at the end.
5. Unfreeze (step ``unfreeze``).
6. Earlier layer groups ``group_factor`` (3 to 10) times lower than the next (step
   ``discriminative``; the rates form a ``slice`` whose top is the suggestion of step 7).
7. ``lr_find`` again, already with those ratios, so its top-group suggestion is the top of the
   slice (step ``lr_find_unfrozen``).
8. SGDR with ``cycle_mult=2`` (cycles of 1, 2, 4, ... epochs) until the validation loss has not
   improved for ``patience`` epochs or the ``max_epochs`` budget is spent; the best epoch's
   weights are restored (step ``sgdr``).

Every step is recorded in ``learn.history``: training epochs as usual, with ``phase`` set to the
step's name; the other steps as one marker record each, ``{"epoch": None, "phase": <step>,
"lrs": [...]}`` (range tests add ``suggestions`` and ``num_it_run``). Readers of per-epoch
metrics skip records whose ``epoch`` is None (``diagnose`` does).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainers import _inference
from trainers.callbacks import EarlyStoppingCallback
from trainers.data.augment import Augment, as_augment
from trainers.lr_finder import LRFindResult, check_lr_find_args, rule_name
from trainers.suggestions import SUGGESTIONS, get_suggestion

if TYPE_CHECKING:
    from trainers.learner import Learner

__all__ = ["RecipeResult", "RecipeStep", "fit_recipe"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecipeStep:
    """One step of the recipe.

    Attributes:
        name: ``lr_find_frozen``, ``head``, ``head_augment``, ``unfreeze``,
            ``lr_find_unfrozen``, ``discriminative`` or ``sgdr``.
        lrs: Learning rate per layer group chosen by the step (earliest first); the top
            group's suggestion alone for a range test; empty for ``unfreeze``.
        epochs: Epochs trained (0 for steps that do not train).
        precompute: Whether the step trained on cached body activations.
    """

    name: str
    lrs: tuple[float, ...]
    epochs: int = 0
    precompute: bool = False


@dataclass(frozen=True)
class RecipeResult:
    """What :func:`fit_recipe` did and where it ended.

    Attributes:
        steps: Every step in order.
        lr_find_frozen: The range test of the frozen model.
        lr_find_unfrozen: The range test of the unfrozen model with discriminative ratios.
        best_epoch: Epoch (``history`` record ``epoch``) of the SGDR step with the lowest
            validation loss (NaN losses never count; the last epoch when every one is NaN); the
            model holds its weights.
        best_valid_loss: That epoch's validation loss.
    """

    steps: tuple[RecipeStep, ...]
    lr_find_frozen: LRFindResult
    lr_find_unfrozen: LRFindResult
    best_epoch: int
    best_valid_loss: float

    def step(self, name: str) -> RecipeStep:
        """The step called ``name``; raises ValueError listing the names when there is none."""
        for step in self.steps:
            if step.name == name:
                return step
        raise ValueError(f"No step {name!r}; steps: {[s.name for s in self.steps]}.")


def fit_recipe(
    learn: Learner,
    *,
    max_epochs: int = 20,
    suggest: str | Callable[..., float] = "valley",
    head_epochs: int = 1,
    augment_epochs: int = 2,
    augment: Augment | str | None = "light",
    group_factor: float = 3.0,
    patience: int = 3,
    num_it: int = 100,
) -> RecipeResult:
    """Run fast.ai's eight-step recipe on ``learn`` (see the module docstring for the steps).

    Args:
        learn: A Learner on a :class:`~trainers.models.GroupedModel` (body + head), usually
            pretrained; it is frozen, trained and unfrozen in place.
        max_epochs: Epoch budget of the whole recipe; SGDR gets what the head steps leave, as
            the most whole cycles of 1, 2, 4, ... epochs that fit (at least 1 epoch must be left).
        suggest: Suggestion rule for both range tests (:data:`trainers.suggestions.SUGGESTIONS`),
            by name or as its function (``trainers.valley``).
        head_epochs: Epochs of step 3, >= 1 (fast.ai: 1-2).
        augment_epochs: Epochs of step 4, >= 1 (fast.ai: 2-3).
        augment: Augmentation switched on from step 4 when the data has none: an
            :class:`~trainers.data.augment.Augment` or preset name (``"light"`` keeps digits
            upright); None trains step 4 without augmentation.
        group_factor: Ratio between the rates of neighbouring layer groups, >= 1 (fast.ai:
            3-10).
        patience: Epochs without a better validation loss before SGDR stops, >= 1. The default
            3 lets the first, high-rate epochs of a restarted 4-epoch cycle be worse.
        num_it: Iterations of each range test (checked as ``lr_find`` checks it, before
            anything is frozen).

    Returns:
        The steps, both range tests and the best epoch.

    Raises:
        ValueError: For an argument out of range, an unknown rule or augmentation preset
            (checked even when the data's own augmentation is used), or a model without
            ``body`` / ``head``; raised before anything is frozen or trained.

    If a step raises, the error propagates with the phase, the data's augmentation, the
    frozen layer groups and the per-group rates put back as they were (the weights keep what
    the finished steps trained).
    """
    if callable(suggest):  # trainers.valley, as lr_find takes it
        suggest = rule_name(suggest)
    if not isinstance(suggest, str):
        raise ValueError(
            "suggest must be one rule, a name from "
            f"{list(SUGGESTIONS)} or its function (trainers.valley), which picks the rate of "
            f"both range tests, but got {suggest!r}."
        )
    budget = _check_args(
        learn, max_epochs, suggest, head_epochs, augment_epochs, group_factor, patience, num_it
    )
    extra = as_augment(augment)  # checked even when the data's own augmentation is kept
    if learn.dls.augment is not None:
        extra = None
    saved_phase, saved_aug = learn.phase, (learn.dls.augment, learn.dls.train.augment)
    saved_frozen, saved_lrs = learn.frozen_groups, learn.group_lrs
    steps: list[RecipeStep] = []
    try:
        found_frozen = _head_steps(
            learn, steps, suggest, head_epochs, augment_epochs, extra, num_it
        )
        found_unfrozen = _unfrozen_steps(learn, steps, suggest, group_factor, num_it)
        best_epoch, best_loss = _sgdr_step(learn, steps, budget, patience)
    except BaseException:
        learn.freeze_to(saved_frozen)  # not left frozen (and at lr 1.0) by a failed step
        learn.set_lrs(saved_lrs)
        raise
    finally:
        learn.phase = saved_phase
        learn.dls.augment, learn.dls.train.augment = saved_aug
    return RecipeResult(tuple(steps), found_frozen, found_unfrozen, best_epoch, best_loss)


def _check_args(
    learn: Learner,
    max_epochs: int,
    suggest: str,
    head_epochs: int,
    augment_epochs: int,
    group_factor: float,
    patience: int,
    num_it: int,
) -> int:
    """Validate; return the SGDR epoch budget."""
    get_suggestion(suggest)
    check_lr_find_args(num_it=num_it, suggest=suggest)  # lr_find's defaults but num_it
    for name, value in (
        ("head_epochs", head_epochs),
        ("augment_epochs", augment_epochs),
        ("patience", patience),
        ("max_epochs", max_epochs),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, but got {value!r}.")
    budget = max_epochs - head_epochs - augment_epochs
    if budget < 1:
        raise ValueError(
            f"max_epochs must leave at least 1 epoch for SGDR after head_epochs + augment_epochs "
            f"= {head_epochs + augment_epochs}, but got {max_epochs=}."
        )
    if not (isinstance(group_factor, int | float) and math.isfinite(group_factor)):
        raise ValueError(f"group_factor must be a finite number >= 1, but got {group_factor!r}.")
    if group_factor < 1:
        raise ValueError(f"group_factor must be a finite number >= 1, but got {group_factor!r}.")
    if not (hasattr(learn.model, "body") and hasattr(learn.model, "head")):
        raise ValueError(
            "fit_recipe needs a model with body and head (build_model's GroupedModel)."
        )
    return budget


def _record(learn: Learner, name: str, lrs: list[float], **extra: Any) -> None:
    learn.history.append({"epoch": None, "phase": name, "lrs": list(lrs), **extra})


def _range_test(
    learn: Learner, steps: list[RecipeStep], name: str, suggest: str, num_it: int
) -> LRFindResult:
    start = time.perf_counter()
    result = learn.lr_find(num_it=num_it, suggest=(suggest,))
    seconds = time.perf_counter() - start
    lr = result.suggestions[suggest]
    steps.append(RecipeStep(name, (lr,)))
    _record(
        learn,
        name,
        [lr],
        suggestions=dict(result.suggestions),
        num_it_run=result.num_it_run,
        seconds=seconds,
    )
    logger.info("recipe %s: %s suggests %.2e", name, suggest, lr)
    return result


def _head_steps(
    learn: Learner,
    steps: list[RecipeStep],
    suggest: str,
    head_epochs: int,
    augment_epochs: int,
    extra: Augment | None,
    num_it: int,
) -> LRFindResult:
    """Steps 1-4: freeze, range test, head (precomputed when possible), head with augmentation."""
    learn.freeze()
    learn.set_lrs([1.0] * learn.n_groups)  # equal ratios: only the head (and BN) trains
    found = _range_test(learn, steps, "lr_find_frozen", suggest, num_it)
    lr = found.suggestions[suggest]
    # cached features only from a body that has seen data: a random one's BatchNorm layers,
    # kept in eval mode by precompute, would normalise nothing (a far worse head)
    body = getattr(learn.model, "body", None)
    trained_body = body is not None and not _inference.untouched_norms(body)
    precompute = learn.dls.augment is None and trained_body
    learn.phase = "head"
    learn.fit_one_cycle(head_epochs, lr, precompute=precompute)
    steps.append(RecipeStep("head", (lr,) * learn.n_groups, head_epochs, precompute))
    if extra is not None:
        learn.dls.augment = learn.dls.train.augment = extra
    learn.phase = "head_augment"
    learn.fit_sgdr(augment_epochs, 1, lr, cycle_mult=1)
    steps.append(RecipeStep("head_augment", (lr,) * learn.n_groups, augment_epochs))
    return found


def _unfrozen_steps(
    learn: Learner, steps: list[RecipeStep], suggest: str, group_factor: float, num_it: int
) -> LRFindResult:
    """Steps 5-7: unfreeze, discriminative ratios, range test with those ratios."""
    learn.unfreeze()
    steps.append(RecipeStep("unfreeze", ()))
    _record(learn, "unfreeze", [])
    n = learn.n_groups
    ratios = [group_factor ** -(n - 1 - i) for i in range(n)]
    learn.set_lrs(ratios)
    found = _range_test(learn, steps, "lr_find_unfrozen", suggest, num_it)
    top = found.suggestions[suggest]
    lrs = [top * r for r in ratios]
    steps.append(RecipeStep("discriminative", tuple(lrs)))
    _record(learn, "discriminative", lrs)
    learn.set_lrs(lrs)
    return found


def _sgdr_step(
    learn: Learner, steps: list[RecipeStep], budget: int, patience: int
) -> tuple[int, float]:
    """Step 8: SGDR, cycle_mult=2, early stopping with the best weights restored."""
    n_cycles = int(math.log2(budget + 1))
    lrs = learn.group_lrs
    stopper = EarlyStoppingCallback(patience=patience, restore_best=True)
    first = len(learn.history)
    learn.phase = "sgdr"
    with learn.added_cbs(stopper):
        learn.fit_sgdr(
            n_cycles, 1, slice(lrs[0], lrs[-1]) if len(lrs) > 1 else lrs[0], cycle_mult=2
        )
    records = [r for r in learn.history[first:] if r.get("phase") == "sgdr"]
    steps.append(RecipeStep("sgdr", tuple(lrs), len(records)))
    # the epoch whose weights the stopper restored (a NaN loss never counts as the best);
    # with no finite loss at all, the last epoch's weights stay
    by_epoch = {r["epoch"]: r for r in records}
    best = by_epoch[stopper.best_epoch] if stopper.best_epoch is not None else records[-1]
    logger.info(
        "recipe sgdr: %d epochs, best valid_loss %.4g at epoch %d (weights restored)",
        len(records),
        best["valid_loss"],
        best["epoch"],
    )
    return int(best["epoch"]), float(best["valid_loss"])
