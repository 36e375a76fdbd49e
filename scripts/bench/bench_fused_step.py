"""The optimizer's fused step: ``Learner.fit`` with PyTorch's fused AdamW against its default.

Since 2026-12-05 the Learner's optimizer takes PyTorch's fused step (``fused=True``) wherever
the parameters allow it (``trainers._training.make_optimizer``). This benchmark measures what
that buys: the same Learner, model, data, seed and one-cycle fit, once with the fused step and
once with PyTorch's default implementation (a Python loop over each parameter group's tensors),
interleaved, on two models: ``simple_cnn`` on digits at 16 px (``digits.yaml``'s trial) and
``resnet18`` with fastai's head at 32 px (11.7M parameters, ``shapes_resnet.yaml``'s size). It
also times the optimizer step alone on the same parameters, and compares the two sides' losses
(the same maths; the float rounding differs) with a control: the default step's fit from
weights moved one float32 ulp up, which shows how far such a rounding difference carries in
this fit (Adam's early steps take the sign of near-zero gradients, so a deep network's curves
part within a few steps whatever perturbs them: another thread count, CPU or kernel).

A third side, since 2026-12-06, runs the fused step the way PyTorch's ``step()`` runs it, one
pass per parameter group, where the Learner now steps the groups that share every setting as
one (``trainers._training.optimizer_step``): what merging the groups buys, with a check that the
two sides' losses are the same bit for bit.

No target: the issue asks for none; the figures are in the README.

Run: ``python scripts/bench/bench_fused_step.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from collections.abc import Iterator
from typing import Any

import _common as common
import torch

from trainers import Learner, _loop, build_model, make_dataloaders, seed_everything

MODELS = (("simple_cnn", 16, 2, 11), ("resnet18", 32, 1, 3))  # arch, px, epochs/fit, reps


def _step_ms(model: torch.nn.Module, fused: bool, steps: int) -> float:
    """Milliseconds per AdamW step over ``model``'s parameters, gradients already set."""
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True if fused else None)
    for _ in range(3):
        opt.step()
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps * 1000


@contextlib.contextmanager
def _per_group_step() -> Iterator[None]:
    """The fit loop calls PyTorch's ``opt.step()`` itself: one pass per parameter group, as
    lrsweep did before 2026-12-06."""
    merged = _loop.optimizer_step
    _loop.optimizer_step = lambda opt: opt.step()
    try:
        yield
    finally:
        _loop.optimizer_step = merged


def _fit(
    name: str,
    template: torch.nn.Module,
    dls: Any,
    start_state: Any,
    epochs: int,
    losses: dict[str, list[float]],
    *,
    ulp_up: bool = False,
) -> common.Measure:
    """One timed one-cycle fit of side ``name`` from ``template``; its losses go to ``losses``."""
    dls.load_state_dict(start_state)
    seed_everything(0)
    model = copy.deepcopy(template)
    if ulp_up:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
    fused = name != "default"
    fused_step = None if fused else False  # the Learner's default, PyTorch's
    learn = Learner(model, dls, progress=False, device="cpu", fused_step=fused_step)
    expected = True if fused else None
    assert all(group["fused"] is expected for group in learn.opt.param_groups)
    per_group = _per_group_step() if name == "per group" else contextlib.nullcontext()
    with per_group, common.Stopwatch() as sw:
        learn.fit_one_cycle(epochs, 3e-3)
    losses[name + (" ulp" if ulp_up else "")] = list(learn.recorder.losses)
    return sw.measure


def _measure(arch: str, size: int, epochs: int, reps: int) -> dict[str, Any]:
    """Interleaved default / fused / per-group fits of one model, then the optimizer step
    alone (timed apart) and the control fit (untimed)."""
    dls = make_dataloaders("digits", image_size=size, batch_size=64, seed=42)
    seed_everything(0)
    template = build_model(arch, dls.n_classes, in_channels=dls.in_channels)
    start_state = dls.state_dict()
    losses: dict[str, list[float]] = {}

    def fit(name: str, *, ulp_up: bool = False) -> common.Measure:
        return _fit(name, template, dls, start_state, epochs, losses, ulp_up=ulp_up)

    cases = {
        "default": lambda: fit("default"),
        "fused": lambda: fit("fused"),
        "per group": lambda: fit("per group"),
    }
    timings = common.interleaved(cases, reps=reps)
    n_groups = len(Learner(copy.deepcopy(template), dls, progress=False).opt.param_groups)
    steps = 5 if arch == "resnet18" else 50
    step = {name: _step_ms(template, name == "fused", steps) for name in ("default", "fused")}
    fit("default", ulp_up=True)  # the control, untimed
    return {
        "arch": arch,
        "size": size,
        "epochs": epochs,
        "params": sum(p.numel() for p in template.parameters()),
        **_figures(timings),
        "groups": n_groups,
        "merged_same_losses": losses["per group"] == losses["fused"],
        "step_ms": step,
        "first_steps_diff": _first_diff(losses, "fused", "default"),
        "control_diff": _first_diff(losses, "default ulp", "default"),
    }


def _figures(timings: common.Timings) -> dict[str, Any]:
    """The sides' fit times and the speedups: default / fused, per group / fused."""
    wall = timings.wall
    return {
        "default_s": wall["default"],
        "fused_s": wall["fused"],
        "per_group_s": wall["per group"],
        "speedup": common.median(common.paired_ratios(wall["default"], wall["fused"])),
        "merged_speedup": common.median(common.paired_ratios(wall["per group"], wall["fused"])),
    }


def _first_diff(losses: dict[str, list[float]], a: str, b: str) -> float:
    """The largest loss difference of sides ``a`` and ``b`` over their first 20 steps."""
    return common.max_diff(losses[a][:20], losses[b][:20])


def run(args: argparse.Namespace) -> common.Result:
    """Measure and return the result."""
    common.setup_torch(args.threads)
    found = []
    for arch, size, epochs, model_reps in MODELS[:1] if args.quick else MODELS:
        reps = args.reps or (1 if args.quick else model_reps)
        common.log(f"fused step: {arch} at {size} px, {reps} reps x {epochs} epoch(s)")
        found.append(_measure(arch, size, epochs, reps))
    return common.Result(
        benchmark="fused_step",
        item=0,
        title="Learner.fit with PyTorch's fused AdamW step vs its default step",
        columns=[
            "model",
            "default s / fit",
            "fused s / fit",
            "fit speedup",
            "default ms / step",
            "fused ms / step",
            "max loss diff, first 20 steps",
            "control: default, weights 1 ulp up",
            "fused, per group s / fit",
            "fit speedup, groups merged",
            "merged = per group, bit for bit",
        ],
        rows=[_row(m) for m in found],
        metrics={f"{m['arch']}_speedup": m["speedup"] for m in found}
        | {f"{m['arch']}_merged_speedup": m["merged_speedup"] for m in found}
        | {"models": found},
        config={"threads": args.threads, "batch_size": 64, "dataset": "digits"},
        notes=_notes(found),
    )


def _row(m: dict[str, Any]) -> list[Any]:
    """One model's row of the table."""
    return [
        f"{m['arch']} {m['size']} px ({m['params'] / 1e6:.2g}M params), "
        f"{m['epochs']} epoch(s), {len(m['fused_s'])} reps",
        common.median(m["default_s"]),
        common.median(m["fused_s"]),
        m["speedup"],
        m["step_ms"]["default"],
        m["step_ms"]["fused"],
        m["first_steps_diff"],
        m["control_diff"],
        common.median(m["per_group_s"]),
        m["merged_speedup"],
        "yes" if m["merged_same_losses"] else "NO",
    ]


def _notes(found: list[dict[str, Any]]) -> list[str]:
    return [
        "fit speedup = median over repetitions of (default time / fused time), fits run "
        "back to back; the step columns time AdamW's step alone on the model's parameters.",
        "both sides do the same maths; their loss difference is float rounding, which "
        "grows over a fit as any perturbation does: the control column is the default "
        "step's own fit from weights one float32 ulp up, against the default's.",
        "groups merged: the fused side steps the parameter groups that share every setting "
        "as one (the Learner's default since 2026-12-06); the per-group side runs "
        "PyTorch's step() as it is, one pass per group ("
        + ", ".join(f"{m['arch']}: {m['groups']} groups" for m in found)
        + ", fastai's wd_bn_bias=False); speedup = median of (per-group time / fused time).",
    ]


if __name__ == "__main__":
    common.main(run, __doc__, reps="default 11 for simple_cnn, 3 for resnet18; quick 1")
