"""The sweep spec: validation messages, safe YAML, --set overrides, redaction and the suite."""

from __future__ import annotations

import copy
import json
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from sweeps.spec import (
    MAXIMISED_METRICS,
    REPORTED_METRICS,
    EarlyStopSpec,
    SpecError,
    apply_overrides,
    load_spec,
    load_suite,
    redact,
)

SPECS = Path(__file__).resolve().parents[2] / "sweeps" / "specs"
DELETE = object()
BASE_LR = {"min": 0.001, "max": 0.1, "points": 3}

BASE: dict[str, Any] = {
    "name": "tiny",
    "task": {"dataset": {"name": "digits"}, "epochs": 3},
    "seeds": [0, 1],
    "strategies": [
        {"kind": "lr_finder", "suggest": ["valley", "steep"]},
        {"kind": "grid", "lr": {"min": 1.0e-4, "max": 1.0, "points": 5}},
        {"kind": "optuna", "lr": {"min": 1.0e-4, "max": 1.0}, "trials": 4, "startup_trials": 1},
        {"kind": "random", "lr": {"min": 1.0e-4, "max": 1.0}, "trials": 4},
        {"kind": "recipe"},
    ],
}


def _with(changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of BASE with dotted paths set (or removed with DELETE); independent of overrides."""
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = data
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return data


BAD_SPECS = [
    ({"colour": "red"}, r"colour: unknown key \(accepted: name, task, seeds, strategies,"),
    ({"seed": [0]}, r"seed: unknown key, did you mean 'seeds'\? \(accepted: name, task,"),
    (
        {"task.epoch": 3},
        r"task\.epoch: unknown key, did you mean 'epochs'\? \(accepted: dataset, model, ",
    ),
    ({"name": DELETE}, r"name: is required\."),
    ({"name": "my sweep!"}, r"name: must match .*, but got 'my sweep!'"),
    (
        {"tracking": {"experiment": "team lr"}},
        r"tracking\.experiment: must match \S+ \(letters, digits, _, \., - and / only: no "
        r"spaces\), but got 'team lr'",
    ),
    (
        {"name": "my sweep"},
        r"name: must match \S+ \(letters, digits, _, \. and - only: no spaces\)",
    ),
    (
        {"task.dataset.name": "imagenet"},
        r"task\.dataset\.name: unknown value 'imagenet' \(accepted: digits, shapes, image_folder, "
        r"mnist, fashion_mnist, cifar10\)",
    ),
    ({"task.dataset.name": "image_folder"}, r"task\.dataset\.path: is required when name is"),
    (
        {"task.dataset": {"name": "image_folder", "path": "/no/such/folder"}},
        r"task\.dataset\.path: folder '/no/such/folder' does not exist",
    ),
    ({"task.dataset.valid_pct": 0}, r"task\.dataset\.valid_pct: must be above 0\.0, but got 0"),
    (
        {"task.dataset.valid_pct": 1.5},
        r"task\.dataset\.valid_pct: must be below 1\.0, but got 1\.5",
    ),
    (
        {"task.dataset.seed": 2**32},
        r"task\.dataset\.seed: must be at most 4294967295, but got 4294967296",
    ),
    (
        {"task.dataset": {"name": "shapes", "options": {"n_clases": 6}}},
        r"task\.dataset\.options\.n_clases: unknown option for dataset 'shapes' \(accepted: "
        r"n_per_class, n_classes\)\.$",
    ),
    (
        {"task.dataset.options": {"n_classes": 6, "colour": 1}},
        r"task\.dataset\.options\.n_classes: unknown option for dataset 'digits' \(accepted: "
        r"channels\); also refused: colour\.$",
    ),
    (
        {"task.dataset.options": {"seed": 1}},
        r"task\.dataset\.options\.seed: is not an option; set task\.dataset\.seed instead",
    ),
    (
        {"task.dataset": {"name": "cifar10", "options": {"channels": 1}}},
        r"task\.dataset\.options\.channels: unknown option for dataset 'cifar10' \(accepted: "
        r"download, verify_checksums\)",
    ),
    ({"task.model": {"arch": "vgg16"}}, r"task\.model\.arch: unknown value 'vgg16' \(accepted: "),
    (
        {"task.model": {"arch": "resnet18", "pretrained": "/no/weights.pt"}},
        r"task\.model\.pretrained: weights file '/no/weights\.pt' does not exist",
    ),
    ({"task.epochs": 0}, r"task\.epochs: must be at least 1, but got 0\."),
    ({"task.epochs": "three"}, r"task\.epochs: must be a whole number, but got 'three'"),
    ({"task.epochs": True}, r"task\.epochs: must be a whole number, but got True"),
    ({"task.epochs": 2.5}, r"task\.epochs: must be a whole number, but got 2\.5"),
    ({"task.image_size": 0}, r"task\.image_size: must be at least 1, but got 0"),
    ({"task.batch_size": -8}, r"task\.batch_size: must be at least 1, but got -8"),
    ({"task.wd": "lots"}, r"task\.wd: must be a number, but got 'lots'"),
    ({"task.wd": float("nan")}, r"task\.wd: must be a finite number, but got nan"),
    ({"task.wd_bn_bias": "yes"}, r"task\.wd_bn_bias: must be true or false, but got 'yes'"),
    (
        {"task.accelerator": {"fused_step": "auto"}},
        r"task\.accelerator\.fused_step: must be null \(fused where the parameters allow it\), "
        r"true or false, but got 'auto'",
    ),
    (
        {"task.schedule": {"kind": "cosine"}},
        r"task\.schedule\.kind: unknown kind 'cosine' "
        r"\(accepted: one_cycle, sgdr, flat_cos, constant\)",
    ),
    (
        {"task.schedule": {"kind": "sgdr", "pct_start": 0.3}},
        r"task\.schedule\.pct_start: unknown key \(accepted: kind, cycle_len, cycle_mult\)",
    ),
    ({"task.schedule": {"kind": "one_cycle", "pct_start": 1.0}}, r"pct_start: must be below 1\.0"),
    (
        {"task.fine_tune": {"freeze_epochs": 3}},
        r"task\.fine_tune\.freeze_epochs: must be below task\.epochs=3",
    ),
    (
        {"task.augment": {"shear": 5}},
        r"task\.augment\.shear: unknown key \(accepted: flip, rotate, zoom, jitter\)",
    ),
    ({"task.augment": {"zoom": 0.5}}, r"task\.augment\.zoom: must be at least 1\.0, but got 0\.5"),
    ({"task": 5}, r"task: must be a mapping, but got 5"),
    ({"seeds": []}, r"seeds: must have at least 1 item"),
    (
        {"seeds": 3},
        r"seeds: must be a list of the seeds to run, e\.g\. \[0, 1, 2\], not a number, but got "
        r"3; for one seed write \[3\]",
    ),
    ({"seeds": [1, 2, 1]}, r"seeds: each seed may appear once, but \[1\] repeat"),
    ({"seeds": [0, -1]}, r"seeds\.1: must be at least 0, but got -1"),
    ({"seeds": [2**32]}, r"seeds\.0: must be at most 4294967295, but got 4294967296"),
    ({"strategies.2.seed": -1}, r"strategies\.2\.seed: must be at least 0, but got -1"),
    (
        {"strategies.2.seed": 2**32},
        r"strategies\.2\.seed: must be at most 4294967295, but got 4294967296",
    ),
    (
        {"strategies.2.seed": 2**32 - 1},
        r"strategies\.2\.seed: must be from 0 to 4294967294 with sweep seeds up to 1: each "
        r"study's sampler seed is seed \+ s and must lie in \[0, 2\*\*32 - 1\] = "
        r"\[0, 4294967295\], but got 4294967295 \(4294967295 \+ 1 = 4294967296\)",
    ),
    (
        {"seeds": [0, 2**32 - 10], "strategies.2.seed": 10},
        r"strategies\.2\.seed: must be from 0 to 9 with sweep seeds up to 4294967286",
    ),
    ({"strategies": []}, r"strategies: must have at least 1 item"),
    ({"strategies": {"kind": "grid"}}, r"strategies: must be a list"),
    (  # 1e-3 and the next two floats up hold no 5 distinct points: refused at load, not at plan
        {
            "strategies": [
                {"kind": "grid", "lr": {"min": 1e-3, "max": 0.0010000000000000002, "points": 5}}
            ]
        },
        r"strategies\.0\.lr: points=5 log-spaced values .* are not all distinct",
    ),
    (
        {"strategies.0.kind": "bayes"},
        r"strategies\.0\.kind: unknown kind 'bayes' \(accepted: lr_finder, grid, optuna, "
        r"random, recipe, fixed\)",
    ),
    ({"strategies.0.kind": DELETE}, r"strategies\.0\.kind: is required \(accepted: lr_finder,"),
    (
        {"strategies.1.lr": {"min": 1.0, "max": 0.1, "points": 5}},
        r"strategies\.1\.lr: min must be below max, but got min=1\.0 max=0\.1\.",
    ),
    ({"strategies.1.lr.min": 0}, r"strategies\.1\.lr\.min: must be above 0\.0, but got 0"),
    ({"strategies.1.lr.points": 5000}, r"strategies\.1\.lr\.points: must be at most 1000"),
    ({"strategies.2.trials": 20000}, r"strategies\.2\.trials: must be at most 10000"),
    ({"strategies.3.trials": 0}, r"strategies\.3\.trials: must be at least 1, but got 0"),
    (
        {"strategies.2.sampler": "bohb"},
        r"strategies\.2\.sampler: unknown value 'bohb' \(accepted: tpe, random, qmc, gp, cmaes\)",
    ),
    (
        {"strategies.0.suggest": ["valley", "cliff"]},
        r"strategies\.0\.suggest\.1: unknown value 'cliff' \(accepted: valley, steep, minimum, "
        r"slide\)",
    ),
    ({"strategies.0.suggest": []}, r"strategies\.0\.suggest: must have at least 1 item"),
    (
        {"strategies.0.suggest": ["steep", "steep"]},
        r"strategies\.0\.suggest: each rule may appear once, but steep repeats",
    ),
    (
        {"strategies.0.start_lr": 1.0, "strategies.0.end_lr": 0.1},
        r"strategies\.0: start_lr must be below end_lr",
    ),
    (
        {"strategies.4": {"kind": "grid", "lr": {"min": 0.001, "max": 0.1, "points": 3}}},
        r"strategies: strategies\.1 and strategies\.4 are both named 'grid'; give each arm",
    ),
    ({"strategies.4.name": "has space"}, r"strategies\.4\.name: must match"),
    ({"early_stop": {"patience": 0}}, r"early_stop\.patience: must be at least 1, but got 0"),
    ({"early_stop": {"grace_epochs": -1}}, r"early_stop\.grace_epochs: must be at least 0"),
    ({"early_stop": {"min_delta": -0.1}}, r"early_stop\.min_delta: must be at least 0\.0"),
    (
        {"early_stop": {"metric": "val_loss"}},
        r"early_stop\.metric: unknown value 'val_loss' \(accepted: valid_loss, train_loss, "
        r"error_rate, accuracy\)",
    ),
    ({"early_stop": {"mode": "lowest"}}, r"early_stop\.mode: unknown value 'lowest' \(accepted: "),
    ({"divergence": {"factor": 1.0}}, r"divergence\.factor: must be above 1\.0, but got 1\.0"),
    (
        {"resources": {"gpu": 1.5}},
        r"resources\.gpu: must be 0, a fraction in \(0, 1\] or a whole number of GPUs, "
        r"but got 1\.5",
    ),
    ({"resources": {"gpu": -1}}, r"resources\.gpu: must be at least 0\.0, but got -1"),
    ({"resources": {"cpu": 0}}, r"resources\.cpu: must be above 0\.0, but got 0"),
    ({"resources": {"max_concurrent": 0}}, r"resources\.max_concurrent: must be at least 1"),
    ({"resources": {"custom": {"GPU": 1}}}, r"resources\.custom: 'GPU' is one of Ray's own"),
    ({"failure": {"max_failures": -1}}, r"failure\.max_failures: must be at least 0"),
    ({"storage": {"shared": True}}, r"storage\.shared: true needs storage\.path"),
    ({"storage": {"path": "ftp://host/x"}}, r"storage\.path: unknown scheme 'ftp' \(accepted: s3,"),
    (
        {"tracking": {"uri": "https://alice:hunter2@mlflow.example:5000"}},
        r"tracking\.uri: must not contain a password; set MLFLOW_TRACKING_USERNAME",
    ),
    (
        {"tracking": {"uri": "https://tok3n@mlflow.example:5000"}},
        r"tracking\.uri: must not contain credentials \(a user or a token in the URI\); set "
        r"MLFLOW_TRACKING_TOKEN",
    ),
    (
        {"tracking": {"uri": "https://mlflow.example:5000/?token=tok3n"}},
        r"tracking\.uri: must not contain credentials",
    ),
    (
        {"tracking": {"checkpoints": "some"}},
        r"tracking\.checkpoints: unknown value 'some' \(accepted: all, best, none\)",
    ),
    (
        {"task.progressive_resizing": [{"size": 32, "epochs": 1}], "strategies.4": DELETE},
        r"task\.progressive_resizing\.0\.size: must be below task\.image_size=32",
    ),
    (
        {"task.progressive_resizing": [{"size": 8, "epochs": 3}], "strategies.4": DELETE},
        r"task\.progressive_resizing: its stages take 3 epochs, but task\.epochs=3: leave at "
        r"least one epoch at task\.image_size",
    ),
    (
        {"task.progressive_resizing": [{"size": 8, "epochs": 1}]},
        r"task\.progressive_resizing: does not apply to recipe arms \(strategies\.4\)",
    ),
    ({"task.tta": True}, r"task\.tta: needs task\.augment"),
    # a whole number beyond any float: too big, as 1e400 is, not "not a number"
    ({"strategies.1.lr.max": 10**400}, r"strategies\.1\.lr\.max: must be a finite number, "),
    ({"task.tta": {"n": 0}, "task.augment": "light"}, r"task\.tta\.n: must be at least 1"),
    # a search arm given rates, not a range: "must be a mapping" alone, or "at least 2" alone
    (
        {"strategies.1.lr.points": 1},
        r"strategies\.1\.lr\.points: must be at least 2 \(a grid's points run from min to max, "
        r"both included\), but got 1; for one given learning rate use an arm "
        r"\{kind: fixed, lr: RATE\}\.$",
    ),
    (
        {"strategies.1.lr": [0.01]},
        r"strategies\.1\.lr: must be a range \{min, max, points\} to search, but got \[0\.01\]; "
        r"for one given learning rate use an arm \{kind: fixed, lr: 0\.01\}\.$",
    ),
    (
        {"strategies.3.lr": [0.1, 0.001]},
        r"strategies\.3\.lr: must be a range \{min, max\} to search, but got \[0\.1, 0\.001\]; "
        r"for the range between them write \{min: 0\.001, max: 0\.1\}\.$",
    ),
    (
        {"strategies.2.lr": [0.1, 0.01, 0.001]},
        r"strategies\.2\.lr: must be a range \{min, max\} .* use one fixed arm per rate, each "
        r"with its own name \(e\.g\. \{kind: fixed, lr: 0\.1, name: lr-0\.1\}\)\.$",
    ),
    (
        {"strategies.1.name": ".grid"},
        r"strategies\.1\.name: must not start with '\.' \(names become folders, and one "
        r"starting with '\.' is hidden from ls and file browsers\), but got '\.grid'",
    ),
]


@pytest.mark.parametrize(
    ("changes", "message"), BAD_SPECS, ids=[str(i) for i in range(len(BAD_SPECS))]
)
def test_bad_spec_is_refused_naming_its_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(_with(changes))


def test_a_relative_path_that_is_missing_names_the_folder_it_was_looked_for_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's spec beside its images and weights, validated from another folder: relative
    paths are read from the folder lrsweep runs in, which the error now says."""
    monkeypatch.chdir(tmp_path)
    for changes, field in (
        ({"task.dataset": {"name": "image_folder", "path": "imgs"}}, r"task\.dataset\.path"),
        ({"task.model": {"arch": "simple_cnn", "pretrained": "w.pt"}}, r"task\.model\.pretrained"),
    ):
        with pytest.raises(
            SpecError,
            match=rf"{field}: .*'(imgs|w\.pt)' does not exist \(a relative path is read from the "
            rf"folder lrsweep runs in, not the spec's: looked for {tmp_path}/(imgs|w\.pt);",
        ):
            load_spec(_with(changes))


def test_every_error_is_listed_at_once() -> None:
    bad = _with({"task.epochs": 0, "seeds": [], "strategies.1.lr.points": 1, "colour": 1})
    with pytest.raises(SpecError) as caught:
        load_spec(bad)
    assert len(caught.value.errors) == 4
    assert str(caught.value).startswith("invalid spec: 4 errors")


def test_valid_spec_fills_defaults_and_resolves_to_json() -> None:
    spec = load_spec(BASE)
    resolved = spec.resolved()
    assert json.loads(json.dumps(resolved)) == resolved
    assert resolved["task"]["schedule"] == {
        "kind": "one_cycle",
        "pct_start": 0.25,
        "div": 25.0,
        "div_final": 1.0e5,
    }
    assert resolved["early_stop"]["patience"] == 2
    assert resolved["tracking"]["checkpoints"] == "all"
    assert load_spec(resolved) == spec


def test_to_yaml_reads_back_to_the_same_spec(tmp_path: Path) -> None:
    spec = load_spec(BASE)
    path = tmp_path / "resolved.yaml"
    path.write_text(spec.to_yaml())
    assert load_spec(path) == spec


@pytest.mark.parametrize(
    ("metric", "mode"), [("valid_loss", "min"), ("error_rate", "min"), ("accuracy", "max")]
)
def test_early_stop_mode_defaults_from_the_metric(metric: str, mode: str) -> None:
    spec = load_spec(_with({"early_stop": {"metric": metric}}))
    assert spec.early_stop is not None
    assert spec.early_stop.mode == mode


INERT = (
    r"early_stop can never stop a trial: it needs more than {} epochs .* "
    r"but the trials run at most {};"
)


@pytest.mark.parametrize(
    ("changes", "advice"),
    [
        # the recipe arm's 12 epochs do not count: early_stop leaves a recipe alone
        ({"early_stop": {}}, INERT.format(3, 3)),
        # 3 epochs: the first stop would come after the last epoch, saving nothing
        ({"strategies": BASE["strategies"][:4], "early_stop": {}}, INERT.format(3, 3)),
        ({"strategies": BASE["strategies"][:4], "task.epochs": 4, "early_stop": {}}, None),
        (
            {"strategies": BASE["strategies"][:4], "task.epochs": 2, "early_stop": {}},
            INERT.format(3, 2),
        ),
        # the default, which the spec does not write, is not pointed out (a user's 1-epoch spec
        # was told to set early_stop: null, a setting it never made)
        ({"strategies": BASE["strategies"][:4], "task.epochs": 1}, None),
        ({"strategies": BASE["strategies"][:4]}, None),
        ({"strategies": BASE["strategies"][:4], "early_stop": {"patience": 3}}, INERT.format(4, 3)),
        (
            {
                "strategies": [{"kind": "recipe", "max_epochs": 4}],
                "early_stop": {"grace_epochs": 3},
            },
            r"early_stop stops no trial: every arm is a recipe",
        ),
        ({"strategies": BASE["strategies"][:4], "task.epochs": 1, "early_stop": None}, None),
    ],
)
def test_an_early_stop_that_cannot_fire_is_pointed_out(
    changes: dict[str, Any], advice: str | None
) -> None:
    _assert_advice(changes, advice)


@pytest.mark.parametrize(
    ("arm", "advice"),
    [
        (
            {"kind": "fixed", "lr": 3e3},
            r"strategies\[0\] \(fixed arm 'fixed'\): lr 3000 is above 10, where training "
            r"diverges at once .*; if a minus sign is missing, write 3e-3$",
        ),
        (
            {"kind": "grid", "name": "wide", "lr": {"min": 1e-4, "max": 100, "points": 4}},
            r"strategies\[0\] \(grid arm 'wide'\): lr\.max 100 is above 10, .* write 1e-2$",
        ),
        (
            {"kind": "random", "lr": {"min": 20, "max": 50}, "trials": 2},
            r"strategies\[0\] \(random arm 'random'\): lr\.min and lr\.max 50 is above 10",
        ),
        (
            {"kind": "optuna", "lr": {"min": 1e-4, "max": 10}, "trials": 4, "startup_trials": 1},
            None,
        ),
        ({"kind": "fixed", "lr": 10}, None),
        ({"kind": "lr_finder", "end_lr": 100}, None),  # a range test stops where it diverges
    ],
)
def test_a_learning_rate_above_10_is_pointed_out(arm: dict[str, Any], advice: str | None) -> None:
    """`lr: 3e3` (for 3e-3) was taken without a word: every trial diverged at once."""
    _assert_advice({"strategies": [arm], "task.epochs": 1}, advice)


def _assert_advice(changes: dict[str, Any], advice: str | None) -> None:
    """The spec ``_with(changes)`` gets no note (``advice`` None) or one matching ``advice``."""
    notes = load_spec(_with(changes)).advice()
    if advice is None:
        assert notes == []
    else:
        (note,) = notes
        assert re.match(advice, note), note


@pytest.mark.parametrize(
    ("epochs", "schedule", "fine_tune", "advice"),
    [
        (
            4,
            {"cycle_len": 1, "cycle_mult": 2},
            None,
            r"task\.epochs=4 ends the SGDR schedule 1 "
            r"epoch\(s\) into a cycle of 4, .* cycles end after epoch 1, 3, 7: set task\.epochs",
        ),
        (7, {"cycle_len": 1, "cycle_mult": 2}, None, None),
        (5, {"cycle_len": 2, "cycle_mult": 1}, None, r".*cycles end after epoch 2, 4, 6:"),
        (6, {"cycle_len": 2, "cycle_mult": 1}, None, None),
        (
            3,
            {"cycle_len": 5, "cycle_mult": 1},
            None,
            r".*3 epoch\(s\) into its first cycle of 5 "
            r"before the LR has annealed, .*cycles end after epoch 5:",
        ),
        # fine-tuning: SGDR runs on the epochs after the frozen ones (here 3 = 1 + 2)
        (5, {"cycle_len": 1, "cycle_mult": 2}, {"freeze_epochs": 2}, None),
        (5, {"cycle_len": 1, "cycle_mult": 2}, {"freeze_epochs": 1}, r".*after epoch 2, 4, 8:"),
    ],
)
def test_an_sgdr_schedule_cut_inside_a_cycle_is_pointed_out(
    epochs: int, schedule: dict[str, Any], fine_tune: dict[str, Any] | None, advice: str | None
) -> None:
    """Its last epochs restart at the peak LR and the trials end there, the compute of those
    epochs wasted (fastai's ``fit_sgdr`` takes whole cycles and always ends low)."""
    changes = {
        "strategies": BASE["strategies"][:4],
        "early_stop": None,
        "task.epochs": epochs,
        "task.schedule": {"kind": "sgdr", **schedule},
        "task.fine_tune": fine_tune,
    }
    _assert_advice(changes, advice)


def test_a_valid_pct_the_image_folders_own_split_overrides_is_pointed_out(tmp_path: Path) -> None:
    for split in ("train", "valid"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
    layout = {"name": "image_folder", "path": str(tmp_path)}
    arms = copy.deepcopy(BASE["strategies"][:4])
    _assert_advice(
        {"strategies": arms, "early_stop": None, "task.dataset": {**layout, "valid_pct": 0.9}},
        rf"task\.dataset\.valid_pct \(0\.9\) is ignored: {tmp_path} holds train/ and valid/ "
        "folders, and their images are the split",
    )
    _assert_advice({"strategies": arms, "early_stop": None, "task.dataset": layout}, None)
    (tmp_path / "valid").rename(tmp_path / "c")  # class folders: valid_pct splits them
    _assert_advice(
        {"strategies": arms, "early_stop": None, "task.dataset": {**layout, "valid_pct": 0.9}},
        None,
    )


UNGUIDED = (
    r"optuna arm 'optuna' draws all of its {} trials at random: sampler {} draws its first {} at "
    r"random \(Optuna's default, which startup_trials: null keeps\), so its row is random search"
)


ONE_DRAW = (
    r"strategies\[2\] \({0} arm '{0}'\): trials: 1 draws a single learning rate at random from "
    r"lr \{{min: 0\.0001, max: 1\}} and searches nothing; raise trials to search the range, or "
    r"use an arm \{{kind: fixed, lr: RATE\}} for one learning rate of your choice$"
)


@pytest.mark.parametrize("kind", ["optuna", "random"])
def test_a_search_arm_of_one_trial_is_pointed_out(kind: str) -> None:
    """``trials: 1`` is one random draw, no search; a 1-trial TPE arm was even told to "set
    startup_trials below trials (e.g. 1)", which no value can be."""
    arm = {"kind": kind, "lr": {"min": 1.0e-4, "max": 1.0}, "trials": 1}
    _assert_advice(
        {"strategies": [*BASE["strategies"][:2], arm], "task.epochs": 4}, ONE_DRAW.format(kind)
    )


@pytest.mark.parametrize(
    ("arm", "advice"),
    [
        ({"trials": 4, "startup_trials": None}, UNGUIDED.format(4, "tpe", 10)),
        ({"trials": 10, "startup_trials": None, "sampler": "gp"}, UNGUIDED.format(10, "gp", 10)),
        ({"trials": 11, "startup_trials": None}, None),  # its 11th trial is modelled
        ({"trials": 1, "startup_trials": None, "sampler": "cmaes"}, ONE_DRAW.format("optuna")),
        ({"trials": 2, "startup_trials": None, "sampler": "cmaes"}, None),  # cmaes's own 1
        ({"trials": 4, "startup_trials": None, "sampler": "random"}, None),  # random by name
        ({"trials": 4, "startup_trials": 3}, None),  # given: checked below trials when read
    ],
)
def test_an_optuna_arm_whose_default_startup_leaves_nothing_modelled_is_pointed_out(
    arm: dict[str, Any], advice: str | None
) -> None:
    """A user's 4-trial TPE arm (the nightly suite's too) was random search under Optuna's
    name: Optuna's default 10 startup trials outnumbered its trials, and nothing said so."""
    changes = {f"strategies.2.{key}": value for key, value in arm.items()}
    if arm.get("startup_trials", 0) is None:
        changes["strategies.2.startup_trials"] = DELETE
    arms = copy.deepcopy(BASE["strategies"][:4])  # the paths below change them
    _assert_advice({"strategies": arms, "task.epochs": 4, **changes}, advice)


@pytest.mark.parametrize(
    ("image_size", "advice"),
    [
        (
            1,
            r"task\.image_size: 1 px a side leaves each image 1 pixel a channel, too few .* "
            r"raise task\.image_size to at least 8",
        ),
        (7, r"task\.image_size: 7 px a side leaves each image 49 pixels a channel"),
        (8, None),
    ],
)
def test_an_image_size_too_small_to_show_shapes_is_pointed_out(
    image_size: int, advice: str | None
) -> None:
    """``image_size: 1`` trained every trial on each image's mean colour, and nothing said so."""
    _assert_advice({"task.image_size": image_size}, advice)


@pytest.mark.parametrize("name", ["digits.yaml", "shapes_resnet.yaml"])
def test_packaged_specs_need_no_advice(name: str) -> None:
    assert load_spec(SPECS / name).advice() == []


@pytest.mark.parametrize(
    ("tracking", "expected"), [({}, "tiny"), ({"experiment": "team/lr-study"}, "team/lr-study")]
)
def test_experiment_name_is_tracking_experiment_or_name(
    tracking: dict[str, str], expected: str
) -> None:
    assert load_spec(_with({"tracking": tracking})).experiment_name == expected


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///runs/mlflow.db", "sqlite:///{cwd}/runs/mlflow.db"),
        ("sqlite:///../up.db?timeout=30", "sqlite:///{parent}/up.db?timeout=30"),
        ("sqlite:////abs/mlflow.db", "sqlite:////abs/mlflow.db"),
        ("http://mlflow:5000", "http://mlflow:5000"),
    ],
)
def test_a_relative_sqlite_tracking_uri_is_stored_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, expected: str
) -> None:
    """Trials run in working directories of their own: a relative database there was another,
    empty one, and every trial failed with "No Experiment with id=1 exists"."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    spec = load_spec(_with({"tracking": {"uri": uri}}))
    assert spec.tracking.uri == expected.format(cwd=work.resolve(), parent=tmp_path.resolve())


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("light", {"flip": False, "rotate": 10.0, "zoom": 1.1, "jitter": 0.0}),
        ("standard", {"flip": True, "rotate": 10.0, "zoom": 1.2, "jitter": 0.2}),
        ("none", None),
    ],
)
def test_task_augment_takes_the_trainers_preset_names(
    preset: str, expected: dict[str, Any] | None
) -> None:
    """``make_dataloaders(augment="light")`` (README, Trainers) in a spec: ``augment: light``
    was refused as "must be a mapping"; the resolved spec holds the preset's values."""
    from trainers.data.augment import PRESETS

    spec = load_spec(_with({"task.augment": preset}))
    assert spec.resolved()["task"]["augment"] == expected
    if expected is not None:
        assert expected == {k: getattr(PRESETS[preset], k) for k in expected}


def test_an_unknown_augment_preset_lists_the_presets() -> None:
    with pytest.raises(
        SpecError,
        match=re.escape(
            "task.augment: must be a preset (none, light, standard) or a mapping of flip, rotate, "
            "zoom and jitter, but got 'heavy'."
        ),
    ):
        load_spec(_with({"task.augment": "heavy"}))


def test_arm_name_is_the_name_or_else_the_kind() -> None:
    spec = load_spec(_with({"strategies.4": {"kind": "grid", "name": "grid_fine", "lr": BASE_LR}}))
    assert [arm.arm_name for arm in spec.strategies] == [
        "lr_finder",
        "grid",
        "optuna",
        "random",
        "grid_fine",
    ]


@pytest.mark.parametrize("gpu", [0, 0.25, 1, 2])
def test_fractional_and_whole_gpus_are_accepted(gpu: float) -> None:
    assert load_spec(_with({"resources": {"gpu": gpu}})).resources.gpu == gpu


@pytest.mark.parametrize(
    ("changes", "seed"),
    [
        ({"strategies.2.seed": 2**32 - 2}, 2**32 - 2),
        ({"seeds": [2**32 - 1], "strategies.2.seed": 0}, 0),
        ({"seeds": [5, 2**32 - 11], "strategies.2.seed": 10}, 10),
    ],
)
def test_optuna_seed_whose_sampler_seeds_fit_32_bits_is_accepted(
    changes: dict[str, Any], seed: int
) -> None:
    assert load_spec(_with(changes)).resolved()["strategies"][2]["seed"] == seed


def test_random_arm_seed_is_not_limited_to_32_bits() -> None:
    """Its seed feeds numpy's default_rng alone (never + a sweep seed), which takes any size."""
    spec = load_spec(_with({"strategies.3.seed": 2**40}))
    assert spec.resolved()["strategies"][3]["seed"] == 2**40


@pytest.mark.parametrize(
    ("dataset", "options"),
    [
        ("shapes", {"n_classes": 4, "n_per_class": 10}),
        ("digits", {"channels": 3}),
        ("mnist", {"download": False, "channels": 3}),
        ("cifar10", {"download": False, "verify_checksums": False}),
    ],
)
def test_dataset_options_its_builder_takes_are_accepted(
    dataset: str, options: dict[str, Any]
) -> None:
    spec = load_spec(_with({"task.dataset": {"name": dataset, "options": options}}))
    assert spec.task.dataset.options == options


def test_image_folder_options_are_its_builders_keywords(tmp_path: Path) -> None:
    options = {"num_workers": 2, "resize_method": "crop"}
    spec = load_spec(
        _with({"task.dataset": {"name": "image_folder", "path": str(tmp_path), "options": options}})
    )
    assert spec.task.dataset.options == options


def test_dataset_options_follow_the_builders_signature(monkeypatch) -> None:
    """The accepted names are read from trainers.data.DATASETS, not from a list in the spec."""
    import trainers.data

    def builder(*, seed: int, sides: int = 3) -> Any:
        raise AssertionError("validation must not build the dataset")

    monkeypatch.setitem(trainers.data.DATASETS, "shapes", builder)
    spec = load_spec(_with({"task.dataset": {"name": "shapes", "options": {"sides": 5}}}))
    assert spec.task.dataset.options == {"sides": 5}
    with pytest.raises(
        SpecError, match=r"options\.n_classes: unknown option .*\(accepted: sides\)"
    ):
        load_spec(_with({"task.dataset": {"name": "shapes", "options": {"n_classes": 4}}}))


def test_relative_dataset_path_becomes_absolute(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "images" / "cat").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    spec = load_spec(_with({"task.dataset": {"name": "image_folder", "path": "images"}}))
    assert spec.task.dataset.path == str(tmp_path.resolve() / "images")


def test_spec_is_frozen() -> None:
    spec = load_spec(BASE)
    with pytest.raises(ValidationError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["digits.yaml", "shapes_resnet.yaml"])
def test_packaged_specs_are_valid(name: str) -> None:
    spec = load_spec(SPECS / name)
    assert spec.strategies and spec.seeds


def test_demo_spec_is_issue_4s_digits_sweep_with_fastais_range_test() -> None:
    """The README headline and `make demo` are measured on this spec: shrinking an arm or the
    range test changes every compute ratio there (issue 4's digits-lr; 16 px, not 32)."""
    from sweeps.strategies import plan

    spec = load_spec(SPECS / "digits.yaml")
    finder, grid, optuna, random = spec.strategies
    assert (spec.seeds, spec.task.epochs, spec.task.image_size) == ([0, 1, 2], 8, 16)
    assert (finder.num_it, finder.start_lr, finder.end_lr) == (100, 1.0e-7, 10.0)
    assert {"valley", "steep", "minimum"} <= set(finder.suggest)
    assert (grid.lr.min, grid.lr.max, grid.lr.points) == (1.0e-5, 1.0, 11)
    for arm in (optuna, random):
        assert (arm.lr.min, arm.lr.max, arm.trials) == (1.0e-5, 1.0, 12)
    trials = {s.arm_name: s.n_trials() for s in plan(spec)}
    assert trials == {"lr_finder": 12, "grid": 33, "optuna": 36, "random": 36}


README = SPECS.parents[1] / "README.md"


def _readme_sweeps_section() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split("\n## Sweeps\n", 1)[1].split("\n## MLflow for a team\n", 1)[0]


def test_the_readme_spec_reference_is_a_valid_spec() -> None:
    block = _readme_sweeps_section().split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = load_spec(yaml.safe_load(block))
    assert spec.name == "digits-lr"
    assert [arm.kind for arm in spec.strategies] == ["lr_finder", "grid", "optuna", "random"]


def _fields(model: Any, seen: set[Any]) -> set[str]:
    """Every field name of ``model`` and of the spec models its fields hold."""
    import typing

    from pydantic import BaseModel

    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            hint = stack.pop()
            if isinstance(hint, type) and issubclass(hint, BaseModel):
                names |= _fields(hint, seen)
            stack.extend(typing.get_args(hint))
    return names


def test_every_field_a_spec_accepts_is_named_in_the_readme() -> None:
    """The README's Sweeps section (and its GPU section, for ``task.accelerator``) names every
    key ``lrsweep validate`` accepts: a field missing there is one a user cannot find."""
    from sweeps.spec import SweepSpec

    section = _readme_sweeps_section()
    missing = sorted(
        name for name in _fields(SweepSpec, set()) if not re.search(rf"\b{name}\b", section)
    )
    assert not missing, f"spec fields the README does not name: {missing}"


# --- files -------------------------------------------------------------------------------------

BOMB = "\n".join(
    ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(9)]
)

BAD_FILES = [
    (b"", r"spec file '.*spec\.yaml' is empty"),
    (b"# only a comment\n", r"is empty"),
    (b"- a\n- b\n", r"must hold a mapping \(key: value lines\) at the top level, but holds a list"),
    (b"just text\n", r"must hold a mapping .* but holds a str"),
    (b"name: [unclosed\n", r"not valid YAML: .* at line 2"),
    (
        b"name: tiny\ntask:\n\tepochs: 3\n",
        r"found character '\\t' .* at line 3, column 1; YAML indents and separates with "
        r"spaces: replace the tab",
    ),
    (BOMB.encode(), r"YAML aliases \(\*a\) are not allowed in specs"),
    (b"base: &b {epochs: 3}\ntask:\n  <<: *b\n", r"YAML aliases \(\*b\) are not allowed"),
    (b"name: !!python/object/apply:os.system ['echo hi']\n", r"only plain YAML values"),
    (b"name: a\nname: b\n", r"key 'name' appears twice in one mapping \(line 2\)"),
    (b"name: \xff\xfe\n", r"is not UTF-8 text"),
    (
        b"name: a\n---\nname: b\n---\n[unclosed\n",
        r"spec file '.*spec\.yaml': holds 3 YAML documents \(the second starts at line 2\), but "
        r"must hold one: a '---' line starts a new document; keep one mapping here",
    ),
    (b"x: " + b"1" * 1_000_001, r"is 1000004 bytes; the limit is 1000000"),
]


@pytest.mark.parametrize(("content", "message"), BAD_FILES, ids=[m for _, m in BAD_FILES])
def test_bad_file_is_refused_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=message) as caught:
        load_spec(path)
    assert caught.value.source == str(path)


def test_yaml_bomb_is_refused_at_its_first_alias_before_anything_expands(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    # line 1 only anchors the list; line 2 holds the first alias: the refusal comes while the
    # parser meets it, before a single alias is resolved, let alone 9**10 strings built
    assert BOMB.splitlines()[1].startswith("b: &b [*a,")
    with pytest.raises(SpecError, match=r"YAML aliases \(\*a\) are not allowed .*\(line 2\)"):
        load_spec(path)


@pytest.mark.parametrize(
    ("path", "message"),
    [("missing.yaml", r"spec file '.*missing\.yaml' not found"), (".", r"is not a file")],
)
def test_missing_or_folder_path_is_refused(tmp_path: Path, path: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(tmp_path / path)


# --- overrides ---------------------------------------------------------------------------------

TYPED_OVERRIDES = [
    ("task.epochs=5", lambda s: s.task.epochs, 5),
    ("seeds=[3, 4]", lambda s: s.seeds, [3, 4]),
    ("strategies.1.lr.points=7", lambda s: s.strategies[1].lr.points, 7),
    ("strategies.2.lr.min=1e-5", lambda s: s.strategies[2].lr.min, 1.0e-5),
    ("task.dataset.valid_pct=0.3", lambda s: s.task.dataset.valid_pct, 0.3),
    ("task.augment.flip=true", lambda s: s.task.augment.flip, True),
    ("early_stop=null", lambda s: s.early_stop, None),
    ("early_stop.patience=4", lambda s: s.early_stop.patience, 4),
    (
        "task.schedule.pct_start=0.4",
        lambda s: (s.task.schedule.kind, s.task.schedule.pct_start),
        ("one_cycle", 0.4),
    ),
    ("task.schedule={kind: sgdr, cycle_len: 2}", lambda s: s.task.schedule.cycle_len, 2),
    ("strategies.0.suggest=minimum", lambda s: s.strategies[0].suggest, ["minimum"]),
    ("tracking.experiment=team/lr", lambda s: s.experiment_name, "team/lr"),
    ("task.dataset.options.channels=3", lambda s: s.task.dataset.options, {"channels": 3}),
]


@pytest.mark.parametrize(("override", "read", "expected"), TYPED_OVERRIDES)
def test_override_sets_a_typed_value(override: str, read: Any, expected: Any) -> None:
    assert read(load_spec(BASE, overrides=[override])) == expected


def test_overrides_leave_the_input_untouched() -> None:
    original = copy.deepcopy(BASE)
    changed = apply_overrides(BASE, ["task.epochs=9", "seeds=[5]"])
    assert BASE == original
    assert changed["task"]["epochs"] == 9 and changed["seeds"] == [5]


BAD_OVERRIDES = [
    (
        "task.epoch=3",
        r"unknown key 'epoch' in task, did you mean 'epochs'\? \(accepted: dataset, model, ",
    ),
    ("colour=red", r"unknown key 'colour' in the top level \(accepted: name, task, seeds,"),
    ("strategies.9.lr.points=5", r"index 9 is out of range: strategies has 5 item\(s\)"),
    ("strategies.first=1", r"strategies is a list; 'first' is not an index"),
    ("strategies.1.lr.steps=3", r"unknown key 'steps' in strategies\.1\.lr \(accepted: min, max,"),
    ("task.epochs.max=3", r"task\.epochs is a single value and has no key 'max'"),
    ("task.epochs", r"expected key\.path=value, e\.g\. task\.epochs=3"),
    ("=3", r"expected key\.path=value"),
    ("task..epochs=3", r"the key 'task\.\.epochs' has an empty part"),
    ("seeds=[1, *a]", r"the value is refused: YAML aliases \(\*a\) are not allowed"),
    (
        "strategies.2.kind=grid",
        r"strategies\.2 also sets trials, startup_trials, which kind 'grid' does not take; "
        r"replace the whole mapping instead: --set 'strategies\.2=\{kind: grid, \.\.\.\}'",
    ),
]


def test_changing_a_kind_over_keys_it_does_not_take_names_them_and_the_fix() -> None:
    """``task.schedule.kind=sgdr`` over a one-cycle schedule failed on ``pct_start`` with no
    word on how to switch; the error now names the override that does."""
    one_cycle = _with({"task.schedule": {"kind": "one_cycle", "pct_start": 0.3}})
    with pytest.raises(SpecError) as caught:
        load_spec(one_cycle, overrides=["task.schedule.kind=sgdr"])
    assert caught.value.errors == (
        "--set 'task.schedule.kind=sgdr': task.schedule also sets pct_start, which kind 'sgdr' "
        "does not take; replace the whole mapping instead: "
        "--set 'task.schedule={kind: sgdr, ...}'.",
    )
    # flat_cos takes pct_start too, but as its flat part (0.75), not a warm-up (0.25): kept,
    # a one-cycle spec switched to flat_cos silently trained flat for a quarter only
    meaning = (
        r"also sets pct_start, which kind 'flat_cos' takes with another meaning "
        r"\(its default: 0\.75\)"
    )
    with pytest.raises(SpecError, match=meaning):
        load_spec(one_cycle, overrides=["task.schedule.kind=flat_cos"])
    div_final = _with({"task.schedule": {"kind": "one_cycle", "div_final": 1e4}})
    switched = load_spec(div_final, overrides=["task.schedule.kind=flat_cos"])  # same meaning
    assert (switched.task.schedule.kind, switched.task.schedule.div_final) == ("flat_cos", 1e4)
    fixed = load_spec(one_cycle, overrides=["task.schedule={kind: sgdr, cycle_len: 2}"])
    assert (fixed.task.schedule.kind, fixed.task.schedule.cycle_len) == ("sgdr", 2)
    same_keys = load_spec(one_cycle, overrides=["task.schedule.kind=one_cycle"])
    assert same_keys.task.schedule.pct_start == 0.3


@pytest.mark.parametrize(("override", "message"), BAD_OVERRIDES)
def test_bad_override_is_refused_naming_it(override: str, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(f"--set {override!r}: ") + ".*" + message):
        load_spec(BASE, overrides=[override])


def test_override_value_is_type_checked_by_the_schema() -> None:
    with pytest.raises(SpecError, match=r"task\.epochs: must be a whole number, but got 'five'"):
        load_spec(BASE, overrides=["task.epochs=five"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "seeds=0,1",
            r"seeds: must be a list, but got '0,1' \(a list is written in brackets: \[0, 1\]\)\.$",
        ),
        (
            "seeds=[0 1, 2]",
            r"seeds\.0: must be a whole number, but got '0 1' \(list items are separated by "
            r"commas: \[0, 1\]\)\.$",
        ),
        ("task.epochs=1 2", r"task\.epochs: must be a whole number, but got '1 2'\.$"),  # no list
    ],
)
def test_a_list_typed_without_brackets_or_commas_is_refused_saying_how_to_write_it(
    override: str, message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(BASE, overrides=[override])
    (line,) = caught.value.errors
    assert re.match(message, line), line


def test_override_and_spec_errors_are_reported_together() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(BASE, overrides=["task.epoch=3", "task.image_size=0"])
    assert len(caught.value.errors) == 2
    assert "task.image_size: must be at least 1" in str(caught.value)


INJECTIONS = [
    'name=!!python/object/apply:os.system ["touch {marker}"]',
    "name=!!python/object/apply:subprocess.call [[touch, {marker}]]",
    "name=!!python/name:os.system",
    "seeds=!!python/object/new:builtins.list [[1]]",
]


@pytest.mark.parametrize("template", INJECTIONS)
def test_override_cannot_inject_code(tmp_path: Path, template: str) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(SpecError, match="only plain YAML values are accepted"):
        load_spec(BASE, overrides=[template.format(marker=marker)])
    assert not marker.exists()


# --- redaction ---------------------------------------------------------------------------------

REDACTIONS = [
    ({"password": "p"}, {"password": "***"}),
    ({"DB_PASSWORD": "p", "user": "u"}, {"DB_PASSWORD": "***", "user": "u"}),
    ({"options": {"api_token": "t", "n": 1}}, {"options": {"api_token": "***", "n": 1}}),
    ({"items": [{"client_secret": {"k": "v"}}]}, {"items": [{"client_secret": "***"}]}),
    ({"uri": "https://alice:pw@host:5000/x"}, {"uri": "https://alice:***@host:5000/x"}),
    ({"uri": "https://host:5000/x"}, {"uri": "https://host:5000/x"}),
    ({"tokens_per_batch_note": 5}, {"tokens_per_batch_note": "***"}),
    ({"lr": 0.1, "name": "plain"}, {"lr": 0.1, "name": "plain"}),
]


@pytest.mark.parametrize(("given", "expected"), REDACTIONS)
def test_redact_hides_secret_keys_and_url_passwords(given: Any, expected: Any) -> None:
    before = copy.deepcopy(given)
    assert redact(given) == expected
    assert given == before


# --- suite -------------------------------------------------------------------------------------


def test_packaged_nightly_suite_loads_with_overrides_applied() -> None:
    suite = load_suite(SPECS / "nightly.yaml")
    assert [entry.name for entry in suite.entries] == [
        "digits-cnn-one-cycle",
        "shapes-resnet18-sgdr",
    ]
    digits, shapes = (entry.spec for entry in suite.entries)
    assert digits.task.model.arch == "simple_cnn" and digits.task.schedule.kind == "one_cycle"
    assert shapes.task.model.arch == "resnet18" and shapes.task.schedule.kind == "sgdr"
    assert digits.seeds == [0] and digits.task.epochs == 3
    assert suite.thresholds.error_rate_points == 2.0


def test_a_recipe_arm_is_refused_below_what_fit_recipe_can_run() -> None:
    """The packaged nightly suite set max_epochs=3, which fit_recipe refuses in every trial
    (head 1 + augment 2 leave SGDR nothing): each night failed with exit 3."""
    from sweeps.spec._strategies import RECIPE_MIN_EPOCHS
    from trainers import Learner
    from trainers.data import make_dataloaders
    from trainers.models import build_model
    from trainers.recipe import _check_args

    with pytest.raises(SpecError, match=r"strategies\.4\.max_epochs: must be at least 4: the"):
        load_spec(SPECS / "shapes_resnet.yaml", overrides=["strategies.4.max_epochs=3"])
    spec = load_spec(SPECS / "shapes_resnet.yaml", overrides=["strategies.4.max_epochs=4"])
    assert spec.strategies[4].max_epochs == RECIPE_MIN_EPOCHS
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    learn = Learner(build_model("simple_cnn", dls.n_classes), dls, progress=False)
    args = {
        "suggest": "valley",
        "head_epochs": 1,
        "augment_epochs": 2,
        "group_factor": 3.0,
        "num_it": 100,
    }
    assert _check_args(learn, RECIPE_MIN_EPOCHS, patience=2, **args) == 1  # fit_recipe's defaults
    with pytest.raises(ValueError, match="at least 1 epoch for SGDR"):
        _check_args(learn, RECIPE_MIN_EPOCHS - 1, patience=2, **args)
    suite = load_suite(SPECS / "nightly.yaml")
    recipes = [a for e in suite.entries for a in e.spec.strategies if a.kind == "recipe"]
    assert recipes and all(a.max_epochs >= RECIPE_MIN_EPOCHS for a in recipes)


def test_suite_spec_path_is_relative_to_the_suite_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "one.yaml").write_text(json.dumps(BASE))
    (tmp_path / "suites" / "suite.yaml").write_text(
        "name: s\nentries:\n  - {spec_path: one.yaml, overrides: ['task.epochs=2']}\n"
    )
    monkeypatch.chdir(tmp_path)
    suite = load_suite(Path("suites") / "suite.yaml")
    assert suite.entries[0].name == "tiny"
    assert suite.entries[0].spec.task.epochs == 2
    assert suite.entries[0].spec_path == str((tmp_path / "suites" / "one.yaml").resolve())


BAD_SUITES = [
    ({"entries": []}, r"entries: must have at least 1 item"),
    ({"entries": [{"name": "a"}]}, r"entries\.a: give exactly one of spec .* or spec_path"),
    (
        {"entries": [{"spec": BASE, "spec_path": "x.yaml"}]},
        r"entries\.0: give exactly one of spec",
    ),
    (
        {"entries": [{"name": "a", "spec": BASE, "spec_file": "x"}]},
        r"entries\.a\.spec_file: unknown key \(accepted: name, spec, spec_path, overrides\)",
    ),
    (
        {"entries": [{"name": "a", "spec": _with({"task.epochs": 0})}]},
        r"entries\.a\.spec\.task\.epochs: must be at least 1, but got 0",
    ),
    (
        {"entries": [{"spec": _with({"seeds": []})}]},
        r"entries\.0\.spec\.seeds: must have at least 1 item",
    ),
    (
        {"entries": [{"name": "e", "spec_path": ""}]},
        r"entries\.e\.spec_path: must not be empty; give the spec file's path",
    ),
    (
        {"entries": [{"name": "b", "spec_path": "nope.yaml"}]},
        r"entries\.b\.spec_path: spec file '.*nope\.yaml' not found",
    ),
    (
        {"entries": [{"name": "c", "spec": BASE, "overrides": ["task.epoch=1"]}]},
        r"entries\.c\.overrides: 'task\.epoch=1': unknown key 'epoch'",
    ),
    (
        {"entries": [{"name": "d", "spec": BASE}, {"name": "d", "spec": BASE}]},
        r"entries\.d\.name: 2 entries are named 'd' \(entries 0, 1 of the list\)",
    ),
    (
        {"entries": [{"spec": BASE}], "thresholds": {"error_rate": 1}},
        r"thresholds\.error_rate: unknown key \(accepted: error_rate_points, wall_time_pct,",
    ),
    (
        {"entries": [{"spec": BASE}], "thresholds": {"wall_time_pct": -5}},
        r"thresholds\.wall_time_pct: must be at least 0\.0, but got -5",
    ),
]


@pytest.mark.parametrize(("changes", "message"), BAD_SUITES)
def test_bad_suite_is_refused_naming_entry_and_field(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps({"name": "nightly", **changes}))
    with pytest.raises(SpecError, match=message):
        load_suite(path)


def test_a_suite_s_errors_say_suite_and_a_set_for_every_entry_is_named_once_as_typed(
    tmp_path: Path,
) -> None:
    """The header names a suite (not a spec), and a ``--set`` that fails on both entries is
    one line, as typed (``*.``), not one per entry blamed on the suite file's overrides."""
    path = tmp_path / "suite.yaml"
    entries = [{"name": "a", "spec": BASE}, {"name": "b", "spec": BASE}]
    path.write_text(json.dumps({"name": "nightly", "entries": entries}))
    with pytest.raises(SpecError) as caught:
        load_suite(path, overrides=["*.task.epoks=3", "b.seeds=x"])
    assert str(caught.value).startswith(f"invalid suite {str(path)!r}: 2 errors")
    assert caught.value.errors[0].startswith("--set '*.task.epoks=3': unknown key 'epoks'")
    assert caught.value.errors[1].startswith("entries.b.spec.seeds: must be a list")
    assert pickle.loads(pickle.dumps(caught.value)).what == "suite"  # as Ray carries it
    with pytest.raises(SpecError, match=r"^invalid suite '.*nope\.yaml': 1 error\n  suite file"):
        load_suite(tmp_path / "nope.yaml")


def test_a_suite_lists_every_problem_at_once(tmp_path: Path) -> None:
    """An entry with neither spec nor spec_path used to hide every other entry's problems, and
    a duplicate name was never reported when one of the two could not be loaded; two entries
    of one name were both placed at ``entries.e1``."""
    entries = [
        {"name": "e1", "spec_path": "missing.yaml"},
        {"name": "e1", "spec": _with({"task": DELETE})},
        {"name": "e2", "spec": BASE, "overrides": ["task.epoch=1"]},
        {"name": "e3"},
    ]
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps({"name": "nightly", "entries": entries}))
    with pytest.raises(SpecError) as caught:
        load_suite(path)
    errors = caught.value.errors
    assert errors[0] == (
        "entries.e3: give exactly one of spec (an inline mapping) or spec_path (a file)."
    )
    assert any(line.startswith("entries.0.spec_path: spec file") for line in errors), errors
    assert "entries.1.spec.task: is required." in errors, errors
    assert any(line.startswith("entries.e2.overrides: 'task.epoch=1'") for line in errors)
    assert errors[-1] == (
        "entries.e1.name: 2 entries are named 'e1' (entries 0, 1 of the list); names must be "
        "unique."
    )
    assert len(errors) == 5, errors


@pytest.mark.parametrize("metric", REPORTED_METRICS)
def test_every_layer_agrees_on_which_metrics_are_maximised(metric: str) -> None:
    """The spec's early-stop mode, ``lrsweep best``'s mode and the trainers' ``mode="auto"``
    share one rule (the trainers keep their own copy: they do not import the sweeps)."""
    from sweeps.best import default_mode
    from trainers.callbacks import EarlyStoppingCallback

    expected = "max" if metric in MAXIMISED_METRICS else "min"
    spec = EarlyStopSpec.model_validate({"metric": metric})
    callback = EarlyStoppingCallback(monitor=metric)
    assert spec.mode == expected
    assert default_mode(metric) == default_mode(f"best/{metric}") == expected
    assert callback.maximise is (expected == "max")


@pytest.mark.parametrize("metric", ["accuracy", "error_rate", "valid_loss"])
def test_a_tta_metric_is_ranked_as_its_plain_metric(metric: str) -> None:
    """``best --metric tta_accuracy`` picked the worst trial (minimised)."""
    from sweeps.best import default_mode

    assert (
        default_mode(f"tta_{metric}") == default_mode(f"best/tta_{metric}") == default_mode(metric)
    )


def test_dump_yaml_writes_a_shared_object_in_full_for_parse_yaml_to_read_back() -> None:
    from sweeps.spec import dump_yaml, parse_yaml

    shared = {"rotate": 10, "zoom": 1.1}
    data = {"a": shared, "b": shared}
    with pytest.raises(ValueError, match="alias"):
        parse_yaml(yaml.safe_dump(data))  # PyYAML's own dumper writes &id001 / *id001
    assert parse_yaml(dump_yaml(data)) == data


# --- review: inputs once accepted that failed later, or crashed with a traceback ------------------

LONG_PATH = "/tmp/" + "x" * 300  # one name longer than any file system takes (ENAMETOOLONG)

ACCEPTED_BUT_FAILING = [
    # every trial's range test would refuse its rule (slide needs 16 points after the cuts)
    (
        {"strategies.0": {"kind": "lr_finder", "suggest": ["valley", "slide"], "num_it": 22}},
        r"strategies\.0\.num_it: 22 is too few for rule 'slide': .* keeps 15, and slide needs 16 "
        r".*set num_it to at least 23",
    ),
    # Ray refuses resource amounts below 0.0001 when it starts a trial's actor
    ({"resources": {"cpu": 1.0e-5}}, r"resources\.cpu: 1e-05 is below 0\.0001, Ray's smallest"),
    ({"resources": {"gpu": 5.0e-5}}, r"resources\.gpu: 5e-05 is below 0\.0001"),
    (
        {"resources": {"custom": {"A100": 1.0e-6}}},
        r"resources\.custom\.A100: 1e-06 is below 0\.0001",
    ),
    ({"resources": {"custom": {"": 1}}}, r"resources\.custom: a custom resource needs a name"),
    # build_model refuses these in every trial
    ({"task.model": {"pretrained": ""}}, r"task\.model\.pretrained: must not be empty"),
    (
        {"task.model": {"arch": "simple_cnn", "pretrained": "IMAGENET1K_V1"}},
        r"task\.model\.pretrained: 'IMAGENET1K_V1' is no file here, and simple_cnn has no "
        r"torchvision weights names",
    ),
    (
        {"task.model": {"arch": "resnet18", "pretrained": "s3://bucket/w.pt"}},
        r"task\.model\.pretrained: 's3://bucket/w\.pt' is a URI, but the trials load weights "
        r"from a local file only",
    ),
    # the trials read these folders from the local disk only
    (
        {"task.dataset": {"name": "image_folder", "path": "s3://bucket/images"}},
        r"task\.dataset\.path: 's3://bucket/images' is a URI, but the trials read image_folder "
        r"from a local folder only",
    ),
    (
        {"task.dataset": {"name": "mnist", "path": __file__}},
        r"task\.dataset\.path: '.*test_spec\.py' is a file, but mnist reads a folder",
    ),
    # a contradiction: the stopper would stop trials as they improve
    (
        {"early_stop": {"metric": "accuracy", "mode": "min"}},
        r"early_stop\.mode: must be max for accuracy \(higher is better; min would stop trials "
        r"as they improve\), but got 'min'",
    ),
    (
        {"early_stop": {"metric": "valid_loss", "mode": "max"}},
        r"early_stop\.mode: must be min for valid_loss",
    ),
    # the sweep's name is a folder of Ray's storage: '..' would write above it
    ({"name": ".."}, r"name: must hold a letter, digit, _ or - .* but got '\.\.'"),
    ({"strategies.1.name": "."}, r"strategies\.1\.name: must hold a letter, digit"),
]


@pytest.mark.parametrize(("changes", "message"), ACCEPTED_BUT_FAILING)
def test_input_that_would_fail_after_the_start_is_refused_naming_its_field(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(_with(changes))


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("task.dataset.path", {"task.dataset": {"name": "image_folder", "path": "{path}"}}),
        ("task.dataset.path", {"task.dataset": {"name": "digits", "path": "{path}"}}),
        ("task.model.pretrained", {"task.model": {"pretrained": "{path}/w.pt"}}),
        ("storage.path", {"storage": {"path": "{path}"}}),
    ],
)
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("~no-such-user-lrsweep/data", r"'~no-such-user-lrsweep' is no known user's home folder"),
        (LONG_PATH, r"cannot be looked at: File name too long"),
    ],
)
def test_unusable_path_is_a_field_error_not_a_traceback(
    field: str, changes: dict[str, Any], path: str, message: str
) -> None:
    filled = json.loads(json.dumps(changes).replace("{path}", path))
    with pytest.raises(SpecError, match=re.escape(field) + ": .*" + message):
        load_spec(_with(filled))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("storage.path=", r"storage\.path: must not be empty; leave it out \(null\) for "),
        ("storage.path=' '", r"storage\.path: must not be empty"),
        ("task.dataset.path=", r"task\.dataset\.path: must not be empty; give the data's folder"),
        (
            "task.dataset={name: image_folder, path: ''}",
            r"task\.dataset\.path: must not be empty",
        ),
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_working_folder(
    override: str, message: str
) -> None:
    """``Path("")`` is ``"."``: an empty ``storage.path`` (``--set storage.path=``, meant to put
    the default back) put Ray's state straight into the working folder, and an empty
    ``image_folder`` path read the working folder as the data, each without a word."""
    with pytest.raises(SpecError, match=message):
        load_spec(BASE, overrides=[override])


def test_lr_finder_num_it_floor_matches_the_suggestion_rules() -> None:
    """The spec's table of points per rule is the trainers' own (the spec does not import them):
    a num_it the spec accepts is one every rule of the arm can judge, and no more is refused."""
    import numpy as np

    from trainers.suggestions import CurveTooShort, get_suggestion

    for rule in ("valley", "steep", "minimum", "slide"):
        for num_it in range(10, 40):
            arm = {"kind": "lr_finder", "suggest": [rule], "num_it": num_it}
            try:
                get_suggestion(rule)(
                    np.geomspace(1e-7, 10, num_it),
                    np.linspace(2, 1, num_it),
                    skip_start=num_it // 10,
                )
                judged = True
            except CurveTooShort:
                judged = False
            try:
                load_spec(_with({"strategies.0": arm}))
                accepted = True
            except SpecError:
                accepted = False
            assert accepted == judged, (rule, num_it)


def test_cmaes_sampler_is_refused_where_the_cmaes_package_is_missing(monkeypatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    arm = {"kind": "optuna", "lr": {"min": 1e-4, "max": 1.0}, "trials": 4, "sampler": "cmaes"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cmaes" else find_spec(name)
    )
    with pytest.raises(
        SpecError, match=r"strategies\.2\.sampler: cmaes needs the cmaes package.*pip install cmaes"
    ):
        load_spec(_with({"strategies.2": arm}))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert load_spec(_with({"strategies.2": arm})).strategies[2].sampler == "cmaes"


def test_pretrained_file_named_without_a_suffix_is_stored_absolute(
    tmp_path: Path, monkeypatch
) -> None:
    """Trials run in their own folders: a bare relative name kept as given would not be found
    there and be taken for a torchvision weights name."""
    (tmp_path / "weights").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    spec = load_spec(_with({"task.model": {"pretrained": "weights"}}))
    assert spec.task.model.pretrained == str(tmp_path.resolve() / "weights")
    resnet = load_spec(_with({"task.model": {"arch": "resnet18", "pretrained": "IMAGENET1K_V1"}}))
    assert resnet.task.model.pretrained == "IMAGENET1K_V1"  # a name stays a name


def test_unreadable_spec_file_is_refused_naming_it(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(BASE))

    def refuse(self: Path, *args: Any, **kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    with pytest.raises(SpecError, match=r"spec file '.*spec\.yaml' cannot be read \(Permission"):
        monkeypatch.setattr(Path, "read_text", refuse)
        load_spec(path)
    monkeypatch.undo()
    with pytest.raises(SpecError, match=r"cannot be read \(File name too long\)"):
        load_spec(LONG_PATH)


@pytest.mark.parametrize(
    ("spec_path", "message"),
    [
        (LONG_PATH, r"entries\.a\.spec_path: spec file .* cannot be read \(File name too long\)"),
        ("~no-such-user-lrsweep/x.yaml", r"entries\.a\.spec_path: .* is no known user's home"),
    ],
)
def test_suite_entry_with_an_unusable_spec_path_names_the_entry(
    spec_path: str, message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        load_suite({"name": "s", "entries": [{"name": "a", "spec_path": spec_path}]})


@pytest.mark.parametrize(
    "content",
    [b"name: x\ntask: {<<: {epochs: 5}, epochs: 1}\n", b"<<: {name: a}\nname: b\n"],
)
def test_yaml_merge_keys_are_refused_as_silent_duplicates(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=r"YAML merge keys \(<<\) are not allowed in specs"):
        load_spec(path)


def test_an_arm_named_after_another_kind_is_refused() -> None:
    """A grid arm named ``optuna``: ``best --strategy optuna`` took it, and the optuna arm
    named ``grid`` could not be chosen at all; the report's rows read the wrong way round."""
    named = {"kind": "grid", "name": "optuna", "lr": BASE_LR}
    with pytest.raises(SpecError, match=r"strategies\.0\.name: 'optuna' is the name of another"):
        load_spec(_with({"strategies": [named]}))
    load_spec(_with({"strategies": [{**named, "name": "grid"}]}))  # its own kind: as unnamed


@pytest.mark.parametrize(
    ("field", "raw", "message"),
    [
        ("task.epochs", "1:3", r"task\.epochs: must be a whole number, but got '1:3'"),
        ("task.batch_size", "010", r"task\.batch_size: .*but got '010'"),
        ("seeds.0", "1:0", r"seeds\.0: must be a whole number, but got '1:0'"),
        ("strategies.1.lr.min", "1:3", r"strategies\.1\.lr\.min: must be a number"),
    ],
)
def test_yaml_1_1_base_60_and_octal_numbers_are_text_the_field_refuses(
    tmp_path: Path, field: str, raw: str, message: str
) -> None:
    """YAML 1.1 reads ``1:30`` as 90 (base 60) and ``010`` as 8: a range typed as ``1:3``
    became a 63-epoch sweep, ``seeds=[1:0]`` seed 60, with no word. Read as text (as YAML 1.2
    does), the field refuses it, in a file and in ``--set``."""
    with pytest.raises(SpecError, match=message):
        load_spec(BASE, overrides=[f"{field}={raw}"])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_with({field: "PLACE"}), sort_keys=False).replace("PLACE", raw))
    with pytest.raises(SpecError, match=message):
        load_spec(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("name.x=1", r"name is a single value and has no key 'x'"),
        ("strategies.1.lr.min.x=1", r"strategies\.1\.lr\.min is a single value and has no key"),
    ],
)
def test_a_refused_override_changes_nothing_else(override: str, message: str) -> None:
    """Only the override's own error: the field it could not reach keeps its valid value."""
    with pytest.raises(SpecError, match=message) as caught:
        load_spec(BASE, overrides=[override])
    assert len(caught.value.errors) == 1, caught.value.errors


def test_indexing_a_list_the_spec_leaves_at_its_default_says_how_to_set_it() -> None:
    data = _with({"seeds": DELETE})
    with pytest.raises(SpecError, match=r"seeds holds no list to index into; set the whole list"):
        load_spec(data, overrides=["seeds.0=5"])


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"gpu type": "a100"}, r"resources\.node_labels\.gpu type: is not a label key"),
        (
            {"accel": "!in(a100,h100"},
            r"resources\.node_labels\.accel: '!in\(a100,h100' is not a label selector; write "
            r"value, !value, in\(a,b\) or !in\(a,b\)",
        ),
    ],
)
def test_node_label_selector_ray_would_refuse_at_placement_is_refused(
    labels: dict[str, str], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(_with({"resources": {"node_labels": labels}}))


def test_node_label_syntax_is_rays() -> None:
    """Ray checks a selector only when it places a trial; the spec checks it with the same rules
    (its own copy: the spec does not import Ray)."""
    from ray._private.label_utils import validate_label_key, validate_label_selector_value

    keys = ["gpu", "gpu type", "ray.io/accelerator-type", "/x", "-a", "a" * 63, "a" * 64, ""]
    selectors = ["a100", "!a100", "in(a,b)", "in(a, b)", "!in(a,b)", "(a,b)", "in(a,b", "in()"]
    selectors += ["x y", "", "!", "in(a,,b)", "a" * 64, "!!a", "in(a,  b)"]
    for key in keys:
        ray_accepts = validate_label_key(key) is None
        try:
            load_spec(_with({"resources": {"node_labels": {key: "a"}}}))
            accepted = True
        except SpecError:
            accepted = False
        assert accepted == ray_accepts, key
    for selector in selectors:
        ray_accepts = validate_label_selector_value(selector) is None
        try:
            load_spec(_with({"resources": {"node_labels": {"accel": selector}}}))
            accepted = True
        except SpecError:
            accepted = False
        assert accepted == ray_accepts, selector


def test_a_yaml_boolean_where_text_belongs_says_to_quote_it(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(BASE).replace("name: tiny", "name: no"))
    with pytest.raises(
        SpecError,
        match=r"name: must be a string, but got False \(YAML reads unquoted yes, no, on and off "
        r"as true/false; quote a word meant as text\)",
    ):
        load_spec(path)


def test_a_key_yaml_1_1_reads_as_a_boolean_null_or_number_is_its_text(tmp_path: Path) -> None:
    """Every key of a spec is a name: ``on:`` was YAML 1.1's true and failed as ``1: Keys
    should be strings`` (a field the file has no line for); a label or an option named ``on``
    could not be written unquoted. Now a key is the text it is written as."""
    text = yaml.safe_dump(BASE, sort_keys=False)
    path = tmp_path / "spec.yaml"
    path.write_text(text + "on: 1\nnull: 2\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert [line.split(" (accepted")[0] for line in caught.value.errors] == [
        "on: unknown key",
        "null: unknown key",
    ]
    path.write_text(text + "resources: {node_labels: {on: x}, custom: {1: 0.5}}\n")
    resources = load_spec(path).resources
    assert (resources.node_labels, resources.custom) == ({"on": "x"}, {"1": 0.5})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            "task.epochs=3",
            r"^overrides: must be a list of key\.path=value strings, but got one string "
            r"'task\.epochs=3'; write \['task\.epochs=3'\]\.$",
        ),
        (
            [3, "task.epochs=4"],
            r"^overrides: each must be a key\.path=value string, such as 'task\.epochs=3', but "
            r"got int 3\.$",
        ),
    ],
)
def test_overrides_from_python_that_are_no_list_of_strings_are_one_clear_error(
    overrides: Any, message: str
) -> None:
    """``run_sweep(spec, overrides="seeds=[0]")`` read the string one character at a time (a
    dozen "--set 't': expected key.path=value" lines), and an item that is no string was an
    AttributeError traceback."""
    with pytest.raises(SpecError) as caught:
        load_spec(BASE, overrides=overrides)
    assert len(caught.value.errors) == 1
    assert re.match(message, caught.value.errors[0])
    assert load_spec(BASE, overrides=None).task.epochs == BASE["task"]["epochs"]


def test_a_refused_value_cut_short_keeps_its_ellipsis() -> None:
    """A long value is quoted cut to 60 characters ending in ``...``; the line's full stop was
    put in place of the ellipsis, leaving the text's quote open as if it ended there."""
    with pytest.raises(SpecError) as caught:
        load_spec(BASE, overrides=["name=" + "a" * 120, "task.dataset.name=" + "x" * 80])
    assert caught.value.errors == (
        "name: must be at most 100 characters, but got '" + "a" * 56 + "...",
        "task.dataset.name: unknown value '" + "x" * 56 + "... (accepted: digits, shapes, "
        "image_folder, mnist, fashion_mnist, cifar10).",
    )


def test_a_stopper_written_as_yaml_s_off_or_on_is_off_or_its_defaults(tmp_path: Path) -> None:
    """``early_stop: off`` (YAML 1.1's false) was refused as "must be a mapping, but got
    False", never saying that null turns it off; as for ``tta`` and ``amp``, false is off."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False) + "early_stop: off\ndivergence: on\n")
    spec = load_spec(path)
    assert spec.early_stop is None
    assert spec.divergence == load_spec(BASE).divergence
    assert load_spec(BASE, overrides=["divergence=no"]).divergence is None


def test_a_loaded_spec_with_overrides_keeps_what_it_left_to_the_defaults() -> None:
    """``run_sweep(load_spec(d), overrides=[...])`` went through the resolved spec, every
    default written out: its default early_stop then read as one the user set, and a 2-epoch
    sweep was warned that it can never stop a trial."""
    from sweeps.run import _load

    data = _with({"strategies": BASE["strategies"][:4], "task.epochs": 2})
    direct = load_spec(data, overrides=["seeds=[0, 1]"])
    again = _load(load_spec(data), ["seeds=[0, 1]"])
    assert again.resolved() == direct.resolved()
    assert again.advice() == direct.advice() == []
    stop = _load(load_spec(_with({**data, "early_stop": {}})), ["seeds=[0, 1]"])
    assert any("can never stop a trial" in note for note in stop.advice())  # written: said


def test_a_mapping_override_replaces_its_section_and_a_dotted_one_keeps_the_rest() -> None:
    """As the README and ``--set``'s help say: a user's `tracking={checkpoints: none}` drops the
    file's tracking.uri; `tracking.checkpoints=none` keeps it."""
    data = _with({"tracking": {"uri": "sqlite:////tmp/team.db", "checkpoints": "best"}})
    whole = load_spec(data, overrides=["tracking={checkpoints: none}"]).tracking
    assert (whole.uri, whole.checkpoints) == (None, "none")
    one = load_spec(data, overrides=["tracking.checkpoints=none"]).tracking
    assert (one.uri, one.checkpoints) == ("sqlite:////tmp/team.db", "none")


def test_tta_true_is_fastais_defaults_and_stages_read_back(tmp_path: Path) -> None:
    spec = load_spec(
        _with(
            {
                "task.tta": True,
                "task.augment": "light",
                "task.progressive_resizing": [{"size": 8, "epochs": 1}, {"size": 16, "epochs": 1}],
                "strategies.4": DELETE,
            }
        )
    )
    assert (spec.task.tta.n, spec.task.tta.beta) == (4, 0.25)
    assert [(s.size, s.epochs) for s in spec.task.progressive_resizing] == [(8, 1), (16, 1)]
    path = tmp_path / "spec.yaml"
    path.write_text(spec.to_yaml(), encoding="utf-8")
    assert load_spec(path) == spec
    assert load_spec(_with({"task.tta": False})).task.tta is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            "a.task.epochs=3",
            r"^overrides: must be a list of <entry>\.key\.path=value strings, but got one string "
            r"'a\.task\.epochs=3'; write \['a\.task\.epochs=3'\]\.$",
        ),
        (
            [3, "a.task.epochs=4"],
            r"^overrides: each must be an <entry>\.key\.path=value string, such as "
            r"'digits\.task\.epochs=3', but got int 3\.$",
        ),
    ],
)
def test_suite_overrides_from_python_that_are_no_list_of_strings_are_one_clear_error(
    tmp_path: Path, overrides: Any, message: str
) -> None:
    """``load_suite(path, overrides="a.task.epochs=3")`` read the string one character at a
    time (a line per character: "no suite entry named 'a'", "... 'task'"...), and an item that
    is no string was an AttributeError traceback."""
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps({"name": "nightly", "entries": [{"name": "a", "spec": BASE}]}))
    with pytest.raises(SpecError) as caught:
        load_suite(path, overrides=overrides)
    assert len(caught.value.errors) == 1
    assert re.match(message, caught.value.errors[0]), caught.value.errors[0]
    assert load_suite(path, overrides=None).entries[0].spec.task.epochs == BASE["task"]["epochs"]
