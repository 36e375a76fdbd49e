"""Item 8: the accelerator path: bf16 autocast, ``channels_last`` and ``torch.compile``.

Variants of one training loop (resnet18 on shapes, batch 64, AdamW through ``Learner``), each
built with the Learner's own options:

- ``fp32``: the baseline, ``Learner(...)``;
- ``bf16``: ``Learner(..., amp="bf16")``: autocast around forward + loss (and validation);
- ``bf16 + channels_last``: ``channels_last=True`` too: the model and every batch in NHWC;
- ``bf16 + channels_last + compile``: ``compile=True`` too: ``torch.compile`` (compile time
  reported apart: it is paid once per trial process).

On CUDA every variant is timed interleaved and reported as samples/s ratios against fp32. On
a CPU there is nothing to time: each variant runs a few batches as a correctness check (the
first batch's loss within 2% of fp32's on the same weights, every loss finite) and the timing
is reported as "no CUDA: skipped timing".

Run: ``python scripts/bench/bench_accelerator.py [--quick] [--json] [--compile-check]``
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import time
from typing import Any

import _common as common
import torch

from trainers import Callback, Learner, build_model, make_dataloaders, seed_everything

VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"amp": None, "channels_last": False, "compile": False},
    "bf16": {"amp": "bf16", "channels_last": False, "compile": False},
    "bf16 + channels_last": {"amp": "bf16", "channels_last": True, "compile": False},
    "bf16 + channels_last + compile": {"amp": "bf16", "channels_last": True, "compile": True},
}
"""Variant name -> the Learner's ``amp``, ``channels_last`` and ``compile`` arguments."""

FIRST_BATCH_TOLERANCE = 0.02
"""Largest relative difference from fp32 of the first batch's loss (same weights, same batch)."""


def _learner(template: torch.nn.Module, dls: Any, device: str, opts: dict[str, Any]) -> Learner:
    return Learner(copy.deepcopy(template), dls, progress=False, device=device, **opts)


class _FirstLoss(Callback):
    """The loss of the fit's first training batch (every variant starts from the same weights)."""

    def __init__(self) -> None:
        self.loss = math.nan

    def after_batch(self) -> None:
        if self.learn.training and math.isnan(self.loss) and self.learn.loss is not None:
            self.loss = self.learn.loss.detach().item()


def _inductor_config() -> Any:
    import torch._inductor.config as config

    return config


def _check_cpu(template: torch.nn.Module, compile_check: bool) -> list[list[Any]]:
    """One short epoch per variant on the CPU, compared with fp32 where they must agree.

    The first training batch runs every variant on the same weights and batch: its loss must
    be within 2% of fp32's (bf16 keeps float32's range with 8 mantissa bits). After that the
    trajectories part: Adam's first step moves every weight by about ``lr`` in the sign of its
    gradient, and for the many near-zero gradients bf16's rounding picks that sign, so the
    epoch's mean train loss of a from-scratch resnet18 differs by tens of percent from fp32's
    (0.3-0.7 on two machines) while the weights land as close as the validation loss shows. The
    epoch's losses are checked to be finite and reported beside fp32's, not compared.
    """
    dls = make_dataloaders("shapes", image_size=32, batch_size=64, seed=42, n_per_class=30)
    rows: list[list[Any]] = []
    reference = math.nan
    for name, opts in VARIANTS.items():
        if opts["compile"] and not compile_check:
            rows.append([name, "-", "-", "-", "-", "skipped (--compile-check compiles, ~1 min)"])
            continue
        dls.train.reseed(0)  # every variant sees the same order and augmentation
        seed_everything(0)
        first = _FirstLoss()
        learn = _learner(template, dls, "cpu", opts)
        # inductor draws dropout masks its own way; eager's RNG keeps the variants comparable
        with learn.added_cbs(first), _inductor_config().patch(fallback_random=True):
            learn.fit(1, 1e-3)
        last = learn.history[-1]
        train_loss, valid_loss = last["train_loss"], last["valid_loss"]
        if name == "fp32":
            reference = first.loss
        diff = abs(first.loss - reference) / abs(reference)
        finite = all(math.isfinite(v) for v in (first.loss, train_loss, valid_loss))
        ok = finite and diff <= FIRST_BATCH_TOLERANCE
        check = "ok" if ok else "MISMATCH" if finite else "NOT FINITE"
        rows.append([name, first.loss, diff, train_loss, valid_loss, check])
    return rows


def _time_cuda(template: torch.nn.Module, dls: Any, reps: int, epochs: int) -> dict[str, Any]:
    """Interleaved fits per variant on CUDA; compile time measured from a first warm-up fit."""
    learners = {name: _learner(template, dls, "cuda", opts) for name, opts in VARIANTS.items()}
    compile_s: dict[str, float] = {}
    for name, learn in learners.items():  # warm-up (and compile) fit, timed apart
        start = time.perf_counter()
        learn.fit(1, 1e-3)
        torch.cuda.synchronize()
        compile_s[name] = time.perf_counter() - start

    def case(name: str) -> None:
        learners[name].fit(epochs, 1e-3)
        torch.cuda.synchronize()

    timings = common.interleaved(
        {name: functools.partial(case, name) for name in VARIANTS}, reps=reps, warmup=0
    )
    return {"wall": timings.wall, "first_fit_s": compile_s}


def run(args: argparse.Namespace) -> common.Result:
    """Check on CPU, time on CUDA."""
    common.setup_torch(args.threads)
    cuda = torch.cuda.is_available()
    size = 32 if args.quick or not cuda else 64
    seed_everything(0)
    template = build_model("resnet18", 3, in_channels=3)
    notes = ["variants are Learner(..., amp=, channels_last=, compile=) options"]
    metrics: dict[str, Any] = {"cuda": cuda}
    targets: list[common.Target] = []
    if not cuda:
        rows = _check_cpu(template, args.compile_check)
        columns = [
            "variant",
            "first batch loss (CPU)",
            "relative diff vs fp32",
            "epoch train_loss",
            "epoch valid_loss",
            "check",
        ]
        metrics["cpu_checks_ok"] = all(row[-1] == "ok" for row in rows if row[1] != "-")
        notes.append(
            "no CUDA: skipped timing (each variant trained one short epoch on the CPU); check: "
            "the first batch's loss within 2% of fp32's (same weights, same batch), every loss "
            "finite. The epoch's losses part after Adam's first step and are not compared."
        )
        metrics["timing"] = "no CUDA: skipped timing"
    else:
        dls = make_dataloaders("shapes", image_size=size, batch_size=64, seed=42, n_per_class=200)
        dls = dls.to("cuda")
        reps = args.reps or (2 if args.quick else 5)
        epochs = 1 if args.quick else 3
        found = _time_cuda(template, dls, reps, epochs)
        n = len(dls.train_labels) * epochs
        base = found["wall"]["fp32"]
        rows = []
        for name in VARIANTS:
            ratio = common.median(common.paired_ratios(base, found["wall"][name]))
            rows.append(
                [name, n / common.median(found["wall"][name]), ratio, found["first_fit_s"][name]]
            )
            metrics[f"speedup[{name}]"] = ratio
        columns = ["variant", "samples/s", "speedup vs fp32", "first fit s (incl. compile)"]
        metrics["device"] = torch.cuda.get_device_name(0)
    return common.Result(
        benchmark="accelerator",
        item=8,
        title="Accelerator path: bf16 autocast, channels_last, torch.compile",
        columns=columns,
        rows=rows,
        metrics=metrics,
        targets=targets,
        config={"arch": "resnet18", "dataset": "shapes", "image_size": size, "batch_size": 64},
        notes=notes,
    )


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile-check", action="store_true", help="also compile on the CPU (about a minute)"
    )


if __name__ == "__main__":
    common.main(run, __doc__, extra=_options)
