"""The nightly benchmark: a fixed suite every night, compared with the nights before.

``lrsweep nightly SUITE`` calls :func:`run_nightly`; see ``sweeps/nightly/_run.py`` for one
night's steps (``_entries.py`` runs the entries' sweeps, ``_conclude.py`` judges the night and
writes its report), ``_store.py`` for the MLflow layout, ``_orphans.py`` for what a night
killed outright left RUNNING, ``_figures.py`` for the headline figures and ``_compare.py`` for
thresholds and the verdict, ``_reference.py`` for the machine-speed reference and
``_scaling.py`` for time baselines scaled by it.

Example:
    >>> from sweeps.spec import load_suite
    >>> from sweeps.nightly import run_nightly
    >>> night = run_nightly(load_suite("sweeps/specs/nightly.yaml"))  # doctest: +SKIP
    >>> night.exit_code, [c.describe() for c in night.verdict.regressions]  # doctest: +SKIP
    (0, [])
"""

from __future__ import annotations

from sweeps.nightly._compare import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_PASSED,
    EXIT_REGRESSED,
    Comparison,
    Status,
    Verdict,
    comparable_figures,
    compare_figures,
    judge,
)
from sweeps.nightly._env import environment_tags, git_commit, spec_fingerprint
from sweeps.nightly._figures import FIGURE_NAMES, Figure, entry_figures
from sweeps.nightly._reference import Reference, measure_reference
from sweeps.nightly._report import NightReport, ReportDirError, ReportFiles, write_report
from sweeps.nightly._run import (
    DEFAULT_BASELINE_NIGHTS,
    NightResult,
    report_night_not_run,
    run_nightly,
)
from sweeps.nightly._store import Night, NightStore, entry_experiment, night_experiment

__all__ = [
    "DEFAULT_BASELINE_NIGHTS",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_PASSED",
    "EXIT_REGRESSED",
    "FIGURE_NAMES",
    "Comparison",
    "Figure",
    "Night",
    "NightReport",
    "NightResult",
    "NightStore",
    "Reference",
    "ReportDirError",
    "ReportFiles",
    "Status",
    "Verdict",
    "comparable_figures",
    "compare_figures",
    "entry_experiment",
    "entry_figures",
    "environment_tags",
    "git_commit",
    "judge",
    "measure_reference",
    "night_experiment",
    "report_night_not_run",
    "run_nightly",
    "spec_fingerprint",
    "write_report",
]
