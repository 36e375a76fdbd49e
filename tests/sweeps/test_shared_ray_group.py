"""``make test`` runs every test of the shared Ray session on one pytest worker, so they share
one Ray session (tests/test_make_test_groups.py has the grouping's story)."""

from __future__ import annotations

import pytest


def test_the_shared_ray_tests_run_as_one_group(
    request: pytest.FixtureRequest, loadgroup_run: None, ray_cluster: None
) -> None:
    assert request.node.nodeid.endswith("@shared-ray")
