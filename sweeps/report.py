"""The comparison report, recomputed from MLflow alone: does the LR finder match the search?

Rows are *groups*: one per arm, and one per suggestion rule of an ``lr_finder`` arm
(``lr_finder:valley``). For every group and seed the group's result is its best trial of that
seed (lowest ``best/valid_loss``; a finder rule has one trial per seed). Then, per group:

- ``n_seeds``: the seeds with a counted trial, out of ``n_seeds_run``, the seeds the group ran
  (shown as ``2/3``): a seed whose trials all failed or diverged drops out of the mean below,
  so a mean over fewer seeds than its rivals is visible as such;
- ``chosen_lr``: median over seeds of the LR of each seed's best trial, taken on the log scale
  the LRs are searched on (for an even number of seeds, the geometric mean of the middle two:
  1e-3 and 1e-1 give 1e-2, not 5e-2);
- ``valid_loss`` and ``error_rate``: mean and sample standard deviation (n - 1) over seeds of
  that trial's best-epoch values; the standard deviation is NaN for one seed (one value has no
  spread to measure; the mean is shown alone), both are NaN (shown as ``-``) when no trial of
  the group counts (every one failed or diverged without a finite loss);
- ``regret``: mean ``valid_loss`` minus the lowest mean ``valid_loss`` of any group, and
  ``regret_error_pp`` the same for the error rate in percentage points (the lowest finite mean
  error rate: a group without one takes no part);
- ``n_trials``, ``epochs_run`` (early stops counted), ``compute_s`` (range tests included), all
  summed over the group's trials, failed ones included: a trial that ended without its summary
  metrics (failed, killed) counts the epochs MLflow holds, their ``epoch_time_s`` and its range
  test's ``lr_find_s`` (logged as soon as the test ran); and ``compute_vs_grid``: ``compute_s``
  over the ``grid`` arm's (the first by name when there are several).

Counted: child runs that FINISHED with a finite ``best/valid_loss`` (a trial that diverged after
some good epochs still counts with its best epoch; +-inf, which MLflow's SQL stores keep as
+-1.797e308, is read back as infinite, so it does not count). Every child appears in the trial
table with its stop reason and diagnosis.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import shutil
import tempfile
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sweeps._report_cells import (
    CSS,
    GROUP_HEADERS,
    TRIAL_HEADERS,
    csv_text,
    group_cells,
    json_row,
    md_table,
    trial_cells,
    with_tta,
)
from sweeps._report_cells import TTA_HEADER as TTA_HEADER
from sweeps._report_notes import status_note
from sweeps._report_rows import GroupRow as GroupRow
from sweeps._report_rows import TrialRow as TrialRow
from sweeps._report_rows import compare as compare
from sweeps._report_rows import trial_row as trial_row
from sweeps._report_rows import with_epochs_held as with_epochs_held
from sweeps.plots import plot_comparison, plot_sweep_curves
from sweeps.tracking import TAG_KIND, Tracker, existing_store_uri

logger = logging.getLogger(__name__)

GROUP_COLUMNS = (
    "group",
    "kind",
    "n_seeds",
    "n_seeds_run",
    "chosen_lr",
    "valid_loss_mean",
    "valid_loss_std",
    "error_rate_mean",
    "error_rate_std",
    "regret",
    "regret_error_pp",
    "n_trials",
    "epochs_run",
    "compute_s",
    "compute_vs_grid",
)
TRIAL_COLUMNS = (
    "run_id",
    "group",
    "kind",
    "arm",
    "rule",
    "seed",
    "lr",
    "status",
    "stop_reason",
    "best_epoch",
    "diagnosis",
    "best_valid_loss",
    "best_error_rate",
    "epochs_run",
    "compute_s",
)


@dataclass
class Report:
    """The comparison of one sweep execution (see the module docstring for every number)."""

    experiment: str
    parent_run_id: str
    groups: list[GroupRow]
    trials: list[TrialRow]
    figures: dict[str, Path] = field(default_factory=dict)
    """``comparison.png`` and ``curves.png`` (none for a sweep without trial runs). Drawn into
    a temporary folder unless ``build_report(figures_dir=...)`` named one, they live as long as
    this report: a path kept after the report is gone points at a deleted file (copy the file,
    keep the report, or read the copies logged on the sweep's run)."""
    status_note: str = ""
    """Empty for a sweep whose trials all ended; else why the tables are incomplete (an
    interrupted or still running sweep) and what continues it."""
    other_sweeps: int = 0
    """How many other sweep runs the experiment holds (``--run-id`` picks one of them)."""
    status: str = ""
    """The sweep run's MLflow status (``FINISHED``, ``FAILED``, ``KILLED``, ``RUNNING``)."""

    @property
    def no_trials(self) -> str:
        """'' when the tables have a row; else the sentence every form shows instead of them
        (empty, they would read as a broken report). ``lrsweep report --run-id`` of a sweep
        stopped or failed before any trial started gets it."""
        if self.trials or self.groups:
            return ""
        return (
            f"Sweep run {self.parent_run_id} of experiment {self.experiment!r} has no trial "
            "run, so there is nothing to compare."
        )

    def group(self, name: str) -> GroupRow:
        """The row of one group; ``KeyError`` lists the groups."""
        for row in self.groups:
            if row.group == name:
                return row
        raise KeyError(f"no group {name!r}; groups: {[r.group for r in self.groups]}")

    @property
    def has_tta(self) -> bool:
        """Whether some trial logged a TTA error rate (``task.tta``): the tables then have a
        column for it, after the plain error rate."""
        return any(math.isfinite(t.best_tta_error_rate) for t in self.trials)

    def group_table(self) -> tuple[tuple[str, ...], list[list[str]]]:
        """Headers and formatted cells of the strategy table (for terminals and documents)."""
        return with_tta(GROUP_HEADERS, self.has_tta), [
            group_cells(r, self.has_tta) for r in self.groups
        ]

    def trial_table(self) -> tuple[tuple[str, ...], list[list[str]]]:
        """Headers and formatted cells of the trial table."""
        return with_tta(TRIAL_HEADERS, self.has_tta), [
            trial_cells(t, self.has_tta) for t in self.trials
        ]

    def results_csv(self) -> str:
        """The group table as CSV."""
        columns = GROUP_COLUMNS + (("tta_error_rate_mean",) if self.has_tta else ())
        return csv_text(columns, [asdict(r) for r in self.groups])

    def trials_csv(self) -> str:
        """The trial table as CSV."""
        columns = TRIAL_COLUMNS + (("best_tta_error_rate",) if self.has_tta else ())
        return csv_text(columns, [asdict(t) for t in self.trials])

    def to_dict(self) -> dict[str, Any]:
        """Both tables as plain JSON-able values (``lrsweep report --format json``).

        ``groups`` and ``trials`` hold one object per row of ``results.csv`` and ``trials.csv``,
        keyed by their columns (``tta_error_rate_mean`` / ``best_tta_error_rate`` only when the
        CSVs have them), with numbers unformatted; a NaN or infinite value (a ``-`` cell) is
        ``None``, as JSON has no NaN; ``best_epoch`` is a number, ``None`` for a trial without
        one (the CSV's empty cell). ``note`` is :attr:`status_note` (``None`` when empty) and
        ``trials_by_status`` counts the trial runs by MLflow status.
        """
        group_columns = GROUP_COLUMNS + (("tta_error_rate_mean",) if self.has_tta else ())
        trial_columns = TRIAL_COLUMNS + (("best_tta_error_rate",) if self.has_tta else ())
        statuses = sorted({t.status for t in self.trials})
        return {
            "experiment": self.experiment,
            "parent_run_id": self.parent_run_id,
            "status": self.status,
            "note": self.status_note or None,
            "other_sweeps": self.other_sweeps,
            "trials_by_status": {s: sum(t.status == s for t in self.trials) for s in statuses},
            "groups": [json_row(asdict(r), group_columns) for r in self.groups],
            "trials": [json_row(asdict(t), trial_columns) for t in self.trials],
        }

    def to_markdown(self, *, images: bool = True) -> str:
        """``report.md``: both tables, figures linked by file name."""
        lines = [
            f"# lrsweep report: {self.experiment}",
            "",
            f"Sweep run `{self.parent_run_id}`.",
            "",
            *([f"**{self.status_note}**", ""] if self.status_note else []),
        ]
        if self.no_trials:
            return "\n".join([*lines, self.no_trials]) + "\n"
        lines += ["## Strategies", ""]
        lines += md_table(*self.group_table())
        if images:
            lines += ["", *(f"![{name}]({name})" for name in sorted(self.figures))]
        lines += ["", "## Trials", ""]
        lines += md_table(*self.trial_table())
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """``report.html``: self-contained, figures inline as base64 PNGs."""

        def table(headers: tuple[str, ...], rows: list[list[str]]) -> str:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in rows
            )
            return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

        images = "".join(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
            f'{base64.b64encode(path.read_bytes()).decode()}"/></figure>'
            for name, path in sorted(self.figures.items())
        )
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>lrsweep report: {html.escape(self.experiment)}</title><style>{CSS}</style>"
            f"</head><body><h1>lrsweep report: {html.escape(self.experiment)}</h1>"
            f"<p>Sweep run <code>{html.escape(self.parent_run_id)}</code>.</p>"
            + (
                f"<p><strong>{html.escape(self.status_note)}</strong></p>"
                if self.status_note
                else ""
            )
            + (
                f"<p>{html.escape(self.no_trials)}</p>"
                if self.no_trials
                else f"<h2>Strategies</h2>{table(*self.group_table())}"
                f"{images}<h2>Trials</h2>{table(*self.trial_table())}"
            )
            + "</body></html>"
        )


def latest_parent(tracker: Tracker, experiment_id: str, experiment: str | None = None) -> str:
    """The most recently started sweep (parent) run of the experiment.

    Raises:
        LookupError: it has none; the message names the experiment and, for a nightly suite's
            own experiment (``nightly/<suite>``), the experiments that hold its sweeps.
    """
    parents = tracker.sweep_runs(experiment_id)
    if not parents:
        name = repr(experiment) if experiment is not None else experiment_id
        hint = sweeps_below_hint(tracker, experiment) if experiment is not None else ""
        raise LookupError(
            f"experiment {name} has no sweep run (tag {TAG_KIND}=sweep)."
            + (
                hint
                or " Pass the experiment a sweep logged to (its spec's tracking.experiment, "
                "else its name)."
            )
        )
    return str(parents[0].info.run_id)


def _latest_with_trials(
    tracker: Tracker, experiment_id: str, experiment: str
) -> tuple[str, list[Any], int]:
    """The most recently started sweep run that has a trial run, with its trial runs and the
    number of sweep runs in the experiment.

    A later sweep run without one (it ended before any trial started, or is starting) is
    passed over with a warning naming it: its empty table would hide the sweep before.

    Raises:
        LookupError: the experiment has no sweep run, or none has a trial run (names the latest).
    """
    parents = tracker.sweep_runs(experiment_id)
    if not parents:
        latest_parent(tracker, experiment_id, experiment)  # raises, saying so
    for index, parent in enumerate(parents):
        children = tracker.child_runs(experiment_id, parent.info.run_id)
        if children:
            if index:
                skipped = ", ".join(_described(p) for p in parents[:index])
                logger.warning(
                    "the latest sweep run(s) of %r have no trial run: %s; reporting sweep run %s "
                    "(pass --run-id to choose another).",
                    experiment,
                    skipped,
                    _described(parent),
                )
            return str(parent.info.run_id), children, len(parents)
    latest = parents[0]
    error = latest.data.tags.get("sweeps.error")
    raise LookupError(
        f"experiment {experiment!r} has no trial run in any of its {len(parents)} sweep "
        f"run(s); the latest, {_described(latest)}, is {latest.info.status}"
        + (f" ({error[:300]})" if error else "")
        + ". Start the sweep again with `lrsweep run SPEC` (or `lrsweep resume NAME`)."
    )


def _described(run: Any) -> str:
    return f"{run.info.run_id} ({run.info.run_name})"


def sweeps_below_hint(tracker: Tracker, experiment: str) -> str:
    """`` Its sweeps are in the experiments ...`` when ``experiment`` holds none but experiments
    named ``<experiment>/<entry>`` exist (a nightly suite's own experiment, ``nightly/<suite>``,
    holds one run per night; each entry's sweeps are in ``nightly/<suite>/<entry>``), else ''."""
    prefix = experiment.rstrip("/") + "/"
    below = tracker.experiment_names(prefix)
    if not below:
        return ""
    return f" Its sweeps are in the experiments {below}; pass one of those."


def build_report(
    experiment: str,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    *,
    tracker: Tracker | None = None,
    figures_dir: str | Path | None = None,
) -> Report:
    """Recompute the comparison of a sweep from MLflow (params, tags, metrics) alone.

    Args:
        experiment: The experiment name.
        parent_run_id: The sweep execution; None takes the most recently started one that has
            a trial run (later ones without one are named in a warning).
        tracking_uri: The store (else ``$MLFLOW_TRACKING_URI`` or the embedded default).
        tracker: An open :class:`Tracker` (overrides ``tracking_uri``).
        figures_dir: Where to draw the figures (when None, a temporary folder removed once
            the report is no longer referenced, or at exit).

    Raises:
        LookupError: no SQLite store at ``tracking_uri`` (none is created), unknown experiment
            (lists those that exist), no sweep run in it, none with a trial run (without
            ``parent_run_id``), or a ``parent_run_id`` that is not one of its sweep runs (lists
            those that are).
        OSError: ``figures_dir`` cannot be created or written.
    """
    if tracker is None:
        try:
            tracker = Tracker(existing_store_uri(tracking_uri))
        except LookupError as error:
            raise LookupError(f"experiment {experiment!r} does not exist: {error}") from None
    experiment_id = tracker.experiment_id(experiment)
    if parent_run_id is not None:
        tracker.check_sweep_run(experiment_id, experiment, parent_run_id)
        parent, children = parent_run_id, tracker.child_runs(experiment_id, parent_run_id)
        sweeps = len(tracker.sweep_runs(experiment_id))
    else:
        parent, children, sweeps = _latest_with_trials(tracker, experiment_id, experiment)
    rows = [with_epochs_held(tracker, run, trial_row(run)) for run in children]
    trials = sorted(rows, key=lambda t: (t.group, t.seed, t.lr))
    parent_run = tracker.get_run(parent)
    report = Report(
        experiment,
        parent,
        compare(trials),
        trials,
        status_note=status_note(parent_run, children, tracker.uri),
        other_sweeps=max(0, sweeps - 1),
        status=parent_run.info.status,
    )
    if not trials:  # no figure of nothing: every form says so instead (Report.no_trials)
        return report
    if figures_dir is None:
        folder = Path(tempfile.mkdtemp(prefix="lrsweep-report-"))
        # the figures live as long as the report that reads them (to_html), then go
        weakref.finalize(report, shutil.rmtree, folder, ignore_errors=True)
    else:
        folder = Path(figures_dir)
    folder.mkdir(parents=True, exist_ok=True)
    curves = {t.run_id: tracker.metric_history(t.run_id, "valid_loss") for t in trials}
    finder = {}
    for t in trials:
        if t.kind == "lr_finder" and f"seed {t.seed}" not in finder:
            losses = [v for _, v in tracker.metric_history(t.run_id, "lr_find/loss")]
            lrs = [v for _, v in tracker.metric_history(t.run_id, "lr_find/lr")]
            if losses:
                finder[f"seed {t.seed}"] = (lrs, losses)
    report.figures["comparison.png"] = plot_comparison(trials, finder, folder / "comparison.png")
    report.figures["curves.png"] = plot_sweep_curves(curves, trials, folder / "curves.png")
    return report


def log_report(tracker: Tracker, parent_run_id: str, report: Report) -> None:
    """Write ``report.md``, ``report.html``, the figures, ``results.csv`` and ``trials.csv``
    and log them on the parent run."""
    with tempfile.TemporaryDirectory(prefix="lrsweep-report-") as tmp:
        folder = Path(tmp)
        files = {
            "report.md": report.to_markdown(),
            "report.html": report.to_html(),
            "results.csv": report.results_csv(),
            "trials.csv": report.trials_csv(),
        }
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
            tracker.log_artifact(parent_run_id, folder / name)
    for path in report.figures.values():
        tracker.log_artifact(parent_run_id, path)
