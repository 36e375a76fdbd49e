"""Project-wide test setup: one torch thread per process, and a module fixture that ends the
shared Ray session (tests/sweeps/conftest.py) for tests proving a command starts none.

The CI machine has 2 cores shared by the test process and Ray workers; torch's default of one
thread per core oversubscribes them and makes tiny CPU trainings ~10x slower.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

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
