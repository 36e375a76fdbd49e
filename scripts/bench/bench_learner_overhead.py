"""Item 1: ``Learner.fit`` against a minimal hand-written PyTorch loop (target >= 0.97).

Both sides train the same model (``simple_cnn``, same initial weights), on the same batches
(``make_dataloaders("digits")``, same seed and batch size, same loader state), with the same
optimizer (AdamW, fastai's betas / eps / weight decay, on every parameter: the Learner runs
with ``wd_bn_bias=True`` to match the hand loop's one parameter group; PyTorch's fused step,
``fused=True``, which the Learner uses wherever the parameters allow) at a constant rate, for
the same epochs, and both validate after every epoch (loss and error rate over the validation
set). The hand-written loop is what a person writes in a notebook: forward, loss, backward, step,
``zero_grad``, ``loss.item()`` for the running loss. The Learner adds its events, the schedule
hook, the Recorder (per-step loss / LR / momentum, per-epoch history) and its metrics.

A third side, reported and not judged, is the same hand loop with PyTorch's default AdamW (a
Python loop over the tensors, ``fused`` left unset), as most notebooks write it: what a user
moving from such a loop to the Learner gains or loses in all.

The figure is training samples per second, Learner / hand loop (higher is better), the median
of per-repetition ratios of runs made back to back. As a correctness check the two sides'
per-step losses are compared (they should agree to float rounding).

Run: ``python scripts/bench/bench_learner_overhead.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from typing import Any

import _common as common
import torch
from torch import nn

from trainers import Learner, build_model, make_dataloaders, seed_everything

TARGET = 0.97


def _data(image_size: int, batch_size: int) -> Any:
    return make_dataloaders("digits", image_size=image_size, batch_size=batch_size, seed=42)


def _hand_optimizer(model: nn.Module, lr: float, fused: bool | None) -> torch.optim.Optimizer:
    """The hand loop's AdamW with the Learner's settings (built before the clock starts, as the
    Learner builds its own in ``__init__``)."""
    return torch.optim.AdamW(
        model.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01, fused=fused
    )


def _hand_loop(model: nn.Module, opt: torch.optim.Optimizer, dls: Any, epochs: int) -> list[float]:
    """The floor: a plain PyTorch training loop with per-epoch validation."""
    loss_func = nn.CrossEntropyLoss()
    losses: list[float] = []
    for _ in range(epochs):
        model.train()
        for xb, yb in dls.train:
            loss = loss_func(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        model.eval()
        total, wrong, n = 0.0, 0, 0
        with torch.no_grad():
            for xb, yb in dls.valid:
                out = model(xb)
                total += loss_func(out, yb).item() * len(yb)
                wrong += int((out.argmax(dim=1) != yb).sum())
                n += len(yb)
        _ = (total / n, wrong / n)
    return losses


def run(args: argparse.Namespace) -> common.Result:
    """Measure and return the result."""
    common.setup_torch(args.threads)
    quick = args.quick
    epochs = 1 if quick else 3
    reps = args.reps or (3 if quick else 15)
    image_size, batch_size, lr = 16, 64, 3e-3
    dls = _data(image_size, batch_size)
    seed_everything(0)
    template = build_model("simple_cnn", dls.n_classes, in_channels=dls.in_channels)
    start_state = dls.state_dict()
    n_train = len(dls.train_labels)
    record: dict[str, list[float]] = {}
    sides = _sides(template, dls, start_state, lr=lr, epochs=epochs, record=record)
    common.log(f"learner overhead: {reps} reps x {epochs} epochs, {n_train} training images")
    timings = common.interleaved(sides, reps=reps)
    config = {
        "dataset": "digits",
        "arch": "simple_cnn",
        "image_size": image_size,
        "batch_size": batch_size,
        "epochs_per_rep": epochs,
        "reps": reps,
        "threads": args.threads,
        "train_images": n_train,
    }
    return _result(timings, record, samples=n_train * epochs, config=config)


def _sides(
    template: nn.Module,
    dls: Any,
    start_state: Any,
    *,
    lr: float,
    epochs: int,
    record: dict[str, list[float]],
) -> dict[str, Callable[[], common.Measure]]:
    """The Learner, the hand loop (fused AdamW) and the hand loop with PyTorch's default AdamW,
    each from the same weights and loader state; each leaves its per-step losses in ``record``."""

    def learner_side() -> common.Measure:
        dls.load_state_dict(start_state)
        seed_everything(0)  # dropout draws from the global generator
        # wd_bn_bias=True: weight decay on every parameter, as the hand loop's single group
        learn = Learner(copy.deepcopy(template), dls, progress=False, device="cpu", wd_bn_bias=True)
        with common.Stopwatch() as sw:
            learn.fit(epochs, lr)
        record["learner"] = list(learn.recorder.losses)
        return sw.measure

    def hand_side(key: str, fused: bool | None) -> Callable[[], common.Measure]:
        def side() -> common.Measure:
            dls.load_state_dict(start_state)
            seed_everything(0)
            model = copy.deepcopy(template)
            opt = _hand_optimizer(model, lr, fused)
            with common.Stopwatch() as sw:
                record[key] = _hand_loop(model, opt, dls, epochs)
            return sw.measure

        return side

    return {
        "learner": learner_side,
        "hand": hand_side("hand", True),
        "hand, default AdamW": hand_side("default", None),
    }


def _result(
    timings: common.Timings,
    record: dict[str, list[float]],
    *,
    samples: int,
    config: dict[str, Any],
) -> common.Result:
    """Ratios of the sides' times (samples/s ratio = hand time / Learner time) and loss checks."""
    times, cpu = timings.wall, timings.cpu
    ratios = common.paired_ratios(times["hand"], times["learner"])
    ratio = common.median(ratios)
    cpu_ratio = common.median(common.paired_ratios(cpu["hand"], cpu["learner"]))
    default = times["hand, default AdamW"]
    default_ratio = common.median(common.paired_ratios(default, times["learner"]))
    default_diff = common.max_diff(record["default"], record["hand"])
    diff = common.max_diff(record["learner"], record["hand"])
    return common.Result(
        benchmark="learner_overhead",
        item=1,
        title="Learner.fit vs a minimal hand-written loop (samples/s)",
        columns=["side", "median wall s / fit", "samples/s", "range wall s", "median CPU s"],
        rows=_rows(timings, samples),
        metrics={
            "samples_per_s_ratio": ratio,
            "ratio_of_medians": common.median(times["hand"]) / common.median(times["learner"]),
            "cpu_time_ratio": cpu_ratio,
            "paired_ratios": ratios,
            "max_step_loss_diff": diff,
            "learner_s": times["learner"],
            "hand_s": times["hand"],
            "learner_cpu_s": cpu["learner"],
            "hand_cpu_s": cpu["hand"],
            "default_adamw_ratio": default_ratio,
            "default_adamw_s": default,
        },
        targets=_targets(ratio, cpu_ratio, default_ratio),
        config=config,
        notes=[
            "ratio = median over repetitions of (hand-loop time / Learner time) for runs made "
            "back to back; both include per-epoch validation.",
            f"largest per-step loss difference between the two sides: {diff:.3g} "
            "(same weights, data order and optimizer maths).",
            "the default AdamW side runs the same maths in another order of float operations: "
            f"its per-step losses differ from the fused hand loop's by up to {default_diff:.3g}.",
        ],
    )


def _rows(timings: common.Timings, samples: int) -> list[list[Any]]:
    times, cpu = timings.wall, timings.cpu
    return [
        [
            name,
            common.median(times[name]),
            samples / common.median(times[name]),
            common.spread(times[name]),
            common.median(cpu[name]),
        ]
        for name in ("hand", "learner", "hand, default AdamW")
    ]


def _targets(ratio: float, cpu_ratio: float, default_ratio: float) -> list[common.Target]:
    return [
        common.Target("Learner / hand-loop samples/s (wall)", ratio, ">=", TARGET),
        common.Target("same, from CPU time", cpu_ratio, ">=", TARGET, note="less load-sensitive"),
        common.Target(
            "Learner / hand loop with PyTorch's default AdamW (wall)",
            default_ratio,
            ">=",
            TARGET,
            judged=False,
            note="the Learner's fused step included",
        ),
    ]


if __name__ == "__main__":
    common.main(run, __doc__, reps="default 15, quick 3")
