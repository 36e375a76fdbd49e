"""Where and with what a night ran: date, git commit, package versions, machine, spec fingerprints.

Every value is a string, ready to be an MLflow tag. Nothing here raises: a missing package reads
``not installed`` and a checkout without git (a container image) reads ``unknown``, unless
``LRSWEEP_GIT_COMMIT`` names the commit (set it when building an image from a checkout).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from sweeps.spec import SweepSpec
from sweeps.spec._task import is_uri

logger = logging.getLogger(__name__)

PACKAGES = ("torch", "ray", "mlflow", "optuna", "lrsweep")
GIT_ENV = "LRSWEEP_GIT_COMMIT"
TAG_DATE = "nightly.date"
TAG_STARTED = "nightly.started_utc"
TAG_COMMIT = "nightly.git_commit"
VERSION_PREFIX = "nightly.version."
MACHINE_PREFIX = "nightly.machine."
SPEC_PREFIX = "nightly.spec_sha256."
TAG_LOAD = "nightly.load_at_start"
"""The machine's 1-minute load average as the night started: the work already on it."""
# Resolved-spec fields that change no figure: the spec's name, and where things are stored
# (the nightly sets the experiment and the tracking URI itself).
_NOT_FINGERPRINTED = ("name", "storage")
_TRACKING_NOT_FINGERPRINTED = ("uri", "experiment")


def git_commit(folder: str | os.PathLike[str] | None = None) -> str:
    """The commit checked out at ``folder`` (default: this package's source), else ``unknown``.

    ``$LRSWEEP_GIT_COMMIT`` wins when set. A checkout with uncommitted changes reads
    ``<sha>-dirty``, so a night run from edited code is not mistaken for the commit.
    """
    if os.environ.get(GIT_ENV):
        return os.environ[GIT_ENV].strip()
    where = Path(folder) if folder is not None else Path(__file__).resolve().parents[2]
    try:
        sha = _git(where, "rev-parse", "HEAD")
        dirty = _git(where, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError) as error:
        logger.debug("no git commit for %s: %s", where, error)
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a night's figures depend on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine() -> dict[str, str]:
    """The machine the night's driver ran on (trials may run elsewhere on a cluster)."""
    return {
        "platform": platform.platform(),
        "node": platform.node() or "unknown",
        "cpu_count": str(os.cpu_count() or "unknown"),
        "python": platform.python_version(),
    }


def environment_tags(now: datetime | None = None) -> dict[str, str]:
    """Every environment tag of a night run.

    Example:
        >>> tags = environment_tags()
        >>> sorted(k for k in tags if k.startswith("nightly.version."))[:2]
        ['nightly.version.lrsweep', 'nightly.version.mlflow']
    """
    now = now or datetime.now(UTC)
    tags = {
        TAG_DATE: now.strftime("%Y-%m-%d"),
        TAG_STARTED: now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        TAG_COMMIT: git_commit(),
    }
    tags.update({VERSION_PREFIX + name: v for name, v in package_versions().items()})
    tags.update({MACHINE_PREFIX + name: v for name, v in machine().items()})
    try:
        tags[TAG_LOAD] = f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):  # not on this platform
        pass
    return tags


_LATER_OPTIONS: dict[tuple[str, ...], Any] = {
    ("task", "accelerator", "fused_step"): None,  # 2026-12-05
    ("task", "progressive_resizing"): [],  # 2026-12-07
    ("task", "tta"): None,  # 2026-12-07
    ("task", "fine_tune", "precompute"): False,  # 2026-12-07
}
"""Spec options added after nights were recorded, with their defaults: a spec leaving one at
its default keeps the fingerprint (and so the baselines) it had before the option existed."""


def spec_fingerprint(spec: SweepSpec) -> str:
    """The SHA-256 of the resolved spec, less what changes no figure (name, storage, tracking URI
    and experiment): two nights compare an entry only when its fingerprint is the same.

    What the spec's local paths hold counts too: a ``task.dataset.path`` folder by its files'
    names and sizes (images added or removed, not touched), a ``task.model.pretrained`` file by
    its bytes. Remote paths (``s3://``...) count by their text only.

    Example:
        >>> from sweeps.spec import load_spec
        >>> spec = load_spec("sweeps/specs/digits.yaml")  # doctest: +SKIP
        >>> renamed = spec.model_copy(update={"name": "x"})  # doctest: +SKIP
        >>> spec_fingerprint(spec) == spec_fingerprint(renamed)  # doctest: +SKIP
        True
    """
    resolved: dict[str, Any] = {
        k: v for k, v in spec.resolved().items() if k not in _NOT_FINGERPRINTED
    }
    tracking = resolved.get("tracking") or {}
    resolved["tracking"] = {
        k: v for k, v in tracking.items() if k not in _TRACKING_NOT_FINGERPRINTED
    }
    for *path, key in _LATER_OPTIONS:  # at their defaults: the fingerprints they had before
        parent: Any = resolved
        for part in path:  # a fresh dump: changed here only
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and parent.get(key) == _LATER_OPTIONS[(*path, key)]:
            parent.pop(key, None)
    contents = _local_contents(spec)
    if contents:  # a spec without local paths keeps the fingerprint it had before they counted
        resolved["local_contents"] = contents
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _local_contents(spec: SweepSpec) -> dict[str, str]:
    """SHA-256s of what the spec's local data folder and weights file hold (never raises)."""
    found: dict[str, str] = {}
    folder, weights = spec.task.dataset.path, spec.task.model.pretrained
    try:
        if folder and not is_uri(folder) and Path(folder).is_dir():
            root = Path(folder)
            files = sorted(
                (p.relative_to(root).as_posix(), p.stat().st_size)
                for p in root.rglob("*")
                if p.is_file()
            )
            found["dataset"] = hashlib.sha256(json.dumps(files).encode()).hexdigest()
        if weights and not is_uri(weights) and Path(weights).is_file():
            digest = hashlib.sha256()
            with Path(weights).open("rb") as stream:
                for block in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(block)
            found["pretrained"] = digest.hexdigest()
    except OSError as error:  # unreadable now: the sweep itself will say so
        logger.debug("could not read %s / %s for the fingerprint: %s", folder, weights, error)
        found["unreadable"] = str(error)
    return found
