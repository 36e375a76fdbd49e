"""Run every benchmark under ``scripts/bench/`` and write ``BENCHMARKS.md``.

Each benchmark runs in its own process (``python scripts/bench/bench_<name>.py --json``, plus
``--quick`` when given here), one after another so they never compete with each other for the
cores; its JSON result is collected and its table, targets, notes and exact command are written
to the output file, after a summary of every target. A benchmark that fails or times out is
reported as such and the others still run; the exit status is 1 when a benchmark run this
time failed a target or gave no result (the file is written either way), so a scheduled
``make bench`` shows it.

Run: ``python scripts/bench/run_all.py [--quick] [--out BENCHMARKS.md] [--only a,b] [--skip c]
[--keep]`` (``make bench`` runs the full set into ``BENCHMARKS.md``; ``--only x --keep``
reruns one benchmark and keeps the others' last results, kept under ``.lrsweep/bench/``;
``--only`` without ``--keep`` needs an ``--out`` of its own).
The output file's hand-kept log of earlier runs (its last section, :data:`RUN_LOG_HEADING`)
survives the rewrite.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE_DIR = REPO / ".lrsweep" / "bench"
GPU_RESULTS = HERE / "gpu_results"
"""The last GPU run's results (``scripts/bench/gpu_check.sh scripts/bench/gpu_results``), shown
in ``BENCHMARKS.md`` as measured: a CPU machine's ``make bench`` cannot time item 8."""

RUN_LOG_HEADING = "## Every run of items 1-3 and the earlier figures of the others"
"""The hand-kept log of earlier runs at the end of ``BENCHMARKS.md``: a rewrite keeps it, from
this heading to the end, so that one run's figures never hide the runs before it."""

ITEMS = {
    "learner_overhead": 1,
    "sweep_efficiency": 2,
    "logging_overhead": 3,
    "precompute": 4,
    "early_stopping": 5,
    "headline": 6,
    "data_pipeline": 7,
    "accelerator": 8,
    "fused_step": 0,
    "scale_sim": 0,
}
"""Each benchmark's item of issue 9 (0: none), for the rows of one that gave no result."""

# In the order; the scale simulation last (it is the longest).
BENCHMARKS = tuple(ITEMS)


def _run_in_own_group(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in a process group of its own; end the group's other processes when it
    exits, and the whole group on a timeout or an interrupt (Ctrl-C).

    A benchmark starts processes of its own (a pool of plain trial processes, Ray's workers);
    killing the benchmark alone left them running, idle or spinning, on the cores the next
    benchmark measures with (two such processes took ~12% of a core each for an hour). Its
    output goes to files, not pipes, which such a process would hold open.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=out, stderr=err, text=True, start_new_session=True
        )
        try:
            proc.wait(timeout=timeout_s)
        finally:
            if proc.poll() is None:  # timed out, or run_all itself interrupted
                _stop_group(proc)
            with contextlib.suppress(ProcessLookupError):  # and whatever is left of the group
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def _stop_group(proc: subprocess.Popen[str], grace_s: float = 10.0) -> None:
    """SIGTERM to ``proc``'s process group; wait up to ``grace_s`` for ``proc`` to exit."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)


def _exit_on_sigterm() -> None:
    """SIGTERM (``timeout``, ``kill``) unwinds as Ctrl-C does: the running benchmark's process
    group is ended on the way out (exit status 143)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _run_one(name: str, *, quick: bool, timeout_s: int) -> dict[str, Any]:
    script = HERE / f"bench_{name}.py"
    cmd = [sys.executable, str(script), "--json"] + (["--quick"] if quick else [])
    shown = f"python {script.relative_to(REPO)}" + (" --quick" if quick else "")
    print(f"[run_all] {shown}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    failed = {
        "benchmark": name,
        "item": ITEMS[name],
        "command": shown,
        "measured_at": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    try:
        proc = _run_in_own_group(cmd, timeout_s)
    except subprocess.TimeoutExpired:
        return failed | {
            "error": f"timed out after {timeout_s} s (a slower machine needs a larger --timeout-s)",
            "elapsed_s": time.perf_counter() - start,
        }
    elapsed = time.perf_counter() - start
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return failed | {"error": f"exit code {proc.returncode}:\n{tail}", "elapsed_s": elapsed}
    result: dict[str, Any] = json.loads(lines[-1])
    result["elapsed_s"] = elapsed  # measured_at: stamped by the benchmark (_common.Result)
    return result


def _verdict(result: dict[str, Any]) -> str:
    if "error" in result:
        return "ERROR"
    passed = result.get("passed")
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _gpu_section(folder: Path) -> list[str]:
    """The kept GPU results under ``folder`` as markdown (nothing when there are none)."""
    found = [json.loads(f.read_text(encoding="utf-8")) for f in sorted(folder.glob("*.json"))]
    if not found:
        return []
    found.sort(key=lambda r: (r.get("config", {}).get("image_size", 0), r.get("benchmark", "")))
    try:
        where = folder.relative_to(REPO)
    except ValueError:
        where = folder
    lines = [
        "",
        "## accelerator on a GPU (the last GPU run, not rerun by this one)",
        "",
        f"Kept in `{where}/` by `scripts/bench/gpu_check.sh {where}` on a CUDA machine and "
        "shown as recorded there; `make bench` on a machine without CUDA cannot time item 8. "
        "A record carrying fields no script writes (`ran_by`) was edited after its run: see "
        "the README's GPU section before trusting it.",
    ]
    for r in found:
        env = r.get("env", {})
        config = ", ".join(f"{k} {v}" for k, v in r.get("config", {}).items())
        lines += [
            "",
            r.get("markdown", "").replace("### ", "### GPU: ", 1),
            "",
            f"Settings: {config}. Command: `{r.get('command', '?')}` (measured "
            f"{r.get('measured_at', '?')} on {env.get('cuda', '?')}, torch "
            f"{env.get('torch', '?')}, {env.get('cpus', '?')} CPUs).",
        ]
    return lines


def _installed(package: str) -> str:
    """The installed version of ``package`` (for a header no benchmark's result filled in)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def kept_run_log(path: Path) -> str:
    """The run log of ``path`` (from :data:`RUN_LOG_HEADING` to the end), or "" when the file
    is missing or has none."""
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8")
    at = text.find("\n" + RUN_LOG_HEADING + "\n")
    return text[at + 1 :] if at >= 0 else ""


def render(
    results: list[dict[str, Any]],
    *,
    quick: bool,
    gpu_results: Path = GPU_RESULTS,
    run_log: str = "",
) -> str:
    """``BENCHMARKS.md``: environment, the summary of every target, each benchmark, the last
    GPU run's accelerator results when ``gpu_results`` holds any, then ``run_log`` (the earlier
    runs, kept by hand) when given."""
    env: dict[str, Any] = next((r["env"] for r in results if "env" in r), {})
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python scripts/bench/run_all.py --out BENCHMARKS.md`)"
        + (" with `--quick`: tiny settings, the figures mean little." if quick else "."),
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()}, "
        f"{env.get('cpus', os.cpu_count())} CPUs, torch {env.get('torch') or _installed('torch')}, "
        f"CUDA: {env.get('cuda') or 'none'}. The machine was shared: each benchmark's "
        "load average is given under its table.",
        "Every timed comparison is measured interleaved (A, B, B, A, ...) in one run and "
        "reported as the median of per-repetition ratios; items 5 and 6 are one seeded sweep "
        "each (epoch counts and error rates that repeat exactly). Rerun one benchmark with the "
        "command under its table.",
        "",
        "## Summary",
        "",
        "| item | benchmark | target | value | criterion | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        item = r.get("item", ITEMS.get(r["benchmark"], ""))
        if "error" in r:
            lines.append(f"| {item} | {r['benchmark']} | - | - | - | ERROR |")
            continue
        for t in r.get("targets", []):
            verdict = "n/a" if t["passed"] is None else ("PASS" if t["passed"] else "FAIL")
            name = str(t["name"]).replace("|", "\\|")
            lines.append(
                f"| {item or '-'} | {r['benchmark']} | {name} | {_cell(t['value'])} | "
                f"{t['op']} {t['threshold']:g} | {verdict} |"
            )
        if not r.get("targets"):
            lines.append(f"| {item or '-'} | {r['benchmark']} | (no target) | - | - | n/a |")
    for r in results:
        lines += ["", f"## {r['benchmark']}", ""]
        if "error" in r:
            lines += [f"**{_verdict(r)}**", "", "```", r["error"], "```"]
        else:
            lines.append(r["markdown"])
        lines += [
            "",
            f"Command: `{r.get('command', '?')}` ({r.get('elapsed_s', 0):.0f} s, measured "
            f"{r.get('measured_at', '?')}, 1-minute load average "
            f"{r.get('env', {}).get('load_avg_1m', '?')}).",
        ]
    lines += _gpu_section(gpu_results)
    text = "\n".join(lines) + "\n"
    return text + "\n" + run_log.rstrip("\n") + "\n" if run_log.strip() else text


def main() -> None:
    """Command line entry point: exit 0 when every benchmark run this time met its targets,
    1 when one failed a target or gave no result (the file is written either way), 2 for bad
    arguments."""
    p = _parser()
    args = p.parse_args()
    _exit_on_sigterm()
    names, skip = _checked_names(p, args)
    out: Path = args.out if args.out is not None else REPO / "BENCHMARKS.md"
    cache_file = args.cache_dir / ("results-quick.json" if args.quick else "results.json")
    cache = _kept_results(p, args, cache_file)
    ran = [] if args.render else names
    for name in ran:
        cache[name] = _run_one(name, quick=args.quick, timeout_s=args.timeout_s)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache, default=str), encoding="utf-8")
    shown = (
        names
        if not (args.keep or args.render)
        else [n for n in BENCHMARKS if n in cache and n not in skip]
    )
    if not shown:
        p.error(f"--render: {cache_file} holds no result of the benchmarks asked for")
    results = [cache[n] for n in shown]
    text = render(results, quick=args.quick, run_log=kept_run_log(out))
    out.write_text(text, encoding="utf-8")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    print(text)
    print(f"[run_all] wrote {out}", file=sys.stderr)
    _exit_1_unless_all_passed({name: _verdict(cache[name]) for name in ran})


def _parser() -> argparse.ArgumentParser:
    """The command line's options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny settings for every benchmark")
    p.add_argument("--out", type=Path, default=None, help="markdown output (default BENCHMARKS.md)")
    p.add_argument("--only", default="", help="comma-separated benchmark names to run")
    p.add_argument("--skip", default="", help="comma-separated benchmark names to leave out")
    p.add_argument(
        "--timeout-s",
        type=int,
        default=3600,
        help="per benchmark; a guard against a hang: the sweep efficiency benchmark takes ~13 min "
        "on a 2-core Intel Xeon, over 30 on a 2-core AMD EPYC (Zen 1)",
    )
    p.add_argument("--json-out", type=Path, default=None, help="also write every raw result")
    p.add_argument(
        "--render", action="store_true", help="run nothing: rewrite --out from the last results"
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="with --only: keep the other benchmarks' last results (from .lrsweep/bench) in "
        "the output, each with the command and time it was measured",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=CACHE_DIR,
        help="where the last results are kept for --keep and --render (default .lrsweep/bench)",
    )
    return p


def _checked_names(
    p: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[str], set[str]]:
    """The benchmarks to run, in their order, and those ``--skip`` leaves out; ``p.error`` (exit
    2) for an unknown name, a timeout below 1 s, nothing left to run, or ``--only`` / ``--skip``
    that would rewrite BENCHMARKS.md with only some benchmarks."""
    only = [x for x in args.only.split(",") if x]
    skip = {x for x in args.skip.split(",") if x}
    unknown = [x for x in [*only, *skip] if x not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    if args.timeout_s < 1:
        p.error(f"--timeout-s must be at least 1, but got {args.timeout_s}")
    names = [n for n in BENCHMARKS if n in (only or BENCHMARKS) and n not in skip]
    if not names and not args.render:
        p.error("--only / --skip leave no benchmark to run")
    if (only or skip) and not (args.keep or args.render) and args.out is None:
        p.error(
            "--only / --skip without --keep would rewrite BENCHMARKS.md with those benchmarks "
            "alone: add --keep (the others' last results stay) or give --out FILE"
        )
    return names, skip


def _kept_results(
    p: argparse.ArgumentParser, args: argparse.Namespace, cache_file: Path
) -> dict[str, Any]:
    """The last results kept in ``cache_file`` with ``--keep`` or ``--render``, else none;
    ``p.error`` for ``--render`` without any."""
    cache: dict[str, Any] = {}
    if args.render and not cache_file.is_file():
        p.error(
            f"--render: no results kept in {cache_file} (git keeps none: a run of run_all.py on "
            "this machine writes them); run the benchmarks first"
        )
    if (args.keep or args.render) and cache_file.is_file():
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    return cache


def _exit_1_unless_all_passed(verdicts: dict[str, str]) -> None:
    """Exit with status 1, naming them, when a benchmark run this time failed or gave no result."""
    bad = {v: [n for n, got in verdicts.items() if got == v] for v in ("FAIL", "ERROR")}
    if any(bad.values()):
        said = "; ".join(f"{v}: {', '.join(names)}" for v, names in bad.items() if names)
        print(f"[run_all] not every benchmark met its targets ({said})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
