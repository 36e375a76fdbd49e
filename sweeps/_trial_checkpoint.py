"""A trial's Tune checkpoint: the folder it writes each checkpointed epoch (its Learner, its
best weights, ``trial.json``), restoring one into a Learner, and removing the folders a killed
worker left behind.

Called by :func:`sweeps.trial.train_trial`, which re-exports every name here (the functions
under their old private names: ``_restore``, ``_checkpointer``, ``_ckpt_prefix``, ...).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sweeps import _fitting
from sweeps._reporter import TrialRecord
from trainers import Learner
from trainers._checkpoint import read_safely

logger = logging.getLogger("sweeps.trial")  # its messages, as before the split

META_FILE = "trial.json"
LEARNER_FILE = "learner.pt"
BEST_MODEL_FILE = "best_model.pt"


def restore(learn: Learner, folder: Path | None, task: Any) -> dict[str, Any] | None:
    """Load a Tune checkpoint into ``learn``; return its metadata (None on a fresh start)."""
    if folder is None:
        return None
    meta = _read_meta(folder / META_FILE)
    resize = _fitting.resizer(task)
    if resize is not None:  # the loaders the checkpoint was taken on (their size is checked)
        learn.dls = resize.sized(meta.get("image_size"), learn.dls)
    learn.load(folder / LEARNER_FILE)
    best_file = folder / BEST_MODEL_FILE
    if best_file.exists():
        meta["best_state"] = read_safely(best_file, "trial checkpoint's best model")
    logger.info("trial resumes at epoch %d in run %s", len(learn.history), meta["run_id"])
    return meta


def _read_meta(path: Path) -> dict[str, Any]:
    """``trial.json`` of a Tune checkpoint; a file cut short or damaged is named (json's own
    error named no file, and a retried trial failed with it)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"trial checkpoint file {str(path)!r} cannot be read ({type(err).__name__}: {err}): "
            "the checkpoint is damaged or cut short (a full disk, or a copy interrupted)."
        ) from err
    if not isinstance(meta, dict) or "run_id" not in meta:
        raise ValueError(
            f"trial checkpoint file {str(path)!r} holds no trial record (no run_id): the "
            "checkpoint is damaged or was not written by lrsweep."
        )
    return meta


def checkpointer(record: TrialRecord) -> Any:
    """A function writing the Tune checkpoint folder of the current epoch.

    The folder lives from its writing until Tune has its copy (``EpochReporter`` removes it). A
    worker killed in between (SIGKILL, the OOM killer) leaves it behind: its name carries the
    host and the writer's pid, and the next trial on that host removes the folders of dead pids.
    """
    remove_orphan_checkpoints()
    prefix = f"{ckpt_prefix()}{os.getpid()}-"

    def write(learn: Learner, best_state: Mapping[str, Any] | None) -> Path:
        folder = Path(tempfile.mkdtemp(prefix=prefix))
        learn.save(folder / LEARNER_FILE)
        if best_state is not None:
            torch.save(dict(best_state), folder / BEST_MODEL_FILE)
        meta = {**record.to_meta(), "image_size": getattr(learn.dls, "image_size", None)}
        (folder / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
        return folder

    return write


def ckpt_prefix() -> str:
    """The name every checkpoint folder written on this host starts with (then the pid)."""
    return f"lrsweep-ckpt-{socket.gethostname()}-"


def remove_orphan_checkpoints() -> None:
    """Remove this host's checkpoint folders whose writer process is gone."""
    prefix = ckpt_prefix()
    for folder in Path(tempfile.gettempdir()).glob(f"{glob.escape(prefix)}*-*"):
        pid = folder.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
