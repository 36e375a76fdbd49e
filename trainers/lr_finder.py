"""The LR range test (Leslie Smith's, as fastai runs it) that leaves no trace on the Learner.

``lr_find`` trains for up to ``num_it`` mini-batches while the learning rate grows exponentially
from ``start_lr`` to ``end_lr``, records the loss at each rate, and then puts back *everything*
it touched, in memory: weights, optimizer state, BatchNorm buffers, train/eval mode,
``requires_grad`` flags, gradients, the Python/NumPy/torch RNG states and the data loaders'
shuffling/augmentation RNG. So ``lr_find`` followed by ``fit`` gives the same history as ``fit``
alone with the same seed. Its defaults, argument checks and schedule are in
``_lr_find_args.py`` (re-exported here); its loop and the rules' reading of the curve in
``_lr_find_loop.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainers._lr_find_args import (
    BETA,
    DIV_FACTOR,
    END_LR,
    NUM_IT,
    START_LR,
    Suggest,
    check_lr_find_args,
    exponential_lrs,
    rule_functions,
)
from trainers._lr_find_args import rule_name as rule_name
from trainers._lr_find_loop import NOT_FINITE_AT_START_ADVICE as _ADVICE
from trainers._lr_find_loop import apply_rules as _suggest
from trainers._lr_find_loop import not_finite_at_start as _not_finite_at_start
from trainers._lr_find_loop import run as _run
from trainers.suggestions import SKIP_END, CurveTooShort

if TYPE_CHECKING:
    from trainers.learner import Learner

logger = logging.getLogger(__name__)

JSON_FORMAT = "lrsweep.lr_find/1"
"""Value of the ``format`` key of the JSON written by :meth:`LRFindResult.to_json`."""

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


@dataclass(frozen=True)
class LRFindResult:
    """The curve of one range test and the rates suggested from it.

    Attributes:
        lrs: Learning rate of the top layer group at each iteration run.
        losses: Bias-corrected exponential moving average of the loss at each iteration (what
            the suggestion rules read).
        raw_losses: The mini-batch loss at each iteration (may hold NaN/inf at the end).
        suggestions: Rule name -> suggested rate (top layer group), in the order asked for.
        stopped_early: True when the test stopped before ``num_it`` because the loss diverged.
        num_it_run: Iterations actually run, ``len(lrs)``.
        num_it: Iterations asked for (None: ``num_it_run``); fastai's trim skips the first
            ``num_it // 10`` points.
        skip_end: Points cut from the end before a rule reads the curve (fastai's 5, fewer
            after a loss that turned non-finite without diverging).
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    raw_losses: tuple[float, ...]
    suggestions: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    num_it_run: int = 0
    num_it: int | None = None
    skip_end: int = SKIP_END

    def __post_init__(self) -> None:
        for name in ("lrs", "losses", "raw_losses"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(
            self, "suggestions", {str(k): float(v) for k, v in dict(self.suggestions).items()}
        )
        lengths = {len(self.lrs), len(self.losses), len(self.raw_losses)}
        if len(lengths) != 1:
            raise ValueError(
                "lrs, losses and raw_losses must have the same length, but got "
                f"{len(self.lrs)}, {len(self.losses)} and {len(self.raw_losses)}."
            )
        if self.num_it_run != len(self.lrs):
            raise ValueError(
                f"num_it_run must equal len(lrs) = {len(self.lrs)}, but got {self.num_it_run}."
            )
        if self.num_it is not None and not (
            isinstance(self.num_it, numbers.Integral) and self.num_it >= self.num_it_run
        ):
            raise ValueError(
                f"num_it must be None or an integer >= num_it_run = {self.num_it_run}, but got "
                f"{self.num_it!r}."
            )
        if not (isinstance(self.skip_end, numbers.Integral) and 0 <= self.skip_end <= SKIP_END):
            raise ValueError(
                f"skip_end must be an integer in [0, {SKIP_END}], but got {self.skip_end!r}."
            )
        # numpy integers pass the checks above; JSON and equality want Python's own
        object.__setattr__(self, "num_it_run", int(self.num_it_run))
        object.__setattr__(self, "skip_end", int(self.skip_end))
        if self.num_it is not None:
            object.__setattr__(self, "num_it", int(self.num_it))

    def suggest(self, rules: Suggest) -> dict[str, float]:
        """Each rule's rate on this curve, read as :func:`lr_find` reads it (fastai's trim).

        Any rule from :data:`trainers.suggestions.SUGGESTIONS` (names, functions or partials,
        as ``lr_find``'s ``suggest``), also one the test did not run with: a saved curve
        (:meth:`to_json`) answers for another rule later, without a second test. ``lr_find``
        takes its own suggestions this way.

        Raises:
            ValueError: If a rule name is unknown (see :func:`rule_functions`).
            CurveTooShort: If the curve has too few points for a rule, as ``lr_find`` raises it.
        """
        functions = rule_functions(rules)  # no num_it check: a too short curve explains itself
        best = min((v for v in self.losses if not math.isnan(v)), default=math.inf)
        # stopped with a finite last loss: the divergence test stopped it, so stop_div was on
        non_positive_stop = (
            self.stopped_early
            and best <= 0
            and bool(self.losses)
            and math.isfinite(self.losses[-1])
        )
        return _suggest(
            functions,
            list(self.lrs),
            list(self.losses),
            num_it=self.num_it_run if self.num_it is None else int(self.num_it),
            stopped=self.stopped_early,
            skip_end=int(self.skip_end),
            non_positive_stop=non_positive_stop,
            best=best,
        )

    def _named(self, name: str) -> float:
        """The suggestion of rule ``name``, as fastai's ``SuggestedLRs`` gives it by name."""
        if name in self.suggestions:
            return self.suggestions[name]
        raise AttributeError(
            f"this range test did not suggest by {name!r} (it ran with suggest="
            f"{tuple(self.suggestions)}); result.suggest({name!r}) reads that rule off the curve."
        )

    @property
    def valley(self) -> float:
        """``suggestions["valley"]`` (``AttributeError`` when the test did not run that rule)."""
        return self._named("valley")

    @property
    def steep(self) -> float:
        """``suggestions["steep"]`` (``AttributeError`` when the test did not run that rule)."""
        return self._named("steep")

    @property
    def minimum(self) -> float:
        """``suggestions["minimum"]`` (``AttributeError`` when the test did not run that rule)."""
        return self._named("minimum")

    @property
    def slide(self) -> float:
        """``suggestions["slide"]`` (``AttributeError`` when the test did not run that rule)."""
        return self._named("slide")

    @property
    def suggestion(self) -> float:
        """The rate suggested by the first rule asked for.

        Raises:
            ValueError: If the test ran with no suggestion rule.
        """
        if not self.suggestions:
            raise ValueError("This range test ran with suggest=(); no suggestion to return.")
        return next(iter(self.suggestions.values()))

    def __iter__(self) -> Iterator[float]:
        """The suggested rates in the order the rules were asked for, so that fastai's
        ``lr_min, lr_steep = learn.lr_find(suggest_funcs=(minimum, steep))`` unpacks them as it
        unpacks fastai's ``SuggestedLRs`` namedtuple."""
        return iter(tuple(self.suggestions.values()))

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """Serialise to strict JSON (NaN/inf become the strings ``"NaN"``, ``"Infinity"``).

        Args:
            path: When given, also write the JSON there (parent folders must exist), whole or
                not at all: a failed write (a full disk) leaves any earlier file untouched.

        Returns:
            The JSON text.
        """
        payload = {
            "format": JSON_FORMAT,
            "lrs": [_encode(v) for v in self.lrs],
            "losses": [_encode(v) for v in self.losses],
            "raw_losses": [_encode(v) for v in self.raw_losses],
            "suggestions": {k: _encode(v) for k, v in self.suggestions.items()},
            "stopped_early": self.stopped_early,
            "num_it_run": self.num_it_run,
            "num_it": self.num_it,
            "skip_end": self.skip_end,
        }
        text = json.dumps(payload, allow_nan=False, indent=1)
        if path is not None:
            _write_whole(Path(path).expanduser(), text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> LRFindResult:
        """Rebuild a result from :meth:`to_json` output.

        Args:
            source: The JSON text, or the file :meth:`to_json` wrote (a path-like, or a ``str``
                that does not start with ``{``, as ``to_json("r.json")`` takes it).

        Raises:
            ValueError: If the text is not JSON of this format, a key is missing or a value
                is wrong; the message names the file when ``source`` is one.
            FileNotFoundError: If ``source`` names a file that does not exist.
        """
        if isinstance(source, str) and source.lstrip().startswith("{"):
            text, where = source, "LR range test JSON"
        else:
            path = Path(source).expanduser()
            text, where = path.read_text(encoding="utf-8"), f"LR range test file {str(path)!r}"
        try:
            return cls._from_data(json.loads(text))
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"{where}: {error}") from error

    @classmethod
    def _from_data(cls, data: Any) -> LRFindResult:
        if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
            raise ValueError(
                f"not an LR range test result: the 'format' key must be {JSON_FORMAT!r}."
            )
        missing = [k for k in ("lrs", "losses", "raw_losses", "suggestions") if k not in data]
        if missing:
            raise ValueError(f"it lacks the keys {missing}.")
        return cls(
            lrs=tuple(_decode(v) for v in data["lrs"]),
            losses=tuple(_decode(v) for v in data["losses"]),
            raw_losses=tuple(_decode(v) for v in data["raw_losses"]),
            suggestions={k: _decode(v) for k, v in data["suggestions"].items()},
            stopped_early=bool(data.get("stopped_early", False)),
            num_it_run=int(data.get("num_it_run", len(data["lrs"]))),
            num_it=None if data.get("num_it") is None else int(data["num_it"]),
            skip_end=int(data.get("skip_end", SKIP_END)),
        )


def _encode(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _decode(value: float | str) -> float:
    if isinstance(value, str):
        if value not in _NON_FINITE:
            raise ValueError(f"Unexpected number {value!r}; accepted strings: {list(_NON_FINITE)}.")
        return _NON_FINITE[value]
    return float(value)


def lr_find(
    learn: Learner,
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    num_it: int = NUM_IT,
    *,
    stop_div: bool = True,
    div_factor: float = DIV_FACTOR,
    beta: float = BETA,
    suggest: Suggest = ("valley",),
) -> LRFindResult:
    """Run an LR range test on ``learn`` and put every piece of its state back afterwards.

    Iteration ``i`` trains one mini-batch (cycling through ``learn.dls.train`` when it has fewer
    than ``num_it`` batches) with the top layer group at
    ``start_lr * (end_lr / start_lr) ** (i / (num_it - 1))``; the other groups keep their ratio
    to the top group (discriminative rates), and frozen parameters stay untouched. The loss is
    smoothed as fastai does, ``avg = beta * avg + (1 - beta) * loss`` and
    ``smooth = avg / (1 - beta ** (i + 1))``. The test stops early when ``smooth`` exceeds
    ``div_factor`` times its best so far (if ``stop_div``), or at once when a loss is NaN/inf
    (whatever ``stop_div`` says: the weights are ruined from there on). The rules then read the
    curve as fastai's would be cut, ``[num_it // 10:-5]`` and up to the first non-finite loss:
    fastai stops at a divergence, so the last 5 points are dropped, but it runs on to ``num_it``
    after a NaN that did not exceed ``div_factor`` times the best, so every finite point before
    such a NaN is kept (unless it is within 5 of ``num_it``).

    Each step is :meth:`Learner.one_batch`: the accelerator options apply, but the Learner's
    callbacks do not run (fastai's ``lr_find`` is a ``fit``, so a gradient-clipping or mixup
    callback takes part there and not here; a model that needs one may suggest other rates).

    Afterwards the model's weights, BatchNorm buffers, train/eval mode, ``requires_grad``
    flags and gradients, the optimizer's state and rates, the data loaders' RNG and the
    Python/NumPy/torch RNG states are restored from in-memory copies, even if it raises.

    A loss below 0 makes fastai's divergence test ``smoothed > div_factor * best`` hold at
    once, so with ``stop_div`` such a test stops after one iteration (as fastai's does); the
    warning and the ``CurveTooShort`` message then say to pass ``stop_div=False``.

    A loss already NaN/inf at the first iteration comes before any step of the test, so no rate
    is its cause: a warning (also with ``suggest=()``) and the ``CurveTooShort`` message name
    that loss and ``start_lr``, and say to check the model's output, the loss function and the
    weights, not the test's settings (a batch holding NaN/inf is a ``ValueError`` naming it).

    Numbers may be Python's or NumPy scalars.

    Args:
        learn: The Learner to test; its current per-group rates set the ratios between groups
            (equal ratios when all are 0, as at the end of SGDR or cosine annealing).
        start_lr: Rate of the first iteration (top group); finite, > 0.
        end_lr: Rate of the last iteration; finite, > ``start_lr``.
        num_it: Iterations to run, an integer large enough for each rule in ``suggest`` after
            fastai's trimming (first ``num_it // 10`` and last 5 points; ``valley`` needs
            ``num_it >= 8``, ``slide`` ``num_it >= 23``).
        stop_div: Stop when the smoothed loss exceeds ``div_factor`` times its best.
        div_factor: Divergence factor, > 1 (fastai: 4).
        beta: Smoothing factor in ``[0, 1)`` (fastai: 0.98).
        suggest: Rule name or names from :data:`trainers.suggestions.SUGGESTIONS`, or those
            rules' functions (``(valley, steep)``, as fastai's ``suggest_funcs``), or a
            ``functools.partial`` of one with its tuning keywords (``partial(slide,
            lr_diff=5)``, named ``"slide"``, as fastai names it); empty or None for none
            (fastai's ``suggest_funcs=None``). Each suggestion is also an attribute of the
            result: ``result.valley``.

    Returns:
        The curve and one suggested rate per rule, for the top layer group.

    Raises:
        ValueError: If an argument is out of range or a rule name is unknown.
        CurveTooShort: If the test stopped so early that a rule has too few points; the
            message gives the iterations run and the points needed, and its ``curve`` holds
            what the test measured (no suggestions).
    """
    rules = check_lr_find_args(start_lr, end_lr, num_it, div_factor, beta, suggest)
    start_lr, end_lr, num_it = float(start_lr), float(end_lr), int(num_it)
    div_factor, beta = float(div_factor), float(beta)
    schedule = exponential_lrs(start_lr, end_lr, num_it)
    ratios = _group_ratios([float(lr) for lr in learn.group_lrs])
    logger.info(
        "LR range test: %d iterations from %.2e to %.2e over %d layer group(s)",
        num_it,
        start_lr,
        end_lr,
        len(ratios),
    )
    saved = learn.snapshot()  # weights, BN buffers, optimizer, modes, flags, grads, all RNGs
    try:
        lrs, raw, smooth, stopped, recorded = _run(
            learn, schedule, ratios, stop_div=stop_div, div_factor=div_factor, beta=beta
        )
    finally:
        learn.restore(saved)
    best = min((v for v in smooth if not math.isnan(v)), default=math.inf)
    # the divergence test stopped it (not a NaN/inf), and only because the loss went <= 0
    non_positive_stop = stopped and stop_div and best <= 0 and math.isfinite(smooth[-1])
    if not math.isfinite(raw[0]):  # said whatever the rules (suggest=() raises nothing)
        logger.warning("LR range test: %s. %s", _not_finite_at_start(raw[0], lrs[0]), _ADVICE)
    elif stopped:
        logger.info("LR range test stopped early at iteration %d, lr %.2e", len(lrs), lrs[-1])
        if non_positive_stop:
            logger.warning(
                "LR range test stopped after %d iteration(s): the smoothed loss reached %.3g "
                "<= 0, where the divergence test (loss > div_factor * best) cannot work; "
                "pass stop_div=False",
                len(lrs),
                best,
            )
    # fastai's [:-5] counts from the end of what its recorder holds; points it would have
    # recorded past a non-finite loss are non-finite, so they take the place of the cut ones.
    curve = LRFindResult(
        lrs=tuple(lrs),
        losses=tuple(smooth),
        raw_losses=tuple(raw),
        stopped_early=stopped,
        num_it_run=len(lrs),
        num_it=num_it,
        skip_end=max(SKIP_END - (recorded - len(lrs)), 0),
    )
    try:
        suggestions = curve.suggest(tuple(rules.values()))
    except CurveTooShort as err:
        err.curve = curve  # what the test measured, for a caller to plot or save
        raise
    logger.info("LR range test suggestions: %s", {k: f"{v:.2e}" for k, v in suggestions.items()})
    return dataclasses.replace(curve, suggestions=suggestions)


def _group_ratios(group_lrs: list[float]) -> list[float]:
    """Each group's rate over the top group's; equal when every rate is 0 (annealed to 0)."""
    if group_lrs and all(lr == 0 for lr in group_lrs):
        logger.info("every layer group is at rate 0 (an annealed schedule's end): equal ratios")
        return [1.0] * len(group_lrs)
    if (
        not group_lrs
        or group_lrs[-1] <= 0
        or not all(math.isfinite(lr) and lr >= 0 for lr in group_lrs)
    ):
        raise ValueError(
            "learn.group_lrs must be finite, >= 0 and > 0 for the top group to give the ratios "
            f"between layer groups, but got {group_lrs}; call learn.set_lrs([...]) first."
        )
    return [lr / group_lrs[-1] for lr in group_lrs]


def _write_whole(path: Path, text: str) -> None:
    """``text`` in ``path`` by a temporary file beside it and ``os.replace``; an ``OSError``
    names ``path``, not the temporary file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as error:
        if error.errno is None:
            raise
        raise type(error)(error.errno, error.strerror, str(path)) from error
    finally:
        partial.unlink(missing_ok=True)


__all__ = ["JSON_FORMAT", "LRFindResult", "check_lr_find_args", "exponential_lrs", "lr_find"]
