"""The nightly benchmark: figures, baselines, thresholds, the report, the CLI and the schedules.

The integration test runs a tiny suite (digits at 8 px, 2 epochs, 1 seed, an LR finder against
one random-search LR) three times against one MLflow store, with a failed night in between.
"""

from __future__ import annotations

import configparser
import json
import math
import shlex
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.cli._nightly import _print_night
from sweeps.nightly import (
    Figure,
    Night,
    NightResult,
    NightStore,
    Status,
    _conclude,
    comparable_figures,
    compare_figures,
    entry_figures,
    environment_tags,
    judge,
    run_nightly,
    spec_fingerprint,
)
from sweeps.nightly import _run as nightly_run
from sweeps.report import TrialRow
from sweeps.spec import SpecError, Thresholds, load_suite
from sweeps.tracking import Tracker

ROOT = Path(__file__).resolve().parents[2]
TINY_SPEC = {
    "name": "tiny-digits",
    "task": {
        "dataset": {"name": "digits"},
        "model": {"arch": "simple_cnn"},
        "image_size": 8,
        "batch_size": 64,
        "epochs": 2,
    },
    "seeds": [0],
    "strategies": [
        {"kind": "lr_finder", "suggest": ["valley"], "num_it": 20},
        {"kind": "random", "lr": {"min": 3.0e-3, "max": 5.0e-3}, "trials": 1},
    ],
    "failure": {"max_failures": 0},
    "tracking": {"checkpoints": "none"},
}
# Compute and wall time on a loaded 2-core machine are noisy: generous relative thresholds.
TINY_THRESHOLDS = {
    "error_rate_points": 20,
    "regret_points": 20,
    "wall_time_pct": 500,
    "compute_pct": 500,
    "stopped_early_delta": 1,
}
HARMFUL_LR = "digits.strategies.1.lr={min: 300.0, max: 1000.0}"


def _suite_file(tmp_path: Path, entries: list[dict] | None = None) -> Path:
    path = tmp_path / "suite.yaml"
    suite = {
        "name": "tiny",
        "thresholds": TINY_THRESHOLDS,
        "entries": entries or [{"name": "digits", "spec": TINY_SPEC}],
    }
    path.write_text(json.dumps(suite, indent=1))  # JSON is YAML, and never aliases
    return path


def _nightly(*args: str):
    return CliRunner().invoke(app, ["nightly", *args])


# --- comparison with the baseline (pure) ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "baseline", "tonight", "status"),
    [
        ("error_rate_pct", 10.0, 12.0, Status.OK),  # +2 points: at the limit passes
        ("error_rate_pct", 10.0, 12.5, Status.REGRESSED),
        ("error_rate_pct", 10.0, 2.0, Status.IMPROVED),  # better never regresses
        ("error_rate_pct", 10.0, 8.0, Status.OK),  # as far below as the limit is above: ok
        ("wall_time_s", 100.0, 74.0, Status.IMPROVED),  # -26%: past the 25% of the limit
        ("wall_time_s", 100.0, 76.0, Status.OK),
        ("regret_pp", 1.0, 3.5, Status.REGRESSED),
        ("wall_time_s", 100.0, 125.0, Status.OK),  # +25%
        ("wall_time_s", 100.0, 126.0, Status.REGRESSED),
        ("compute_s", 40.0, 51.0, Status.REGRESSED),
        ("compute_s", 0.0, 5.0, Status.OK),  # a baseline of 0: the limit is min_seconds
        ("compute_s", 0.0, 5.5, Status.REGRESSED),
        ("compute_s", 3.1, 5.8, Status.OK),  # +87%, but 2.7 s: start-up noise (seen)
        ("compute_s", 3.1, 8.2, Status.REGRESSED),  # past both +25% and +5 s
        ("wall_time_s", 10.0, 14.0, Status.OK),
        ("stopped_early", 1.0, 3.0, Status.OK),
        ("stopped_early", 1.0, 4.0, Status.REGRESSED),
    ],
)
def test_a_figure_regresses_only_past_its_threshold(
    name: str, baseline: float, tonight: float, status: Status
) -> None:
    strategy = None if name in ("wall_time_s", "stopped_early") else "grid"
    figure = Figure("digits", name, strategy, tonight)
    (comparison,) = compare_figures([figure], [{figure.key: baseline}], Thresholds())
    assert comparison.status is status
    assert comparison.baseline == baseline and comparison.value == tonight


def test_without_a_seconds_floor_time_figures_are_judged_by_percentage_alone() -> None:
    thresholds = Thresholds(min_seconds=0)
    figures = [Figure("digits", "compute_s", "grid", 5.8), Figure("digits", "compute_s", "x", 5)]
    short, zero = compare_figures(figures, [{figures[0].key: 3.1, figures[1].key: 0.0}], thresholds)
    assert short.status is Status.REGRESSED and short.allowed == "+25%"
    assert zero.status is Status.OK and zero.limit is None  # no relative limit on 0
    assert "no relative limit on a baseline of 0" in zero.describe()
    (floored,) = compare_figures(figures[:1], [{figures[0].key: 3.1}], Thresholds())
    assert floored.allowed == "+25%, at least +5 s" and floored.limit == pytest.approx(8.1)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_figure_that_is_not_a_number_tonight_regresses(value: float) -> None:
    figure = Figure("digits", "compute_s", "grid", value)
    verdict = judge([figure], [{figure.key: 10.0}], Thresholds())
    assert verdict.status == "regressed" and verdict.exit_code == 1
    assert (
        "not a finite number (baseline 10, median of 1 night)" in verdict.regressions[0].describe()
    )


def test_the_baseline_is_the_median_of_the_nights_that_have_the_figure() -> None:
    key = "digits/error_rate_pct/grid"
    nights = [{key: 10.0}, {key: 30.0}, {key: 11.0}, {key: math.nan}, {}]
    (comparison,) = compare_figures([Figure.from_key(key, 12.0)], nights, Thresholds())
    assert comparison.baseline == 11.0 and comparison.n_nights == 3
    assert comparison.limit == pytest.approx(13.0)


def test_first_night_passes_with_no_baseline_and_says_so() -> None:
    verdict = judge([Figure("digits", "error_rate_pct", "grid", 90.0)], [], Thresholds())
    assert verdict.status == "passed" and verdict.exit_code == 0
    assert verdict.comparisons[0].status is Status.NO_BASELINE
    assert "no baseline" in verdict.summary()


def test_a_first_what_if_night_does_not_claim_to_start_the_baseline() -> None:
    figures = [Figure("digits", "error_rate_pct", "grid", 90.0)]
    verdict = judge(figures, [], Thresholds(), counts=False)
    assert verdict.status == "passed" and verdict.exit_code == 0
    assert verdict.summary() == "PASSED: no baseline yet; a what-if night never starts one."
    assert "starts the baseline" in judge(figures, [], Thresholds()).summary()


def test_a_pass_counts_the_figures_it_could_not_judge() -> None:
    nights = [{"digits/error_rate_pct/grid": 10.0, "gone/error_rate_pct/grid": 10.0}]
    figures = [Figure("digits", "error_rate_pct", g, 10.0) for g in ("grid", "new", "newer")]
    assert judge(figures, nights, Thresholds()).summary() == (
        "PASSED: every figure within its threshold of the baseline (median of 1 night); "
        "2 figures without a baseline; 1 figure missing tonight."
    )


def test_a_pass_counts_its_improvements_and_names_them() -> None:
    nights = [{"digits/error_rate_pct/grid": 10.0, "digits/error_rate_pct/optuna": 10.0}]
    figures = [Figure("digits", "error_rate_pct", "grid", 5.0)]
    figures.append(Figure("digits", "error_rate_pct", "optuna", 9.0))
    verdict = judge(figures, nights, Thresholds())
    assert verdict.status == "passed" and [c.label for c in verdict.improvements] == [
        "error_rate_pct[grid]"
    ]
    assert verdict.summary() == (
        "PASSED: every figure within its threshold of the baseline (median of 1 night); "
        "1 figure improved beyond the threshold."
    )
    assert (
        verdict.improvements[0]
        .describe()
        .startswith("digits: error_rate_pct[grid] improved to 5 against 10")
    )


def test_a_night_that_compared_nothing_does_not_claim_every_figure_within_threshold() -> None:
    """An entry renamed (its history follows its name): every earlier figure is missing and
    every one of tonight's has no baseline, so nothing was compared."""
    nights = [{"folder/error_rate_pct/grid": 10.0, "folder/wall_time_s": 20.0}] * 4
    figures = [Figure("folder2", "error_rate_pct", "grid", 10.0)]
    figures.append(Figure("folder2", "wall_time_s", None, 20.0))
    verdict = judge(figures, nights, Thresholds())
    assert verdict.status == "passed" and verdict.n_baseline_nights == 0
    assert verdict.summary() == (
        "PASSED: nothing compared, no baseline yet (no earlier completed night ran these "
        "specs); tonight starts the baseline; 2 figures without a baseline; 2 figures missing "
        "tonight."
    )


def test_failures_win_over_regressions_and_a_gone_entry_is_listed_not_failed() -> None:
    nights = [{"digits/error_rate_pct/grid": 1.0, "gone/error_rate_pct/optuna": 1.0}]
    figures = [Figure("digits", "error_rate_pct", "grid", 50.0)]
    verdict = judge(figures, nights, Thresholds())
    assert verdict.status == "regressed" and verdict.exit_code == 1
    assert [c.status for c in verdict.comparisons] == [Status.REGRESSED, Status.MISSING]
    message = verdict.regressions[0].describe()
    assert message.startswith("digits: error_rate_pct[grid] regressed to 50")
    assert "against 1 (median of 1 night)" in message
    failed = judge(figures, nights, Thresholds(), ["digits: the sweep raised OSError: gone"])
    assert failed.status == "failed" and failed.exit_code == 3
    assert "OSError: gone" in failed.summary()


@pytest.mark.parametrize(
    ("specs", "kept"),
    [
        ({"digits": "a", "gone": "g"}, {"digits/wall_time_s", "gone/wall_time_s"}),
        ({"digits": "b", "gone": "g"}, {"gone/wall_time_s"}),  # digits' spec changed since
        ({"gone": "g"}, {"gone/wall_time_s"}),  # recorded before fingerprints: unknown spec
    ],
)
def test_an_earlier_night_counts_for_an_entry_only_with_tonights_spec_of_it(
    specs: dict[str, str], kept: set[str]
) -> None:
    figures = {"digits/wall_time_s": 10.0, "gone/wall_time_s": 5.0}
    assert set(comparable_figures(figures, specs, {"digits": "a"})) == kept


def _judged_night(
    tracking_uri: str,
    suite_entries: list[dict],
    values: dict[str, float],
    report_dir: Path,
    overrides: tuple[str, ...] = (),
) -> NightResult:
    """A night judged against a real store as ``run_nightly`` judges it, its sweeps' figures
    given instead of run (``run_nightly`` less ``_run_entries``)."""
    suite = load_suite(
        {"name": "tiny", "thresholds": TINY_THRESHOLDS, "entries": suite_entries},
        overrides=overrides,
    )
    store = NightStore(Tracker(tracking_uri), suite.name)
    tonight = nightly_run._open_night(suite, store)
    figures = [Figure.from_key(key, value) for key, value in values.items()]
    return nightly_run._conclude(suite, store, replace(tonight, figures=figures), 7, report_dir)


def test_an_entry_whose_spec_changed_starts_its_baseline_afresh(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, other = "digits/error_rate_pct/grid", "more/error_rate_pct/grid"
    entries = [{"name": "digits", "spec": TINY_SPEC}, {"name": "more", "spec": TINY_SPEC}]
    first = _judged_night(tracking_uri, entries, {key: 10.0, other: 10.0}, tmp_path / "1")
    same = _judged_night(tracking_uri, entries, {key: 11.0, other: 10.0}, tmp_path / "2")
    assert [c.status for c in same.verdict.comparisons] == [Status.OK, Status.OK]
    assert same.baseline_run_ids == (first.night_run_id,)

    reseeded = [{"name": "digits", "spec": {**TINY_SPEC, "seeds": [1]}}, entries[1]]
    night = _judged_night(tracking_uri, reseeded, {key: 40.0, other: 40.0}, tmp_path / "3")
    digits, more = night.verdict.comparisons
    assert digits.status is Status.NO_BASELINE and digits.n_nights == 0
    assert more.status is Status.REGRESSED and more.n_nights == 2  # its spec is unchanged
    assert night.exit_code == 1
    markdown = (tmp_path / "3" / "nightly-report.md").read_text()
    assert "digits: 2 of the 2 baseline nights ran another spec of it" in markdown
    _print_night(night)  # what `lrsweep nightly` prints
    printed = capsys.readouterr().out
    assert "note: digits: 2 of the 2 baseline nights ran another spec of it" in printed
    assert "note: more" not in printed

    renamed = [{"name": "digits", "spec": {**TINY_SPEC, "name": "renamed"}}, entries[1]]
    night = _judged_night(tracking_uri, renamed, {key: 11.0}, tmp_path / "4")
    assert night.verdict.comparisons[0].baseline == 10.5  # a new name changes no figure

    # an entry added: no baseline night ran it, which is not "another spec of it"; an entry
    # gone (here renamed away) is named, its figures missing
    added = [entries[0], {"name": "added", "spec": TINY_SPEC}]
    night = _judged_night(
        tracking_uri, added, {key: 11.0, "added/wall_time_s": 1.0}, tmp_path / "5"
    )
    assert "added: new in the suite, no baseline night ran it" in "\n".join(night.notes)
    assert not any(note.startswith("added:") and "another spec" in note for note in night.notes)
    assert "Baseline nights ran more, which tonight's suite no longer has" in "\n".join(night.notes)


@pytest.mark.parametrize("load", [0.2, 3.0])
def test_a_time_regression_on_a_busy_machine_is_flagged_as_maybe_noise(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load: float
) -> None:
    """A helper's night on a machine another job was loading flagged wall_time_s at 29.9 s
    against 21.3 s, every compute_s unchanged: the note tells the two apart."""
    import os

    entries = [{"name": "digits", "spec": TINY_SPEC}]
    key = "digits/wall_time_s"
    _judged_night(tracking_uri, entries, {key: 10.0}, tmp_path / "1")
    monkeypatch.setattr(os, "getloadavg", lambda: (load * (os.cpu_count() or 1), 0.0, 0.0))
    night = _judged_night(tracking_uri, entries, {key: 100.0}, tmp_path / "2")
    assert night.exit_code == 1
    busy = [note for note in night.notes if "already busy" in note]
    assert len(busy) == (1 if load > 0.5 else 0), night.notes
    if busy:
        assert "(wall_time_s) may have been slowed" in busy[0]
        assert "already busy" in (tmp_path / "2" / "nightly-report.md").read_text()


def test_the_terminal_says_a_night_is_a_what_if(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report said so, the terminal (a CI log) did not: a REGRESSED there read as real."""
    entries = [{"name": "digits", "spec": TINY_SPEC}]
    key = "digits/error_rate_pct/grid"
    _judged_night(tracking_uri, entries, {key: 10.0}, tmp_path / "1")
    night = _judged_night(
        tracking_uri, entries, {key: 40.0}, tmp_path / "2", overrides=("digits.task.epochs=1",)
    )
    assert night.exit_code == 1 and night.what_if
    _print_night(night)
    printed = capsys.readouterr().out
    assert "What-if night (never part of a baseline) run with --set digits.task.epochs=1" in (
        printed
    )


def test_the_fingerprint_follows_what_a_local_data_folder_and_weights_file_hold(
    tmp_path: Path,
) -> None:
    """New images or new weights under the same paths start the entry's baseline afresh."""
    from sweeps.spec import load_spec

    folder, weights = tmp_path / "images", tmp_path / "w.pt"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        (folder / name / "0.png").write_bytes(b"x" * 10)
    weights.write_bytes(b"one")
    task = {**TINY_SPEC["task"], "dataset": {"name": "image_folder", "path": str(folder)}}
    task["model"] = {"arch": "simple_cnn", "pretrained": str(weights)}
    spec = load_spec({**TINY_SPEC, "task": task})
    first = spec_fingerprint(spec)
    (folder / "a" / "0.png").write_bytes(b"y" * 10)  # the same size, touched: the same data
    assert spec_fingerprint(spec) == first
    (folder / "b" / "1.png").write_bytes(b"x" * 10)
    added = spec_fingerprint(spec)
    assert added != first
    weights.write_bytes(b"two")
    assert spec_fingerprint(spec) not in (first, added)


def test_a_spec_keeps_its_fingerprint_when_a_new_option_is_left_at_its_default() -> None:
    """``task.accelerator.fused_step`` (2026-12-05), ``task.progressive_resizing`` and
    ``task.tta`` (2026-12-07) left unset keep the baselines of nights recorded before they
    existed; set, it is another spec."""
    from sweeps.spec import load_spec

    before = "4a54f8d9df0fd6a58190274c7898a2f749cecc74546d2f156626832e9a6d486a"  # before the key
    assert spec_fingerprint(load_spec(TINY_SPEC)) == before, (
        "a default changed the fingerprint: every night's baseline would start afresh"
    )
    task = {**TINY_SPEC["task"], "accelerator": {"fused_step": False}}
    assert spec_fingerprint(load_spec({**TINY_SPEC, "task": task})) != before
    staged = TINY_SPEC["task"].get("epochs", 8) - 1
    for later in ({"progressive_resizing": [{"size": 4, "epochs": staged}]}, {"tta": {"n": 2}}):
        task = {**TINY_SPEC["task"], "augment": "light", **later}
        with_augment = {**TINY_SPEC["task"], "augment": "light"}
        assert spec_fingerprint(load_spec({**TINY_SPEC, "task": task})) != spec_fingerprint(
            load_spec({**TINY_SPEC, "task": with_augment})
        )


def test_the_trend_draws_an_entry_only_from_nights_of_the_spec_it_is_judged_against() -> None:
    """A line across a change of seeds would draw the change as a trend."""
    older = Night("r1", "2026-11-01", 1, "passed", {"a/wall_time_s": 9.0, "b/wall_time_s": 5.0},
                  {"a": "x", "b": "y"})  # fmt: skip
    newer = Night("r2", "2026-11-02", 2, "passed", {"a/wall_time_s": 8.0, "b/wall_time_s": 6.0},
                  {"a": "x", "b": "z"})  # fmt: skip
    tonight = [Figure("a", "wall_time_s", None, 7.0), Figure("b", "wall_time_s", None, 60.0)]
    trend = _conclude._trend([newer, older], tonight, {"a": "x", "b": "z"})
    assert [label for label, _ in trend][-1] == "tonight"
    assert [figures for _, figures in trend] == [
        {"a/wall_time_s": 9.0},  # b ran spec y that night
        {"a/wall_time_s": 8.0, "b/wall_time_s": 6.0},
        {"a/wall_time_s": 7.0, "b/wall_time_s": 60.0},
    ]


def test_a_what_if_night_is_judged_against_the_suite_as_written(
    tracking_uri: str, tmp_path: Path
) -> None:
    """``--set`` changes the spec on purpose: its fingerprint must not drop the baseline."""
    key = "digits/error_rate_pct/random"
    entries = [{"name": "digits", "spec": TINY_SPEC}]
    first = _judged_night(tracking_uri, entries, {key: 10.0}, tmp_path / "1")
    what_if = _judged_night(tracking_uri, entries, {key: 90.0}, tmp_path / "2", (HARMFUL_LR,))
    assert what_if.baseline_run_ids == (first.night_run_id,)
    assert what_if.verdict.comparisons[0].status is Status.REGRESSED and what_if.exit_code == 1
    assert "another spec" not in (tmp_path / "2" / "nightly-report.md").read_text()
    stored = _judged_night(tracking_uri, entries, {key: 10.0}, tmp_path / "3", ("*.storage={}",))
    assert stored.baseline_run_ids == (first.night_run_id,)  # not a what-if, same fingerprint


def test_a_what_if_after_the_suite_was_edited_is_judged_against_the_edited_suite(
    tracking_uri: str, tmp_path: Path
) -> None:
    """The suite as written is tonight's file, not the spec the latest nights ran: a what-if of
    the edited suite (6 epochs now) was judged against nights of the old one (2 epochs)."""
    key = "digits/error_rate_pct/random"
    old = [{"name": "digits", "spec": TINY_SPEC}]
    edited = [{"name": "digits", "spec": {**TINY_SPEC, "task": {**TINY_SPEC["task"], "epochs": 6}}}]
    _judged_night(tracking_uri, old, {key: 10.0}, tmp_path / "1")
    what_if = _judged_night(
        tracking_uri, edited, {key: 90.0}, tmp_path / "2", ("digits.seeds=[1]",)
    )
    assert what_if.baseline_run_ids == ()
    assert what_if.verdict.comparisons[0].status is Status.NO_BASELINE and what_if.exit_code == 0
    written = _judged_night(tracking_uri, edited, {key: 30.0}, tmp_path / "3")
    what_if = _judged_night(
        tracking_uri, edited, {key: 90.0}, tmp_path / "4", ("digits.seeds=[1]",)
    )
    assert what_if.baseline_run_ids == (written.night_run_id,)
    assert what_if.verdict.comparisons[0].status is Status.REGRESSED


def test_a_night_whose_every_entry_changed_spec_says_it_has_no_baseline(
    tracking_uri: str, tmp_path: Path
) -> None:
    key = "digits/error_rate_pct/grid"
    _judged_night(tracking_uri, [{"name": "digits", "spec": TINY_SPEC}], {key: 10.0}, tmp_path)
    longer = {**TINY_SPEC, "task": {**TINY_SPEC["task"], "epochs": 3}}
    night = _judged_night(tracking_uri, [{"name": "digits", "spec": longer}], {key: 9.0}, tmp_path)
    assert night.verdict.n_baseline_nights == 0 and night.baseline_run_ids == ()
    assert night.verdict.summary().startswith("PASSED: nothing compared, no baseline yet")
    assert "ran tonight's specs" in (tmp_path / "nightly-report.md").read_text()


def test_the_report_names_environment_changes_since_the_baseline_nights(
    tracking_uri: str, tmp_path: Path
) -> None:
    """Compute and wall time from another machine or torch are no like-for-like baseline."""
    key = "digits/compute_s/grid"
    entries = [{"name": "digits", "spec": TINY_SPEC}]
    store = NightStore(Tracker(tracking_uri), "tiny")
    spec = load_suite({"name": "tiny", "entries": entries}).entries[0].spec
    elsewhere = {**environment_tags(), "nightly.version.torch": "0.0.1"}
    elsewhere |= {"nightly.machine.node": "another-pod"}  # a pod's name changes every night
    earlier = store.start_night(elsewhere, eligible=True, specs={"digits": spec_fingerprint(spec)})
    store.log_figures(earlier, [Figure.from_key(key, 10.0)])
    store.finish_night(earlier, "passed")

    night = _judged_night(tracking_uri, entries, {key: 11.0}, tmp_path)
    assert night.baseline_run_ids == (earlier,)
    markdown = (tmp_path / "nightly-report.md").read_text()
    torch = environment_tags()["nightly.version.torch"]
    assert f"ran with another environment (version.torch 0.0.1 -> {torch}): compute_s" in markdown
    assert "another-pod" not in markdown.split("## Figures")[0]


def _row(group: str, kind: str, error: float, *, stop: str = "completed") -> TrialRow:
    arm, _, rule = group.partition(":")
    return TrialRow(
        run_id=f"run-{group}-{error}", group=group, kind=kind, arm=arm, rule=rule, seed=0,
        lr=1e-3, status="FINISHED", stop_reason=stop, best_epoch=1, diagnosis="",
        best_valid_loss=error if math.isfinite(error) else math.nan, best_error_rate=error,
        epochs_run=2, compute_s=3.0,
    )  # fmt: skip


def test_entry_figures_follow_the_sweep_report_and_count_a_lost_strategy_as_100() -> None:
    trials = [
        _row("grid", "grid", 0.10),
        _row("grid", "grid", 0.50, stop="rising_val_loss"),
        _row("lr_finder:valley", "lr_finder", 0.15),
        _row("lr_finder:steep", "lr_finder", math.nan, stop="diverged"),
    ]
    figures = {f.key: f.value for f in entry_figures("d", trials, wall_time_s=12.5)}
    assert figures["d/error_rate_pct/grid"] == pytest.approx(10.0)
    assert figures["d/error_rate_pct/lr_finder:steep"] == 100.0
    assert figures["d/regret_pp/lr_finder:valley"] == pytest.approx(5.0)
    assert figures["d/regret_pp/lr_finder:steep"] == pytest.approx(90.0)
    assert "d/regret_pp/grid" not in figures
    assert figures["d/compute_s/grid"] == 6.0
    assert figures["d/wall_time_s"] == 12.5 and figures["d/stopped_early"] == 2.0
    assert all(Figure.from_key(k, v).key == k for k, v in figures.items())


def test_figures_and_crashed_trials_are_read_from_mlflow_alone(tracking_uri: str) -> None:
    """A sweep logged elsewhere: only its MLflow runs are read (no Ray, no SweepResult)."""
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("nightly/tiny/digits")
    parent = tracker.start_run(experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    trials = [
        ("grid", "grid", "", "completed", {"best/valid_loss": 0.3, "best/error_rate": 0.08}),
        ("lr_finder", "lr_finder", "valley", "diverged",
         {"best/valid_loss": 0.5, "best/error_rate": 0.12}),
        ("grid", "grid", "", "failed", {}),
    ]  # fmt: skip
    for arm, kind, rule, stop, metrics in trials:
        tags = {"sweeps.strategy": kind, "sweeps.arm": arm, "sweeps.stop_reason": stop}
        tags |= {"sweeps.rule": rule} if rule else {}
        tags |= {"sweeps.error": "RuntimeError('worker died')"} if stop == "failed" else {}
        run = tracker.start_run(experiment_id, run_name=arm, tags=tags, parent_run_id=parent)
        tracker.log_params(run, {"seed": 0, "lr": 0.01})
        tracker.log_metrics(run, [(k, v, 0) for k, v in {**metrics, "compute_s": 2.0}.items()])
        tracker.end_run(run, "FAILED" if stop == "failed" else "FINISHED")
    tracker.end_run(parent)
    store = NightStore(tracker, "tiny")
    reading = store.read_sweep(store.latest_sweep_run("nightly/tiny/digits", since_ms=0))
    assert len(reading.failures) == 1 and "worker died" in reading.failures[0]
    figures = {f.key: f.value for f in entry_figures("digits", reading.trials, wall_time_s=1.0)}
    assert figures["digits/error_rate_pct/grid"] == pytest.approx(8.0)
    assert figures["digits/regret_pp/lr_finder:valley"] == pytest.approx(4.0)
    assert figures["digits/compute_s/grid"] == 4.0 and figures["digits/stopped_early"] == 1.0


def test_a_sweep_that_left_no_trial_in_mlflow_fails_the_night_rather_than_passing_empty(
    tracking_uri: str,
) -> None:
    """No trial runs means no figures: without this the entry would pass with nothing judged."""
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("nightly/tiny/digits")
    parent = tracker.start_run(experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    tracker.end_run(parent)
    reading = NightStore(tracker, "tiny").read_sweep(parent)
    assert reading.trials == [] and reading.failures == ["the sweep logged no trial to MLflow"]


def test_a_failed_trials_compute_counts_its_epochs_and_range_test_as_the_report_does(
    tracking_uri: str,
) -> None:
    """A trial that fails logs no compute_s: the night read 0 s for it, where lrsweep report
    counts the epochs MLflow holds and the range test."""
    from sweeps.report import build_report

    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("nightly/tiny/digits")
    parent = tracker.start_run(experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    child = tracker.start_run(
        experiment_id,
        run_name="finder",
        tags={"sweeps.strategy": "lr_finder", "sweeps.rule": "valley", "sweeps.seed": "0"},
        parent_run_id=parent,
    )
    tracker.log_metrics(child, [("epoch_time_s", 0.5, 0), ("epoch_time_s", 0.75, 1)])
    tracker.log_metrics(child, [("lr_find_s", 0.25, 0)])
    tracker.set_tags(child, {"sweeps.stop_reason": "failed", "sweeps.error": "OSError()"})
    tracker.end_run(child, "FAILED")
    tracker.end_run(parent)
    reading = NightStore(tracker, "tiny").read_sweep(parent)
    (row,) = reading.trials
    assert (row.compute_s, row.epochs_run) == (1.5, 2)
    assert len(reading.failures) == 1
    (reported,) = build_report("nightly/tiny/digits", tracker=tracker).trials
    assert reported.compute_s == row.compute_s


# --- suite input ------------------------------------------------------------------------------


def test_set_overrides_are_routed_to_their_entry_or_to_every_entry(tmp_path: Path) -> None:
    entries = [
        {"name": "digits", "spec": TINY_SPEC},
        {"name": "digits-2", "spec": {**TINY_SPEC, "name": "two"}},
    ]
    path = _suite_file(tmp_path, entries)
    suite = load_suite(
        path, overrides=["digits-2.task.epochs=3", "*.seeds=[1]", "digits.strategies.0.num_it=30"]
    )
    one, two = suite.entries
    assert (one.spec.task.epochs, two.spec.task.epochs) == (2, 3)
    assert one.spec.seeds == two.spec.seeds == [1]
    assert one.extra_overrides == ["seeds=[1]", "strategies.0.num_it=30"]


@pytest.mark.parametrize(
    ("overrides", "spec_change", "expected"),
    [
        (["nope.task.epochs=3"], {}, r"--set 'nope.task.epochs=3': no suite entry named 'nope'"),
        # the entry alone was "no suite entry named 'digits'", listing digits as an entry
        (["digits=3"], {}, r"--set 'digits=3': names the entry 'digits' but no field of a spec"),
        (["*=3"], {}, r"--set '\*=3': names every entry \(\*\) but no field .* \*\.task\.epochs=3"),
        (["digits.task.epochs=0"], {}, r"entries\.digits\.spec\.task\.epochs: must be at least 1"),
        ([], {"seeds": "zero"}, r"entries\.digits\.spec\.seeds: must be a list"),
        (["digits.task.epoks=3"], {}, r"--set 'digits\.task\.epoks=3': unknown key 'epoks'"),
    ],
)
def test_bad_suite_input_exits_2_naming_the_entry_and_field(
    tmp_path: Path, overrides: list[str], spec_change: dict, expected: str
) -> None:
    path = _suite_file(tmp_path, [{"name": "digits", "spec": {**TINY_SPEC, **spec_change}}])
    with pytest.raises(SpecError, match=expected):
        load_suite(path, overrides=overrides)
    sets = [arg for override in overrides for arg in ("--set", override)]
    result = _nightly(str(path), "--tracking-uri", f"sqlite:///{tmp_path}/x.db", *sets)
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "x.db").exists()  # nothing ran, nothing was recorded


@pytest.mark.parametrize("error", [RuntimeError("trend plot blew up"), KeyboardInterrupt()])
def test_a_night_that_crashes_outside_its_sweeps_exits_3_not_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    """Exit 1 means "regressed" to whoever schedules the night; a crash is a failed night."""

    def crash(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("sweeps.nightly._run._run_entries", crash)
    uri = f"sqlite:///{tmp_path}/m.db"
    result = _nightly(
        str(_suite_file(tmp_path)), "--tracking-uri", uri, "--report-dir", str(tmp_path / "r")
    )
    assert result.exit_code == 3, result.output
    assert "Error: the night" in result.stderr
    (night,) = _night_runs(uri)
    assert night.data.tags["nightly.status"] == "failed"


@pytest.mark.parametrize(
    "override",
    [
        "digits.storage.path=s3://bucket/ray?access_key=AKIAEXAMPLE&secret_key=TOPSECRET123",
        '*.storage={path: "s3://bucket/ray?secret_key=TOPSECRET123", shared: true}',
    ],
)
def test_a_secret_in_a_set_value_reaches_neither_the_night_run_nor_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: str
) -> None:
    """The overrides are tagged on the night run and listed in the report: as shown, never raw."""
    figures = [Figure("digits", "wall_time_s", None, 10.0)]
    monkeypatch.setattr(nightly_run, "_run_entries", lambda *args, **kwargs: (figures, []))
    uri = f"sqlite:///{tmp_path}/m.db"
    result = _nightly(
        str(_suite_file(tmp_path)), "--tracking-uri", uri, "--report-dir", str(tmp_path / "r"),
        "--set", override,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    tag = _night_runs(uri)[-1].data.tags["nightly.overrides"]
    assert "secret_key=***" in tag and "s3://bucket/ray?" in tag
    markdown = (tmp_path / "r" / "nightly-report.md").read_text()
    assert "secret_key=***" in markdown
    leaks = [f for f in tmp_path.rglob("*") if f.is_file() and b"TOPSECRET123" in f.read_bytes()]
    assert leaks == [] and "TOPSECRET123" not in result.output


def test_a_refused_set_value_is_shown_without_the_secret_of_a_url_inside_it(
    tmp_path: Path,
) -> None:
    """``redact`` masked a value that is one URL, not a URL inside a mapping or a list."""
    path = _suite_file(tmp_path)
    for value in (
        "{path: s3://b/r?secret_key=TOPSECRET123, x: 1}",
        "[s3://b/r?token=TOPSECRET123]",
    ):
        with pytest.raises(
            SpecError, match=r"--set 'digits\.storage=.*(secret_key|token)=\*\*\*"
        ) as error:
            load_suite(path, overrides=[f"digits.storage={value}"])
        assert "TOPSECRET123" not in str(error.value)


# --- schedules --------------------------------------------------------------------------------


def _command_args(command: str) -> list[str]:
    """``lrsweep nightly ...`` as arguments, the executable's folder dropped."""
    words = shlex.split(command)
    start = words.index("nightly") - 1
    return [Path(words[start]).name, *words[start + 1 :]]


def test_every_schedule_runs_the_packaged_suite_with_valid_arguments() -> None:
    cron = [
        line
        for line in (ROOT / "infra/cron/lrsweep-nightly.cron").read_text().splitlines()
        if line and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(cron) == 1 and cron[0].split()[:5] == ["30", "2", "*", "*", "*"]
    service = configparser.ConfigParser(interpolation=None, strict=False)
    service.read(ROOT / "infra/systemd/lrsweep-nightly.service")
    timer = configparser.ConfigParser(interpolation=None)
    timer.read(ROOT / "infra/systemd/lrsweep-nightly.timer")
    assert timer["Timer"]["Unit"] == "lrsweep-nightly.service" and timer["Timer"]["OnCalendar"]
    docs = list(yaml.safe_load_all((ROOT / "infra/k8s/nightly-cronjob.yaml").read_text()))
    cronjob = next(d for d in docs if d["kind"] == "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    rayjob = yaml.safe_load(configmap["data"]["rayjob.yaml"])
    assert rayjob["kind"] == "RayJob" and rayjob["spec"]["clusterSelector"]
    commands = [
        cron[0].split(">>")[0],
        service["Service"]["ExecStart"],
        rayjob["spec"]["entrypoint"].split("&&")[-1],
    ]
    for command in commands:
        args = _command_args(command)
        assert args[:3] == ["lrsweep", "nightly", "sweeps/specs/nightly.yaml"], command
        assert "--tracking-uri" in args
        sets = [args[i + 1] for i, word in enumerate(args) if word == "--set"]
        suite = load_suite(ROOT / "sweeps/specs/nightly.yaml", overrides=sets)
        assert len(suite.entries) == 2
    assert "--address" in _command_args(commands[2])


# --- three nights against one store -----------------------------------------------------------


def _night_runs(tracking_uri: str) -> list:
    tracker = Tracker(tracking_uri)
    runs = tracker.search_runs(tracker.experiment_id("nightly/tiny"))
    return sorted(runs, key=lambda r: r.info.start_time)


def _failed_night(tmp_path: Path, tracking_uri: str) -> None:
    """A night whose sweep raises at run time (the machine lacks the CPUs a trial asks for):
    recorded failed with its reason, exit code 3."""
    spec = {**TINY_SPEC, "name": "gone", "resources": {"cpu": 64}}
    (tmp_path / "broken").mkdir()
    suite = load_suite(_suite_file(tmp_path / "broken", [{"name": "gone", "spec": spec}]))
    night = run_nightly(suite, tracking_uri=tracking_uri, report_dir=tmp_path / "report-failed")
    assert night.verdict.status == "failed" and night.exit_code == 3
    assert night.verdict.failures[0].startswith("gone: the sweep raised PreflightError")
    tags = _night_runs(tracking_uri)[-1].data.tags
    assert tags["nightly.status"] == "failed" and tags["nightly.failure_reason"].startswith("gone")


@pytest.mark.slow
def test_nights_pass_then_an_injected_regression_exits_1(
    ray_cluster: None, tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # Ray's storage and the default report folder
    suite = str(_suite_file(tmp_path))
    common = ["--tracking-uri", tracking_uri, "--baseline-nights", "7"]

    first = _nightly(suite, *common, "--report-dir", "night1")
    assert first.exit_code == 0, first.output
    assert "no baseline" in first.output

    _failed_night(tmp_path, tracking_uri)

    second = _nightly(suite, *common, "--report-dir", "night2")
    assert second.exit_code == 0, second.output
    night1, failed, night2 = _night_runs(tracking_uri)
    assert failed.data.tags["nightly.status"] == "failed"
    assert night2.data.tags["nightly.baseline_runs"] == night1.info.run_id  # failed one left out
    assert night2.data.tags["nightly.git_commit"] and night2.data.tags["nightly.version.torch"]
    # the machine-speed reference, timed as each night started: logged, shown, and used
    reference = night2.data.metrics["reference_s"]
    assert night1.data.metrics["reference_s"] > 0 and reference > 0
    assert night2.data.tags["nightly.reference"].startswith("conv net fwd+bwd+AdamW, 64x1x16x16")
    # timed before and after the sweeps, the faster kept: the tag names the other one
    assert "; the faster of two, timed at the " in night2.data.tags["nightly.reference"]
    kept = night2.data.tags["nightly.reference"].split("; the faster of two, timed at the ")[1]
    other_s = float(kept.split(": ")[1].removesuffix(" s)"))
    assert other_s >= reference - 0.0005  # the tag rounds to the millisecond
    report2 = (tmp_path / "night2" / "nightly-report.md").read_text()
    assert f"Machine-speed reference: {reference:.4g} s (conv net" in report2
    assert f"judged relative to the machine-speed reference: {reference:.4g} s" in second.output
    sweep_run = night2.data.tags["nightly.sweep_run.digits"]
    assert Tracker(tracking_uri).get_run(sweep_run).data.tags["nightly.night_run_id"] == (
        night2.info.run_id
    )

    third = _nightly(suite, *common, "--report-dir", "night3", "--set", HARMFUL_LR)
    assert third.exit_code == 1, third.output
    night3 = _night_runs(tracking_uri)[-1]
    key = "digits/error_rate_pct/random"
    before = statistics.median([night1.data.metrics[key], night2.data.metrics[key]])
    tonight = night3.data.metrics[key]
    assert tonight > before + TINY_THRESHOLDS["error_rate_points"]
    line = next(x for x in third.output.splitlines() if "error_rate_pct[random]" in x)
    assert line.startswith("regression: digits: error_rate_pct[random]")
    assert f"{tonight:.4g}" in line and f"{before:.4g}" in line
    assert night3.data.tags["nightly.status"] == "regressed"
    assert night3.data.tags["nightly.baseline_eligible"] == "false"  # a what-if night

    page = (tmp_path / "night3" / "nightly-report.html").read_text()
    assert page.count('<img alt="digits: ') >= 5 and "data:image/png;base64," in page
    assert "error_rate_pct[random] regressed to" in page
    markdown = (tmp_path / "night3" / "nightly-report.md").read_text()
    assert "](trends/digits--error_rate_pct.png)" in markdown
    assert (tmp_path / "night3" / "trends" / "digits--error_rate_pct.png").stat().st_size > 1000
    logged = Tracker(tracking_uri).list_artifacts(night3.info.run_id)
    assert {"nightly-report.html", "nightly-report.md", "trends"} <= set(logged)
