"""The comparison report, recomputed from MLflow runs written here by hand."""

from __future__ import annotations

import csv
import dataclasses
import gc
import html
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
from _store_helpers import logged_sweep
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.report import Report, TrialRow, build_report, compare, log_report, trial_row
from sweeps.tracking import Tracker

_DIGITS = {"sweeps.spec_name": "digits"}  # the spec the logged sweeps say they ran

# (arm, kind, rule, seed, lr, best valid loss, best error rate, epochs, compute s, status)
TRIALS = [
    ("grid", "grid", "", 0, 1e-3, 0.50, 0.20, 5, 10.0, "FINISHED"),
    ("grid", "grid", "", 0, 1e-2, 0.30, 0.10, 5, 10.0, "FINISHED"),
    ("grid", "grid", "", 1, 1e-3, 0.60, 0.25, 5, 10.0, "FINISHED"),
    ("grid", "grid", "", 1, 1e-2, 0.40, 0.12, 3, 6.0, "FINISHED"),
    ("lr_finder", "lr_finder", "valley", 0, 5e-3, 0.35, 0.11, 5, 3.0, "FINISHED"),
    ("lr_finder", "lr_finder", "valley", 1, 6e-3, 0.45, 0.13, 5, 3.0, "FINISHED"),
    ("lr_finder", "lr_finder", "steep", 0, 1e-1, math.nan, math.nan, 1, 1.0, "FINISHED"),
    ("lr_finder", "lr_finder", "steep", 1, 2e-2, 0.90, 0.40, 2, 1.5, "FINISHED"),
    ("optuna", "optuna", "", 0, 2e-2, 0.20, 0.08, 5, 9.0, "FAILED"),
    ("optuna", "optuna", "", 0, 8e-3, 0.31, 0.09, 5, 9.0, "FINISHED"),
    ("optuna", "optuna", "", 1, 9e-3, 0.39, 0.11, 5, 9.0, "FINISHED"),
]


def _write_sweep(tracker: Tracker, experiment_id: str, trials: list[Any] | None = None) -> str:
    parent = tracker.start_run(experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    for index, (arm, kind, rule, seed, lr, loss, error, epochs, compute, status) in enumerate(
        TRIALS if trials is None else trials
    ):
        tags = {
            "sweeps.strategy": kind,
            "sweeps.arm": arm,
            "sweeps.stop_reason": "completed",
            "sweeps.diagnosis": "ok",
            "sweeps.best_epoch": epochs - 1,
        }
        if rule:
            tags["sweeps.rule"] = rule
        run_id = tracker.start_run(
            experiment_id, run_name=f"t{index}", tags=tags, parent_run_id=parent
        )
        tracker.log_params(run_id, {"strategy": kind, "arm": arm, "seed": seed, "lr": lr})
        points = [("epochs_run", epochs, 0), ("compute_s", compute, 0)]
        if math.isfinite(loss):
            points += [("best/valid_loss", loss, 0), ("best/error_rate", error, 0)]
        points += [("valid_loss", loss + 0.1 * (epochs - e), e) for e in range(epochs)]
        if kind == "lr_finder":
            points += [("lr_find/loss", 2.0 - 0.01 * i, i) for i in range(20)]
            points += [("lr_find/lr", 1e-5 * 1.5**i, i) for i in range(20)]
        tracker.log_metrics(run_id, points)
        tracker.end_run(run_id, status)
    tracker.end_run(parent)
    return parent


@pytest.fixture
def sweep(tracking_uri: str) -> tuple[Tracker, str]:
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("report-test")
    _write_sweep(tracker, experiment_id)  # an older execution: must be ignored
    return tracker, _write_sweep(tracker, experiment_id)


def test_report_numbers_match_a_hand_computation(sweep: tuple[Tracker, str]) -> None:
    tracker, parent = sweep
    report = build_report("report-test", tracker=tracker)
    assert report.parent_run_id == parent  # the latest execution by default
    grid = report.group("grid")
    assert grid.valid_loss_mean == pytest.approx(statistics.fmean([0.30, 0.40]))
    assert grid.valid_loss_std == pytest.approx(statistics.stdev([0.30, 0.40]))
    assert grid.error_rate_mean == pytest.approx(0.11)
    assert grid.chosen_lr == pytest.approx(1e-2)
    assert (grid.n_trials, grid.epochs_run, grid.compute_s) == (4, 18, 36.0)
    valley = report.group("lr_finder:valley")
    assert valley.chosen_lr == pytest.approx(math.sqrt(5e-3 * 6e-3))  # median on the log scale
    assert valley.compute_vs_grid == pytest.approx(6.0 / 36.0)
    optuna = report.group("optuna")  # the FAILED trial does not count, even with the best loss
    assert optuna.valid_loss_mean == pytest.approx(0.35)
    assert optuna.n_trials == 3
    steep = report.group("lr_finder:steep")  # seed 0 never had a finite loss
    assert steep.n_seeds == 1 and steep.valid_loss_mean == pytest.approx(0.90)
    assert steep.n_seeds_run == 2 and math.isnan(steep.valid_loss_std)  # one value: no spread
    best = min(g.valid_loss_mean for g in report.groups)
    assert best == pytest.approx(0.35)
    for row in report.groups:
        assert row.regret == pytest.approx(row.valid_loss_mean - best)
    assert report.groups[0].regret == 0.0
    assert [t.group for t in report.trials].count("grid") == 4


def test_report_of_a_named_parent_and_unknown_names(sweep: tuple[Tracker, str]) -> None:
    tracker, parent = sweep
    assert build_report("report-test", parent, tracker=tracker).parent_run_id == parent
    with pytest.raises(LookupError, match=r"'nope' does not exist.*'report-test'"):
        build_report("nope", tracker=tracker)
    empty = tracker.ensure_experiment("empty")
    assert empty
    with pytest.raises(
        LookupError, match=r"has no sweep run .*Pass the experiment a sweep logged to"
    ):
        build_report("empty", tracker=tracker)


@pytest.mark.parametrize("run_id", ["deadbeef", "child"])
def test_report_refuses_a_run_id_that_is_not_a_sweep_of_the_experiment(
    sweep: tuple[Tracker, str], run_id: str
) -> None:
    tracker, parent = sweep
    if run_id == "child":  # a trial run is not a sweep run
        run_id = tracker.child_runs(tracker.experiment_id("report-test"), parent)[0].info.run_id
    with pytest.raises(LookupError, match=rf"run {run_id} is not a sweep run.*{parent}"):
        build_report("report-test", run_id, tracker=tracker)


def test_a_refused_run_id_says_what_the_run_is(sweep: tuple[Tracker, str]) -> None:
    """A trial's run id (`lrsweep best` prints one), another experiment's sweep run or a deleted
    sweep run was refused as "not a sweep run" alone: the first two look like typos, the last
    is a sweep run."""
    tracker, parent = sweep
    experiment_id = tracker.experiment_id("report-test")
    child = tracker.child_runs(experiment_id, parent)[0].info.run_id
    with pytest.raises(
        LookupError, match=rf"{child} .*\(it is a trial run of sweep run {parent}\)"
    ):
        build_report("report-test", child, tracker=tracker)
    other = _write_sweep(tracker, tracker.ensure_experiment("other-exp"), TRIALS[:1])
    with pytest.raises(LookupError, match=rf"{other} .*\(it is a run of experiment 'other-exp'\)"):
        build_report("report-test", other, tracker=tracker)
    tracker.client.delete_run(parent)
    with pytest.raises(LookupError, match=rf"{parent} .*\(it was deleted\)"):
        build_report("report-test", parent, tracker=tracker)


def test_report_documents_are_self_contained_and_logged(
    sweep: tuple[Tracker, str], tmp_path: Path
) -> None:
    tracker, parent = sweep
    report = build_report("report-test", tracker=tracker, figures_dir=tmp_path)
    html = report.to_html()
    assert html.count("data:image/png;base64,") == 2
    assert 'src="http' not in html and "lr_finder:valley" in html
    markdown = report.to_markdown()
    assert "| strategy |" in markdown and "![comparison.png](comparison.png)" in markdown
    assert report.results_csv().splitlines()[0].startswith("group,kind,n_seeds,n_seeds_run,")
    assert len(report.trials_csv().splitlines()) == 1 + len(TRIALS)
    log_report(tracker, parent, report)
    artifacts = set(tracker.list_artifacts(parent))
    assert {"report.md", "report.html", "comparison.png", "results.csv", "curves.png"} <= artifacts


def test_a_reports_own_figure_folder_goes_with_the_report(sweep: tuple[Tracker, str]) -> None:
    """Without ``figures_dir`` the figures live in a temporary folder as long as the report
    (``to_html`` reads them); every sweep and nightly used to leave one in /tmp for good."""
    tracker, _ = sweep
    report = build_report("report-test", tracker=tracker)
    folder = report.figures["curves.png"].parent
    assert folder.name.startswith("lrsweep-report-") and folder.is_dir()
    assert report.to_html().count("data:image/png;base64,") == 2
    del report
    gc.collect()
    assert not folder.exists()


def _row(group: str, kind: str, seed: int, loss: float, compute: float) -> TrialRow:
    return TrialRow(
        run_id=f"{group}{seed}{loss}",
        group=group,
        kind=kind,
        arm=group,
        rule="",
        seed=seed,
        lr=0.01,
        status="FINISHED",
        stop_reason="completed",
        best_epoch=1,
        diagnosis="ok",
        best_valid_loss=loss,
        best_error_rate=loss / 2,
        epochs_run=2,
        compute_s=compute,
    )


@pytest.mark.parametrize(
    ("rows", "expected_ratio"),
    [
        ([_row("grid", "grid", 0, 0.5, 4.0), _row("random", "random", 0, 0.4, 2.0)], 0.5),
        ([_row("random", "random", 0, 0.4, 2.0)], math.nan),  # no grid arm: no ratio
    ],
)
def test_compute_ratio_is_against_the_grid_arm(rows: list[TrialRow], expected_ratio: float) -> None:
    ratio = next(g for g in compare(rows) if g.group == "random").compute_vs_grid
    assert ratio == pytest.approx(expected_ratio, nan_ok=True)


def test_groups_are_sorted_by_regret_with_unscored_groups_last() -> None:
    rows = [
        _row("a", "grid", 0, 0.5, 1.0),
        _row("b", "random", 0, 0.3, 1.0),
        _row("c", "optuna", 0, math.nan, 1.0),
    ]
    groups = compare(rows)
    assert [g.group for g in groups] == ["b", "a", "c"]
    assert groups[0].regret == 0.0 and groups[1].regret == pytest.approx(0.2)
    assert math.isnan(groups[2].regret) and groups[2].n_trials == 1


# (lr, best valid loss, status): a FAILED trial has no best metric, so NaN in its row
GRID_WITH_A_FAILED_TRIAL = [
    (1e-5, 0.9, "FINISHED"),
    (1e-4, math.nan, "FAILED"),
    (1e-3, 0.3, "FINISHED"),
    (1e-2, 0.1, "FINISHED"),
    (1e-1, 0.2, "FINISHED"),
]


@pytest.mark.parametrize("nan_at", range(len(GRID_WITH_A_FAILED_TRIAL)))
def test_a_seed_picks_its_lowest_loss_whatever_the_position_of_an_unscored_trial(
    nan_at: int,
) -> None:
    trials = [t for t in GRID_WITH_A_FAILED_TRIAL if not math.isnan(t[1])]
    trials.insert(nan_at, GRID_WITH_A_FAILED_TRIAL[1])
    rows = [
        dataclasses.replace(_row("grid", "grid", 0, loss, 1.0), lr=lr, status=status)
        for lr, loss, status in trials
    ]
    (grid,) = compare(rows)
    assert (grid.chosen_lr, grid.valid_loss_mean) == (pytest.approx(1e-2), pytest.approx(0.1))
    assert (grid.n_seeds, grid.n_trials) == (1, 5)


def _report_cli(tracking_uri: str, *args: str) -> object:
    return CliRunner().invoke(app, ["report", "report-test", "--tracking-uri", tracking_uri, *args])


def test_cli_unknown_run_id_exits_2_listing_the_sweep_runs(
    sweep: tuple[Tracker, str], tracking_uri: str
) -> None:
    _, parent = sweep
    result = _report_cli(tracking_uri, "--run-id", "deadbeef")
    assert result.exit_code == 2, result.output
    assert "run deadbeef is not a sweep run of experiment 'report-test'" in result.stderr
    assert parent in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize("out", ["afile/report", "afile", "afile/a/b"])
def test_cli_out_under_a_regular_file_exits_2_naming_it(
    sweep: tuple[Tracker, str], tracking_uri: str, tmp_path: Path, out: str
) -> None:
    (tmp_path / "afile").write_text("not a folder")
    result = _report_cli(tracking_uri, "--out", str(tmp_path / out))
    assert result.exit_code == 2, result.output
    assert f"--out '{tmp_path / out}'" in result.stderr
    assert f"'{tmp_path / 'afile'}' exists and is not a folder" in result.stderr
    assert "Traceback" not in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit)
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.parametrize("method", ["mkdir", "write_text"])
def test_cli_out_without_write_permission_exits_2_naming_it(
    sweep: tuple[Tracker, str],
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
) -> None:
    out = tmp_path / "read-only"
    original = getattr(Path, method)

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        if out in (self, self.parent):  # what a read-only folder does (tests may run as root)
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, method, refuse)
    result = _report_cli(tracking_uri, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert f"--out '{out}': Permission denied" in result.stderr
    assert "Traceback" not in result.output


def test_cli_writes_the_report_files_into_out(
    sweep: tuple[Tracker, str], tracking_uri: str, tmp_path: Path
) -> None:
    result = _report_cli(tracking_uri, "--out", str(tmp_path / "new" / "report"))
    assert result.exit_code == 0, result.output
    _, parent = sweep
    said = f"{len(TRIALS)} trials of sweep run {parent} of experiment 'report-test' (the latest"
    assert said in " ".join(result.stdout.split())  # which sweep the default picked
    written = {p.name for p in (tmp_path / "new" / "report").iterdir()}
    assert {"report.md", "report.html", "results.csv", "trials.csv", "comparison.png"} <= written


def test_cli_format_json_holds_the_tables_of_results_csv_and_the_partly_failed_note(
    sweep: tuple[Tracker, str], tracking_uri: str
) -> None:
    tracker, parent = sweep
    result = _report_cli(tracking_uri, "--format", "json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)  # stdout is the JSON alone
    report = build_report("report-test", tracker=tracker)
    assert (shown["parent_run_id"], shown["status"], shown["other_sweeps"]) == (
        parent,
        "FINISHED",
        1,
    )
    assert shown["note"] == report.status_note
    assert shown["note"].startswith("Partly failed: 1 of 11 trial runs failed")
    assert shown["trials_by_status"] == {"FAILED": 1, "FINISHED": 10}
    csv_rows = list(csv.DictReader(io.StringIO(report.results_csv())))
    assert [row["group"] for row in shown["groups"]] == [row["group"] for row in csv_rows]
    for row, csv_row in zip(shown["groups"], csv_rows, strict=True):
        assert list(row) == list(csv_row)  # the CSV's columns, in its order
        for key, cell in csv_row.items():
            value = row[key]
            if key in ("group", "kind"):
                assert value == cell
            elif value is None:  # a "-" in the tables
                assert math.isnan(float(cell))
            else:
                assert value == float(cell)
    steep = next(row for row in shown["groups"] if row["group"] == "lr_finder:steep")
    assert steep["valid_loss_std"] is None and steep["valid_loss_mean"] == pytest.approx(0.90)
    assert steep["n_seeds"] == 1 and isinstance(steep["n_seeds"], int)
    assert [t["run_id"] for t in shown["trials"]] == [t.run_id for t in report.trials]
    assert list(shown["trials"][0]) == next(csv.reader(io.StringIO(report.trials_csv())))
    assert {t["status"] for t in shown["trials"] if t["group"] == "optuna"} == {
        "FAILED",
        "FINISHED",
    }


def test_format_json_gives_the_best_epoch_as_a_number_and_none_without_one() -> None:
    # JSON had the tag's text ("1"; "" for a trial that diverged in its first epoch), where
    # `lrsweep best --format json` gives 1
    rows = [
        _row("grid", "grid", 0, 0.3, 1.0),
        dataclasses.replace(
            _row("grid", "grid", 1, math.nan, 1.0), stop_reason="diverged", best_epoch=None
        ),
    ]
    shown = json.loads(json.dumps(Report("e", "p", compare(rows), rows).to_dict()))
    assert [t["best_epoch"] for t in shown["trials"]] == [1, None]


@pytest.mark.parametrize(
    ("tags", "epoch", "cell"),
    [
        ({"sweeps.best_epoch": 3}, 3, "3"),
        ({"sweeps.best_epoch": 0}, 0, "0"),
        ({"sweeps.best_epoch": ""}, None, ""),  # as a trial that diverged in epoch 0 tags it
        ({}, None, ""),  # a trial that failed before it was tagged
    ],
)
def test_a_trial_rows_best_epoch_is_the_tag_as_a_number_and_the_tables_show_it_as_text(
    tracking_uri: str, tags: dict[str, Any], epoch: int | None, cell: str
) -> None:
    """The row holds the tag read once, as `lrsweep best` reads it (it held the tag's text);
    the trial table and trials.csv write it as they did: ``3``, or an empty cell."""
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("best-epoch")
    parent = tracker.start_run(experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    run_id = tracker.start_run(
        experiment_id,
        run_name="t0",
        tags={"sweeps.strategy": "grid", "sweeps.arm": "grid", **tags},
        parent_run_id=parent,
    )
    tracker.log_params(run_id, {"seed": 0, "lr": 0.01})
    tracker.end_run(run_id)
    (row,) = map(trial_row, tracker.child_runs(experiment_id, parent))
    assert row.best_epoch == epoch
    report = Report("best-epoch", parent, compare([row]), [row])
    headers, (cells,) = report.trial_table()
    assert dict(zip(headers, cells, strict=True))["best epoch"] == cell
    (csv_row,) = csv.DictReader(io.StringIO(report.trials_csv()))
    assert csv_row["best_epoch"] == cell


def test_a_group_with_no_counted_trial_has_no_mean_and_no_spread() -> None:
    rows = [
        _row("grid", "grid", 0, 0.3, 1.0),
        _row("grid", "grid", 1, 0.4, 1.0),
        dataclasses.replace(_row("random", "random", 0, math.nan, 1.0), stop_reason="diverged"),
        dataclasses.replace(_row("random", "random", 1, math.nan, 1.0), stop_reason="diverged"),
    ]
    report = Report("x", "parent", compare(rows), rows)
    lost = report.group("random")
    assert lost.n_seeds == 0 and lost.n_trials == 2
    spread = (lost.valid_loss_std, lost.error_rate_std)
    assert all(math.isnan(v) for v in (lost.valid_loss_mean, lost.error_rate_mean, *spread))
    headers, cells = report.group_table()
    row = dict(zip(headers, next(c for c in cells if c[0] == "random"), strict=True))
    assert (row["best valid loss"], row["error rate"]) == ("-", "-")  # not "- ± 0.0000"
    assert row["seeds"] == "0/2"
    assert "random,random,0,2,nan,nan,nan,nan,nan" in report.results_csv()
    assert report.group("grid").valid_loss_std == pytest.approx(statistics.stdev([0.3, 0.4]))


@pytest.mark.parametrize("unscored_kind", ["grid", "optuna", "random"])
def test_error_regret_ignores_a_group_without_an_error_rate(unscored_kind: str) -> None:
    """A group with a finite loss but no error rate must not turn every error regret into NaN,
    wherever it sorts."""
    rows = [
        dataclasses.replace(_row("a", unscored_kind, 0, 0.5, 1.0), best_error_rate=math.nan),
        _row("b", "lr_finder", 0, 0.3, 1.0),  # error rate 0.15
        _row("c", "recipe", 0, 0.4, 1.0),  # error rate 0.20
    ]
    groups = {g.group: g for g in compare(rows)}
    assert groups["b"].regret_error_pp == pytest.approx(0.0)
    assert groups["c"].regret_error_pp == pytest.approx(5.0)
    assert math.isnan(groups["a"].regret_error_pp)


def test_a_failed_trial_counts_the_epochs_and_seconds_mlflow_holds(tracking_uri: str) -> None:
    """A trial that crashed has no ``compute_s``/``epochs_run`` summary; its epochs still cost."""
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("failed-compute")
    parent = tracker.start_run(experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    for index, status in enumerate(("FINISHED", "FAILED")):
        tags = {"sweeps.strategy": "grid", "sweeps.arm": "grid"}
        tags["sweeps.stop_reason"] = "completed" if status == "FINISHED" else "failed"
        run_id = tracker.start_run(
            experiment_id, run_name=f"t{index}", tags=tags, parent_run_id=parent
        )
        tracker.log_params(run_id, {"seed": 0, "lr": 0.01 * (index + 1)})
        points = [("valid_loss", 0.5 - 0.1 * e, e) for e in range(3)]
        points += [("epoch_time_s", 2.0, e) for e in range(3)]
        if status == "FAILED":  # a restarted try ran epoch 2 again, and it took 1 s more
            points.append(("epoch_time_s", 1.0, 2))
        if status == "FINISHED":
            points += [("best/valid_loss", 0.3, 0), ("best/error_rate", 0.1, 0)]
            points += [("compute_s", 6.5, 0), ("epochs_run", 3, 0)]  # 0.5 s of range test
        tracker.log_metrics(run_id, points)
        tracker.end_run(run_id, status)
    tracker.end_run(parent)
    grid = build_report("failed-compute", tracker=tracker).group("grid")
    assert (grid.n_trials, grid.n_seeds) == (2, 1)
    assert (grid.epochs_run, grid.compute_s) == (6, pytest.approx(13.5))  # 3 epochs each


def test_the_trial_table_shows_error_rates_in_percent_as_the_strategy_table() -> None:
    rows = [_row("grid", "grid", 0, 0.3, 1.0), _row("grid", "grid", 1, 0.4, 1.0)]  # 15%, 20%
    markdown = Report("x", "parent", compare(rows), rows).to_markdown(images=False)
    trial_lines = [line for line in markdown.splitlines() if line.startswith("| grid0")]
    assert len(trial_lines) == 1 and "| 15.00% |" in trial_lines[0], markdown
    assert "| 17.50% ± 3.54 |" in markdown  # the strategy row: mean ± std over the 2 seeds


def test_one_seed_shows_no_spread_and_the_table_says_how_many_seeds_count() -> None:
    """A group whose other seeds failed is a mean over fewer seeds than its rivals: the table
    says so ("1/2"), and one value has no standard deviation (not "± 0.0000")."""
    rows = [
        _row("grid", "grid", 0, 0.3, 1.0),
        _row("grid", "grid", 1, 0.4, 1.0),
        _row("random", "random", 0, 0.2, 1.0),
        dataclasses.replace(_row("random", "random", 1, math.nan, 1.0), stop_reason="diverged"),
    ]
    report = Report("x", "parent", compare(rows), rows)
    lucky = report.group("random")
    assert (lucky.n_seeds, lucky.n_seeds_run) == (1, 2)
    assert lucky.valid_loss_mean == pytest.approx(0.2)
    assert math.isnan(lucky.valid_loss_std) and math.isnan(lucky.error_rate_std)
    assert (report.group("grid").n_seeds, report.group("grid").n_seeds_run) == (2, 2)
    headers, cells = report.group_table()
    table = {row[0]: dict(zip(headers, row, strict=True)) for row in cells}
    assert table["random"]["seeds"] == "1/2" and table["grid"]["seeds"] == "2/2"
    assert (table["random"]["best valid loss"], table["random"]["error rate"]) == (
        "0.2000",
        "10.00%",
    )
    assert table["grid"]["best valid loss"] == "0.3500 ± 0.0707"
    assert report.results_csv().splitlines()[0].startswith("group,kind,n_seeds,n_seeds_run,")
    assert "random,random,1,2,0.01,0.2,nan,0.1,nan," in report.results_csv()


@pytest.mark.parametrize("infinite", [math.inf, -math.inf])
def test_an_infinite_best_loss_does_not_count(tracking_uri: str, infinite: float) -> None:
    """MLflow's SQL store keeps +-inf as +-1.797e308, a finite float: read back, the trial's
    loss must still be infinite, so the trial does not count (nor take the lowest regret)."""
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("inf-loss")
    parent = tracker.start_run(experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    for seed, loss in ((0, 0.3), (1, infinite)):
        tags = {"sweeps.strategy": "grid", "sweeps.arm": "grid", "sweeps.stop_reason": "completed"}
        run_id = tracker.start_run(
            experiment_id, run_name=f"t{seed}", tags=tags, parent_run_id=parent
        )
        tracker.log_params(run_id, {"seed": seed, "lr": 0.01})
        points = [("best/valid_loss", loss, 0), ("best/error_rate", infinite, 0)]
        tracker.log_metrics(run_id, [*points, ("compute_s", 1.0, 0), ("epochs_run", 1, 0)])
        tracker.end_run(run_id)
    rows = {row.seed: row for row in map(trial_row, tracker.child_runs(experiment_id, parent))}
    assert rows[1].best_valid_loss == infinite and not rows[1].counts
    assert rows[1].best_error_rate == infinite
    (grid,) = compare(list(rows.values()))
    assert (grid.n_seeds, grid.n_seeds_run) == (1, 2)
    assert grid.valid_loss_mean == pytest.approx(0.3) and grid.regret == 0.0


def test_the_default_sweep_is_the_latest_with_a_trial_run(
    tracking_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A sweep that ended before any trial started (Ray would not start) or one just starting
    has no trial run: by default the report is of the latest sweep that has one, and says so,
    not an empty table that hides the results of the sweep before."""
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("report-test")
    with_trials = _write_sweep(tracker, experiment_id)
    empty = tracker.start_run(experiment_id, run_name="broken", tags={"sweeps.kind": "sweep"})
    tracker.end_run(empty, "FAILED")
    with caplog.at_level("WARNING", logger="sweeps.report"):
        report = build_report("report-test", tracker=tracker)
    assert report.parent_run_id == with_trials and len(report.trials) == len(TRIALS)
    assert empty in caplog.text and with_trials in caplog.text
    assert build_report("report-test", empty, tracker=tracker).trials == []  # when asked for
    printed = " ".join(_report_cli(tracking_uri).stdout.split())  # not "the latest" sweep run
    assert (
        f"sweep run {with_trials} of experiment 'report-test' (the latest with a trial run; 1 "
        "other sweep run(s): pick one with --run-id)." in printed
    )
    assert report.other_sweeps == 1


def test_the_only_sweep_of_an_experiment_is_reported_without_a_word_of_others(
    tracking_uri: str,
) -> None:
    tracker = Tracker(tracking_uri)
    only = _write_sweep(tracker, tracker.ensure_experiment("report-test"))
    printed = " ".join(_report_cli(tracking_uri).stdout.split())
    assert printed.endswith(
        f"{len(TRIALS)} trials of sweep run {only} of experiment 'report-test'."
    )
    assert build_report("report-test", tracker=tracker).other_sweeps == 0


def test_a_sweep_of_one_trial_is_counted_in_the_singular(tracking_uri: str) -> None:
    tracker = Tracker(tracking_uri)
    only = _write_sweep(tracker, tracker.ensure_experiment("report-test"), TRIALS[:1])
    printed = " ".join(_report_cli(tracking_uri).stdout.split())
    assert printed.endswith(f" 1 trial of sweep run {only} of experiment 'report-test'."), printed


def test_no_sweep_with_a_trial_run_is_an_error_naming_the_latest(tracking_uri: str) -> None:
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("report-test")
    empty = tracker.start_run(experiment_id, run_name="broken", tags={"sweeps.kind": "sweep"})
    tracker.end_run(empty, "FAILED")
    with pytest.raises(LookupError, match=rf"no trial run in any .*{empty} \(broken\), is FAILED"):
        build_report("report-test", tracker=tracker)
    result = _report_cli(tracking_uri)
    assert result.exit_code == 2 and "no trial run" in result.stderr, result.output


def test_an_exploded_loss_reads_in_scientific_notation_not_as_thirty_digits() -> None:
    """A trial that blew up still counts with its best epoch (3.8e30 here, a real sweep's
    ``lr: 269`` on SGD): fixed-point ``.4f`` wrote it as 36 characters in every table."""
    rows = [
        _row("grid", "grid", 0, 0.5, 1.0),
        *(
            dataclasses.replace(row, best_error_rate=2 / 3)
            for row in (
                _row("optuna", "optuna", 0, 3.827914607702456e30, 1.0),
                _row("optuna", "optuna", 1, 7.809132349056235e32, 1.0),
            )
        ),
    ]
    report = Report("x", "parent", compare(rows), rows)
    _, cells = report.group_table()
    optuna = next(row for row in cells if row[0] == "optuna")
    assert optuna[3] == "3.924e+32 ± 5.495e+32"  # mean ± std over the 2 seeds
    assert optuna[5] == "3.924e+32"  # regret
    grid = next(row for row in cells if row[0] == "grid")
    assert (grid[3], grid[5]) == ("0.5000", "0.0000")  # ordinary losses keep their 4 decimals
    markdown = report.to_markdown(images=False)
    assert "| 3.828e+30 |" in markdown  # the trial table
    table_cells = [
        cell for line in markdown.splitlines() if line.startswith("|") for cell in line.split("|")
    ]
    assert max(len(cell) for cell in table_cells) < 30, markdown


@pytest.mark.parametrize(
    ("parent_status", "trial_status", "expected"),
    [
        ("RUNNING", "RUNNING", "Incomplete: this sweep is still running"),
        ("KILLED", "KILLED", "Incomplete: this sweep was interrupted (its run is KILLED)"),
        ("RUNNING", "FINISHED", ""),  # a closing sweep builds its report before it is FINISHED
        ("FINISHED", "FINISHED", ""),
    ],
)
def test_a_report_of_an_interrupted_or_running_sweep_says_it_is_incomplete(
    empty_workdir: Path, tracking_uri: str, parent_status: str, trial_status: str, expected: str
) -> None:
    """Its numbers are those of the trials that finished: the report says so, in every form,
    with the command that continues the sweep, instead of passing for the whole sweep's."""
    tracker = Tracker(tracking_uri)
    logged_sweep(
        tracker, "report-test", _DIGITS, trial_status=trial_status, parent_status=parent_status
    )

    report = build_report("report-test", tracker=tracker)

    if not expected:
        assert report.status_note == ""
        assert "Incomplete" not in report.to_markdown(images=False) + report.to_html()
        return
    assert report.status_note.startswith(expected)
    assert "count the 1 trial runs that finished; 1 did not end (their epochs and compute" in (
        report.status_note
    )
    assert "`lrsweep resume digits`" in report.status_note
    assert report.status_note in report.to_markdown(images=False)
    assert html.escape(report.status_note) in report.to_html()
    printed = " ".join(_report_cli(tracking_uri).output.split())
    assert report.status_note in printed


def test_a_report_of_a_failed_sweep_says_so_with_its_error_above_the_tables(
    empty_workdir: Path, tracking_uri: str
) -> None:
    """Every trial failed: the report was a row of dashes with nothing saying the sweep failed,
    and the terminal printed a note (interrupted sweeps) below the table it was about."""
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("report-test")
    parent = tracker.start_run(
        experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep", "sweeps.spec_name": "digits"}
    )
    run_id = tracker.start_run(
        experiment_id, run_name="t0", tags={"sweeps.strategy": "grid"}, parent_run_id=parent
    )
    tracker.log_params(run_id, {"strategy": "grid", "arm": "grid", "seed": 0, "lr": 1e-3})
    tracker.end_run(run_id, "FAILED")
    tracker.set_tags(parent, {"sweeps.error": "RuntimeError('mnist files are missing')"})
    tracker.end_run(parent, "FAILED")

    report = build_report("report-test", tracker=tracker)

    assert report.status_note.startswith(
        "Failed: this sweep's run is FAILED (1 of 1 trial runs failed): "
        "RuntimeError('mnist files are missing')."
    )
    # a run without the storage tag (an older lrsweep's, as here) says where to type it
    assert (
        "`lrsweep resume digits` (in the folder the sweep ran in) retries the failed trials"
        in report.status_note
    )
    assert report.status_note in report.to_markdown(images=False)
    printed = " ".join(_report_cli(tracking_uri).output.split())
    assert report.status_note in printed
    assert printed.index("Failed: this sweep") < printed.index("LR finder vs search")


@pytest.mark.parametrize(
    ("storage", "address", "params", "other_store", "expected"),
    [
        # the sweep ran here, on a Ray of its own, logging to the store read by default
        ("default", "local", None, False, "`lrsweep resume digits`."),
        (
            "/data/ray results",
            "ray://head:10001",
            None,
            True,
            "`lrsweep resume digits --storage-path '/data/ray results' --address "
            "ray://head:10001 --tracking-uri {uri}`.",
        ),
        (
            "s3://bucket/ray",
            "local",
            None,
            False,
            "`lrsweep resume digits --storage-path s3://bucket/ray`.",
        ),
        # a run of an lrsweep before the storage tag: its spec's storage.path, else its folder
        (
            None,
            None,
            {"storage.path": "/mnt/ray"},
            False,
            "`lrsweep resume digits --storage-path /mnt/ray`.",
        ),
        (
            None,
            None,
            {"storage.path": "None"},
            False,
            "`lrsweep resume digits` (in the folder the sweep ran in).",
        ),
    ],
)
def test_an_interrupted_sweeps_note_gives_the_exact_resume_command(
    empty_workdir: Path,
    tracking_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    storage: str | None,
    address: str | None,
    params: dict[str, str] | None,
    other_store: bool,
    expected: str,
) -> None:
    """The note said "`lrsweep resume digits` (and the --storage-path it ran with, if any)":
    the user had to remember where the sweep's storage was, and a sweep read from another
    store or run on a cluster needed options it did not name."""
    from sweeps.run import default_storage

    tags = {}
    if storage is not None:
        tags["sweeps.storage_path"] = str(default_storage()) if storage == "default" else storage
    if address is not None:
        tags["sweeps.address"] = address
    if other_store:  # the store read is not the one a command typed here reads by default
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{empty_workdir}/other/mlflow.db")
    logged_sweep(Tracker(tracking_uri), "report-test", _DIGITS | tags, params)

    report = build_report("report-test", tracking_uri=tracking_uri)

    assert report.status_note.endswith(f"Continue it with {expected.format(uri=tracking_uri)}")
    assert "if any" not in report.status_note
    printed = " ".join(_report_cli(tracking_uri).output.split())
    assert report.status_note in printed


@pytest.mark.parametrize(
    ("status", "note"),
    [
        (
            "KILLED",
            "Incomplete: this sweep was interrupted (its run is KILLED) before any trial started. "
            "Continue it with `lrsweep resume digits",
        ),
        (
            "RUNNING",
            "Incomplete: this sweep is still running (or its driver died and left its run "
            "RUNNING) and no trial started yet. If nothing runs it any more, `lrsweep resume "
            "digits",
        ),
        ("FAILED", "Failed: this sweep's run is FAILED (no trial got as far as its run)"),
    ],
)
def test_a_sweep_without_a_trial_run_says_so_instead_of_an_empty_table(
    tracking_uri: str, status: str, note: str
) -> None:
    """A sweep stopped before any trial started, asked for by --run-id: the report was a table
    title over no row (and a note counting "the 0 trial runs that finished")."""
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("report-test")
    _write_sweep(tracker, experiment_id)  # the sweep before, with trials
    empty = tracker.start_run(
        experiment_id,
        run_name="stopped",
        tags={"sweeps.kind": "sweep", "sweeps.spec_name": "digits"},
    )
    if status != "RUNNING":
        tracker.end_run(empty, status)
    said = f"Sweep run {empty} of experiment 'report-test' has no trial run, so there is nothing"

    report = build_report("report-test", empty, tracker=tracker)

    assert report.status_note.startswith(note) and "0 trial runs" not in report.status_note
    assert report.figures == {}
    markdown, page = report.to_markdown(), report.to_html()
    assert said in markdown and "## Strategies" not in markdown and "|" not in markdown
    assert html.escape(said) in page and "<table>" not in page
    assert report.results_csv().splitlines()[0].startswith("group,")  # a CSV of no row
    result = _report_cli(tracking_uri, "--run-id", empty)
    assert result.exit_code == 0, result.output
    printed = " ".join(result.stdout.split())
    assert report.status_note in printed and said in printed
    assert "LR finder vs search" not in printed and "0 trials" not in printed
    assert (
        f"The experiment has 1 other sweep run(s): `lrsweep sweeps report-test --tracking-uri "
        f"{tracking_uri}` lists them" in printed
    )
    shown = json.loads(_report_cli(tracking_uri, "--run-id", empty, "--format", "json").stdout)
    assert (shown["groups"], shown["trials"], shown["trials_by_status"]) == ([], [], {})
    assert (shown["parent_run_id"], shown["status"], shown["note"]) == (
        empty,
        status,
        report.status_note,
    )


def test_the_note_is_printed_on_one_line_so_its_command_copies_whole(
    empty_workdir: Path, tracking_uri: str
) -> None:
    """rich broke the note at the console's width, inside the command too (between
    `--storage-path` and its folder, or inside a quoted folder with a space): copied from the
    terminal, the shell ran half of it."""
    logged_sweep(
        Tracker(tracking_uri), "report-test", _DIGITS | {"sweeps.storage_path": "/data/ray results"}
    )
    note = build_report("report-test", tracking_uri=tracking_uri).status_note
    assert len(note) > 200  # wider than the console of a pipe, where lrsweep prints 200 wide

    printed = _report_cli(tracking_uri).stdout.splitlines()

    assert note in printed
