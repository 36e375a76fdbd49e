"""Item 8: the accelerator path: bf16 autocast, ``channels_last`` and ``torch.compile``.

Variants of one training loop (resnet18 on shapes, batch 64, AdamW through ``Learner``), each
built with the Learner's own options:

- ``fp32``: the baseline, ``Learner(...)``;
- ``bf16``: ``Learner(..., amp="bf16")``: autocast around forward + loss (and validation);
- ``bf16 + channels_last``: ``channels_last=True`` too: the model and every batch in NHWC;
- ``bf16 + channels_last + compile``: ``compile=True`` too: ``torch.compile`` (compile time
  reported apart: it is paid once per trial process).

On CUDA every variant is timed interleaved and reported as samples/s ratios against fp32, and
GPU sharing (``resources.gpu: 1/k`` in a spec) is timed: ``k`` trial processes, each with its
own CUDA context as Ray Tune's trial workers have, train the same fit at once on one GPU,
against one such process alone (``--sharing k``, default 4; 0 skips it). On a CPU there is
nothing to time: each variant runs a few batches as a correctness check (the
first batch's loss within 2% of fp32's on the same weights, every loss finite) and the timing
is reported as "no CUDA: skipped timing".

Run: ``python scripts/bench/bench_accelerator.py [--quick] [--json] [--compile-check]
[--image-size PX] [--batch-size N] [--n-per-class N] [--sharing K]``
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import multiprocessing as mp
import queue
import sys
import time
import traceback
from pathlib import Path
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


CPU_CHECK = {"image_size": 32, "batch_size": 64, "n_per_class": 30}
"""The CPU check's data (the CUDA options --image-size, --batch-size, --n-per-class time only)."""


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
    dls = make_dataloaders("shapes", seed=42, **CPU_CHECK)
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


def _shapes(size: int, batch_size: int, n_per_class: int, device: str) -> Any:
    """The timed data: generated shapes (seed 42), its tensors on ``device``."""
    dls = make_dataloaders(
        "shapes", image_size=size, batch_size=batch_size, seed=42, n_per_class=n_per_class
    )
    return dls if device == "cpu" else dls.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _sharing_worker(
    rank: int,
    spec: dict[str, Any],
    barrier: Any,
    results: Any,
) -> None:
    """One trial process: build its Learner, warm up, then one timed fit per barrier round.

    Puts ``("ready", rank, round, 0, 0)`` before each round, ``("done", rank, round, end time,
    peak CUDA bytes)`` after it, or ``("error", rank, -1, traceback, 0)`` and stops.
    """
    try:
        common.setup_torch(1)
        device = spec["device"]
        dls = _shapes(spec["image_size"], spec["batch_size"], spec["n_per_class"], device)
        seed_everything(rank)
        model = build_model("resnet18", dls.n_classes, in_channels=3)
        learn = Learner(model, dls, progress=False, device=device, **VARIANTS[spec["variant"]])
        learn.fit(1, 1e-3)  # warm-up: CUDA context, cuDNN's algorithm search
        _sync(device)
        for rep in range(spec["reps"]):
            results.put(("ready", rank, rep, 0.0, 0))
            barrier.wait(timeout=spec["timeout_s"])
            learn.fit(spec["epochs"], 1e-3)
            _sync(device)
            memory = torch.cuda.max_memory_allocated() if device != "cpu" else 0
            results.put(("done", rank, rep, time.time(), memory))
    except Exception:  # the parent reports it
        results.put(("error", rank, -1, traceback.format_exc(), 0))


def _collect(
    results: Any, procs: list[Any], kind: str, rep: int, deadline: float
) -> list[tuple[int, float, int]]:
    """``(rank, value, memory)`` of one ``kind`` message per process for round ``rep``.

    Polls once a second so that a process that died without a word (killed, or unable to
    unpickle its target) is reported at once rather than at the deadline.

    Raises:
        RuntimeError: naming the process that failed or died, or the round that timed out.
    """
    got: list[tuple[int, float, int]] = []
    while len(got) < len(procs):
        try:
            what, rank, _, value, memory = results.get(timeout=1.0)
        except queue.Empty:
            dead = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if dead:
                rank, code = dead[0]
                raise RuntimeError(
                    f"trial process {rank} exited with code {code} before round {rep} ended"
                ) from None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"round {rep}: the trial processes were not {kind} in time"
                ) from None
            continue
        if what == "error":
            raise RuntimeError(f"trial process {rank} failed:\n{value}")
        got.append((rank, value, memory))
    return got


def _time_sharing(
    k: int,
    *,
    device: str,
    variant: str,
    image_size: int,
    batch_size: int,
    n_per_class: int,
    epochs: int,
    reps: int,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """``k`` trial processes fitting at once on ``device``: wall seconds per round.

    Each process holds its own model, data and (on CUDA) context, as Ray Tune's trial workers
    do under ``resources.gpu: 1/k``; the round's wall time runs from the barrier that releases
    them all to the last one's end. Spawned processes (CUDA cannot be forked).

    Returns:
        ``{"wall": [seconds per round], "max_memory_bytes": [per process]}``.

    Raises:
        RuntimeError: when a process fails or dies (its traceback or exit code in the message),
            or a round takes longer than ``timeout_s``; the other processes are stopped.
    """
    spec = {
        "device": device,
        "variant": variant,
        "image_size": image_size,
        "batch_size": batch_size,
        "n_per_class": n_per_class,
        "epochs": epochs,
        "reps": reps,
        "timeout_s": timeout_s,
    }
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(k + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_sharing_worker, args=(rank, spec, barrier, results), daemon=True)
        for rank in range(k)
    ]
    here = str(Path(__file__).resolve().parent)
    added = here not in sys.path
    if added:  # a spawned child imports this module by name, on the sys.path it inherits
        sys.path.insert(0, here)
    try:
        for proc in procs:
            proc.start()
    finally:
        if added:
            sys.path.remove(here)
    walls: list[float] = []
    memory = [0] * k
    ok = False
    try:
        for rep in range(reps):
            _collect(results, procs, "ready", rep, time.monotonic() + timeout_s)
            barrier.wait(timeout=timeout_s)
            start = time.time()
            done = _collect(results, procs, "done", rep, time.monotonic() + timeout_s)
            walls.append(max(end for _, end, _ in done) - start)
            for rank, _, mem in done:
                memory[rank] = max(memory[rank], mem)
        ok = True
    finally:
        if not ok:
            barrier.abort()
        for proc in procs:
            proc.join(timeout=60 if ok else 5)
            if proc.is_alive():
                proc.terminate()
    return {"wall": walls, "max_memory_bytes": memory}


def _sharing_rows(
    k: int, args: argparse.Namespace, size: int, epochs: int
) -> tuple[list[list[Any]], dict[str, Any]]:
    """One trial alone against ``k`` at once on the GPU: rows and metrics."""
    opts = {
        "device": "cuda",
        "variant": args.sharing_variant,
        "image_size": size,
        "batch_size": args.batch_size,
        "n_per_class": args.n_per_class,
        "epochs": epochs,
        "reps": 3,
    }
    alone = _time_sharing(1, **opts)
    shared = _time_sharing(k, **opts)
    one, many = common.median(alone["wall"]), common.median(shared["wall"])
    speedup = k * one / many
    gib = 2**30
    rows = [
        ["1 trial alone", one, 1.0, 1.0, alone["max_memory_bytes"][0] / gib],
        [f"{k} trials at once", many, many / one, speedup, max(shared["max_memory_bytes"]) / gib],
    ]
    metrics = {"sharing_k": k, "sharing_speedup": speedup, "sharing_wall_ratio": many / one}
    return rows, metrics


def run(args: argparse.Namespace) -> common.Result:
    """Check on CPU, time on CUDA."""
    common.setup_torch(args.threads)
    cuda = torch.cuda.is_available()
    size = args.image_size or (32 if args.quick or not cuda else 64)
    seed_everything(0)
    template = build_model("resnet18", 3, in_channels=3)
    notes = ["variants are Learner(..., amp=, channels_last=, compile=) options"]
    metrics: dict[str, Any] = {"cuda": cuda}
    targets: list[common.Target] = []
    if not cuda:
        columns, rows = _cpu_table(template, args, metrics, targets, notes)
    else:
        columns, rows = _cuda_table(template, args, size, metrics, notes)
    return common.Result(
        benchmark="accelerator",
        item=8,
        title="Accelerator path: bf16 autocast, channels_last, torch.compile",
        columns=columns,
        rows=rows,
        metrics=metrics,
        targets=targets,
        config={"arch": "resnet18", "dataset": "shapes", **_data_config(args, size, cuda)},
        notes=notes,
    )


def _cpu_table(
    template: torch.nn.Module,
    args: argparse.Namespace,
    metrics: dict[str, Any],
    targets: list[common.Target],
    notes: list[str],
) -> tuple[list[str], list[list[Any]]]:
    """No CUDA: the CPU check's columns and rows; its metrics, target and note are added to
    ``metrics``, ``targets`` and ``notes``."""
    rows = _check_cpu(template, args.compile_check)
    columns = [
        "variant",
        "first batch loss (CPU)",
        "relative diff vs fp32",
        "epoch train_loss",
        "epoch valid_loss",
        "check",
    ]
    failed = [row[0] for row in rows if row[1] != "-" and row[-1] != "ok"]
    metrics["cpu_checks_ok"] = not failed
    targets.append(
        common.Target(
            "CPU check: variants whose first-batch loss is off fp32's by > 2% or not finite",
            float(len(failed)),
            "<=",
            0,
            note=", ".join(failed) or "every variant checked agrees",
        )
    )
    notes.append(
        "no CUDA: skipped timing and GPU sharing (each variant trained one short epoch on the "
        "CPU, at 32 px, batch 64, 30 images per class, whatever the CUDA options say); check: "
        "the first batch's loss within 2% of fp32's (same weights, same batch), every loss "
        "finite. The epoch's losses part after Adam's first step and are not compared."
    )
    metrics["timing"] = "no CUDA: skipped timing"
    return columns, rows


def _cuda_table(
    template: torch.nn.Module,
    args: argparse.Namespace,
    size: int,
    metrics: dict[str, Any],
    notes: list[str],
) -> tuple[list[str], list[list[Any]]]:
    """CUDA: the variants' timing (then GPU sharing, unless ``--sharing`` is below 2): columns
    and rows; the speedups, the device and the sharing figures go to ``metrics``, the sharing
    table to ``notes``."""
    dls = _shapes(size, args.batch_size, args.n_per_class, "cuda")
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
    if args.sharing > 1:
        share_rows, share_metrics = _sharing_rows(args.sharing, args, size, epochs)
        metrics.update(share_metrics)
        notes.append(_sharing_note(args, epochs, share_rows))
    return columns, rows


def _sharing_note(args: argparse.Namespace, epochs: int, share_rows: list[list[Any]]) -> str:
    """The GPU sharing table (one trial process alone against ``--sharing`` at once), as a note."""
    return (
        f"GPU sharing ({args.sharing_variant}): one trial process alone against "
        f"{args.sharing} at once on the GPU, each with its own CUDA context, the same "
        f"{epochs}-epoch fit; median of 3 rounds\n\n"
        + common.table(
            [
                "trials on the GPU",
                "wall s",
                "wall vs alone",
                "trials per unit time vs alone",
                "peak GiB per trial",
            ],
            share_rows,
        )
    )


def _data_config(args: argparse.Namespace, size: int, cuda: bool) -> dict[str, Any]:
    """The data the figures come from: the CUDA options when timed, else the CPU check's."""
    if cuda:
        return {"image_size": size, "batch_size": args.batch_size, "n_per_class": args.n_per_class}
    return {
        "image_size": CPU_CHECK["image_size"],
        "batch_size": CPU_CHECK["batch_size"],
        "n_per_class": CPU_CHECK["n_per_class"],
        "device": "cpu",
    }


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile-check", action="store_true", help="also compile on the CPU (about a minute)"
    )
    p.add_argument(
        "--image-size", type=common.positive_int, default=None, help="CUDA: pixels (default 64)"
    )
    p.add_argument(
        "--batch-size", type=common.positive_int, default=64, help="CUDA: batch size (default 64)"
    )
    p.add_argument(
        "--n-per-class",
        type=common.positive_int,
        default=200,
        help="CUDA timing: images per class (default 200)",
    )
    p.add_argument(
        "--sharing",
        type=int,
        default=4,
        help="CUDA: k trials sharing the GPU (default 4; 0 or 1 skips)",
    )
    p.add_argument(
        "--sharing-variant",
        default="bf16",
        choices=list(VARIANTS),
        help="the variant the sharing trials train (default bf16)",
    )


if __name__ == "__main__":
    common.main(run, __doc__, reps="CUDA timing only: default 5, quick 2", extra=_options)
