"""``best_config`` / ``lrsweep best`` on a real SQLite MLflow store laid out as DESIGN.md says."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import sweeps.spec
from sweeps.best import BestConfigError, best_config, typed_param
from sweeps.cli import app
from sweeps.spec import EarlyStopSpec, load_spec
from sweeps.tracking import Tracker, default_tracking_uri

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "digits-lr"

# (strategy, lr, seed, status, stop_reason, best/valid_loss, best/error_rate, best_epoch)
TRIALS = [
    ("lr_finder", 0.01, 0, "FINISHED", "completed", 0.30, 0.10, 3),
    ("grid", 0.003, 1, "FINISHED", "completed", 0.25, 0.12, 4),
    ("grid", 1.0, 0, "FINISHED", "diverged", 0.01, 0.01, 0),  # diverged: never best
    ("optuna", 0.02, 2, "FINISHED", "rising_val_loss", 0.28, 0.08, 2),  # stopped early: counts
    ("random", 0.05, 0, "FAILED", "failed", 0.02, 0.02, 1),  # failed: never best
    ("random", 0.04, 1, "RUNNING", None, 0.03, 0.03, 1),  # unfinished: never best
    ("recipe", 0.006, 0, "FINISHED", "completed", 0.35, 0.09, 5),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An embedded store with one sweep: a parent run with spec.yaml and its trial runs."""
    root = tmp_path_factory.mktemp("best")
    uri = default_tracking_uri(root)
    tracker = Tracker(uri)
    tracker.ensure_experiment("another-sweep")
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    parent = tracker.start_run(exp_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    spec = load_spec(REPO / "sweeps/specs/digits.yaml").resolved()
    spec["strategies"].append({"kind": "recipe", "suggest": "valley", "max_epochs": 4})
    tracker.log_text(parent, yaml.safe_dump(spec, sort_keys=False), "spec.yaml")
    ids = {}
    for i, (arm, lr, seed, status, reason, loss, err, epoch) in enumerate(TRIALS):
        run = tracker.start_run(exp_id, run_name=f"trial-{i}", parent_run_id=parent)
        params = {"strategy": arm, "lr": lr, "seed": seed, "epochs": 5, "freeze": False}
        params |= {"suggest": "valley" if arm == "lr_finder" else None}
        tracker.log_params(run, params)
        tags = {"sweeps.strategy": arm, "sweeps.arm": arm, "sweeps.best_epoch": epoch}
        tracker.set_tags(run, tags | ({"sweeps.stop_reason": reason} if reason else {}))
        points = [("valid_loss", loss + 0.1, 0), ("valid_loss", loss, 1), ("train_loss", 0.2, 0)]
        points += [("best/valid_loss", loss, 0), ("best/error_rate", err, 0)]
        points += [("best/accuracy", 1 - err, 0)]
        tracker.log_metrics(run, points)
        if status != "RUNNING":
            tracker.end_run(run, status)
        ids[f"{arm}-{lr}"] = run
    return {"uri": uri, "root": str(root), "parent": parent, **ids}


def test_best_by_valid_loss_skips_diverged_failed_and_unfinished_trials(store) -> None:
    best = best_config(EXPERIMENT, tracking_uri=store["uri"])
    assert best.run_id == store["grid-0.003"]
    assert best.parent_run_id == store["parent"]
    assert best.model_uri is None  # no model logged here; see test_model_uri_is_none_...
    assert (best.strategy, best.metric, best.mode, best.best_epoch) == (
        "grid",
        "valid_loss",
        "min",
        4,
    )
    assert best.value == pytest.approx(0.25)
    assert best.metrics == pytest.approx({"valid_loss": 0.25, "error_rate": 0.12, "accuracy": 0.88})


def test_config_comes_back_typed(store) -> None:
    config = best_config(EXPERIMENT, tracking_uri=store["uri"]).config
    assert config == {
        "strategy": "grid",
        "lr": 0.003,
        "seed": 1,
        "epochs": 5,
        "freeze": False,
        "suggest": None,
    }
    assert type(config["seed"]) is int and type(config["lr"]) is float


@pytest.mark.parametrize(
    ("metric", "mode", "strategy", "expected"),
    [
        ("error_rate", "min", None, "optuna-0.02"),  # an early-stopped trial can win
        ("best/error_rate", "min", None, "optuna-0.02"),
        ("accuracy", "max", None, "optuna-0.02"),
        ("valid_loss", "max", None, "recipe-0.006"),
        ("valid_loss", "min", "lr_finder", "lr_finder-0.01"),
        ("error_rate", "min", "grid", "grid-0.003"),
    ],
)
def test_best_by_metric_mode_and_strategy(store, metric, mode, strategy, expected) -> None:
    best = best_config(
        EXPERIMENT, metric=metric, mode=mode, strategy=strategy, tracking_uri=store["uri"]
    )
    assert best.run_id == store[expected]


@pytest.mark.parametrize(
    ("metric", "mode", "expected"),
    [
        ("accuracy", "max", "optuna-0.02"),  # min would pick the worst trial, grid-0.003
        ("best/accuracy", "max", "optuna-0.02"),
        ("error_rate", "min", "optuna-0.02"),
        ("valid_loss", "min", "grid-0.003"),
    ],
)
def test_mode_follows_the_metric_by_default(store, metric, mode, expected) -> None:
    best = best_config(EXPERIMENT, metric=metric, tracking_uri=store["uri"])
    assert (best.run_id, best.mode) == (store[expected], mode)


@pytest.mark.parametrize(
    ("args", "expected", "mode"),
    [
        (["--metric", "accuracy"], "optuna-0.02", "max"),
        (["--metric", "accuracy", "--mode", "min"], "grid-0.003", "min"),  # explicit mode wins
        (["--metric", "error_rate"], "optuna-0.02", "min"),
        (["--metric", "valid_loss", "--mode", "max"], "recipe-0.006", "max"),
    ],
)
def test_cli_mode_follows_the_metric_unless_given(store, args, expected, mode) -> None:
    result = CliRunner().invoke(app, ["best", EXPERIMENT, "--tracking-uri", store["uri"], *args])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["run_id"], out["mode"]) == (store[expected], mode)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"experiment": "digitz"},
            r"'digitz'.*experiments there: \['Default', 'another-sweep', 'digits-lr'\]",
        ),
        (
            {"metric": "f1"},
            r"metric 'f1'.*metrics present: \['accuracy', 'error_rate', 'valid_loss'\]",
        ),
        ({"strategy": "bayes"}, r"strategy 'bayes': no trial ran it; strategies with finished"),
        ({"strategy": "bayes"}, r"strategy 'bayes'.*\['grid', 'lr_finder', 'optuna', 'recipe'\]"),
        (  # only failed / unfinished trials: said, not taken for a typo
            {"strategy": "random"},
            r"strategy 'random': its trial runs by status/stop_reason: \{'FAILED/failed': 1, "
            r"'RUNNING/-': 1\} \(diverged, failed, killed and running trials are not ranked\)",
        ),
        ({"mode": "lowest"}, r"mode must be 'min' or 'max', but got 'lowest'"),
        ({"experiment": "another-sweep"}, r"'another-sweep' has no sweep run .*pass the"),
    ],
)
def test_errors_list_what_exists(store, kwargs, message) -> None:
    kwargs = {"experiment": EXPERIMENT, **kwargs}
    with pytest.raises(BestConfigError, match=message):
        best_config(kwargs.pop("experiment"), tracking_uri=store["uri"], **kwargs)


def test_missing_store_is_an_error_not_a_new_empty_store(tmp_path: Path) -> None:
    uri = default_tracking_uri(tmp_path)
    with pytest.raises(BestConfigError, match=r"No MLflow store at .*--tracking-uri"):
        best_config(EXPERIMENT, tracking_uri=uri)
    assert not (tmp_path / ".lrsweep").exists()


@pytest.mark.parametrize("command", ["best", "report"])
@pytest.mark.parametrize("content", [b"name: tiny-lr\n", None])  # None: another database
def test_a_file_that_is_no_mlflow_store_is_refused_untouched(
    tmp_path: Path, command: str, content: bytes | None
) -> None:
    # a YAML file crashed with sqlite3's "file is not a database"; a database of something
    # else was given MLflow's tables by a command that only reads
    path = tmp_path / "other.db"
    if content is None:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x)")
        conn.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    result = CliRunner().invoke(app, [command, EXPERIMENT, "--tracking-uri", f"sqlite:///{path}"])
    assert result.exit_code == 2, result.output
    assert f"{path} is not an MLflow store" in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    assert path.read_bytes() == before


def test_json_and_yaml_formats_round_trip(store) -> None:
    best = best_config(EXPERIMENT, tracking_uri=store["uri"])
    as_json = json.loads(best.to_json())
    assert as_json == yaml.safe_load(best.to_yaml()) == best.to_dict()
    assert as_json["config"]["lr"] == 0.003 and as_json["run_id"] == store["grid-0.003"]
    assert "sweep_spec" not in as_json


def test_spec_format_reruns_exactly_that_trial(store) -> None:
    text = best_config(EXPERIMENT, tracking_uri=store["uri"]).to_spec()
    assert text.startswith(f"# Re-runs trial {store['grid-0.003']} (grid)")
    spec = yaml.safe_load(text)
    original = load_spec(REPO / "sweeps/specs/digits.yaml").resolved()
    assert spec["name"] == "digits-lr-best"
    assert spec["seeds"] == [1]
    assert spec["strategies"] == [{"kind": "fixed", "lr": 0.003}]
    assert spec["task"] == original["task"]
    # the default early_stop is left out: the re-run gets it all the same
    assert "early_stop" not in spec and original["early_stop"] == EarlyStopSpec().model_dump()
    if not hasattr(sweeps.spec, "FixedStrategy"):
        pytest.skip("sweeps.spec has no `fixed` strategy yet; the re-run spec cannot load")
    assert load_spec(spec).strategies[0].kind == "fixed"


def test_spec_format_of_a_short_sweep_without_early_stop_gets_no_note_for_it(
    tracking_uri: str,
) -> None:
    """The re-run spec wrote the resolved default early_stop out in full; `validate` of it (a
    2-epoch sweep) then said "early_stop can never stop a trial", of a stopper its spec never
    set. A changed early_stop is kept."""
    tracker = Tracker(tracking_uri)
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    short = load_spec(REPO / "sweeps/specs/digits.yaml", overrides=["task.epochs=2"]).resolved()
    _sweep(tracker, exp_id, "short", [0.3], {"task": short["task"]})
    rerun = load_spec(yaml.safe_load(best_config(EXPERIMENT, tracking_uri=tracking_uri).to_spec()))
    assert rerun.task.epochs == 2 and rerun.advice() == []
    patient = short["early_stop"] | {"patience": 5}
    _sweep(tracker, exp_id, "patient", [0.2], {"task": short["task"], "early_stop": patient})
    rerun = load_spec(yaml.safe_load(best_config(EXPERIMENT, tracking_uri=tracking_uri).to_spec()))
    assert rerun.early_stop is not None and rerun.early_stop.patience == 5
    assert [note.split(":")[0] for note in rerun.advice()] == ["early_stop can never stop a trial"]


def test_spec_format_keeps_a_recipe_arm(store) -> None:
    best = best_config(EXPERIMENT, strategy="recipe", tracking_uri=store["uri"])
    spec = yaml.safe_load(best.to_spec())
    assert spec["seeds"] == [0]
    assert spec["strategies"] == [{"kind": "recipe", "suggest": "valley", "max_epochs": 4}]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("-2", -2),
        ("0.003", 0.003),
        ("1e-05", 1e-5),
        ("True", True),
        ("False", False),
        ("None", None),
        ("[1, 2]", [1, 2]),
        ("{'a': 1}", {"a": 1}),
        ("valley", "valley"),
        ("[oops", "[oops"),
        ("1_000", "1_000"),  # a name such as a dataset version, not the number 1000.0
        ("2024_01", "2024_01"),
        ("['a_b', 1]", ["a_b", 1]),
        ("", ""),
    ],
)
def test_typed_param(text, value) -> None:
    assert typed_param(text) == value


def _lrsweep(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(REPO)
    code = "from sweeps.cli import app; app(prog_name='lrsweep')"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_from_a_fresh_process_on_the_embedded_default(store) -> None:
    done = _lrsweep("best", EXPERIMENT, "--metric", "error_rate", cwd=store["root"])
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["run_id"] == store["optuna-0.02"] and out["strategy"] == "optuna"
    assert out["metrics"]["error_rate"] == pytest.approx(0.08)


def test_cli_unknown_experiment_exits_2_listing_experiments(store) -> None:
    done = _lrsweep("best", "nope", "--tracking-uri", store["uri"], cwd=store["root"])
    assert done.returncode == 2
    assert "experiments there: ['Default', 'another-sweep', 'digits-lr']" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def _sweep(
    tracker: Tracker,
    exp_id: str,
    name: str,
    losses: list[float],
    spec_fields: Any = None,
    lrs: list[float] | None = None,
) -> tuple[str, list[str]]:
    """One more sweep run of ``exp_id`` (spec.yaml on it) with a FINISHED grid trial per loss
    (at ``lrs``, by default 0.01, 0.02, ...)."""
    parent = tracker.start_run(exp_id, run_name=name, tags={"sweeps.kind": "sweep"})
    spec = load_spec(REPO / "sweeps/specs/digits.yaml").resolved() | (spec_fields or {})
    tracker.log_text(parent, yaml.safe_dump(spec, sort_keys=False), "spec.yaml")
    runs = []
    for i, loss in enumerate(losses):
        run = tracker.start_run(exp_id, run_name=f"{name}-{i}", parent_run_id=parent)
        lr = lrs[i] if lrs is not None else 0.01 * (i + 1)
        tracker.log_params(run, {"strategy": "grid", "lr": lr, "seed": 0})
        tags = {"sweeps.strategy": "grid", "sweeps.arm": "grid", "sweeps.best_epoch": 1}
        tracker.set_tags(run, tags | {"sweeps.stop_reason": "completed"})
        tracker.log_metrics(run, [("best/valid_loss", loss, 0), ("best/error_rate", 0.1, 0)])
        tracker.end_run(run, "FINISHED")
        runs.append(run)
    tracker.end_run(parent, "FINISHED")
    return parent, runs


def test_run_id_ranks_one_sweep_only_and_an_unknown_one_lists_the_sweeps(
    tmp_path: Path, tracking_uri: str
) -> None:
    uri = tracking_uri
    tracker = Tracker(uri)
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    first, (_, first_best) = _sweep(tracker, exp_id, "monday", [0.40, 0.30])
    second, (second_best,) = _sweep(tracker, exp_id, "tuesday", [0.20])

    assert best_config(EXPERIMENT, tracking_uri=uri).run_id == second_best  # every sweep
    assert best_config(EXPERIMENT, tracking_uri=uri, parent_run_id=first).run_id == first_best
    result = CliRunner().invoke(app, ["best", EXPERIMENT, "--tracking-uri", uri, "--run-id", first])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run_id"] == first_best

    with pytest.raises(BestConfigError, match=rf"run {first_best} is not a sweep run.*{second}"):
        best_config(EXPERIMENT, tracking_uri=uri, parent_run_id=first_best)
    refused = CliRunner().invoke(app, ["best", EXPERIMENT, "--tracking-uri", uri, "--run-id", "x"])
    assert refused.exit_code == 2 and "tuesday" in refused.stderr and "monday" in refused.stderr
    # a strategy or metric the one sweep lacks: the error names that sweep, not the experiment
    with pytest.raises(
        BestConfigError, match=rf"^Sweep run {first} of experiment '{EXPERIMENT}' has no finished"
    ):
        best_config(EXPERIMENT, tracking_uri=uri, parent_run_id=first, strategy="optuna")
    with pytest.raises(BestConfigError, match=rf"^No finished trial of sweep run {first} of exp"):
        best_config(EXPERIMENT, tracking_uri=uri, parent_run_id=first, metric="train_loss")


def test_spec_format_of_a_sweep_named_at_the_length_limit_is_a_valid_spec(
    tmp_path: Path, tracking_uri: str
) -> None:
    uri = tracking_uri
    tracker = Tracker(uri)
    experiment = "e" * 200  # tracking.experiment's limit; the name's is 100
    fields = {"name": "n" * 100, "tracking": {"experiment": experiment}}
    _sweep(tracker, tracker.ensure_experiment(experiment), "s", [0.3], fields)
    rerun = load_spec(yaml.safe_load(best_config(experiment, tracking_uri=uri).to_spec()))
    assert rerun.name == "n" * 95 + "-best"
    assert rerun.experiment_name == "e" * 195 + "-best"


def test_a_spec_artifact_with_an_alias_is_not_read_and_the_spec_format_says_so(
    tmp_path: Path,
    tracking_uri: str,
) -> None:
    uri = tracking_uri
    tracker = Tracker(uri)
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    parent, _ = _sweep(tracker, exp_id, "s", [0.3])
    tracker.log_text(parent, "task: &t {epochs: 2}\nagain: *t\n", "spec.yaml")  # replaced
    best = best_config(EXPERIMENT, tracking_uri=uri)
    assert best.sweep_spec is None  # parse_yaml refuses aliases (a YAML bomb's building block)
    with pytest.raises(
        BestConfigError, match=r"its spec\.yaml is not a readable spec \(YAML alias"
    ):
        best.to_spec()


def test_trials_of_a_deleted_sweep_are_not_ranked(tmp_path: Path, tracking_uri: str) -> None:
    """Deleting a sweep's run (a broken sweep thrown away in MLflow's UI) leaves its trial runs
    active; ``best`` must not rank them, as ``report`` and ``--run-id`` no longer see the sweep."""
    uri = tracking_uri
    tracker = Tracker(uri)
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    _, (kept,) = _sweep(tracker, exp_id, "good", [0.30])
    broken, _ = _sweep(tracker, exp_id, "broken", [0.01])
    tracker.client.delete_run(broken)
    assert best_config(EXPERIMENT, tracking_uri=uri).run_id == kept
    with pytest.raises(BestConfigError, match=r"is not a sweep run"):
        best_config(EXPERIMENT, tracking_uri=uri, parent_run_id=broken)


def test_spec_format_keeps_the_exact_lr(tmp_path: Path, tracking_uri: str) -> None:
    uri = tracking_uri
    tracker = Tracker(uri)
    lr = 10**-2.5  # a log-spaced grid point, 0.0031622776601683794: no rounding allowed
    _sweep(tracker, tracker.ensure_experiment(EXPERIMENT), "s", [0.3], lrs=[lr])
    text = best_config(EXPERIMENT, tracking_uri=uri).to_spec()
    (arm,) = load_spec(yaml.safe_load(text)).strategies
    assert arm.lr == lr


def test_strategy_may_be_a_finder_rule_as_the_report_names_it(
    tmp_path: Path, tracking_uri: str
) -> None:
    """``lrsweep report`` shows one row per rule (``lr_finder:steep``); ``--strategy`` takes it."""
    uri = tracking_uri
    tracker = Tracker(uri)
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    parent, (grid,) = _sweep(tracker, exp_id, "s", [0.1])
    ids = {}
    for rule, loss in (("valley", 0.3), ("steep", 0.2)):
        tags = {"sweeps.strategy": "lr_finder", "sweeps.arm": "finder", "sweeps.rule": rule}
        run = tracker.start_run(exp_id, run_name=rule, tags=tags, parent_run_id=parent)
        tracker.log_params(run, {"strategy": "lr_finder", "lr": 0.01, "seed": 0, "rule": rule})
        tracker.set_tags(run, {"sweeps.stop_reason": "completed"})
        tracker.log_metrics(run, [("best/valid_loss", loss, 0)])
        tracker.end_run(run, "FINISHED")
        ids[rule] = run
    for strategy, expected in [
        (None, grid),
        ("lr_finder", ids["steep"]),
        ("finder", ids["steep"]),
        ("finder:valley", ids["valley"]),
        ("finder:steep", ids["steep"]),
    ]:
        assert best_config(EXPERIMENT, strategy=strategy, tracking_uri=uri).run_id == expected
    with pytest.raises(BestConfigError, match=r"\['finder', 'finder:steep', 'finder:valley', 'g"):
        best_config(EXPERIMENT, strategy="finder:slide", tracking_uri=uri)


def test_a_tie_on_a_discrete_metric_goes_to_the_lower_valid_loss(
    tmp_path: Path, tracking_uri: str
) -> None:
    """Error rates are counts over the validation set, so ties are common: the tie goes to the
    trial with the lower best valid loss, not to whichever trial started first."""
    uri = tracking_uri
    tracker = Tracker(uri)
    _, (first, better) = _sweep(tracker, tracker.ensure_experiment(EXPERIMENT), "s", [0.4, 0.3])
    # both trials have best/error_rate 0.1; ``first`` started first
    assert best_config(EXPERIMENT, metric="error_rate", tracking_uri=uri).run_id == better
    assert best_config(EXPERIMENT, tracking_uri=uri).run_id == better
    tracker.log_metrics(better, [("best/valid_loss", 0.4, 1)])  # a full tie: the first started
    assert best_config(EXPERIMENT, metric="error_rate", tracking_uri=uri).run_id == first


def _trial(tracker: Tracker, exp_id: str, parent: str, metrics: dict[str, float]) -> str:
    """One more FINISHED, completed grid trial of sweep ``parent`` with these ``best/*``."""
    run = tracker.start_run(exp_id, run_name="extra", parent_run_id=parent)
    tracker.log_params(run, {"strategy": "grid", "lr": 0.5, "seed": 0})
    tags = {"sweeps.strategy": "grid", "sweeps.arm": "grid", "sweeps.stop_reason": "completed"}
    tracker.set_tags(run, tags)
    tracker.log_metrics(run, [(f"best/{key}", value, 0) for key, value in metrics.items()])
    tracker.end_run(run, "FINISHED")
    return run


@pytest.mark.parametrize(
    ("metric", "mode", "value"),
    [("accuracy", "max", math.inf), ("valid_loss", "min", -math.inf)],
)
def test_an_infinite_metric_never_wins(
    tmp_path: Path, tracking_uri: str, metric: str, mode: str, value: float
) -> None:
    """MLflow's SQL store keeps +-inf as +-1.797e308, a finite float: read back, it must still
    count as infinite, not as the best value there is."""
    uri = tracking_uri
    tracker = Tracker(uri)
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    parent, (good,) = _sweep(tracker, exp_id, "s", [0.3])
    tracker.log_metrics(good, [("best/accuracy", 0.9, 0)])
    _trial(tracker, exp_id, parent, {"valid_loss": 0.3, "accuracy": 0.9} | {metric: value})
    best = best_config(EXPERIMENT, metric=metric, mode=mode, tracking_uri=uri)
    assert best.run_id == good


def test_a_metric_without_a_finite_value_in_any_trial_says_so(
    tmp_path: Path, tracking_uri: str
) -> None:
    uri = tracking_uri
    tracker = Tracker(uri)
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    parent, (run,) = _sweep(tracker, exp_id, "s", [0.3])
    tracker.log_metrics(run, [("best/accuracy", math.nan, 0)])
    _trial(tracker, exp_id, parent, {"valid_loss": 0.2, "accuracy": math.inf})
    with pytest.raises(BestConfigError, match=r"'accuracy'.*NaN or infinite in every"):
        best_config(EXPERIMENT, metric="accuracy", tracking_uri=uri)


def test_json_output_is_strict_json_when_a_metric_or_param_is_not_finite(
    tmp_path: Path, tracking_uri: str
) -> None:
    """``NaN`` / ``Infinity`` are not JSON (jq and JavaScript refuse them): such values are null."""
    uri = tracking_uri
    tracker = Tracker(uri)
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    _, (run,) = _sweep(tracker, exp_id, "s", [0.3])
    tracker.log_metrics(run, [("best/accuracy", math.nan, 0), ("best/f1", math.inf, 0)])
    tracker.log_params(run, {"momentum": "nan"})
    best = best_config(EXPERIMENT, tracking_uri=uri)

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    assert best.metrics["f1"] == math.inf  # as logged, not the store's 1.797e308
    data = json.loads(best.to_json(), parse_constant=refuse)
    assert data["metrics"]["accuracy"] is None and data["metrics"]["f1"] is None
    assert data["config"]["momentum"] is None and data["value"] == pytest.approx(0.3)
    assert yaml.safe_load(best.to_yaml()) == data


def test_trials_without_the_metric_are_named_in_a_warning(
    tmp_path: Path, tracking_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A trial that lacks the metric (an older sweep, a NaN) cannot be ranked: the best is
    among the others, and the log says which trials were left out rather than nothing."""
    uri = tracking_uri
    tracker = Tracker(uri)
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    parent, (ranked,) = _sweep(tracker, exp_id, "s", [0.3])
    tracker.log_metrics(ranked, [("best/accuracy", 0.8, 0)])
    unranked = _trial(tracker, exp_id, parent, {"valid_loss": 0.1})
    with caplog.at_level(logging.WARNING, logger="sweeps.best"):
        best = best_config(EXPERIMENT, metric="accuracy", tracking_uri=uri)
    assert best.run_id == ranked
    assert re.search(rf"1 of 2 finished trials .*best/accuracy.*{unranked}", caplog.text)


def test_model_uri_is_none_for_a_trial_that_logged_no_model(
    tmp_path: Path, tracking_uri: str
) -> None:
    """``tracking.checkpoints: none`` logs no model: a ``runs:/`` URI would not load."""
    uri = tracking_uri
    tracker = Tracker(uri)
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    parent, (with_model,) = _sweep(tracker, exp_id, "s", [0.3])
    model = tracker.client.create_logged_model(exp_id, name="model", source_run_id=with_model)
    tracker.client.finalize_logged_model(model.model_id, "READY")
    assert best_config(EXPERIMENT, tracking_uri=uri).model_uri == f"runs:/{with_model}/model"
    without = _trial(tracker, exp_id, parent, {"valid_loss": 0.1})
    assert best_config(EXPERIMENT, tracking_uri=uri).run_id == without
    best = best_config(EXPERIMENT, tracking_uri=uri)
    assert best.model_uri is None and json.loads(best.to_json())["model_uri"] is None


def test_best_config_reads_the_spec_without_mlflows_progress_bar(
    store, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a notebook, one small spec.yaml drew three lines of "Downloading artifacts"."""
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    best = best_config(EXPERIMENT, tracking_uri=store["uri"])
    assert best.sweep_spec is not None
    assert "Downloading artifacts" not in capfd.readouterr().err
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # as it was


def test_trials_of_sweeps_on_other_data_ranked_together_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A second sweep under the same name with another valid_pct was ranked with the first
    # without a word: losses on other validation sets, compared.
    uri = default_tracking_uri(tmp_path)
    tracker = Tracker(uri)
    exp_id = tracker.ensure_experiment("mixed")
    parents = []
    for valid_pct, loss in ((0.2, 0.3), (0.2, 0.4), (0.5, 0.2)):
        parent = tracker.start_run(exp_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
        run = tracker.start_run(exp_id, run_name="trial", parent_run_id=parent)
        params = {"strategy": "grid", "lr": 0.01, "seed": 0, "task.dataset.name": "digits"}
        params["task.dataset.path"] = f"/home/u{loss}/cache"  # digits reads no path: no warning
        tracker.log_params(run, params | {"task.dataset.valid_pct": valid_pct})
        tracker.set_tags(run, {"sweeps.strategy": "grid", "sweeps.stop_reason": "completed"})
        tracker.log_metrics(run, [("best/valid_loss", loss, 0)])
        for run_id in (run, parent):
            tracker.end_run(run_id, "FINISHED")
        parents.append(parent)
    with caplog.at_level(logging.WARNING, logger="sweeps.best"):
        best = best_config("mixed", tracking_uri=uri)
    assert best.parent_run_id == parents[2]
    said = " ".join(caplog.text.split())
    assert "ran on different data (task.dataset.valid_pct: 0.2, 0.5):" in said, said
    assert f"pass --run-id {parents[2]} (run_id=) to rank that sweep's trials alone" in said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sweeps.best"):
        best_config("mixed", tracking_uri=uri, parent_run_id=parents[0])
        best_config("mixed", tracking_uri=uri, strategy="grid", metric="valid_loss")
    assert caplog.text.count("ran on different data") == 1  # the second ranks all three again


def test_lrsweep_sweeps_lists_the_sweep_runs_with_their_trials_and_data(
    store: dict[str, str], tmp_path: Path
) -> None:
    # The run ids `best`, `report` and `predict` take with --run-id were nowhere to be listed
    # but in the error of a wrong one.
    import sweeps

    uri = store["uri"]
    (summary,) = sweeps.sweep_runs(EXPERIMENT, tracking_uri=uri)
    assert summary.run_id == store["parent"] and summary.status == "RUNNING"
    assert summary.trials == {"FAILED": 1, "FINISHED": 5, "RUNNING": 1}
    assert summary.best_valid_loss == 0.25  # the grid's; its diverged 0.01 does not count
    assert summary.data == {}  # these trials logged no task.dataset params
    result = CliRunner().invoke(app, ["sweeps", EXPERIMENT, "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split("  ")[0] == "run id" and "best valid_loss" in header
    assert row.startswith(store["parent"]) and "1 failed, 5 finished, 1 running" in row
    assert " 0.25 " in f"{row} "
    listed = CliRunner().invoke(
        app, ["sweeps", EXPERIMENT, "--tracking-uri", uri, "--format", "json"]
    )
    assert json.loads(listed.stdout)[0]["trials"] == summary.trials
    unknown = CliRunner().invoke(app, ["sweeps", "nope", "--tracking-uri", uri])
    assert unknown.exit_code == 2 and EXPERIMENT in unknown.stderr, unknown.output
    empty = CliRunner().invoke(app, ["sweeps", "another-sweep", "--tracking-uri", uri])
    assert empty.exit_code == 0 and "has no sweep run" in empty.stdout
    missing = CliRunner().invoke(
        app, ["sweeps", EXPERIMENT, "--tracking-uri", f"sqlite:///{tmp_path}/x.db"]
    )
    assert missing.exit_code == 2 and "No MLflow store at" in missing.stderr


@pytest.mark.parametrize("command", ["best", "report", "sweeps", "predict"])
def test_a_deleted_experiment_says_so_and_gives_the_command_that_restores_it(
    tracking_uri: str, tmp_path: Path, command: str
) -> None:
    """`mlflow experiments delete` (or the UI's delete) left the experiment, and its runs, in
    the store: every command read it as one that never existed, listing the others."""
    import mlflow

    tracker = Tracker(tracking_uri)
    exp_id = tracker.ensure_experiment(EXPERIMENT)
    _sweep(tracker, exp_id, "sweep", [0.5])
    mlflow.MlflowClient(tracking_uri).delete_experiment(exp_id)
    image = tmp_path / "x.png"  # predict checks its images before the experiment
    image.write_bytes(b"")
    extra = [str(image)] if command == "predict" else []
    args = [command, EXPERIMENT, "--tracking-uri", tracking_uri, *extra]

    refused = CliRunner().invoke(app, args)

    assert refused.exit_code == 2, refused.output  # as for an experiment that does not exist
    said = " ".join(refused.stderr.split())
    assert f"experiment '{EXPERIMENT}' in {tracking_uri} was deleted (its id is {exp_id})" in said
    assert "does not exist" not in said and "Traceback" not in refused.output
    restore = said.split("Restore it with: ", 1)[1]
    assert restore == (
        f"MLFLOW_TRACKING_URI={tracking_uri} mlflow experiments restore --experiment-id {exp_id}"
    )
    if command != "report":  # one command is enough to try the restore (mlflow starts slowly)
        return
    variable, *mlflow_args = restore.split()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = variable.split("=", 1)[1]
    done = subprocess.run(  # the command given works: the experiment is back, with its sweep
        [sys.executable, "-m", *mlflow_args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert CliRunner().invoke(app, args).exit_code == 0
