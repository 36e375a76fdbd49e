"""Smoke test of the benchmark harness: a benchmark runs and emits its JSON result.

Benchmarks are never timed in unit tests (timings on a shared machine are noise); this checks
only that the quickest one runs end to end and that its output has the fields ``run_all.py``
and ``BENCHMARKS.md`` rely on.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench" / "bench_learner_overhead.py"


def _quick_json(script: Path, *args: str) -> dict[str, Any]:
    """Run a benchmark script with ``--quick --json`` and return its JSON result."""
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_learner_overhead_quick_emits_a_json_result() -> None:
    result = _quick_json(SCRIPT, "--reps", "1")
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


def test_fused_step_quick_compares_the_same_fit_with_both_steps() -> None:
    result = _quick_json(SCRIPT.parent / "bench_fused_step.py")
    assert result["benchmark"] == "fused_step"
    (model,) = result["metrics"]["models"]
    assert model["arch"] == "simple_cnn" and model["speedup"] > 0
    assert set(model["step_ms"]) == {"default", "fused"}
    assert 0 <= model["first_steps_diff"] < 1e-4  # the same maths, another float rounding
    assert 0 <= model["control_diff"] < 1e-2
    assert "| model " in result["markdown"] and "fit speedup" in result["markdown"]


def test_accelerator_cpu_check_compares_the_first_batch_and_passes_bf16() -> None:
    """Item 8's CPU check: every variant's first batch (same weights) within 2% of fp32's.

    The epoch's mean train loss of bf16 is 0.3-0.7 away from fp32's (Adam's first step takes
    the sign of near-zero gradients from bf16's rounding), which the previous check compared
    and reported as a mismatch; the first batch is what bf16 must get right.
    """
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_accelerator as bench
        import torch

        from trainers import build_model, seed_everything

        torch.set_num_threads(1)
        seed_everything(0)
        template = build_model("simple_cnn", 3, in_channels=3)  # resnet18 takes ~45 s here
        rows = bench._check_cpu(template, compile_check=False)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    checked = {row[0]: row for row in rows if row[1] != "-"}
    assert set(checked) == {"fp32", "bf16", "bf16 + channels_last"}
    assert checked["fp32"][2] == 0.0
    for name, first, diff, train_loss, valid_loss, check in checked.values():
        assert check == "ok", (name, first, diff)
        assert 0 < diff <= bench.FIRST_BATCH_TOLERANCE or name == "fp32"
        assert all(v == v and abs(v) < 1e3 for v in (train_loss, valid_loss))
    assert [row[-1] for row in rows if row[1] == "-"] == [
        "skipped (--compile-check compiles, ~1 min)"
    ]


def _bench_module(name: str) -> Any:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPT.parent))


def test_gpu_sharing_harness_times_trial_processes_at_once_and_reports_a_failure() -> None:
    """Item 8's GPU sharing, on the CPU: k spawned trial processes released by one barrier.

    The timing means nothing here (two processes on two cores); what is checked is that every
    round is timed, and that a process that fails names itself and its error instead of
    leaving the others waiting at the barrier.
    """
    bench = _bench_module("bench_accelerator")
    small = {"image_size": 16, "batch_size": 32, "n_per_class": 20, "epochs": 1}
    found = bench._time_sharing(2, device="cpu", variant="fp32", reps=2, **small)
    assert len(found["wall"]) == 2 and all(0 < wall < 120 for wall in found["wall"])
    assert found["max_memory_bytes"] == [0, 0]  # CUDA memory only
    with pytest.raises(RuntimeError, match=r"trial process 0 failed:(.|\n)*amp='bf16' on the CPU"):
        bench._time_sharing(1, device="cpu", variant="bf16", reps=1, timeout_s=120, **small)


def test_gpu_sharing_harness_reports_a_process_that_died_without_a_word() -> None:
    """A trial process killed (or unable to import its target) sends nothing: the parent must
    name it at once instead of waiting for the round's deadline."""
    bench = _bench_module("bench_accelerator")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=os._exit, args=(3,))
    proc.start()
    proc.join(timeout=60)
    with pytest.raises(RuntimeError, match=r"trial process 0 exited with code 3 before round 0"):
        bench._collect(results, [proc], "ready", 0, deadline=time.monotonic() + 600)


def test_benchmarks_md_names_torch_when_every_benchmark_errored(tmp_path: Path) -> None:
    """The header's torch version comes from the results; with none, from the installed one."""
    run_all = _bench_module("run_all")
    failed = [{"benchmark": "sweep_efficiency", "item": 2, "error": "timed out"}]
    text = run_all.render(failed, quick=False, gpu_results=tmp_path)
    assert f"torch {importlib.metadata.version('torch')}, " in text
    assert "| 2 | sweep_efficiency | - | - | - | ERROR |" in text


def test_benchmarks_md_shows_the_kept_gpu_results(tmp_path: Path) -> None:
    run_all = _bench_module("run_all")
    assert run_all.render([], quick=False, gpu_results=tmp_path).count("on a GPU") == 0
    kept = json.loads((run_all.GPU_RESULTS / "accel_64.json").read_text(encoding="utf-8"))
    assert kept["env"]["cuda"] and kept["metrics"]["sharing_k"] == 4
    for size in (224, 64):
        result = dict(kept, config=dict(kept["config"], image_size=size))
        (tmp_path / f"accel_{size}.json").write_text(json.dumps(result), encoding="utf-8")
    text = run_all.render([], quick=False, gpu_results=tmp_path)
    section = text[text.index("## accelerator on a GPU") :]
    assert section.index("image_size 64") < section.index("image_size 224")
    assert section.count("### GPU: 8. Accelerator path") == 2
    assert f"on {kept['env']['cuda']}, torch {kept['env']['torch']}" in section
    assert "| 4 trials at once" in section


def test_rewriting_benchmarks_md_keeps_its_run_log(tmp_path: Path) -> None:
    """The hand-kept log of earlier runs at the end of ``BENCHMARKS.md`` survives a rewrite;
    a file without one gets none, and an old run's figures above it are replaced."""
    run_all = _bench_module("run_all")
    out = tmp_path / "BENCHMARKS.md"
    log = f"{run_all.RUN_LOG_HEADING}\n\n- **2, sweep_efficiency**: 2026-12-06 08:19 1.034 PASS\n"
    out.write_text(f"# Benchmarks\n\nthe old run: 9.999x\n\n{log}", encoding="utf-8")
    kept = {"learner_overhead": {"benchmark": "learner_overhead", "item": 1, "error": "x"}}
    (tmp_path / "results.json").write_text(json.dumps(kept), encoding="utf-8")
    cmd = [
        sys.executable,
        str(SCRIPT.parent / "run_all.py"),
        "--render",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path),
    ]
    for _ in range(2):  # twice: the kept log is not doubled
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=60)
        text = out.read_text(encoding="utf-8")
        assert text.startswith("# Benchmarks\n\nWritten by `make bench`")
        assert "9.999x" not in text
        assert text.endswith("\n\n" + log) and text.count(run_all.RUN_LOG_HEADING) == 1
    out.write_text("# Benchmarks\n\nno log here\n", encoding="utf-8")
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=60)
    assert run_all.RUN_LOG_HEADING not in out.read_text(encoding="utf-8")
    assert run_all.kept_run_log(tmp_path / "missing.md") == ""


def _run_all(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT.parent / "run_all.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_run_all_refuses_to_wipe_benchmarks_md(tmp_path: Path) -> None:
    """``--render`` with no kept results (a fresh clone: git keeps none) and ``--only`` without
    ``--keep`` into the default file both rewrote BENCHMARKS.md without every other result."""
    before = (REPO / "BENCHMARKS.md").read_bytes()
    empty = _run_all("--render", "--cache-dir", str(tmp_path), "--out", str(tmp_path / "r.md"))
    assert empty.returncode == 2 and "--render: no results kept in" in empty.stderr
    assert not (tmp_path / "r.md").exists()
    only = _run_all("--only", "data_pipeline", "--cache-dir", str(tmp_path))
    assert only.returncode == 2 and "add --keep" in only.stderr
    none = _run_all("--skip", ",".join(_bench_module("run_all").BENCHMARKS), "--out", "x.md")
    assert none.returncode == 2 and "leave no benchmark to run" in none.stderr
    assert (REPO / "BENCHMARKS.md").read_bytes() == before


def test_run_all_exits_1_when_a_benchmark_gives_no_result(tmp_path: Path) -> None:
    """A benchmark that timed out (for real: a 1 s limit) is an ERROR row and exit status 1,
    with its item number; `make bench` exited 0 whatever happened."""
    out = tmp_path / "b.md"
    args = ("--quick", "--only", "data_pipeline", "--timeout-s", "1", "--out", str(out))
    done = _run_all(*args, "--cache-dir", str(tmp_path))
    assert done.returncode == 1, done.stderr
    assert "not every benchmark met its targets (ERROR: data_pipeline)" in done.stderr
    text = out.read_text(encoding="utf-8")
    assert "| 7 | data_pipeline | - | - | - | ERROR |" in text
    assert "timed out after 1 s" in text and "(0 s, measured ?" not in text


def test_sweep_schedule_factors_multiply_to_the_ratio_and_find_the_idle_tail() -> None:
    sweep_eff = _bench_module("bench_sweep_efficiency")
    # two slots: a 10 s and a 2 s trial from 0 s, then a 6 s trial from 2 s; 1 s inside each
    # run is not training; the plain trials take 15 s together
    runs = [(100.0, 110.0, 9.0), (100.0, 102.0, 1.0), (102.0, 108.0, 5.0)]
    f = sweep_eff.schedule_factors(runs, steady_s=11.0, plain_s=15.0, slots=2)
    assert f["span_s"] == pytest.approx(10.0)
    assert f["edges"] == pytest.approx(11.0 / 10.0)
    assert f["packing"] == pytest.approx(10.0 / 9.0)  # 18 run-seconds on 2 slots: 9 s at best
    assert f["lpt"] == pytest.approx(10.0 / 9.0)  # 10 | 6 + 2: the 10 s trial sets the span
    assert f["in_run"] == pytest.approx(18.0 / 15.0)
    assert f["training"] == pytest.approx(15.0 / 15.0)
    assert f["in_run_per_trial_s"] == pytest.approx(1.0)
    product = f["edges"] * f["packing"] * f["in_run"] * f["training"]
    assert product == pytest.approx(11.0 / (15.0 / 2))  # the sweep's ratio to the ideal
    # longest first is not always the best packing: 5+3 | 4+3+3 is 10 where 5+4 | 3+3+3 is 9
    assert sweep_eff.lpt_makespan([5, 4, 3, 3, 3], 2) == pytest.approx(10.0)


_LEAVES_A_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(str(child.pid))
print("started", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.mark.parametrize("runs_for_s", [600.0, 0.0], ids=["timed-out", "exited"])
def test_run_all_ends_what_a_benchmark_started(tmp_path: Path, runs_for_s: float) -> None:
    """A benchmark's own processes (its plain trial pool) do not outlive it under ``run_all``:
    killing the benchmark alone on a timeout left them on the cores for the next benchmark."""
    run_all = _bench_module("run_all")
    pid_file = tmp_path / "child.pid"
    cmd = [sys.executable, "-c", _LEAVES_A_CHILD, str(pid_file), str(runs_for_s)]
    if runs_for_s:
        with pytest.raises(subprocess.TimeoutExpired):
            run_all._run_in_own_group(cmd, timeout_s=10)
    else:
        proc = run_all._run_in_own_group(cmd, timeout_s=60)
        assert (proc.returncode, proc.stdout) == (0, "started\n")
    assert _gone(int(pid_file.read_text()))


def test_run_all_stopped_by_sigterm_ends_the_running_benchmark(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    runner = (
        "import sys; sys.path.insert(0, sys.argv[1]); import run_all; run_all._exit_on_sigterm(); "
        "run_all._run_in_own_group([sys.executable, '-c', sys.argv[2], sys.argv[3], '600'], 600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", runner, str(SCRIPT.parent), _LEAVES_A_CHILD, str(pid_file)]
    )
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.terminate()
    assert proc.wait(timeout=60) == 143
    assert _gone(int(pid_file.read_text()))


def test_gpu_check_without_cuda_stops_and_writes_nothing(tmp_path: Path) -> None:
    """It ran the CPU check, exited 0 and wrote it as GPU results over the kept ones."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    kept = tmp_path / "accel_64.json"
    kept.write_text("{}", encoding="utf-8")
    done = subprocess.run(
        ["bash", str(SCRIPT.parent / "gpu_check.sh"), str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "no CUDA device here" in done.stderr and f"Nothing was written to {tmp_path}" in done.stderr
    )
    assert [p.name for p in tmp_path.iterdir()] == ["accel_64.json"]
    assert kept.read_text(encoding="utf-8") == "{}"
