"""Fixtures of the sweeps tests: one real local Ray per session, throwaway MLflow stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sweeps import _ray
from sweeps.tracking import default_tracking_uri


@pytest.fixture(scope="session")
def _ray_session() -> Iterator[None]:
    """Shuts the shared local Ray down once, at the end of the session."""
    try:
        yield
    finally:
        _ray.shutdown_ray()


@pytest.fixture
def ray_cluster(_ray_session: None) -> None:
    """A real local Ray runtime with 2 CPUs, shared by the whole session.

    Started by the first test that needs it and kept; started again after a module that had to
    end it (a test of its own cluster, or of a command that must not start Ray).
    """
    _ray.init_ray(num_cpus=2)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A fresh embedded MLflow store (SQLite + artifact folder) under the test's tmp dir."""
    return default_tracking_uri(tmp_path)
