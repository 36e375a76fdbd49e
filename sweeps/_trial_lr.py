"""A trial's learning rate: a finder arm's range test (shared by the trials of its arm and
seed through Ray's key-value store), its logging (curve, seconds, figure, source tag), and the
rates a recipe's own range tests picked, read from its step markers.

Called by :mod:`sweeps.trial` (its start and its recipe training) and
:mod:`sweeps._trial_end` (``recipe_unfrozen_lr``); :mod:`sweeps.trial` re-exports
``TAG_LR_FIND_FROM``, ``range_tests_prefix`` and ``log_lr_find`` (as ``_log_lr_find``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps import _ray
from sweeps._reporter import TrialRecord
from sweeps.tracking import RunLogger, Tracker
from trainers import Learner, LRFindResult

if TYPE_CHECKING:
    from sweeps.trial import TrialContext

logger = logging.getLogger("sweeps.trial")  # its messages, as before the split

TAG_LR_FIND_FROM = "sweeps.lr_find_from"
"""Run tag: the run whose range test this trial read instead of running its own."""


def range_tests_prefix(sweep_id: str) -> str:
    """The prefix of a sweep's shared range tests in Ray's key-value store."""
    return f"lr_find/{sweep_id}/"


def _range_test_key(context: TrialContext, config: Mapping[str, Any]) -> str:
    """Trials of one arm and seed in one sweep run the same range test (same task, weights,
    data order and test settings; ``lr_find`` puts every RNG back, so the training after it
    is the same whether the test ran or was read)."""
    return f"{range_tests_prefix(context.sweep_id)}{config['arm']}/{int(config['seed'])}"


def _find_lr(learn: Learner, arm: Any, rule: str, record: TrialRecord, *, key: str) -> float:
    """The rule's pick on the seed's range test: read when another trial of the seed has run
    it, else run here and shared. Either way ``lr_find_s`` is the test's own time, so a rule's
    compute stays what using that rule alone costs."""
    shared = _ray.shared_get(key)
    if shared is not None:
        found = json.loads(shared)
        curve = LRFindResult.from_json(found["curve"])
        record.lr_find_s, record.lr_find_from = float(found["seconds"]), str(found["run_id"])
    else:
        start = time.perf_counter()
        curve = learn.lr_find(arm.start_lr, arm.end_lr, arm.num_it, suggest=())
        record.lr_find_s = time.perf_counter() - start
        value = {"curve": curve.to_json(), "seconds": record.lr_find_s, "run_id": record.run_id}
        _ray.shared_put(key, json.dumps(value).encode())
    record.lr_find = curve  # logged even when the rule cannot read it (the test's cost counts)
    suggestions = curve.suggest(rule)  # CurveTooShort as lr_find(suggest=rule) raises it
    record.lr_find = dataclasses.replace(curve, suggestions=suggestions)
    return float(suggestions[rule])


def choose_lr(
    learn: Learner, context: TrialContext, config: Mapping[str, Any], arm: Any, record: TrialRecord
) -> float:
    """The LR the trial trains at: its rule's pick on a finder arm's range test, NaN for a
    recipe (which finds its own), else ``config.lr`` (a positive finite number, or ValueError)."""
    if config["strategy"] == "lr_finder":
        key = _range_test_key(context, config)
        lr = _find_lr(learn, arm, str(config["rule"]), record, key=key)
        logger.info("range test picked lr=%.3g with rule %s", lr, config["rule"])
        return lr
    if config["strategy"] == "recipe":
        return math.nan  # the recipe finds and adjusts its own LR
    lr = float(config["lr"])
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"config.lr must be a positive finite number, but got {lr!r}.")
    return lr


def log_lr_find(tracker: Tracker, run_id: str, result: Any, seconds: float) -> None:
    """The range-test curve by iteration, its seconds (``lr_find_s``: logged now, so a trial that
    fails later still counts them) and ``lr_find.png``, each point and the figure once.

    A retry sends only what the run lacks: a try that failed between two batches of the curve
    (or before its figure) left part of it there.
    """
    from trainers.plots import plot_lr_find

    log = RunLogger(tracker, run_id)
    log.hold({k: s for k, s in tracker.last_steps(run_id).items() if k.startswith("lr_find")})
    log.add("lr_find_s", seconds, 0)
    log.extend("lr_find/loss", result.losses)
    log.extend("lr_find/raw_loss", result.raw_losses)
    log.extend("lr_find/lr", result.lrs)
    log.flush()
    if "lr_find.png" in tracker.list_artifacts(run_id):
        return
    with tempfile.TemporaryDirectory(prefix="lrsweep-") as folder:
        path = Path(folder) / "lr_find.png"
        plot_lr_find(result, path)
        tracker.log_artifact(run_id, path)


def log_range_test(tracker: Tracker, record: TrialRecord) -> None:
    """The range test's source tag, curve, seconds and figure, when the trial has one."""
    if record.lr_find_from is not None:
        tracker.set_tags(record.run_id, {TAG_LR_FIND_FROM: record.lr_find_from})
    if record.lr_find is not None:
        log_lr_find(tracker, record.run_id, record.lr_find, record.lr_find_s)


def _recipe_marker(history: list[dict[str, Any]], phase: str) -> dict[str, Any] | None:
    """The step marker a recipe wrote for ``phase`` (``lr_find_frozen``, ...), or None."""
    return next((r for r in history if r.get("epoch") is None and r.get("phase") == phase), None)


def recipe_lr(history: list[dict[str, Any]], rule: str) -> float:
    """The LR the recipe's first range test picked (its head's rate), from the step markers."""
    row = _recipe_marker(history, "lr_find_frozen")
    if row is None:
        return math.nan
    suggestions = row.get("suggestions") or {}
    if rule in suggestions:
        return float(suggestions[rule])
    lrs = row.get("lrs") or []
    return float(lrs[-1]) if lrs else math.nan


def recipe_unfrozen_lr(history: list[dict[str, Any]]) -> float:
    """The top group's rate a recipe's second range test picked for its unfrozen SGDR (the
    ``lr`` param holds the first test's, the head's), NaN for any other trial."""
    row = _recipe_marker(history, "lr_find_unfrozen")
    picks = [float(v) for v in ((row or {}).get("suggestions") or {}).values()]
    return picks[0] if picks else math.nan
