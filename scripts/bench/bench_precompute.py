"""Item 4: head training on a frozen resnet18 body, cached activations vs the full forward.

Both sides train only the head of ``build_model("resnet18")`` on the shapes task of
``sweeps/specs/shapes_resnet.yaml`` (32 px, batch 64, no augmentation: cached activations
cannot be augmented) from the same initial weights, data order and dropout draws:

- **full forward**: ``learn.freeze()`` with the body entirely frozen and in eval mode (so the
  two sides compute the same function; fastai's default keeps BatchNorm trainable), every batch
  through body and head;
- **precompute**: ``learn.fit(..., precompute=True)``: the body's outputs are computed once,
  then each epoch trains the head on them.

Target: >= 10x faster per epoch (median ``epoch_time_s``, training + validation); the one-off
caching cost is reported separately, and the head's result (final validation loss, head
weights) must match.

Run: ``python scripts/bench/bench_precompute.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import _common as common
import torch

from trainers import Callback, Learner, build_model, make_dataloaders, seed_everything


class BodyInEvalMode(Callback):
    """Keep the frozen body in eval mode during training, as ``precompute=True`` does."""

    def before_train(self) -> None:
        self.learn.model.body.eval()


def _learner(template: torch.nn.Module, dls: Any, *, full: bool) -> Learner:
    cbs = [BodyInEvalMode()] if full else []
    learn = Learner(copy.deepcopy(template), dls, progress=False, device="cpu", callbacks=cbs)
    learn.freeze()
    for p in learn.model.body.parameters():  # BatchNorm too: the body computes a fixed function
        p.requires_grad_(False)
    return learn


def _side(
    name: str,
    template: torch.nn.Module,
    dls: Any,
    start_state: Any,
    *,
    epochs: int,
    lr: float,
    epoch_times: dict[str, list[list[float]]],
    found: dict[str, dict[str, Any]],
) -> common.Measure:
    """One timed fit of side ``name``; its epoch times and head result go to the dicts given."""
    learn = _learner(template, dls, full=name == "full")
    dls.load_state_dict(start_state)
    # The loaders keep the last activations for the next fit of the same body; every fit
    # here computes its own, so the one-off caching cost stays in each measured fit.
    dls.train._activations = dls.valid._activations = None
    seed_everything(1)
    with common.Stopwatch() as sw:
        learn.fit(epochs, lr, precompute=name == "precompute")
    epoch_times[name].append([r["epoch_time_s"] for r in learn.history])
    found[name] = {
        "valid_loss": learn.history[-1]["valid_loss"],
        "error_rate": learn.history[-1]["error_rate"],
        "head": {k: v.clone() for k, v in learn.model.head.state_dict().items()},
    }
    return sw.measure


def _measure(image_size: int, epochs: int, reps: int, *, warmup: int) -> dict[str, Any]:
    """Interleave the two sides at one image size; return their figures."""
    lr = 1e-2
    dls = make_dataloaders("shapes", image_size=image_size, batch_size=64, seed=42)
    seed_everything(0)
    template = build_model("resnet18", dls.n_classes, in_channels=dls.in_channels)
    start_state = dls.state_dict()
    found: dict[str, dict[str, Any]] = {}
    epoch_times: dict[str, list[list[float]]] = {"full": [], "precompute": []}
    """Each side's epoch times, one list per fit, the warm-up fits included (dropped below)."""

    def side(name: str) -> common.Measure:
        return _side(
            name,
            template,
            dls,
            start_state,
            epochs=epochs,
            lr=lr,
            epoch_times=epoch_times,
            found=found,
        )

    common.log(f"precompute: resnet18 head at {image_size}px, {reps} reps x {epochs} epochs")
    timings = common.interleaved(
        {"full": lambda: side("full"), "precompute": lambda: side("precompute")},
        reps=reps,
        warmup=warmup,
    )
    measured = {k: v[warmup:] for k, v in epoch_times.items()}  # the warm-up fits left out
    return {
        "image_size": image_size,
        "train_images": len(dls.train_labels),
        **_speedups(timings, measured),
        **_same_head(found),
    }


def _speedups(timings: common.Timings, measured: dict[str, list[list[float]]]) -> dict[str, Any]:
    """Per-epoch and whole-fit figures of the measured fits; caching = fit time minus epochs."""
    per_epoch = {k: common.median([t for fit in v for t in fit]) for k, v in measured.items()}
    per_rep = {k: [common.median(fit) for fit in v] for k, v in measured.items()}
    caching_s = common.median(
        [
            fit - sum(epochs_s)
            for fit, epochs_s in zip(
                timings.wall["precompute"], measured["precompute"], strict=True
            )
        ]
    )
    return {
        "per_epoch_s": per_epoch,
        "per_epoch_speedup": common.median(
            common.paired_ratios(per_rep["full"], per_rep["precompute"])
        ),
        "whole_fit_speedup": common.median(
            common.paired_ratios(timings.wall["full"], timings.wall["precompute"])
        ),
        "fit_s": {k: common.median(v) for k, v in timings.wall.items()},
        "caching_s": caching_s,
    }


def _same_head(found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The two sides' last fits compared: validation loss and head weights."""
    head = found["full"]["head"]
    head_diff = max(
        float((head[k].float() - found["precompute"]["head"][k].float()).abs().max()) for k in head
    )
    loss_diff = abs(found["full"]["valid_loss"] - found["precompute"]["valid_loss"])
    return {
        "valid_loss": {k: v["valid_loss"] for k, v in found.items()},
        "error_rate": {k: v["error_rate"] for k, v in found.items()},
        "valid_loss_diff": loss_diff,
        "max_head_weight_diff": head_diff,
        "same": loss_diff <= 1e-4 * max(1.0, abs(found["full"]["valid_loss"]))
        and head_diff <= 1e-3,
    }


def run(args: argparse.Namespace) -> common.Result:
    """Measure and return the result."""
    common.setup_torch(args.threads)
    epochs = 2 if args.quick else 5
    reps = args.reps or (1 if args.quick else 3)
    sizes = [32] if args.quick else [32, 64]
    found = [_measure(s, epochs, reps, warmup=0 if args.quick else 1) for s in sizes]
    return common.Result(
        benchmark="precompute",
        item=4,
        title="Frozen resnet18 body: cached activations vs full forward (per epoch)",
        columns=[
            "shapes",
            "full s/epoch",
            "cached s/epoch",
            "speedup/epoch",
            "caching s (once)",
            f"speedup, {epochs}-epoch fit",
            "valid_loss full",
            "valid_loss cached",
        ],
        rows=[_row(f) for f in found],
        metrics={
            "sizes": found,
            "min_per_epoch_speedup": min(f["per_epoch_speedup"] for f in found),
        },
        targets=[t for f in found for t in _targets(f)],
        config={
            "dataset": "shapes",
            "arch": "resnet18",
            "pretrained": None,
            "epochs": epochs,
            "reps": reps,
            "threads": args.threads,
            "train_images": found[0]["train_images"],
        },
        notes=_notes(),
    )


def _row(f: dict[str, Any]) -> list[Any]:
    """One image size's row of the table."""
    return [
        f"{f['image_size']} px",
        f["per_epoch_s"]["full"],
        f["per_epoch_s"]["precompute"],
        f["per_epoch_speedup"],
        f["caching_s"],
        f["whole_fit_speedup"],
        f["valid_loss"]["full"],
        f["valid_loss"]["precompute"],
    ]


def _targets(f: dict[str, Any]) -> list[common.Target]:
    """One image size's targets: the per-epoch speedup and the same head result."""
    size = f"{f['image_size']} px"
    return [
        common.Target(f"per-epoch speedup, {size}", f["per_epoch_speedup"], ">=", 10),
        common.Target(
            f"same head result (1 = yes), {size}",
            1.0 if f["same"] else 0.0,
            ">=",
            1.0,
            note=f"|d valid_loss| {f['valid_loss_diff']:.2g}, "
            f"max |d head weight| {f['max_head_weight_diff']:.2g}",
        ),
    ]


def _notes() -> list[str]:
    return [
        "per epoch = median epoch_time_s (training + validation) of the measured fits (the "
        "warm-up fit left out); speedup/epoch = the median of the per-repetition ratios of "
        "the two sides' median epochs; caching = fit time minus its epochs, paid once per "
        "fit here (the next fit of the same body on the same loaders, as a sweep worker's "
        "next trial, reuses the activations; each fit here computes its own). Same head: "
        "the valid loss within 1e-4 (relative) and every head weight within 1e-3; the note "
        "gives the differences (0 when bitwise).",
        "32 px is sweeps/specs/shapes_resnet.yaml's size: the body's output is 1x1, so the "
        "body is cheap and the head's own work (fastai's head: two batch norms, two "
        "dropouts, linears to 512 and to the classes, AdamW) bounds the speedup; the concat "
        "pooling is cached with the body's outputs. Larger images make the body, and the "
        "saving, grow.",
        "random-initialised body (no network here); the timing does not depend on weights.",
    ]


if __name__ == "__main__":
    common.main(run, __doc__, reps="default 3, quick 1")
