"""Smoke test of the benchmark harness: a benchmark runs and emits its JSON result.

Benchmarks are never timed in unit tests (timings on a shared machine are noise); this checks
only that the quickest one runs end to end and that its output has the fields ``run_all.py``
and ``BENCHMARKS.md`` rely on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench" / "bench_learner_overhead.py"


def test_learner_overhead_quick_emits_a_json_result() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", "--reps", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["benchmark"] == "learner_overhead"
    assert result["item"] == 1
    assert {"samples_per_s_ratio", "cpu_time_ratio", "max_step_loss_diff"} <= set(result["metrics"])
    assert result["metrics"]["max_step_loss_diff"] == 0.0
    wall = result["targets"][0]
    assert {"name", "value", "op", "threshold", "passed"} <= set(wall)
    assert wall["op"] == ">=" and wall["threshold"] == 0.97
    assert "| Learner / hand-loop samples/s (wall)" in result["markdown"]
    assert result["command"].startswith("python scripts/bench/bench_learner_overhead.py")
    assert result["columns"] and all(len(r) == len(result["columns"]) for r in result["rows"])
