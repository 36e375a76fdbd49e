"""``make test`` runs ``pytest -n 2 --dist loadgroup``: a module's tests on one worker (its module
fixtures made once) and every test of the shared Ray session on one worker (one Ray session),
by the ``xdist_group`` marks ``tests/conftest.py`` sets. xdist sends a group to one worker by the
``@group`` suffix it adds to each node id.

Until 2026-12-05 neither held: the marks were set after xdist had read them, and pytest 9.2
ignores the suffix xdist 3.8 writes (``item._nodeid``), so every module ran on both workers and
``test_server_sweep``'s one-minute module fixture ran twice. The shared Ray session's test is
tests/sweeps/test_shared_ray_group.py.
"""

from __future__ import annotations

import pytest


def test_a_module_runs_as_one_group(request: pytest.FixtureRequest, loadgroup_run: None) -> None:
    assert request.node.nodeid.endswith("@test_make_test_groups")
