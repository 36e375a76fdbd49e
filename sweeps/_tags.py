"""The tags lrsweep writes on MLflow runs, and the statuses a run is closed with.

Plain names, no MLflow import: :mod:`sweeps.tracking` re-exports every one, and the modules
the :class:`sweeps.tracking.Tracker` delegates to (:mod:`sweeps._sweep_runs`) read them here.
"""

from __future__ import annotations

__all__ = [
    "PARENT_TAG",
    "TAG_ADDRESS",
    "TAG_CLEANED",
    "TAG_CREATE_KEY",
    "TAG_CURVE_CUT",
    "TAG_FAILED_FOR_GOOD",
    "TAG_KIND",
    "TAG_RESUMABLE",
    "TAG_STORAGE_PATH",
    "TAG_SWEEP_ID",
    "TAG_TRIAL_ID",
    "TERMINAL_STATUSES",
]

PARENT_TAG = "mlflow.parentRunId"
TAG_KIND = "sweeps.kind"
TAG_CREATE_KEY = "sweeps.create_key"
"""A random key per ``start_run``: a create request sent twice (its reply lost) is seen."""
TAG_SWEEP_ID = "sweeps.sweep_id"
TAG_TRIAL_ID = "sweeps.trial_id"
TAG_FAILED_FOR_GOOD = "sweeps.failed_for_good"
"""Trial run tag: the error of an LR choice that fails the same way on every retry."""
TAG_RESUMABLE = "sweeps.resumable"
"""Sweep run tag, ``true`` / ``false``: whether ``lrsweep resume`` can retry its failed trials."""
TAG_CLEANED = "sweeps.cleaned"
"""Sweep run tag: when (UTC) ``lrsweep clean`` deleted the sweep's folder in Ray's storage, so
that nothing can resume it any more."""
TAG_STORAGE_PATH = "sweeps.storage_path"
"""Sweep run tag: Ray's storage root the sweep's folder is under (absolute, or a URI shown
without credentials), what ``lrsweep resume --storage-path`` takes; set by every run and resume."""
TAG_ADDRESS = "sweeps.address"
"""Sweep run tag: the Ray cluster it last ran on (``--address``), ``local`` for a Ray of its
own; set by every run and resume."""
TAG_CURVE_CUT = "sweeps.curve_cut"
"""Trial run tag, ``true``: the driver closed the run FAILED after its trial ended without
closing it (its worker killed: SIGKILL, the OOM killer), so the metric points the trial held
back (up to ``tracking.flush_every_s`` of them) never reached the run: its curve, epochs and
compute stop short of what it trained. A retry (``lrsweep resume``) drops it."""
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
