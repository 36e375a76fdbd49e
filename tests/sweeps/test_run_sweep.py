"""A real small sweep on local Ray and an embedded MLflow store, checked against issue 4's list.

One module-scoped sweep (shapes, 12 px, two seeds, the four strategy arms and fastai's recipe,
built to overfit so that ``RisingValLoss`` fires) feeds every assertion; it takes about 40 s on
2 otherwise idle CPUs.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import run_script

from sweeps.progress import SweepProgress
from sweeps.report import build_report
from sweeps.run import SweepResult, run_sweep
from sweeps.tracking import Tracker, mlflow_tracking_uri

pytestmark = pytest.mark.slow

EPOCHS = 5
SEEDS = [0, 1]
SPEC: dict[str, Any] = {
    "name": "sweep-test",
    "task": {
        # 16 images per class: a small CNN overfits within a few epochs at a constant rate.
        "dataset": {"name": "shapes", "valid_pct": 0.25, "seed": 3, "options": {"n_per_class": 16}},
        "image_size": 12,
        "batch_size": 12,
        "epochs": EPOCHS,
        "schedule": {"kind": "constant"},
    },
    "seeds": SEEDS,
    "strategies": [
        {"kind": "lr_finder", "suggest": ["valley"], "num_it": 20, "start_lr": 1e-5, "end_lr": 1.0},
        {"kind": "grid", "lr": {"min": 3e-3, "max": 3e-2, "points": 2}},
        {"kind": "optuna", "lr": {"min": 1e-3, "max": 3e-2}, "trials": 2, "sampler": "tpe"},
        {"kind": "random", "lr": {"min": 1e-3, "max": 3e-2}, "trials": 2},
        {"kind": "recipe", "suggest": "valley", "max_epochs": 4},
    ],
    "early_stop": {"metric": "valid_loss", "patience": 1, "min_delta": 0.0, "grace_epochs": 1},
    "divergence": {"metric": "train_loss", "factor": 1000.0},
    "resources": {"cpu": 1},
    "failure": {"max_failures": 0},
}
EXPECTED_TRIALS = {"lr_finder": 2, "grid": 4, "optuna": 4, "random": 4, "recipe": 2}
RECIPE_EPOCHS = 4
PROGRESS = SweepProgress(live=False)
ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"
ANALYSIS_WARNINGS: list[str] = []  # what Tune's result analysis let through during the sweep


class _Recorder(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        ANALYSIS_WARNINGS.append(record.getMessage())


@pytest.fixture(scope="module")
def sweep(
    ray_cluster: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SweepResult, Tracker]:
    root = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    recorder = _Recorder(logging.WARNING)
    logging.getLogger(ANALYSIS_LOGGER).addHandler(recorder)
    try:
        result = run_sweep(SPEC, tracking_uri=uri, storage_path=root / "ray", progress=PROGRESS)
    finally:
        logging.getLogger(ANALYSIS_LOGGER).removeHandler(recorder)
    return result, Tracker(uri)


def test_no_warning_about_tune_result_files_lrsweep_turns_off(
    sweep: tuple[SweepResult, Tracker],
) -> None:
    # Tune's CSV/JSON loggers are off (MLflow has every result); Tune's one-line-per-trial
    # "Failed to fetch metrics ... progress.csv were not found" must not reach the user.
    assert sweep[0].n_trials == sum(EXPECTED_TRIALS.values())
    assert not [m for m in ANALYSIS_WARNINGS if "Failed to fetch metrics" in m]


def _children(sweep: tuple[SweepResult, Tracker]) -> list[Any]:
    result, tracker = sweep
    return tracker.child_runs(result.experiment_id, result.parent_run_id)


def test_sweep_finishes_with_the_expected_trials_per_arm(
    sweep: tuple[SweepResult, Tracker],
) -> None:
    result, _ = sweep
    assert not result.interrupted
    children = _children(sweep)
    per_arm: dict[str, int] = {}
    for run in children:
        per_arm[run.data.tags["sweeps.arm"]] = per_arm.get(run.data.tags["sweeps.arm"], 0) + 1
    assert per_arm == EXPECTED_TRIALS
    assert result.n_trials == sum(EXPECTED_TRIALS.values())
    assert {r.data.tags["sweeps.sweep_id"] for r in children} == {result.sweep_id}
    assert sorted({int(r.data.params["seed"]) for r in children}) == SEEDS


def test_progress_counted_every_trial_of_every_arm(sweep: tuple[SweepResult, Tracker]) -> None:
    stopped = sum(r.data.tags["sweeps.stop_reason"] == "rising_val_loss" for r in _children(sweep))
    assert {name: arm.total for name, arm in PROGRESS.arms.items()} == EXPECTED_TRIALS
    assert {name: arm.done for name, arm in PROGRESS.arms.items()} == EXPECTED_TRIALS
    assert sum(arm.running + arm.failed for arm in PROGRESS.arms.values()) == 0
    assert sum(arm.stopped for arm in PROGRESS.arms.values()) == stopped
    assert all(math.isfinite(arm.best_valid_loss) for arm in PROGRESS.arms.values())
    assert "best valid loss" in str(PROGRESS.table().columns[-1].header)


def test_every_run_is_closed_under_one_parent(sweep: tuple[SweepResult, Tracker]) -> None:
    result, tracker = sweep
    parent = tracker.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweeps.kind"] == "sweep"
    runs = tracker.search_runs(result.experiment_id)
    assert len(runs) == 1 + sum(EXPECTED_TRIALS.values())
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in _children(sweep):
        assert run.data.tags["mlflow.parentRunId"] == result.parent_run_id
        assert run.data.tags["sweeps.stop_reason"] in ("completed", "rising_val_loss")
        assert run.data.tags["sweeps.diagnosis"]
        assert run.data.tags["sweeps.node"]


def test_per_epoch_and_per_step_metrics_are_complete_up_to_the_stop(
    sweep: tuple[SweepResult, Tracker],
) -> None:
    _, tracker = sweep
    for run in _children(sweep):
        run_id, epochs_run = run.info.run_id, int(run.data.metrics["epochs_run"])
        stopped = run.data.tags["sweeps.stop_reason"] == "rising_val_loss"
        budget = RECIPE_EPOCHS if run.data.tags["sweeps.strategy"] == "recipe" else EPOCHS
        assert epochs_run < budget if stopped else epochs_run == budget
        for key in ("valid_loss", "error_rate", "accuracy", "epoch_time_s"):
            steps = [step for step, _ in tracker.metric_history(run_id, key)]
            assert steps == list(range(epochs_run)), (key, run_id)
        step_points = tracker.metric_history(run_id, "train_loss")
        assert [s for s, _ in step_points] == list(range(len(step_points)))
        assert len(step_points) % epochs_run == 0 and len(step_points) >= epochs_run
        assert len(tracker.metric_history(run_id, "lr")) == len(step_points)
        best_epoch = int(run.data.tags["sweeps.best_epoch"])
        history = dict(tracker.metric_history(run_id, "valid_loss"))
        assert run.data.metrics["best/valid_loss"] == pytest.approx(min(history.values()))
        assert history[best_epoch] == pytest.approx(run.data.metrics["best/valid_loss"])


def test_rising_validation_loss_stops_at_least_one_trial(
    sweep: tuple[SweepResult, Tracker],
) -> None:
    reasons = [r.data.tags["sweeps.stop_reason"] for r in _children(sweep)]
    assert "rising_val_loss" in reasons


def test_finder_trials_log_the_range_test_and_train_at_its_pick(
    sweep: tuple[SweepResult, Tracker],
) -> None:
    _, tracker = sweep
    finder = [r for r in _children(sweep) if r.data.tags["sweeps.strategy"] == "lr_finder"]
    assert len(finder) == 2
    for run in finder:
        losses = tracker.metric_history(run.info.run_id, "lr_find/loss")
        lrs = tracker.metric_history(run.info.run_id, "lr_find/lr")
        assert len(losses) == len(lrs) > 5
        assert [s for s, _ in lrs] == list(range(len(lrs)))
        assert run.data.tags["sweeps.rule"] == "valley"
        assert lrs[0][1] <= float(run.data.params["lr"]) <= lrs[-1][1]
        assert run.data.metrics["lr_find_s"] > 0
        assert "lr_find.png" in tracker.list_artifacts(run.info.run_id)


def test_recipe_trials_log_their_range_tests_seconds(sweep: tuple[SweepResult, Tracker]) -> None:
    """A recipe runs two range tests; their seconds were counted in ``compute_s`` but logged
    as ``lr_find_s`` 0.0, as if it had run none."""
    recipe = [r for r in _children(sweep) if r.data.tags["sweeps.strategy"] == "recipe"]
    assert len(recipe) == 2
    _, tracker = sweep
    for run in recipe:
        metrics = run.data.metrics
        assert 0 < metrics["lr_find_s"] < metrics["compute_s"]
        # the second test's pick, which its last (unfrozen SGDR) steps start at, is logged too:
        # `lr` holds only the first test's (the head's)
        unfrozen = float(run.data.params["recipe_unfrozen_lr"])
        steps = [v for _, v in tracker.metric_history(run.info.run_id, "lr")]
        assert any(math.isclose(v, unfrozen, rel_tol=1e-6) for v in steps), (unfrozen, steps)
    others = [r for r in _children(sweep) if r.data.tags["sweeps.strategy"] != "recipe"]
    assert not any("recipe_unfrozen_lr" in r.data.params for r in others)


def test_every_trial_has_checkpoints_plots_and_a_model(sweep: tuple[SweepResult, Tracker]) -> None:
    _, tracker = sweep
    for run in _children(sweep):
        run_id = run.info.run_id
        epochs_run = int(run.data.metrics["epochs_run"])
        # epochs of a fraction of a second: one checkpoint, at the trial's last epoch
        # (tracking.checkpoint_every_s: 30)
        last = f"checkpoints/epoch-{epochs_run - 1:03d}"
        assert tracker.list_artifacts(run_id, "checkpoints") == [last]
        assert f"{last}/learner.pt" in tracker.list_artifacts(run_id, last)
        assert {"curves.png", "confusion_matrix.png"} <= set(tracker.list_artifacts(run_id))


def test_the_confusion_matrix_is_the_best_epochs(
    sweep: tuple[SweepResult, Tracker], tmp_path: Path
) -> None:
    # its counts come from the best epoch's own validation (no second pass): their accuracy is
    # the best epoch's, which a later epoch's or the last weights' would not match everywhere
    _, tracker = sweep
    runs = [r for r in _children(sweep) if r.data.tags["sweeps.best_epoch"] != ""]
    assert any(  # a trial whose best epoch is not its last (its last weights count otherwise)
        int(r.data.tags["sweeps.best_epoch"]) < r.data.metrics["epochs_run"] - 1 for r in runs
    )
    for run in runs:
        run_id = run.info.run_id
        path = tracker.download_artifact(run_id, "confusion_matrix.json", tmp_path / run_id)
        table = json.loads(path.read_text(encoding="utf-8"))
        counts = table["counts"]
        assert len(table["classes"]) == len(counts) == 3
        assert table["epoch"] == int(run.data.tags["sweeps.best_epoch"])
        correct = sum(counts[i][i] for i in range(3))
        total = sum(map(sum, counts))
        assert correct / total == pytest.approx(run.data.metrics["best/accuracy"], abs=1e-6)


def test_results_go_to_mlflow_only_not_to_tunes_own_loggers(
    sweep: tuple[SweepResult, Tracker],
) -> None:
    # Tune's CSV / JSON / TensorBoard loggers would write every result again, in the driver
    result, _ = sweep
    names = {path.name for path in result.sweep_dir.rglob("*")}
    assert names, f"nothing under {result.sweep_dir}"
    assert not {"progress.csv", "result.json"} & names
    assert not [name for name in names if name.startswith("events.out.tfevents")]


def test_best_model_loads_from_mlflow(sweep: tuple[SweepResult, Tracker]) -> None:
    import mlflow
    import torch

    result, _ = sweep
    run = _children(sweep)[0]
    with mlflow_tracking_uri(sweep[1].uri):
        model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 12, 12))
    assert out.shape == (2, 3)
    assert result.report is not None


_LOAD_WITHOUT_LRSWEEP = """
import importlib.metadata, json, sys
try:
    import trainers
except ImportError:
    pass
else:
    sys.exit("trainers is importable here: " + trainers.__file__)
import mlflow, mlflow.pyfunc, numpy
mlflow.set_tracking_uri(sys.argv[1])
before = set(sys.modules)
model = mlflow.pyfunc.load_model(sys.argv[2])
out = model.predict(numpy.zeros((2, 3, 12, 12), dtype=numpy.float32))
imported = {name.partition(".")[0] for name in set(sys.modules) - before} - {"trainers"}
assert sys.modules["trainers.models"].__file__.endswith("trainers.zip/trainers/models/__init__.py")
owners = importlib.metadata.packages_distributions()
dists = sorted({d.lower().replace("_", "-") for name in imported for d in owners.get(name, [])})
print(json.dumps({"out": numpy.asarray(out).tolist(), "dists": dists}))
"""


def test_best_model_loads_and_predicts_where_lrsweep_is_not_installed(
    sweep: tuple[SweepResult, Tracker], tmp_path: Path
) -> None:
    # The pickled model names trainers' classes: without their source shipped with it, it
    # loaded only where lrsweep was installed, and its requirements named torch alone.
    import os
    import subprocess
    import sys
    import sysconfig

    import mlflow
    import torch

    run = _children(sweep)[0]
    uri = f"runs:/{run.info.run_id}/model"
    env = {  # the packages alone: -S skips the .pth files that make lrsweep importable
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-S", "-c", _LOAD_WITHOUT_LRSWEEP, sweep[1].uri, uri],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    with mlflow_tracking_uri(sweep[1].uri):
        model = mlflow.pytorch.load_model(uri)
        requirements_file = mlflow.pyfunc.get_model_dependencies(uri)
    with torch.no_grad():
        expected = model(torch.zeros(2, 3, 12, 12))
    assert torch.allclose(torch.tensor(answer["out"]), expected, atol=1e-6)
    required = {
        line.split("==")[0].lower()
        for line in Path(requirements_file).read_text().splitlines()
        if "==" in line
    }
    assert {"mlflow", "torch", "matplotlib", "rich", "pillow"} <= required
    # where lrsweep is installed, loading the model first imports the installed trainers, so
    # the rest of lrsweep does not run against the model's copy
    first = "import sys, mlflow; mlflow.set_tracking_uri(sys.argv[1]); "
    first += "mlflow.pytorch.load_model(sys.argv[2]); import trainers; print(trainers.__file__)"
    installed_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    paths = []
    for code_line in (first, "import trainers; print(trainers.__file__)"):
        done = subprocess.run(
            [sys.executable, "-c", code_line, sweep[1].uri, uri],
            cwd=tmp_path,
            env=installed_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        paths.append(done.stdout.strip().splitlines()[-1])
    # the installed copy (the venv's editable install points at the checkout it was made from,
    # which in a second clone sharing that venv is not this test's own trainers)
    assert paths[0] == paths[1]
    assert "trainers.zip" not in paths[0], paths[0]
    code = Path(requirements_file).parent / "code"  # one archive, not ~50 uploads per trial
    assert sorted(p.relative_to(code).as_posix() for p in code.rglob("*") if p.is_file()) == [
        "trainers.zip",
        "trainers/__init__.py",
    ]
    missing = set(answer["dists"]) - _installed_with(required)
    assert not missing, f"imported by the model's unpickling, not in its requirements: {missing}"


def test_load_predictor_takes_raw_pixels_as_the_trials_data_were(
    sweep: tuple[SweepResult, Tracker],
) -> None:
    # The bare model takes images normalised with the trial's data's statistics, which MLflow
    # held nowhere: 0..255 pixels predicted garbage without a word.
    import mlflow
    import torch

    from sweeps import load_predictor
    from sweeps.best import BestConfigError
    from trainers import make_dataloaders

    run = _children(sweep)[0]
    uri = f"runs:/{run.info.run_id}/model"
    predictor = load_predictor(uri, tracking_uri=sweep[1].uri, device="cpu")
    with mlflow_tracking_uri(sweep[1].uri):  # read from the trial's weights-only export
        listed = mlflow.models.Model.load(uri).flavors["pytorch"]["extra_files"]
    assert listed == [{"path": "extra_files/export.pt"}]
    task = SPEC["task"]
    dataset = task["dataset"]
    dls = make_dataloaders(
        dataset["name"],
        image_size=task["image_size"],
        batch_size=task["batch_size"],
        seed=dataset["seed"],
        valid_pct=dataset["valid_pct"],
        **dataset["options"],
    )
    assert predictor.classes == list(dls.classes)
    assert predictor.mean == pytest.approx(list(dls.mean))
    assert predictor.std == pytest.approx(list(dls.std))
    assert (predictor.image_size, predictor.in_channels) == (12, 3)
    pixels = torch.randint(0, 256, (4, 3, 12, 12), dtype=torch.uint8)
    with mlflow_tracking_uri(sweep[1].uri):
        bare = mlflow.pytorch.load_model(uri).eval()
    with torch.no_grad():
        expected = bare(dls.valid.normalise(pixels)).softmax(dim=1)
    assert torch.allclose(predictor.predict(pixels), expected, atol=1e-6)
    assert predictor.predict_class(pixels[0]) in dls.classes
    with pytest.raises(BestConfigError, match=r"model runs:/0123456789abcdef/model: "):
        load_predictor("runs:/0123456789abcdef/model", tracking_uri=sweep[1].uri)


def test_load_predictor_reads_a_downloaded_model_without_a_store(
    sweep: tuple[SweepResult, Tracker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A model copied off the store (to serve it elsewhere) was refused for want of a store.
    import mlflow
    import torch

    from sweeps import load_predictor
    from sweeps.best import BestConfigError

    uri = f"runs:/{_children(sweep)[0].info.run_id}/model"
    with mlflow_tracking_uri(sweep[1].uri):
        folder = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "copy"))
    monkeypatch.chdir(tmp_path)  # no mlflow.db here, nor a tracking URI in the environment
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pixels = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8)
    copied = load_predictor(folder, device="cpu")
    stored = load_predictor(uri, tracking_uri=sweep[1].uri, device="cpu")
    assert copied.classes == stored.classes
    assert torch.equal(copied.predict(pixels), stored.predict(pixels))
    assert not (tmp_path / "mlflow.db").exists()
    with pytest.raises(BestConfigError, match="No MLflow store at"):  # a run's URI needs one
        load_predictor(uri, device="cpu")


def _shape_files(folder: Path) -> list[Path]:
    """One image of each class of the sweep's data, at 20 px (resized to the trial's 12)."""
    from PIL import Image

    from trainers.data import open_dataset

    source = open_dataset("shapes", seed=3, n_per_class=16)
    files = []
    for index in (0, 16, 32):
        pixels = source.images(20)[index].permute(1, 2, 0).numpy()
        files.append(folder / f"{source.classes[int(source.labels[index])]}.png")
        Image.fromarray(pixels).save(files[-1])
    return files


def test_predict_classifies_image_files_with_the_best_trials_model(
    sweep: tuple[SweepResult, Tracker], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from sweeps import best_config, load_predictor
    from sweeps.cli import app

    files = _shape_files(tmp_path)
    uri = sweep[1].uri
    args = ["predict", "sweep-test", *map(str, files), "--tracking-uri", uri, "--top", "2"]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    best = best_config("sweep-test", tracking_uri=uri)
    assert answer["model_uri"] == best.model_uri
    predictor = load_predictor(best.model_uri, tracking_uri=uri, device="cpu")
    expected = predictor.predict([str(f) for f in files])
    for row, probs in zip(answer["images"], expected, strict=True):
        (first, second) = row["predictions"]
        assert first["class"] == predictor.classes[int(probs.argmax())]
        assert first["probability"] == pytest.approx(float(probs.max()), abs=1e-4)
        assert first["probability"] >= second["probability"]
    text = CliRunner().invoke(app, args[:-2])
    assert text.exit_code == 0, text.output
    assert text.stdout.splitlines()[0] == (
        f"{files[0]}: {answer['images'][0]['predictions'][0]['class']} "
        f"{answer['images'][0]['predictions'][0]['probability']:.3f}"
    )
    assert f"model {best.model_uri} (arm " in text.stderr
    missing = CliRunner().invoke(app, ["predict", "sweep-test", str(tmp_path / "no.png")])
    assert missing.exit_code == 2 and "no such image file: " in missing.stderr


def test_predict_by_a_trials_run_id_or_uri_uses_that_trial_not_the_best(
    sweep: tuple[SweepResult, Tracker], tmp_path: Path
) -> None:
    # A trial as a sweep tags and logs it: --trial RUN_ID and runs:/RUN_ID/model predict with
    # its own model (not the best trial's), and the output names it.
    from typer.testing import CliRunner

    from sweeps import best_config, load_predictor
    from sweeps.cli import app

    tracker = sweep[1]
    best = best_config("sweep-test", tracking_uri=tracker.uri)
    ranked = [  # finite losses: a diverged trial's model may give NaN
        run
        for run in _children(sweep)
        if math.isfinite(run.data.metrics.get("best/valid_loss", math.nan))
        and run.data.tags.get("sweeps.stop_reason") not in ("diverged", "failed")
    ]
    worst_first = sorted(  # the worst trial's model is the likeliest to disagree with the best's
        ranked, key=lambda run: -run.data.metrics["best/valid_loss"]
    )
    trial = next(run.info.run_id for run in worst_first if tracker.has_model(run.info.run_id))
    files = _shape_files(tmp_path)
    predictor = load_predictor(f"runs:/{trial}/model", tracking_uri=tracker.uri, device="cpu")
    expected = predictor.predict([str(f) for f in files])
    assert best.model_uri is not None and trial != best.run_id
    best_predictor = load_predictor(best.model_uri, tracking_uri=tracker.uri, device="cpu")
    assert (best_predictor.predict([str(f) for f in files]) - expected).abs().max() > 1e-3
    for named in (["--trial", trial], [f"runs:/{trial}/model"]):
        args = [*named, *map(str, files), "--tracking-uri", tracker.uri, "--top", "3"]
        result = CliRunner().invoke(app, ["predict", *args, "--format", "json"])
        assert result.exit_code == 0, result.output
        answer = json.loads(result.stdout)
        assert (answer["model_uri"], answer["run_id"]) == (f"runs:/{trial}/model", trial)
        for row, probs in zip(answer["images"], expected, strict=True):
            got = {p["class"]: p["probability"] for p in row["predictions"]}
            assert [got[c] for c in predictor.classes] == pytest.approx(probs.tolist(), abs=6e-5)
    text = CliRunner().invoke(
        app, ["predict", "--trial", trial, str(files[0]), "--tracking-uri", tracker.uri]
    )
    assert text.exit_code == 0, text.output
    assert text.stderr.startswith(
        f"model runs:/{trial}/model (trial of experiment 'sweep-test', arm "
    )


def _installed_with(names: set[str]) -> set[str]:
    """``names`` and every distribution they require here, transitively (pip's closure)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: set[str] = set()
    todo = [canonicalize_name(name) for name in names]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        try:
            wanted = requires(name) or []
        except PackageNotFoundError:
            continue
        for line in wanted:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return found


def test_report_equals_a_recomputation_from_mlflow(
    sweep: tuple[SweepResult, Tracker], tmp_path: Path
) -> None:
    result, tracker = sweep
    assert result.report is not None
    again = build_report(result.experiment, tracking_uri=tracker.uri, figures_dir=tmp_path)
    assert again.parent_run_id == result.parent_run_id
    assert again.groups == result.report.groups
    children = _children(sweep)
    grid = [r for r in children if r.data.tags["sweeps.arm"] == "grid"]
    per_seed = {
        seed: min(
            (r for r in grid if int(r.data.params["seed"]) == seed),
            key=lambda r: r.data.metrics["best/valid_loss"],
        )
        for seed in SEEDS
    }
    row = again.group("grid")
    losses = [r.data.metrics["best/valid_loss"] for r in per_seed.values()]
    assert row.valid_loss_mean == pytest.approx(sum(losses) / len(losses))
    assert row.n_trials == 4
    assert row.epochs_run == sum(int(r.data.metrics["epochs_run"]) for r in grid)
    assert row.compute_s == pytest.approx(sum(r.data.metrics["compute_s"] for r in grid))
    assert row.compute_vs_grid == pytest.approx(1.0)
    assert min(g.regret for g in again.groups) == 0.0
    assert {g.group for g in again.groups} == {
        "lr_finder:valley",
        "grid",
        "optuna",
        "random",
        "recipe",
    }
    assert all(math.isfinite(g.chosen_lr) for g in again.groups)


def test_parent_run_holds_spec_and_report(sweep: tuple[SweepResult, Tracker]) -> None:
    result, tracker = sweep
    artifacts = set(tracker.list_artifacts(result.parent_run_id))
    expected = {"spec.yaml", "report.md", "report.html", "comparison.png", "results.csv"}
    assert expected <= artifacts
    html_dir = tracker.download_artifact(result.parent_run_id, "report.html", tracker_tmp(result))
    text = html_dir.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text and "<img" in text and 'src="http' not in text


def test_report_format_json_has_the_numbers_of_the_sweeps_results_csv(
    sweep: tuple[SweepResult, Tracker], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from sweeps.cli import app

    result, tracker = sweep
    args = ["report", "sweep-test", "--tracking-uri", tracker.uri, "--format", "json"]
    printed = CliRunner().invoke(app, args)
    assert printed.exit_code == 0, printed.output
    shown = json.loads(printed.stdout)
    assert (shown["parent_run_id"], shown["status"], shown["note"]) == (
        result.parent_run_id,
        "FINISHED",
        None,
    )
    assert shown["trials_by_status"] == {"FINISHED": sum(EXPECTED_TRIALS.values())}
    logged = tracker.download_artifact(result.parent_run_id, "results.csv", tmp_path)
    rows = list(csv.DictReader(logged.read_text(encoding="utf-8").splitlines()))
    assert [g["group"] for g in shown["groups"]] == [row["group"] for row in rows]
    for group, row in zip(shown["groups"], rows, strict=True):
        assert list(group) == list(row)
        numbers = {key: float(cell) for key, cell in row.items() if key not in ("group", "kind")}
        assert {key: group[key] for key in numbers} == {
            key: None if math.isnan(value) else value for key, value in numbers.items()
        }
    assert shown["groups"][0]["regret"] == 0.0
    grid = next(g for g in shown["groups"] if g["group"] == "grid")
    assert (grid["n_trials"], grid["compute_vs_grid"]) == (EXPECTED_TRIALS["grid"], 1.0)
    assert {t["run_id"] for t in shown["trials"]} == {r.info.run_id for r in _children(sweep)}


def tracker_tmp(result: SweepResult) -> Path:
    folder = result.sweep_dir / "downloaded"
    folder.mkdir(exist_ok=True)
    return folder


# A trial SIGKILLs its own worker right after logging an epoch to MLflow and before reporting it
# to Tune (the worst moment for exactly-once logging); Ray restarts it from its latest
# checkpoint. Runs in its own driver process so the fault switch reaches the workers.
KILLED_WORKER_SWEEP = """
import json, os, sys
from sweeps import _ray
from sweeps.run import run_sweep
from sweeps.tracking import Tracker
root, marker, kill_epoch, tracking = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
fault = {"LRSWEEP_FAULT_KILL_EPOCH": kill_epoch, "LRSWEEP_FAULT_ONCE_FILE": marker}
os.environ.update(fault)  # the Ray this driver starts, and every worker it starts, inherit it
_ray.init_ray(num_cpus=2, env_vars=fault)
spec = {"name": "killed-worker", "seeds": [0],
        "task": {"dataset": {"name": "shapes", "options": {"n_per_class": 16}},
                 "image_size": 12, "batch_size": 12, "epochs": 4},
        "strategies": [{"kind": "fixed", "lr": 0.003}],
        "early_stop": None, "failure": {"max_failures": 2}, "tracking": json.loads(tracking)}
uri = f"sqlite:///{root}/mlflow.db"
result = run_sweep(spec, tracking_uri=uri, storage_path=f"{root}/ray")
# checked here, so that a fault that never fired fails with this driver's stderr (Ray's
# worker output) in the test's message
assert os.path.exists(marker), f"the fault never fired: no {marker}"
tracker = Tracker(uri)
runs = tracker.child_runs(result.experiment_id, result.parent_run_id)


def last_try(run_id):  # the finishing try's own record: its last checkpoint's meta, epochs
    import torch
    from sweeps.trial import LEARNER_FILE, META_FILE
    last = tracker.list_artifacts(run_id, "checkpoints")[-1]
    folder = tracker.download_artifact(run_id, last, f"{root}/downloaded")
    meta = json.loads((folder / META_FILE).read_text())
    state = torch.load(folder / LEARNER_FILE, map_location="cpu", weights_only=True)
    return {"lr_find_s": meta["lr_find_s"], "extra_compute_s": meta["extra_compute_s"],
            "epoch_time_s": [row["epoch_time_s"] for row in state["history"]
                             if row.get("epoch") is not None]}


print(json.dumps([{
    "status": r.info.status,
    "stop_reason": r.data.tags.get("sweeps.stop_reason"),
    "valid_loss_steps": [s for s, _ in tracker.metric_history(r.info.run_id, "valid_loss")],
    "train_loss_steps": [s for s, _ in tracker.metric_history(r.info.run_id, "train_loss")],
    "checkpoints": tracker.list_artifacts(r.info.run_id, "checkpoints"),
    "compute_s": r.data.metrics["compute_s"],
    "epoch_time_s": [v for _, v in tracker.metric_history(r.info.run_id, "epoch_time_s")],
    "last_try": last_try(r.info.run_id),
} for r in runs]))
_ray.shutdown_ray()
"""


@pytest.mark.parametrize(
    ("kill_epoch", "tracking", "checkpointed", "retrained"),
    [
        # a checkpoint every epoch, metrics sent on the default 5 s budget (they travel in the
        # checkpoint): resumes from epoch 0's checkpoint (epoch 1's never reached Tune), so
        # epoch 1 is trained twice, its first time in the run only if sent within the budget
        (1, {"checkpoint_every_s": 0}, [0, 1, 2, 3], 0),
        # one checkpoint at the end, metrics sent every epoch: the restarted trial trains from
        # scratch (epochs 0-2 twice) and logs only the epochs MLflow does not hold yet
        (2, {"checkpoint_every_s": 3600, "flush_every_s": 0}, [3], 3),
    ],
    ids=["checkpoint-every-epoch", "checkpoint-at-end-only"],
)
def test_killed_worker_resumes_in_the_same_run_with_every_epoch_once(
    tmp_path: Path,
    kill_epoch: int,
    tracking: dict[str, float],
    checkpointed: list[int],
    retrained: int,
) -> None:
    import json

    marker = tmp_path / "killed.marker"
    args = [str(tmp_path), str(marker), str(kill_epoch), json.dumps(tracking)]
    checkpoint_folders = Path(tempfile.gettempdir()).glob
    before = set(checkpoint_folders("lrsweep-ckpt-*"))
    (run,) = run_script(KILLED_WORKER_SWEEP, *args)  # it checks that the fault really fired
    assert (run["status"], run["stop_reason"]) == ("FINISHED", "completed")
    assert run["valid_loss_steps"] == [0, 1, 2, 3]
    steps = run["train_loss_steps"]
    assert steps == list(range(len(steps))) and len(steps) % 4 == 0
    assert run["checkpoints"] == [f"checkpoints/epoch-{e:03d}" for e in checkpointed]
    # compute_s: the finishing try's own epochs (its checkpoint's history), plus the killed
    # try's time for the epochs it trained past its checkpoint whose times the run holds
    # (``retrained``: at least these; epoch 1 of the first case only if sent in time). Read
    # from the two tries' own records, not guessed from timings, which vary 10x under load.
    held, last = run["epoch_time_s"], run["last_try"]
    assert len(held) == 4 and len(last["epoch_time_s"]) == 4
    assert run["compute_s"] == pytest.approx(
        last["lr_find_s"] + last["extra_compute_s"] + math.fsum(last["epoch_time_s"])
    )
    killed_try = last["extra_compute_s"]
    assert killed_try == pytest.approx(math.fsum(held[:retrained])) or (
        retrained == 0 and killed_try == pytest.approx(held[kill_epoch])
    )
    assert killed_try > 0 or retrained == 0
    # the killed worker's unreported checkpoint folder was removed by the restarted trial, and
    # no other worker of the sweep (all gone now) left one; folders of live processes belong to
    # whatever else runs on this machine at the same time
    from sweeps.trial import _ckpt_prefix, _process_alive

    def left_by_dead_writer(folder: Path) -> bool:
        pid = folder.name[len(_ckpt_prefix()) :].split("-", 1)[0]
        return folder.exists() and (not pid.isdigit() or not _process_alive(int(pid)))

    new = set(checkpoint_folders("lrsweep-ckpt-*")) - before
    assert {folder for folder in new if left_by_dead_writer(folder)} == set()


def _one_fixed_trial(name: str, epochs: int = 1, **fields: Any) -> dict[str, Any]:
    """A sweep of one trial (seed 0, a fixed LR, no early stopping), ``fields`` on top."""
    return {
        **SPEC,
        "name": name,
        "task": {**SPEC["task"], "epochs": epochs},
        "seeds": [0],
        "strategies": [{"kind": "fixed", "lr": 1e-2}],
        "early_stop": None,
        **fields,
    }


def test_a_uri_storage_keeps_ray_state_and_sweep_json_there_and_resumes_from_it(
    ray_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``storage.path`` as a URI (``s3://``, ``gs://``; ``file://`` here, through the same
    ``pyarrow.fs`` path): Ray's state and ``sweep.json`` land under it, not in a local folder
    named ``file:`` (or ``s3:``), and ``lrsweep resume`` finds the sweep there."""
    import json
    import signal

    from sweeps.run import SweepNotFound, resume_sweep

    ctrl_c = signal.getsignal(signal.SIGINT)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    storage = f"file://{tmp_path}/objects/"
    spec = _one_fixed_trial("uri-storage")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_sweep(spec, tracking_uri=uri, storage_path=storage, progress=PROGRESS)
    assert result.report is not None and result.n_trials == 1
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # not Tune's, which swallowed one Ctrl-C
    assert result.sweep_dir == f"file://{tmp_path}/objects/uri-storage/{result.sweep_id}"
    folder = tmp_path / "objects" / "uri-storage" / result.sweep_id
    state_file = folder / "sweep.json"
    assert json.loads(state_file.read_text())["finished"] is True
    assert (folder / "tune").is_dir()
    assert not (folder / "driver.json").exists()  # there while the sweep ran, gone after
    assert sorted(p.name for p in work.iterdir()) == []  # no local 'file:' folder
    # a finished sweep's Tune checkpoints go (pyarrow.fs, as on s3://); Tune's state stays
    assert list((folder / "tune").glob("*/checkpoint_*")) == []
    assert any(p.is_dir() for p in (folder / "tune").iterdir())  # the trial's folder

    # the report's command names the sweep's store, not the default one it would read
    report = re.escape(f"`lrsweep report uri-storage --tracking-uri {uri}`")
    with pytest.raises(SweepNotFound, match=rf"only finished sweeps.*{report}"):
        resume_sweep("uri-storage", tracking_uri=uri, storage_path=storage, progress=PROGRESS)
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "finished": False}))  # as if it was stopped
    resumed = resume_sweep("uri-storage", tracking_uri=uri, storage_path=storage, progress=PROGRESS)
    assert resumed.sweep_dir == result.sweep_dir and resumed.parent_run_id == result.parent_run_id
    assert resumed.n_trials == 1 and not resumed.interrupted  # the finished trial, not re-run
    assert json.loads(state_file.read_text())["finished"] is True
    assert signal.getsignal(signal.SIGINT) is ctrl_c

    # `lrsweep clean` reads and deletes through the same pyarrow.fs path
    from typer.testing import CliRunner

    from sweeps.cli import app

    cleaned = CliRunner().invoke(
        app, ["clean", "--storage-path", storage, "--older-than", "0", "--yes"]
    )
    assert cleaned.exit_code == 0, cleaned.output
    assert f"uri-storage  {result.sweep_id}  finished" in cleaned.output
    assert "Deleted 1 sweep folder" in cleaned.output and not folder.exists()


def test_a_resumed_sweep_drops_the_runs_of_trials_its_tune_state_never_held(
    ray_cluster: None, tmp_path: Path
) -> None:
    """A driver killed between two of Tune's experiment snapshots (at most every 10 s) leaves
    runs of trials started after the last one: the restored searcher hands their configs out
    again under new trial ids. Those stray runs (one finished, one left RUNNING, as a SIGKILL
    leaves them) must not count as trials of the report or rank in ``best_config``."""
    import json

    from sweeps.best import best_config
    from sweeps.run import resume_sweep

    spec = _one_fixed_trial("stray-runs")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "ray"
    result = run_sweep(spec, tracking_uri=uri, storage_path=storage, progress=PROGRESS)
    tracker = Tracker(uri)
    (real,) = tracker.child_runs(result.experiment_id, result.parent_run_id)
    stray = []
    for trial_id, status in (("0dead001", "FINISHED"), ("0dead002", "RUNNING")):
        run_id = tracker.start_run(
            result.experiment_id,
            run_name=f"fixed-seed0-{trial_id}",
            tags={
                "sweeps.strategy": "fixed",
                "sweeps.arm": "fixed",
                "sweeps.trial_id": trial_id,
                "sweeps.stop_reason": "completed",
            },
            parent_run_id=result.parent_run_id,
        )
        tracker.log_params(run_id, {"strategy": "fixed", "arm": "fixed", "seed": 0, "lr": 1e-2})
        tracker.log_metrics(
            run_id, [("best/valid_loss", 1e-6, 0), ("epochs_run", 1, 0), ("compute_s", 50.0, 0)]
        )
        if status == "FINISHED":
            tracker.end_run(run_id)
        stray.append(run_id)
    state_file = Path(str(result.sweep_dir)) / "sweep.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "finished": False}))  # as the killed driver left it

    resumed = resume_sweep("stray-runs", tracking_uri=uri, storage_path=storage, progress=PROGRESS)

    assert resumed.report is not None
    row = resumed.report.group("fixed")
    assert (row.n_trials, row.epochs_run) == (1, 1)
    assert row.compute_s == pytest.approx(real.data.metrics["compute_s"])
    assert [t.run_id for t in resumed.report.trials] == [real.info.run_id]
    children = tracker.child_runs(result.experiment_id, result.parent_run_id)
    assert [run.info.run_id for run in children] == [real.info.run_id]
    for run_id in stray:
        run = tracker.get_run(run_id)
        assert run.info.lifecycle_stage == "deleted"
        assert run.info.status in ("FINISHED", "KILLED")
        assert "a new trial" in run.data.tags["sweeps.deleted_reason"]
    assert best_config(result.experiment, tracking_uri=uri).run_id == real.info.run_id


def _saved_trial_results(tune_dir: Path, edit: Any = None) -> list[dict[str, Any]]:
    """Every trial's last result in Tune's saved experiment state (the newest file), after
    ``edit(result)`` when given (the file is written back)."""
    (state_file,) = sorted(tune_dir.glob("experiment_state-*.json"))[-1:]
    state = json.loads(state_file.read_text())
    results = []
    for entry in state["trial_data"]:
        meta = json.loads(entry[1])
        last = meta["last_result"]
        last = json.loads(last) if isinstance(last, str) else last
        if edit is not None:
            edit(last)
            meta["last_result"] = json.dumps(last) if isinstance(meta["last_result"], str) else last
            entry[1] = json.dumps(meta)
        results.append(last)
    if edit is not None:
        state_file.write_text(json.dumps(state))
    return results


def test_a_trial_that_ended_before_an_interrupt_stays_ended_in_the_resumed_sweep(
    ray_cluster: None, tmp_path: Path
) -> None:
    """Tune sets ``done`` on a trial's last result in memory without marking the trial for its
    next saved state, so a sweep interrupted after a trial ended may be restored with that
    trial TERMINATED and ``done`` false (seen with ``checkpoint_every_s: 0``). The trial's own
    final report names its end: the resume neither closes its run KILLED nor trains it again,
    and is not taken for interrupted."""
    from sweeps.run import resume_sweep

    spec = _one_fixed_trial("ended-before-interrupt", epochs=2, tracking={"checkpoint_every_s": 0})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "ray"
    result = run_sweep(spec, tracking_uri=uri, storage_path=storage, progress=PROGRESS)
    tune_dir = Path(str(result.sweep_dir)) / "tune"
    # a finished sweep's Tune checkpoints are removed (a resnet18's were ~190 MB a trial, every
    # night); every epoch made one here (checkpoint_every_s: 0)
    assert list(tune_dir.glob("*/checkpoint_*")) == []
    (last,) = _saved_trial_results(tune_dir)
    assert last["stop_reason"] == "completed"  # the final report says the trial ended
    _saved_trial_results(tune_dir, edit=lambda r: r.update(done=False))  # as Tune may save it
    state_file = Path(str(result.sweep_dir)) / "sweep.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "finished": False}))  # as the interrupt left it
    tracker = Tracker(uri)
    (run,) = tracker.child_runs(result.experiment_id, result.parent_run_id)

    resumed = resume_sweep(
        "ended-before-interrupt", tracking_uri=uri, storage_path=storage, progress=PROGRESS
    )

    assert not resumed.interrupted and resumed.report is not None
    after = tracker.get_run(run.info.run_id)
    assert after.info.status == "FINISHED"
    assert after.data.tags["sweeps.stop_reason"] == "completed"
    assert len(tracker.metric_history(run.info.run_id, "epoch_time_s")) == 2  # not trained again
    assert tracker.get_run(result.parent_run_id).info.status == "FINISHED"


# One of two trials loses its worker (SIGKILL, as the kernel's OOM killer does) with no retry
# left: the sweep said "retry its trials with lrsweep resume", and resume then refused (the
# sweep was closed as finished, its checkpoints deleted); the run said nothing of why.
PARTLY_FAILED_SWEEP = """
import json, os, sys
from sweeps import _ray
from sweeps.report import build_report
from sweeps.run import resume_sweep, run_sweep
from sweeps.tracking import Tracker
root, marker = sys.argv[1], sys.argv[2]
fault = {"LRSWEEP_FAULT_KILL_EPOCH": "1", "LRSWEEP_FAULT_ONCE_FILE": marker}
os.environ.update(fault)
_ray.init_ray(num_cpus=2, env_vars=fault)
spec = {"name": "partly-failed", "seeds": [0],
        "task": {"dataset": {"name": "shapes", "options": {"n_per_class": 16}},
                 "image_size": 12, "batch_size": 12, "epochs": 3},
        "strategies": [{"kind": "fixed", "lr": 0.003, "name": "a"},
                       {"kind": "fixed", "lr": 0.01, "name": "b"}],
        "early_stop": None, "failure": {"max_failures": 0},
        "tracking": {"checkpoint_every_s": 0}}  # the killed trial has its epoch 0's
uri = f"sqlite:///{root}/mlflow.db"
tracker = Tracker(uri)


def seen(result):
    runs = tracker.child_runs(result.experiment_id, result.parent_run_id)
    state = json.loads((result.sweep_dir / "sweep.json").read_text())
    report = build_report("partly-failed", parent_run_id=result.parent_run_id, tracker=tracker)
    return {
        "failed": [o.error for o in result.failed],
        "runs": sorted((r.info.status, r.data.tags.get("sweeps.error", "")) for r in runs),
        "parent": tracker.get_run(result.parent_run_id).info.status,
        "finished": state["finished"],
        "checkpoints": sorted(p.parent.name for p in result.sweep_dir.rglob("checkpoint_*")),
        "failed_ids": [o.trial_id for o in result.failed],
        "resumable": [result.resumable, tracker.get_run(result.parent_run_id).data.tags.get(
            "sweeps.resumable")],
        "note": report.status_note,
        "n_runs": len(runs),
        "cut": sorted(r.data.tags.get("sweeps.curve_cut", "") for r in runs),
    }


first = run_sweep(spec, tracking_uri=uri, storage_path=f"{root}/ray")
assert os.path.exists(marker), f"the fault never fired: no {marker}"
before = seen(first)
again = resume_sweep("partly-failed", storage_path=f"{root}/ray")
print(json.dumps({"before": before, "after": seen(again)}))
_ray.shutdown_ray()
"""


def test_a_sweep_with_a_failed_trial_stays_resumable_and_resume_retries_it(
    tmp_path: Path,
) -> None:
    seen = run_script(PARTLY_FAILED_SWEEP, str(tmp_path), str(tmp_path / "killed.marker"))
    before, after = seen["before"], seen["after"]
    (error,) = before["failed"]
    assert before["parent"] == "FINISHED" and before["finished"] is False
    (failed, finished) = before["runs"]  # sorted: FAILED before FINISHED
    assert failed[0] == "FAILED" and failed[1] and failed[1][:40] in error  # why, on its run
    assert finished == ["FINISHED", ""]
    assert before["resumable"] == [True, "true"]
    # the failed trial's checkpoints are what the resume starts from; the finished one's go
    (failed_id,) = before["failed_ids"]
    assert before["checkpoints"] and all(f"_{failed_id}_" in p for p in before["checkpoints"])
    assert before["note"].startswith("Partly failed: 1 of 2 trial runs failed (the first error: ")
    # the exact command: the sweep's storage and store are not those a command here would read
    command = (
        f"lrsweep resume partly-failed --storage-path {tmp_path}/ray "
        f"--tracking-uri sqlite:///{tmp_path}/mlflow.db"
    )
    assert f"`{command}` retries the failed trials" in before["note"]
    # its unsent points died with its worker: the run and the note say its curve is cut
    assert before["cut"] == ["", "true"]
    assert "1 of them lost their worker before it sent its last metric points" in before["note"]
    # resume retries the failed trial in its own run; the sweep is then finished, as any other
    assert after["failed"] == [] and after["n_runs"] == 2 and after["cut"] == ["", ""]
    assert after["runs"] == [["FINISHED", ""], ["FINISHED", ""]]
    assert after["parent"] == "FINISHED" and after["finished"] is True
    assert after["checkpoints"] == [] and after["note"] == ""
    assert after["resumable"] == [False, "false"]
