"""Project-wide test setup and every shared fixture: one torch thread per process, the one real
local Ray session of the sweeps tests, throwaway MLflow stores, a real S3 server, and a module
fixture that ends the shared Ray session for tests proving a command starts none.

The fixtures all live here, not in conftest.py files of tests/sweeps and tests/trainers: pytest
9.1.1 (pinned, see pyproject.toml) loses a subfolder's conftest fixtures when the command line
names a file of another folder between that subfolder's files ("fixture 'tracking_uri' not
found" for ``pytest tests/sweeps/a.py tests/b.py tests/sweeps/c.py``; pytest-dev/pytest#14640).

The CI machine has 2 cores shared by the test process and Ray workers; torch's default of one
thread per core oversubscribes them and makes tiny CPU trainings ~10x slower.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def no_ray_in_module() -> Iterator[None]:
    """End the shared Ray session of earlier modules, so a module's tests can prove none starts;
    start it again afterwards when it was running, for the modules that follow."""
    ray = sys.modules.get("ray")
    was_running = ray is not None and ray.is_initialized()
    if was_running:
        from sweeps import _ray

        _ray.shutdown_ray()
    yield
    if was_running:
        from sweeps import _ray

        _ray.init_ray(num_cpus=2)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n 2`` (``make test``): every test of the shared Ray session runs on one
    worker, so there is still one session; the other tests go by module (a module's fixtures
    are made once), to whichever worker is free.

    ``tryfirst``: xdist reads the ``xdist_group`` marks in its own hook of this name (adding
    ``@group`` to each node id); run after it, these marks were set too late and every module
    was spread over both workers."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        shared = "ray_cluster" in getattr(item, "fixturenames", ())
        item.add_marker(pytest.mark.xdist_group("shared-ray" if shared else item.path.stem))


@pytest.fixture
def loadgroup_run(request: pytest.FixtureRequest) -> None:
    """Skips a test outside ``make test``'s ``--dist loadgroup`` (a plain ``pytest`` has no
    groups): for the tests of the grouping above (tests/test_make_test_groups.py)."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("checks make test's `pytest -n 2 --dist loadgroup`; this run is not one")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one thread for a module (results that do not hang on the thread count), then
    back to what it was."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A real local Ray runtime with 2 CPUs, started once and shut down at the end."""
    from sweeps import _ray

    _ray.init_ray(num_cpus=2)
    try:
        yield
    finally:
        _ray.shutdown_ray()


@pytest.fixture
def ray_running(ray_cluster: None) -> None:
    """The shared Ray, started again when a module had to end it (one proving that a command
    starts no Ray); modules that end it for a cluster of their own restore it themselves."""
    from sweeps import _ray

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
    from sweeps.tracking import Tracker, default_tracking_uri, sqlite_path

    uri = default_tracking_uri(tmp_path_factory.mktemp("empty-store"))
    Tracker(uri)
    made = sqlite_path(uri)
    assert made is not None
    return made


@pytest.fixture
def tracking_uri(tmp_path: Path, _empty_store: Path) -> str:
    """A fresh embedded MLflow store (SQLite + artifact folder) under the test's tmp dir: a copy
    of one made by ``Tracker`` (tests of making a store make their own, or run the CLI)."""
    from sweeps.tracking import default_tracking_uri, sqlite_path

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
    ``tests/sweeps/_s3_helpers.s3_server``)."""
    # tests/sweeps is on sys.path once a test module of it is imported (pytest's prepend mode)
    from _s3_helpers import s3_server

    with s3_server() as endpoint:
        yield endpoint
