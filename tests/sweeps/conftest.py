"""Fixtures of the sweeps tests: one real local Ray per session, throwaway MLflow stores."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from _s3_helpers import s3_server

from sweeps import _ray
from sweeps.tracking import Tracker, default_tracking_uri, sqlite_path


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A real local Ray runtime with 2 CPUs, started once and shut down at the end."""
    _ray.init_ray(num_cpus=2)
    try:
        yield
    finally:
        _ray.shutdown_ray()


@pytest.fixture
def ray_running(ray_cluster: None) -> None:
    """The shared Ray, started again when a module had to end it (one proving that a command
    starts no Ray); modules that end it for a cluster of their own restore it themselves."""
    _ray.init_ray(num_cpus=2)


@pytest.fixture
def empty_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's tmp dir as the working directory, with no MLflow variable set."""
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded store as ``Tracker`` makes it (MLflow's ~70 migrations, ~1 s), made once."""
    uri = default_tracking_uri(tmp_path_factory.mktemp("empty-store"))
    Tracker(uri)
    made = sqlite_path(uri)
    assert made is not None
    return made


@pytest.fixture
def tracking_uri(tmp_path: Path, _empty_store: Path) -> str:
    """A fresh embedded MLflow store (SQLite + artifact folder) under the test's tmp dir: a copy
    of one made by ``Tracker`` (tests of making a store make their own, or run the CLI)."""
    uri = default_tracking_uri(tmp_path)
    target = sqlite_path(uri)
    assert target is not None
    target.parent.mkdir(parents=True)
    with (  # SQLite's backup: consistent whatever the template's WAL holds
        contextlib.closing(sqlite3.connect(_empty_store)) as source,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        source.backup(copy)
    return uri


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a real S3 API server with a bucket ``sweeps`` (see
    ``_s3_helpers.s3_server``)."""
    with s3_server() as endpoint:
        yield endpoint
