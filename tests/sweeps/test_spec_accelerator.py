"""``task.accelerator`` in the spec, its way into each trial's Learner, and fractional GPUs.

Nothing here needs a GPU: the Ray Tune resource request of ``resources.gpu: 0.25`` is read from
the plan the sweep would hand to Tune, and the preflight counts trial slots on a described node.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from ray import tune
from ray.tune.trainable.function_trainable import wrap_function

from sweeps import _ray
from sweeps.preflight import check_local_resources
from sweeps.progress import SweepProgress
from sweeps.run import _tuner_plan
from sweeps.spec import SpecError, load_spec
from sweeps.trial import TrialContext, _dataloaders, _learner

BASE: dict[str, Any] = {
    "name": "tiny",
    "task": {"dataset": {"name": "shapes", "options": {"n_per_class": 10}}, "image_size": 8},
    "strategies": [{"kind": "lr_finder"}],
}


def spec_with(accelerator: dict[str, Any] | None = None, **sections: Any) -> Any:
    data = copy.deepcopy(BASE)
    if accelerator is not None:
        data["task"]["accelerator"] = accelerator
    data.update(sections)
    return load_spec(data)


# ----------------------------------------------------------------------------- the section
def test_accelerator_defaults_to_float32_uncompiled_and_resolves_to_json() -> None:
    spec = spec_with()
    assert spec.resolved()["task"]["accelerator"] == {
        "amp": None,
        "channels_last": False,
        "compile": False,
        "fused_step": None,
    }
    assert load_spec(spec.resolved()) == spec


@pytest.mark.parametrize(
    "accelerator",
    [
        {"amp": "bf16"},
        {"amp": "bf16", "channels_last": True, "compile": True},
        {"compile": "default"},
        {"compile": "reduce-overhead"},
        {"compile": "max-autotune", "channels_last": True},
    ],
)
def test_valid_accelerator_settings_are_kept(accelerator: dict[str, Any]) -> None:
    resolved = spec_with(accelerator).task.accelerator.model_dump()
    assert {k: resolved[k] for k in accelerator} == accelerator


@pytest.mark.parametrize("off", [False, None])
def test_amp_false_is_float32_as_null_is(off: bool | None) -> None:
    assert spec_with({"amp": off}).task.accelerator.amp is None


def test_accelerator_can_be_set_from_the_command_line() -> None:
    spec = load_spec(
        BASE, overrides=["task.accelerator.amp=bf16", "task.accelerator.compile=reduce-overhead"]
    )
    assert (spec.task.accelerator.amp, spec.task.accelerator.compile) == ("bf16", "reduce-overhead")


MODES = r"\(default, reduce-overhead, max-autotune\)"


@pytest.mark.parametrize(
    ("accelerator", "message"),
    [
        ({"amp": "fp8"}, r"task\.accelerator\.amp: unknown value 'fp8' \(accepted: bf16, fp16\)"),
        ({"amp": 16}, r"task\.accelerator\.amp: unknown value 16 \(accepted: bf16, fp16\)"),
        (
            {"amp": True},
            r"task\.accelerator\.amp: true names no precision: use bf16, fp16, or false / null",
        ),
        (
            {"channels_last": "yes"},
            r"task\.accelerator\.channels_last: must be true or false, but got 'yes'",
        ),
        (
            {"compile": "fast"},
            rf"task\.accelerator\.compile: must be true, false or a torch\.compile mode {MODES}, "
            r"but got 'fast'",
        ),
        ({"compile": 1}, r"task\.accelerator\.compile: must be true, false .*, but got 1\."),
        ({"compile": None}, r"task\.accelerator\.compile: must be true, false .*, but got None"),
        (
            {"jit": True},
            r"task\.accelerator\.jit: unknown key \(accepted: amp, channels_last, compile, "
            r"fused_step\)",
        ),
        (5, r"task\.accelerator: must be a mapping, but got 5"),
    ],
)
def test_bad_accelerator_is_refused_naming_its_field(accelerator: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec_with(accelerator)


def test_fp16_without_a_gpu_is_refused_before_any_trial_starts() -> None:
    with pytest.raises(
        SpecError,
        match=r"task\.accelerator\.amp: fp16 needs a CUDA GPU per trial .* resources\.gpu is 0; "
        r"use amp: bf16",
    ):
        spec_with({"amp": "fp16"})
    assert spec_with({"amp": "fp16"}, resources={"gpu": 0.25}).task.accelerator.amp == "fp16"


# ----------------------------------------------------------------------------- trials
def test_each_trial_learner_gets_the_spec_accelerator_options() -> None:
    spec = spec_with({"amp": "bf16", "channels_last": True, "compile": "max-autotune"})
    learn = _learner(spec.task, _dataloaders(spec.task, seed=0), seed=0)
    assert learn.accelerator.amp == "bf16"
    assert learn.accelerator.channels_last
    assert learn.accelerator.compile == {"mode": "max-autotune"}
    assert learn.forward_model is not learn.model  # compiled lazily, at the first batch
    assert all(group["fused"] is True for group in learn.opt.param_groups)  # the default


def test_a_trial_learner_takes_pytorchs_default_step_when_the_spec_says_so() -> None:
    spec = spec_with({"fused_step": False})
    learn = _learner(spec.task, _dataloaders(spec.task, seed=0), seed=0)
    assert all(group["fused"] is None for group in learn.opt.param_groups)


def test_default_trial_learner_is_float32_and_uncompiled() -> None:
    spec = spec_with()
    learn = _learner(spec.task, _dataloaders(spec.task, seed=0), seed=0)
    assert learn.accelerator.amp is None and not learn.accelerator.channels_last
    assert learn.forward_model is learn.model


def test_trial_seeds_share_no_random_stream() -> None:
    """Seed 0's augmentation was seed 1's shuffle order (``seed + 1``): the seeds were not apart."""
    spec = spec_with()
    streams: list[bytes] = []
    for seed in (0, 1, 2):
        state = _dataloaders(spec.task, seed=seed).train.state_dict()
        streams += [state["order"].numpy().tobytes(), state["augment"].numpy().tobytes()]
        streams.append(torch.Generator().manual_seed(seed).get_state().numpy().tobytes())
    assert len(set(streams)) == len(streams)


def test_a_workers_next_trial_reuses_its_data_reseeded_as_if_built_anew() -> None:
    """Tune reuses a worker for the sweep's next trial: the images are not loaded again, and
    the trial still draws its own seed's order and augmentation."""
    from sweeps import trial

    task = spec_with(task={**BASE["task"], "augment": {"rotate": 10}}).task
    first = _dataloaders(task, seed=0)
    batches_0 = [(x.clone(), y.clone()) for x, y in first.train]
    again = _dataloaders(task, seed=1)
    assert again is first  # no second make_dataloaders
    trial._DATA_CACHE.clear()
    fresh = _dataloaders(task, seed=1)
    assert fresh is not first
    for (xa, ya), (xb, yb) in zip(again.train, fresh.train, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    back = _dataloaders(task, seed=0)
    assert all(torch.equal(x, xb) for (x, _), (xb, _) in zip(back.train, batches_0, strict=True))
    other = spec_with(task={**BASE["task"], "image_size": 12}).task
    assert _dataloaders(other, seed=0).image_size == 12  # another task builds its own


def test_data_whose_augmentation_was_left_switched_is_built_anew() -> None:
    task = spec_with().task
    first = _dataloaders(task, seed=0)
    first.augment = first.train.augment = "switched on by a failed step"
    again = _dataloaders(task, seed=0)
    assert again is not first and again.augment is None


# ----------------------------------------------------------------------------- fractional GPUs
def _tune_request(spec: Any, tmp_path: Path) -> dict[str, float]:
    """The resources Ray Tune would reserve for one trial of ``spec``."""
    context = TrialContext(
        spec=spec, tracking_uri="", experiment_id="0", parent_run_id="", sweep_id="s"
    )
    plan = _tuner_plan(spec, context, tmp_path, SweepProgress(live=False))
    trainable = wrap_function(tune.with_resources(lambda config: None, _ray._resources(plan)))
    request = trainable.default_resource_request({})
    assert request is not None
    return dict(request.required_resources)


@pytest.mark.parametrize("node_labels", [{}, {"gpu": "h100"}])
def test_a_fractional_gpu_reaches_ray_tune(node_labels: dict[str, str], tmp_path: Path) -> None:
    spec = spec_with(resources={"cpu": 1, "gpu": 0.25, "node_labels": node_labels})
    request = _tune_request(spec, tmp_path)
    assert request["GPU"] == 0.25
    assert request["CPU"] == 1.0


def test_four_trials_share_one_gpu() -> None:
    spec = spec_with({"amp": "bf16"}, resources={"cpu": 1, "gpu": 0.25})
    assert check_local_resources(spec, num_cpus=8, num_gpus=1) == 4
    assert check_local_resources(spec, num_cpus=2, num_gpus=1) == 2  # then CPUs bound it
