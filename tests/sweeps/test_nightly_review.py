"""The nightly benchmark's regression guard: regressions it must not hide, and what a night that
cannot finish leaves behind (the report folder, the night run, the exit code).

Every store is a real MLflow SQLite store under the test's tmp dir; sweeps are not run: their
MLflow runs are written in the layout ``run_sweep`` leaves, or the night is judged from given
figures as ``run_nightly`` judges it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sweeps.cli import app
from sweeps.nightly import Figure, NightResult, NightStore, Status, entry_figures, judge
from sweeps.nightly import _run as nightly_run
from sweeps.spec import Thresholds, load_suite
from sweeps.tracking import Tracker

ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "name": "tiny-digits",
    "task": {
        "dataset": {"name": "digits"},
        "model": {"arch": "simple_cnn"},
        "image_size": 8,
        "epochs": 2,
    },
    "seeds": [0, 1],
    "strategies": [
        {"kind": "lr_finder", "suggest": ["valley"], "num_it": 20},
        {"kind": "random", "lr": {"min": 3.0e-3, "max": 5.0e-3}, "trials": 1},
    ],
    "tracking": {"checkpoints": "none"},
}
ENTRIES = [{"name": "digits", "spec": SPEC}]


def _suite_file(folder: Path) -> Path:
    path = folder / "suite.yaml"
    path.write_text(json.dumps({"name": "tiny", "entries": ENTRIES}))
    return path


def _run_nightly(folder: Path, tracking_uri: str, report_dir: Path) -> Result:
    """``lrsweep nightly`` on the tiny suite written in ``folder``."""
    args = [str(_suite_file(folder)), "--tracking-uri", tracking_uri, "--report-dir"]
    return CliRunner().invoke(app, ["nightly", *args, str(report_dir)])


def _night_runs(tracking_uri: str) -> list:
    tracker = Tracker(tracking_uri)
    runs = tracker.search_runs(tracker.experiment_id("nightly/tiny"))
    return sorted(runs, key=lambda r: r.info.start_time)


def _judged_night(tracking_uri: str, values: dict[str, float], report_dir: Path) -> NightResult:
    """A night judged against a real store as ``run_nightly`` judges it, its sweeps' figures
    given instead of run."""
    suite = load_suite({"name": "tiny", "entries": ENTRIES})
    store = NightStore(Tracker(tracking_uri), suite.name)
    tonight = nightly_run._open_night(suite, store)
    figures = [Figure.from_key(key, value) for key, value in values.items()]
    return nightly_run._conclude(suite, store, replace(tonight, figures=figures), 7, report_dir)


def _sweep_in_mlflow(tracker: Tracker, trials: list[tuple[str, int, float]]) -> str:
    """A finished sweep as ``run_sweep`` logs it: ``(rule, seed, best valid loss)`` per
    ``lr_finder`` trial (a NaN loss: it diverged in its first epoch, so has no best epoch)."""
    experiment_id = tracker.ensure_experiment("nightly/tiny/digits")
    parent = tracker.start_run(experiment_id, run_name="sweep", tags={"sweeps.kind": "sweep"})
    for rule, seed, loss in trials:
        diverged = math.isnan(loss)
        tags = {
            "sweeps.strategy": "lr_finder",
            "sweeps.arm": "lr_finder",
            "sweeps.rule": rule,
            "sweeps.stop_reason": "diverged" if diverged else "completed",
        }
        run = tracker.start_run(experiment_id, run_name=f"{rule}-{seed}", tags=tags,
                                parent_run_id=parent)  # fmt: skip
        tracker.log_params(run, {"seed": seed, "lr": 0.01})
        metrics = {"compute_s": 2.0}
        if not diverged:
            metrics |= {"best/valid_loss": loss, "best/error_rate": loss / 10}
        tracker.log_metrics(run, [(k, v, 0) for k, v in metrics.items()])
        tracker.end_run(run, "FINISHED")
    tracker.end_run(parent)
    return parent


def test_a_seed_whose_every_trial_diverged_is_not_left_out_of_the_error_rate(
    tracking_uri: str,
) -> None:
    """The finder's pick diverging on one seed of two must not leave the figure unchanged (the
    other seed alone, as if nothing happened): a seed without a result counts as 100%."""
    tracker = Tracker(tracking_uri)
    store = NightStore(tracker, "tiny")
    healthy = _sweep_in_mlflow(tracker, [("valley", 0, 0.2), ("valley", 1, 0.2)])
    broken = _sweep_in_mlflow(tracker, [("valley", 0, 0.2), ("valley", 1, math.nan)])
    key = "digits/error_rate_pct/lr_finder:valley"

    def figures(sweep: str) -> dict[str, float]:
        reading = store.read_sweep(sweep)
        assert reading.failures == []  # a diverged trial is no failed trial
        found = entry_figures("digits", reading.trials, wall_time_s=1.0)
        return {f.key: f.value for f in found}

    assert figures(healthy)[key] == pytest.approx(2.0)
    assert figures(broken)[key] == pytest.approx((2.0 + 100.0) / 2)


def test_a_figure_gone_from_an_entry_that_ran_the_same_spec_regresses(
    tracking_uri: str, tmp_path: Path
) -> None:
    """Same spec, same strategies: a figure that vanishes is a broken measurement (its trials
    never reached MLflow, its sweep has no end time), not a suite change, and must not pass."""
    grid, finder = "digits/error_rate_pct/random", "digits/error_rate_pct/lr_finder:valley"
    _judged_night(tracking_uri, {grid: 10.0, finder: 12.0}, tmp_path / "1")
    night = _judged_night(tracking_uri, {grid: 10.0}, tmp_path / "2")
    gone = next(c for c in night.verdict.comparisons if c.strategy == "lr_finder:valley")
    assert gone.status is Status.REGRESSED and gone.value is None
    assert night.exit_code == 1 and night.verdict.status == "regressed"
    assert "digits: error_rate_pct[lr_finder:valley] regressed: it is missing tonight" in (
        gone.describe()
    )
    assert "missing tonight" in (tmp_path / "2" / "nightly-report.md").read_text()


def test_a_what_if_that_drops_a_strategy_lists_its_figures_as_missing_not_regressed() -> None:
    """A what-if entry is judged against the suite as written: its spec differs on purpose."""
    nights = [{"digits/error_rate_pct/random": 10.0, "digits/error_rate_pct/optuna": 10.0}]
    figures = [Figure("digits", "error_rate_pct", "random", 10.0)]
    what_if = judge(figures, nights, Thresholds(), same_spec=set())
    assert [c.status for c in what_if.comparisons] == [Status.OK, Status.MISSING]
    assert what_if.exit_code == 0
    assert judge(figures, nights, Thresholds()).exit_code == 1  # the same spec lost a figure


@pytest.mark.parametrize("blocked", ["a-file", "a-file/under-it"])
def test_a_report_dir_that_cannot_be_written_exits_2_before_any_sweep_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blocked: str
) -> None:
    """Found after hours of sweeps, a bad --report-dir would lose the night: check it first."""
    (tmp_path / "a-file").write_text("not a folder")
    ran: list[bool] = []
    monkeypatch.setattr(nightly_run, "_run_entries", lambda *a, **k: ran.append(True))
    uri = f"sqlite:///{tmp_path}/m.db"
    result = _run_nightly(tmp_path, uri, tmp_path / blocked)
    assert result.exit_code == 2, result.output
    assert "--report-dir" in result.stderr and str(tmp_path / blocked) in result.stderr
    assert ran == []


def test_a_night_that_crashes_leaves_a_failed_report_not_the_last_nights_passed_one(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CI job publishes --report-dir whatever the exit code: yesterday's PASSED report (and
    its trend plots) must not be what it publishes for a night that crashed."""
    report_dir = tmp_path / "report"
    _judged_night(tracking_uri, {"digits/wall_time_s": 10.0}, report_dir)
    assert "PASSED" in (report_dir / "nightly-report.md").read_text()
    assert (report_dir / "trends" / "digits--wall_time_s.png").exists()

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the data volume went away")

    monkeypatch.setattr(nightly_run, "_run_entries", crash)
    result = _run_nightly(tmp_path, tracking_uri, report_dir)
    assert result.exit_code == 3, result.output
    for name in ("nightly-report.md", "nightly-report.html"):
        text = (report_dir / name).read_text()
        assert "PASSED" not in text and "FAILED" in text, name
        assert "the data volume went away" in text
    assert not (report_dir / "trends" / "digits--wall_time_s.png").exists()
    crashed = _night_runs(tracking_uri)[-1]
    assert crashed.data.tags["nightly.status"] == "failed"
    assert crashed.info.run_id in (report_dir / "nightly-report.md").read_text()


_SIGTERM_SCRIPT = """
import os, signal, sys, time
from sweeps.nightly import _run

def sigterm_between_sweeps(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # e.g. systemd stopping the unit
    time.sleep(30)
    raise SystemExit(99)  # the signal did not reach the night

_run._run_entries = sigterm_between_sweeps
from sweeps.cli import app
app(["nightly", sys.argv[1], "--tracking-uri", sys.argv[2], "--report-dir", sys.argv[3]])
"""


def test_sigterm_outside_a_sweep_records_a_failed_night_and_exits_3(tmp_path: Path) -> None:
    """SIGTERM between sweeps (or while the report is drawn) must end the night as SIGTERM
    during a sweep does: recorded failed (never left RUNNING), exit 3."""
    uri = f"sqlite:///{tmp_path}/m.db"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SIGTERM_SCRIPT), str(_suite_file(tmp_path)), uri,
         str(tmp_path / "report")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    (night,) = _night_runs(uri)
    assert night.info.status == "KILLED"
    assert night.data.tags["nightly.status"] == "failed"
    assert "interrupted (SIGTERM)" in night.data.tags["nightly.failure_reason"]


_SIGTERM_AFTER_RAY_SCRIPT = """
import os, signal, sys, time
from types import SimpleNamespace
import sweeps.run
from sweeps import _ray

calls = []

def run_sweep(*args, **kwargs):  # the first entry starts and stops a real Ray, as a sweep does
    calls.append(1)
    if len(calls) == 1:
        _ray.init_ray(num_cpus=1)
        _ray.shutdown_ray()
        return SimpleNamespace(parent_run_id=None, interrupted=False, trials={})
    os.kill(os.getpid(), signal.SIGTERM)  # the second: SIGTERM before its sweep starts
    time.sleep(30)
    raise SystemExit(99)

sweeps.run.run_sweep = run_sweep
from sweeps.cli import app
app(["nightly", sys.argv[1], "--tracking-uri", sys.argv[2], "--report-dir", sys.argv[3]])
"""


@pytest.mark.slow
def test_sigterm_after_a_sweep_started_ray_still_records_a_failed_night_and_exits_3(
    tmp_path: Path,
) -> None:
    """``ray.init`` installs its own SIGTERM handler (``sys.exit(15)``) and leaves it there after
    ``ray.shutdown``: a SIGTERM between two entries must still end the night as failed, exit 3."""
    suite = tmp_path / "suite.yaml"
    two = [{"name": "first", "spec": SPEC}, {"name": "second", "spec": SPEC}]
    suite.write_text(json.dumps({"name": "tiny", "entries": two}))
    uri = f"sqlite:///{tmp_path}/m.db"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SIGTERM_AFTER_RAY_SCRIPT), str(suite), uri,
         str(tmp_path / "report")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-3000:]
    (night,) = _night_runs(uri)
    assert night.info.status == "KILLED"
    assert night.data.tags["nightly.status"] == "failed"
    assert "interrupted (SIGTERM)" in night.data.tags["nightly.failure_reason"]


def test_ray_ending_the_driver_during_a_sweep_records_a_failed_night_and_exits_3(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while ``ray.init`` starts a sweep's Ray meets Ray's handler, ``sys.exit(15)``:
    the night must still be recorded as failed (not left RUNNING) and exit 3."""

    def ray_sigterm_handler(*args: object, **kwargs: object) -> None:
        raise SystemExit(15)

    monkeypatch.setattr("sweeps.run.run_sweep", ray_sigterm_handler)
    result = _run_nightly(tmp_path, tracking_uri, tmp_path / "report")
    assert result.exit_code == 3, result.output
    (night,) = _night_runs(tracking_uri)
    assert night.info.status == "KILLED" and night.data.tags["nightly.status"] == "failed"
    assert "interrupted (SIGTERM)" in night.data.tags["nightly.failure_reason"]


def test_cron_names_a_night_skipped_by_its_lock_apart_from_a_regression(tmp_path: Path) -> None:
    # flock's own conflict status is 1, which the line's mail called "1 regressed": a night still
    # running at 02:30 the next day was reported as a regression of the night skipped.
    import fcntl

    cron = ROOT / "infra/cron/lrsweep-nightly.cron"
    (line,) = [
        text
        for text in cron.read_text().splitlines()
        if text and not text.startswith("#") and "=" not in text.split()[0]
    ]
    command = line.split(maxsplit=5)[5]
    lock, checkout = tmp_path / "nightly.lock", tmp_path / "checkout"
    checkout.mkdir()
    for real, here in (
        ("/opt/lrsweep", str(checkout)),
        ("/tmp/lrsweep-nightly.lock", str(lock)),
        ("/var/log/lrsweep", str(tmp_path)),
    ):
        assert real in command
        command = command.replace(real, here)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the previous night, still running
        done = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=30, check=False
        )
    exit_code = int(done.stdout.split("(exit ")[1].split(":")[0])
    assert exit_code not in (0, 1, 2, 3), done.stdout
    assert f"{exit_code} skipped: the previous night still runs" in done.stdout


def test_a_regression_names_the_commits_its_baseline_ran_and_tonights(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What changed since the baseline is the first question a regression asks: the report and
    the printed notes name the baseline nights' commits beside tonight's."""
    figure = "digits/error_rate_pct/random"
    nights = []
    for night, commit in enumerate(("aaa111", "aaa111", "bbb222")):
        monkeypatch.setenv("LRSWEEP_GIT_COMMIT", commit)
        nights.append(_judged_night(tracking_uri, {figure: 10.0}, tmp_path / str(night)))
    assert not [n for n in nights[1].notes if "commit" in n]  # the same commit: nothing to say
    monkeypatch.setenv("LRSWEEP_GIT_COMMIT", "ccc333")
    night = _judged_night(tracking_uri, {figure: 30.0}, tmp_path / "tonight")
    assert night.verdict.status == "regressed"
    (note,) = [n for n in night.notes if "commit" in n]
    assert "ccc333" in note and "aaa111 (2 nights)" in note and "bbb222 (1 night)" in note
    assert note in (tmp_path / "tonight" / "nightly-report.md").read_text()


def test_a_night_whose_store_is_unreachable_leaves_a_failed_report_not_the_last_passed_one(
    tracking_uri: str, tmp_path: Path
) -> None:
    """The store checked while the command line was parsed exited 3 before the report folder was
    touched: cron's mail said "did not pass, see nightly-report.html", which said PASSED."""
    report_dir = tmp_path / "report"
    _judged_night(tracking_uri, {"digits/wall_time_s": 10.0}, report_dir)
    assert "PASSED" in (report_dir / "nightly-report.md").read_text()
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{closed.getsockname()[1]}"
    result = _run_nightly(tmp_path, gone, report_dir)
    assert result.exit_code == 3, result.output
    assert "Cannot reach the MLflow server" in result.stderr
    for name in ("nightly-report.md", "nightly-report.html"):
        text = (report_dir / name).read_text()
        assert "PASSED" not in text and "FAILED" in text, name
        assert "could not be reached" in text and gone in text
    assert not (report_dir / "trends" / "digits--wall_time_s.png").exists()


@pytest.mark.parametrize("through", ["--tracking-uri", "MLFLOW_TRACKING_URI"])
def test_a_refused_tracking_uri_replaces_the_last_report_but_creates_no_folder(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, through: str
) -> None:
    """A password in the URI exits 2 before anything runs: like an invalid suite, it must not
    leave the last night's PASSED report for a schedule to publish, nor repeat the password."""
    report_dir = tmp_path / "report"
    _judged_night(tracking_uri, {"digits/wall_time_s": 10.0}, report_dir)
    assert "PASSED" in (report_dir / "nightly-report.md").read_text()
    secret = "http://alice:s3cret-pw@127.0.0.1:5000"
    for folder in (report_dir, tmp_path / "none-yet"):
        args = ["nightly", str(_suite_file(tmp_path)), "--report-dir", str(folder)]
        if through == "--tracking-uri":
            args += ["--tracking-uri", secret]
        else:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", secret)
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert f"{through} http://127.0.0.1:5000: must not contain a password" in result.stderr
    for name in ("nightly-report.md", "nightly-report.html"):
        text = (report_dir / name).read_text()
        assert "PASSED" not in text and "FAILED" in text, name
        assert "must not contain a password" in text and "s3cret-pw" not in text
    assert not (report_dir / "trends" / "digits--wall_time_s.png").exists()
    assert not (tmp_path / "none-yet").exists()


def test_a_store_check_that_crashes_is_a_failed_night_never_a_regression(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 1 means "regressed": a check of the store that raises what nobody foresaw is a
    night that could not run, exit 3, FAILED. (The one such error found, libpq's ValueError
    for a NUL in the URI, is now a refusal, so the fault is injected.)"""
    from sweeps.cli import _nightly

    def check_crashes(*_: object, **__: object) -> str:
        raise ValueError("embedded null character")

    report_dir = tmp_path / "report"
    _judged_night(tracking_uri, {"digits/wall_time_s": 10.0}, report_dir)
    monkeypatch.setattr(_nightly, "usable_tracking_uri", check_crashes)
    result = _run_nightly(tmp_path, tracking_uri, report_dir)
    assert result.exit_code == 3, result.output
    assert "could not be checked (ValueError" in result.stderr
    assert "Traceback" not in result.output
    text = (report_dir / "nightly-report.md").read_text()
    assert "PASSED" not in text and "FAILED" in text and "could not be checked" in text


def test_an_invalid_suite_replaces_the_last_report_but_creates_no_folder(
    tracking_uri: str, tmp_path: Path
) -> None:
    """A suite broken by an edit exits 2 night after night: the folder a schedule publishes kept
    showing the last good night's PASSED. A mistyped command makes no report folder."""
    report_dir = tmp_path / "report"
    _judged_night(tracking_uri, {"digits/wall_time_s": 10.0}, report_dir)
    suite = _suite_file(tmp_path)
    for folder in (report_dir, tmp_path / "none-yet"):
        result = CliRunner().invoke(
            app,
            ["nightly", str(suite), "--tracking-uri", tracking_uri, "--report-dir", str(folder),
             "--set", "digits.task.epochs=0"],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
    text = (report_dir / "nightly-report.md").read_text()
    assert "PASSED" not in text and "FAILED" in text and "task.epochs" in text
    assert text.startswith("# Nightly benchmark: tiny\n")  # the suite's name, not the file's
    assert not (tmp_path / "none-yet").exists()


def test_a_store_that_fails_as_the_night_opens_leaves_a_failed_report(
    tracking_uri: str, tmp_path: Path
) -> None:
    """The report folder is emptied before the store is opened: a store that refused the night
    run left no report at all, only a traceback in a log."""
    report_dir = tmp_path / "report"
    _judged_night(tracking_uri, {"digits/wall_time_s": 10.0}, report_dir)
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is no SQLite database" * 100)
    suite = load_suite({"name": "tiny", "entries": ENTRIES})
    with pytest.raises(Exception, match="database"):
        nightly_run.run_nightly(suite, tracking_uri=f"sqlite:///{broken}", report_dir=report_dir)
    text = (report_dir / "nightly-report.md").read_text()
    assert "FAILED" in text and "could not start" in text and "PASSED" not in text


def test_a_night_killed_outright_is_closed_as_failed_by_a_later_night(
    tracking_uri: str, tmp_path: Path
) -> None:
    """A driver killed by the OOM killer, a reboot or SIGKILL records nothing: its night run
    stayed RUNNING with nightly.status=running for good, and no later report mentioned it."""
    import time

    from mlflow import MlflowClient

    store = NightStore(Tracker(tracking_uri), "tiny")
    two_days_ago = int((time.time() - 2 * 86400) * 1000)
    tags = {"sweeps.kind": "nightly", "nightly.status": "running"}
    dead = MlflowClient(tracking_uri).create_run(
        store.experiment_id, start_time=two_days_ago, tags=tags, run_name="night-dead"
    )
    running = MlflowClient(tracking_uri).create_run(  # another night, started a minute ago
        store.experiment_id, tags=tags, run_name="night-now"
    )
    night = _judged_night(tracking_uri, {"digits/wall_time_s": 10.0}, tmp_path / "r")
    closed = Tracker(tracking_uri).get_run(dead.info.run_id)
    assert closed.info.status == "KILLED"
    assert closed.data.tags["nightly.status"] == "failed"
    assert "never finished" in closed.data.tags["nightly.failure_reason"]
    assert Tracker(tracking_uri).get_run(running.info.run_id).info.status == "RUNNING"
    (note,) = [n for n in night.notes if "never finished" in n]
    assert dead.info.run_id in note
    assert note in (tmp_path / "r" / "nightly-report.md").read_text()
