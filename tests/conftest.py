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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n 2`` (``make test``): every test of the shared Ray session runs on one
    worker, so there is still one session; the other tests go by module (a module's fixtures
    are made once), to whichever worker is free."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        shared = "ray_cluster" in getattr(item, "fixturenames", ())
        item.add_marker(pytest.mark.xdist_group("shared-ray" if shared else item.path.stem))
