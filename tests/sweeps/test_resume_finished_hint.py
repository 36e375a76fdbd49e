"""``lrsweep resume NAME`` when every sweep of NAME finished: the message names where each of
their results is, not only the latest sweep's.

Sweeps of one name share its folder under Ray's storage whichever store they logged to: the
demo (``digits-lr``) to ``./.lrsweep``, a notebook's ``run_sweep`` of the same spec to its own
``sqlite:///notebook.db``, a nightly entry running it to ``nightly/<suite>/<entry>``. The hint
named the latest one alone, so after a nightly run ``lrsweep resume digits-lr`` sent the user to
the nightly's experiment and store for the demo's results.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from sweeps.progress import SweepProgress
from sweeps.run import SweepNotFound, resume_sweep, run_sweep

pytestmark = pytest.mark.slow

PROGRESS = SweepProgress(live=False)


def _one_trial(name: str) -> dict[str, Any]:
    """One epoch of one fixed-LR trial on a few generated shapes."""
    return {
        "name": name,
        "task": {
            "dataset": {
                "name": "shapes",
                "valid_pct": 0.25,
                "seed": 3,
                "options": {"n_per_class": 8},
            },
            "image_size": 12,
            "batch_size": 12,
            "epochs": 1,
            "schedule": {"kind": "constant"},
        },
        "seeds": [0],
        "strategies": [{"kind": "fixed", "lr": 1e-2}],
        "early_stop": None,
        "resources": {"cpu": 1},
        "failure": {"max_failures": 0},
    }


def test_resume_of_finished_sweeps_names_every_store_they_logged_to_latest_first(
    ray_cluster: None, empty_workdir: Path
) -> None:
    first = f"sqlite:///{empty_workdir / 'first.db'}"
    second = f"sqlite:///{empty_workdir / 'second.db'}"
    for uri in (first, second, first):  # the last sweep logged where the first did
        result = run_sweep(_one_trial("same-name"), tracking_uri=uri, progress=PROGRESS)
        assert result.report is not None and result.n_trials == 1

    with pytest.raises(SweepNotFound) as refused:
        resume_sweep("same-name", progress=PROGRESS)
    message = str(refused.value)
    assert "only finished sweeps" in message and "nothing to resume" in message
    commands = re.findall(r"`(lrsweep report [^`]*)`", message)
    # one command per store, the latest sweep's first: both stores hold a sweep's results
    assert commands == [
        f"lrsweep report same-name --tracking-uri {first}",
        f"lrsweep report same-name --tracking-uri {second}",
    ]
    assert "(latest first)" in message
