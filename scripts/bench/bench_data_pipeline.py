"""Item 7: loader throughput against the model's training throughput (target >= 5x).

For each shipped spec's task (``digits``: simple_cnn at 16 px with light augmentation;
``shapes``: resnet18 at 32 px with flip / rotate / zoom), one epoch of the training loader
(index in-memory tensors, normalise, augment the whole batch on the device) is timed against
one epoch of training steps (forward, loss, backward, AdamW step) on batches already produced,
interleaved. The loader must never be the bottleneck: loader samples/s >= 5 x training
samples/s.

Run: ``python scripts/bench/bench_data_pipeline.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
from typing import Any

import _common as common
import torch

from trainers import Learner, build_model, make_dataloaders, seed_everything

TARGET = 5.0

WORKLOADS: dict[str, dict[str, Any]] = {
    "digits / simple_cnn 16px / light aug": {
        "dataset": "digits",
        "arch": "simple_cnn",
        "image_size": 16,
        "augment": {"rotate": 10, "zoom": 1.1},
        "kwargs": {},
    },
    "shapes / resnet18 32px / flip+rotate+zoom": {
        "dataset": "shapes",
        "arch": "resnet18",
        "image_size": 32,
        "augment": {"flip": True, "rotate": 15, "zoom": 1.1},
        "kwargs": {},
    },
}


def _measure(name: str, cfg: dict[str, Any], reps: int, device: str) -> dict[str, Any]:
    dls = make_dataloaders(
        cfg["dataset"],
        image_size=cfg["image_size"],
        batch_size=64,
        seed=42,
        augment=cfg["augment"],
        **cfg["kwargs"],
    ).to(device)
    seed_everything(0)
    model = build_model(cfg["arch"], dls.n_classes, in_channels=dls.in_channels)
    learn = Learner(model, dls, progress=False, device=device)
    learn.set_lrs([1e-3] * learn.n_groups)
    batches = list(dls.train)
    n = sum(len(yb) for _, yb in batches)

    def loader_epoch() -> None:
        for _ in dls.train:
            pass
        if device == "cuda":
            torch.cuda.synchronize()

    def train_epoch() -> None:
        for xb, yb in batches:
            learn.one_batch(xb, yb)

    common.log(f"data pipeline: {name}, {n} images/epoch, {reps} reps")
    timings = common.interleaved({"loader": loader_epoch, "train": train_epoch}, reps=reps)
    wall, cpu = timings.wall, timings.cpu
    ratios = common.paired_ratios(wall["train"], wall["loader"])
    return {
        "workload": name,
        "images_per_epoch": n,
        "loader_samples_per_s": n / common.median(wall["loader"]),
        "train_samples_per_s": n / common.median(wall["train"]),
        "ratio": common.median(ratios),
        "cpu_ratio": common.median(common.paired_ratios(cpu["train"], cpu["loader"])),
        "loader_s": wall["loader"],
        "train_s": wall["train"],
    }


def run(args: argparse.Namespace) -> common.Result:
    """Measure and return the result."""
    common.setup_torch(args.threads)
    reps = args.reps or (2 if args.quick else 7)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    names = list(WORKLOADS)[:1] if args.quick else list(WORKLOADS)
    found = [_measure(name, WORKLOADS[name], reps, device) for name in names]
    rows = [
        [f["workload"], f["loader_samples_per_s"], f["train_samples_per_s"], f["ratio"]]
        for f in found
    ]
    targets = [
        common.Target(f"loader / training rate: {f['workload']}", f["ratio"], ">=", TARGET)
        for f in found
    ]
    return common.Result(
        benchmark="data_pipeline",
        item=7,
        title="Loader throughput vs training throughput (samples/s)",
        columns=["workload", "loader samples/s", "training samples/s", "loader / training"],
        rows=rows,
        metrics={"workloads": found, "min_ratio": min(f["ratio"] for f in found)},
        targets=targets,
        config={"reps": reps, "threads": args.threads, "device": device, "batch_size": 64},
        notes=[
            "loader: one epoch of TensorLoader batches (index_select, one fused normalise, one "
            "affine_grid/grid_sample for the whole batch), nothing per image, no PIL.",
            "training: one epoch of Learner.one_batch (forward, loss, backward, AdamW step) on "
            "batches produced beforehand; ratio = median of per-repetition time ratios.",
        ],
    )


if __name__ == "__main__":
    common.main(run, __doc__, reps="default 7, quick 2")
