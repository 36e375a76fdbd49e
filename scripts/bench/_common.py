"""Shared helpers of the benchmarks: interleaved timing, medians, ratio tables and JSON results.

Every benchmark measures its two (or more) sides *interleaved*: A, B, B, A, A, B ... so that
load from other processes on a shared machine hits every side equally, then reports medians and
the median of the per-repetition ratios (each ratio taken between runs made back to back).

Every script takes ``--quick`` (tiny settings, seconds), ``--json`` (stdout carries only the
JSON result; the table goes to stderr), ``--out FILE`` and, where it uses them, ``--reps N`` and
``--threads N``, and prints its figures as a table. ``run_all.py`` collects the JSON results
into ``BENCHMARKS.md``.

Example:
    >>> times = interleaved({"a": lambda: None, "b": lambda: None}, reps=3, warmup=0)
    >>> sorted(times.wall)
    ['a', 'b']
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Measure:
    """Seconds one run took: wall clock and this process's CPU time (all its threads)."""

    wall_s: float
    cpu_s: float = float("nan")


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.measure`` (wall and process CPU seconds)."""

    def __enter__(self) -> Stopwatch:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.measure = Measure(time.perf_counter() - self._wall, time.process_time() - self._cpu)


Case = Callable[[], Measure | float | None]
"""One measured run: returns its own :class:`Measure` (or wall seconds), or None to be timed
from outside (the whole call)."""


@dataclass
class Timings:
    """Per-case lists of wall and CPU seconds, one entry per repetition, in run order."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1 (0 and negatives are refused, not defaulted)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {value}")
    return value


def positive_float(text: str) -> float:
    """An ``argparse`` type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, but got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, but got {value}")
    return value


def parser(
    description: str, *, reps: str | None = "5", threads: bool = True
) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares.

    ``reps`` is the help's text for the default repetitions (None: the benchmark takes no
    ``--reps``); ``threads=False``: it takes no ``--threads`` (its trials set their own).
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds, for smoke runs)")
    if reps is not None:
        p.add_argument(
            "--reps", type=positive_int, default=None, help=f"repetitions per side ({reps})"
        )
    if threads:
        p.add_argument(
            "--threads", type=positive_int, default=1, help="torch CPU threads (default 1)"
        )
    p.add_argument("--json", action="store_true", help="print only the JSON result on stdout")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    return p


def setup_torch(threads: int) -> None:
    """Fix torch's CPU threads (one per trial, as sweeps run them) and quiet its warnings."""
    import torch

    torch.set_num_threads(max(1, threads))


def interleaved(cases: Mapping[str, Case], *, reps: int, warmup: int = 1) -> Timings:
    """Run every case ``reps`` times, round-robin, alternating the order each round.

    Round ``i`` runs the cases in their given order when ``i`` is even and reversed when odd,
    so neither side always runs first (after a cold cache) or last. ``warmup`` rounds run first
    and are not recorded. A case returning None is timed around the whole call.

    CPU time (``time.process_time``, every thread of this process) is much less sensitive than
    wall time to other processes on a shared machine; with one torch thread it tracks the work
    done. Wall time is what the targets are judged on.
    """
    names = list(cases)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(warmup + reps):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            with Stopwatch() as sw:
                measured = cases[name]()
            if isinstance(measured, Measure):
                m = measured
            elif measured is None:
                m = sw.measure
            else:
                m = Measure(float(measured))
            if round_ >= warmup:
                wall[name].append(m.wall_s)
                cpu[name].append(m.cpu_s)
    return Timings(wall, cpu)


def median(values: Sequence[float]) -> float:
    """The median (NaN for an empty sequence)."""
    return statistics.median(values) if values else float("nan")


def paired_ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """``num[i] / den[i]`` for each repetition (runs made back to back)."""
    return [a / b for a, b in zip(num, den, strict=True) if b > 0 and not math.isnan(a / b)]


def max_diff(a: Sequence[float], b: Sequence[float]) -> float:
    """The largest per-step difference of two equally long loss curves (NaN when empty)."""
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=math.nan)


def spread(values: Sequence[float]) -> str:
    """``min..max`` of ``values`` as text, for the table."""
    if not values:
        return "-"
    return f"{min(values):.3g}..{max(values):.3g}"


@dataclass
class Target:
    """One pass/fail criterion: ``value <op> threshold``; ``judged=False`` shows the value against
    the criterion without a verdict (a figure the issue asks to report apart)."""

    name: str
    value: float | None
    op: str
    threshold: float
    passed: bool | None = None
    note: str = ""
    judged: bool = True

    def __post_init__(self) -> None:
        if self.judged and self.passed is None and self.value is not None:
            ops = {">=": self.value >= self.threshold, "<=": self.value <= self.threshold}
            self.passed = bool(ops[self.op])


@dataclass
class Result:
    """What a benchmark found: a table of rows, named figures and the targets they meet.

    Attributes:
        benchmark: Script stem, e.g. ``learner_overhead``.
        item: The issue's item number (0 for the scale simulation).
        title: One line saying what is compared.
        columns: Column names of :attr:`rows`.
        rows: The table (one list per row, same length as ``columns``).
        metrics: Named figures (ratios, seconds, counts).
        targets: The criteria of the issue and whether they pass.
        config: The settings measured (sizes, reps, threads).
        notes: Free text: what was skipped and why, where the time goes.
    """

    benchmark: str
    item: int
    title: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool | None:
        """True when every target passed, False when one failed, None when none was judged."""
        judged = [t.passed for t in self.targets if t.passed is not None]
        return all(judged) if judged else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, with the command, the environment and ``passed``."""
        data = asdict(self)
        data["passed"] = self.passed
        data["measured_at"] = time.strftime("%Y-%m-%d %H:%M %Z")
        data["command"] = "python " + " ".join(shlex.quote(a) for a in _relative_argv())
        data["env"] = environment()
        data["markdown"] = render(self)
        return data


def _relative_argv() -> list[str]:
    argv = list(sys.argv)
    try:
        argv[0] = str(Path(argv[0]).resolve().relative_to(REPO))
    except ValueError:
        pass
    return [a for a in argv if a not in ("--json",)]


def environment() -> dict[str, Any]:
    """Python, torch, CPU count, load average and device: the context of a figure."""
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        env["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return env


def fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits, the rest as text."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (readable in a terminal too)."""
    cells = [[fmt(c).replace("|", "\\|") for c in row] for row in rows]
    columns = [str(h).replace("|", "\\|") for h in columns]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(columns)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(columns, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join([line, rule, *body])


def targets_table(targets: Sequence[Target]) -> str:
    """The targets as a markdown table: value, criterion, PASS / FAIL / n/a."""
    rows = []
    for t in targets:
        verdict = "n/a" if t.passed is None else ("PASS" if t.passed else "FAIL")
        rows.append([t.name, t.value, f"{t.op} {t.threshold:g}", verdict, t.note])
    return table(["target", "value", "criterion", "verdict", "note"], rows)


def render(result: Result) -> str:
    """The result as markdown: title, table, targets, notes."""
    parts = [f"### {result.item}. {result.title}" if result.item else f"### {result.title}"]
    if result.rows:
        parts.append(table(result.columns, result.rows))
    if result.targets:
        parts.append(targets_table(result.targets))
    if result.notes:
        parts.append("\n".join(f"- {n}" for n in result.notes))
    return "\n\n".join(parts)


def emit(result: Result, args: argparse.Namespace) -> None:
    """Print the table (to stderr with ``--json``: the JSON goes alone to stdout); write --out."""
    text = render(result)
    data = result.to_dict()
    if args.json:
        print(text, file=sys.stderr)
        print(json.dumps(data, default=_json_default))
    else:
        print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=2, default=_json_default), encoding="utf-8")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def main(
    run: Callable[[argparse.Namespace], Result],
    doc: str | None,
    *,
    reps: str | None,
    threads: bool = True,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse the shared options (plus ``extra``'s), run the benchmark and emit its result.

    ``reps``: the help's text for the default repetitions, e.g. ``"default 15, quick 3"``, or
    None for a benchmark without repetitions; ``threads=False`` for one whose trials set their
    own threads (neither option is offered to be ignored).

    With ``--json`` everything printed while it runs (Ray's worker logs included) goes to stderr,
    so stdout carries the JSON result alone.
    """
    p = parser((doc or "").strip().splitlines()[0], reps=reps, threads=threads)
    if extra is not None:
        extra(p)
    args = p.parse_args()
    if args.json:
        with contextlib.redirect_stdout(sys.stderr):
            result = run(args)
    else:
        result = run(args)
    emit(result, args)


def temp_dir(prefix: str) -> Path:
    """A fresh folder under ``.lrsweep/bench`` (ignored by git) for stores and Ray results.

    Removed when the process exits (sweeps with checkpoints leave gigabytes), unless
    ``LRSWEEP_BENCH_KEEP=1`` is set to inspect them.
    """
    root = REPO / ".lrsweep" / "bench"
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    if os.environ.get("LRSWEEP_BENCH_KEEP") != "1":
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def log(message: str) -> None:
    """Progress line on stderr (never mixes with ``--json`` output)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
