"""What lrsweep does to Ray's and Ray Tune's log lines: the driver's filters (Tune's missing
result files, its resume advice, its trial tracebacks in one line, Ray's authentication note),
Tune's own result loggers turned off, and a trial process's levels.

No Ray import: :mod:`sweeps._ray` runs :func:`without_tune_loggers` before a Tuner and
re-exports :func:`quiet_trial_logs` (every trial calls it first); :mod:`sweeps._ray_cluster`
adds :data:`AUTH_NOTE_FILTER` when Ray starts.
"""

from __future__ import annotations

import logging
import os

__all__ = [
    "AUTH_NOTE_FILTER",
    "quiet_trial_logs",
    "without_tune_loggers",
]


def quiet_trial_logs() -> None:
    """Silence Ray's per-checkpoint INFO lines in a trial's process (they flood the driver),
    and keep the trial's own warnings.

    ``import mlflow.pytorch`` (a trial worker's warm-up) runs ``logging.basicConfig(level=ERROR)``
    (MLflow's Lightning autolog module), which hid every warning of a trial from the driver: an
    MLflow server gone for minutes, retried in silence until the trial failed. A handler set
    first makes that call a no-op; a worker where it already ran gets WARNING back.
    """
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    elif root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _NoResultFilesWarning(logging.Filter):
    """Drops Tune's "Failed to fetch metrics ... result.json and progress.csv were not found".

    Tune warns so, one line per trial, whenever a Tuner ends without its result files; with
    its loggers off that is by design (the results are in MLflow), not a failure to report.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Failed to fetch metrics") and "progress.csv" in message)


_RESULT_FILES_FILTER = _NoResultFilesWarning()


class _NoTuneResumeAdvice(logging.Filter):
    """Drops Tune's "Experiment has been interrupted ... Resume experiment with:
    Tuner.restore(...)": a stopped sweep says ``lrsweep resume NAME`` itself, which also
    reopens its MLflow runs; a restored Tuner alone would log to none of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(
            ("Experiment has been interrupted", "Training has been interrupted")
        )


_RESUME_ADVICE_FILTER = _NoTuneResumeAdvice()


class _OneLineTrialErrors(logging.Filter):
    """Tune's "Trial task failed for trial ..." in one line, not the ~50 lines of Ray's
    traceback per attempt (300 for a failing arm); its "Trials did not complete: [...]" is
    dropped: lrsweep names every failure, with its error, when the sweep ends."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Trials did not complete"):
            return False
        if message.startswith("Trial task failed") and record.exc_info:
            error = record.exc_info[1]
            cause = getattr(error, "cause", None) or error
            text = str(cause).strip().splitlines()
            said = f"{type(cause).__name__}: {text[0] if text else ''}"
            record.msg = f"{message}: {said[:300]} (the sweep's summary lists every failure)"
            record.args = None
            record.exc_info = record.exc_text = None
        return True


_TRIAL_ERRORS_FILTER = _OneLineTrialErrors()


class _NoAuthEnabledNote(logging.Filter):
    """Drops Ray's "Token authentication is enabled for this Ray cluster" (its secure default,
    said at every start of a local Ray: nothing to act on); "... is disabled" stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


AUTH_NOTE_FILTER = _NoAuthEnabledNote()


def without_tune_loggers() -> None:
    """Turn off Tune's own CSV, JSON and TensorBoard result files (unless the user set it).

    Every result is logged to MLflow already; Tune's loggers would write (and flush) each
    result a second time in the driver, on the cores the trials run on (~5 ms per result).
    Tune's warning that those files are missing is then silenced, and so is its advice to
    resume with ``Tuner.restore`` (:class:`_NoTuneResumeAdvice`).
    """
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger("ray.tune.tune").addFilter(_RESUME_ADVICE_FILTER)  # no-op when there
    logging.getLogger("ray.tune.tune").addFilter(_TRIAL_ERRORS_FILTER)
    logging.getLogger("ray.tune.execution.tune_controller").addFilter(_TRIAL_ERRORS_FILTER)
    analysis_logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    if os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1":
        analysis_logger.addFilter(_RESULT_FILES_FILTER)  # a no-op when already there
    else:
        analysis_logger.removeFilter(_RESULT_FILES_FILTER)
