"""``nightly-report.md`` / ``nightly-report.html``: the verdict, every figure, the trend plots.

The Markdown links the trend PNGs (``trends/<entry>--<figure>.png``, written beside it); the
HTML is self-contained, the same PNGs inline as base64. Both are logged on the night run.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sweeps.nightly._compare import Comparison, Status, Verdict
from sweeps.nightly._figures import FIGURE_NAMES, Figure
from sweeps.nightly._plots import plot_trend
from sweeps.nightly._reference import Reference

__all__ = [
    "HTML_FILE",
    "MARKDOWN_FILE",
    "TRENDS_DIR",
    "NightReport",
    "ReportDirError",
    "ReportFiles",
    "prepare_report_dir",
    "write_report",
]

MARKDOWN_FILE = "nightly-report.md"
HTML_FILE = "nightly-report.html"
TRENDS_DIR = "trends"
HEADERS = (
    "spec", "figure", "strategy", "baseline", "machine x", "tonight", "limit", "allowed", "status",
)  # fmt: skip
_CSS = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 8px}td.regressed{color:#b00;font-weight:bold}"
    "td.improved{color:#070}"
    "img{max-width:100%}.verdict{font-size:1.3em}"
)


@dataclass(frozen=True)
class NightReport:
    """Everything a night's report shows.

    Attributes:
        suite: The suite's name.
        night_run_id: The night's MLflow run.
        experiment: ``nightly/<suite>``.
        environment: The night's environment tags (date, commit, versions, machine).
        verdict: The verdict.
        baseline_run_ids: The night runs the baseline is the median of, newest first.
        trend: ``(label, figures)`` per night, oldest first, tonight last.
        overrides: ``--set`` overrides of this night, if any.
        what_if: Whether they make it a what-if night (never part of a baseline).
        notes: Lines about the baseline, e.g. an entry whose spec changed since some nights.
        compared: False for a night that ended (failed, interrupted) before its figures were
            compared with a baseline: the report says so instead of "no baseline".
        reference: The machine-speed reference timed as the night started, if any.
    """

    suite: str
    night_run_id: str
    experiment: str
    environment: Mapping[str, str]
    verdict: Verdict
    baseline_run_ids: Sequence[str]
    trend: Sequence[tuple[str, Mapping[str, float]]]
    overrides: Sequence[str] = ()
    what_if: bool = False
    notes: Sequence[str] = ()
    compared: bool = True
    reference: Reference | None = None


@dataclass(frozen=True)
class ReportFiles:
    """The files written: the two reports and the trend plots."""

    markdown: Path
    html: Path
    plots: tuple[Path, ...]


class ReportDirError(ValueError):
    """The report folder cannot be created or written (found before a night starts)."""


def prepare_report_dir(folder: str | Path) -> Path:
    """Create ``folder`` if needed, check that it can be written, and remove an earlier night's
    report from it (both reports and the trend PNGs), so that a night that crashes before its
    report is written never leaves the previous night's verdict there as if it were its own.

    Raises:
        ReportDirError: the folder cannot be created or written; the message names it.
    """
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".{MARKDOWN_FILE}.{os.getpid()}.probe"
        probe.write_bytes(b"")
        probe.unlink()
        for path in (out / MARKDOWN_FILE, out / HTML_FILE):
            path.unlink(missing_ok=True)
        trends = out / TRENDS_DIR
        if trends.is_dir():
            for png in trends.glob("*.png"):
                png.unlink()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ReportDirError(
            f"the report folder {str(out)!r} cannot be created or written ({reason}); give a "
            f"folder this user can write, or one that does not exist yet under one it can."
        ) from error
    return out


def write_report(report: NightReport, folder: str | Path) -> ReportFiles:
    """Draw the trend plots and write both reports into ``folder`` (created if needed).

    Each report file is written whole or not at all (a temporary file renamed over it): an
    interrupted write never leaves half a report.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    plots = _draw_trends(report, out / TRENDS_DIR)
    markdown = _write_whole(out / MARKDOWN_FILE, _markdown(report, plots, out))
    page = _write_whole(out / HTML_FILE, _html(report, plots))
    return ReportFiles(markdown, page, tuple(plots.values()))


def _write_whole(path: Path, text: str) -> Path:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _draw_trends(report: NightReport, folder: Path) -> dict[tuple[str, str], Path]:
    """One plot per (entry, figure) that tonight or any earlier night has."""
    keys = sorted({key for _, figures in report.trend for key in figures})
    groups: dict[tuple[str, str], list[Figure]] = {}
    for key in keys:
        figure = Figure.from_key(key, 0.0)
        if figure is not None:
            groups.setdefault((figure.entry, figure.name), []).append(figure)
    regressed = {(c.entry, c.name, c.strategy) for c in report.verdict.regressions}
    labels = [label for label, _ in report.trend]
    plots = {}
    order = {name: i for i, name in enumerate(FIGURE_NAMES)}
    for (entry, name), members in sorted(groups.items(), key=lambda g: (g[0][0], order[g[0][1]])):
        series = {
            (f.strategy or name): [figures.get(f.key) for _, figures in report.trend]
            for f in members
        }
        marked = [f.strategy or name for f in members if (entry, name, f.strategy) in regressed]
        path = folder / f"{entry}--{name}.png"
        plots[(entry, name)] = plot_trend(
            labels, series, title=f"{entry}: {name}", figure=name, path=path, regressed=marked
        )
    return plots


def _rows(verdict: Verdict) -> list[list[str]]:
    """One row per figure; a time figure judged relative to the machine-speed reference shows
    its raw baseline, the factor and the limit of the scaled baseline."""
    return [
        [
            c.entry,
            c.name,
            c.strategy or "",
            _num(c.scaling.raw_baseline if c.scaling else c.baseline),
            f"x{c.scaling.factor:.3g}" if c.scaling else "",
            _num(c.value),
            _num(c.limit),
            c.allowed,
            c.status.value,
        ]
        for c in verdict.comparisons
    ]


def _intro(report: NightReport) -> list[str]:
    env = report.environment
    n = len(report.baseline_run_ids)
    baseline = (
        f"median of the last {n} completed night{'s' if n != 1 else ''}: "
        + ", ".join(f"`{r}`" for r in report.baseline_run_ids)
        if n
        else "none: no earlier completed night of this suite ran tonight's specs (failed and "
        "what-if nights never count)"
        if report.compared
        else "not compared: the night ended before its figures were compared with earlier nights"
    )
    lines = [
        f"Night run `{report.night_run_id}` in MLflow experiment `{report.experiment}`; "
        f"date {env.get('nightly.date', '?')}, commit `{env.get('nightly.git_commit', '?')}`.",
        f"Baseline: {baseline}.",
    ]
    if report.reference is not None:
        lines.append(
            f"Machine-speed reference: {report.reference.seconds:.4g} s "
            f"({report.reference.describe()})."
        )
    if report.overrides:
        kind = "What-if night (never part of a baseline)" if report.what_if else "Night"
        lines.append(f"{kind} run with --set " + ", ".join(f"`{o}`" for o in report.overrides))
    return lines + list(report.notes)


def _problems(verdict: Verdict) -> list[str]:
    return [*verdict.failures, *(c.describe() for c in verdict.regressions)]


def _environment(report: NightReport) -> list[tuple[str, str]]:
    return sorted((k.removeprefix("nightly."), v) for k, v in report.environment.items())


def _markdown(report: NightReport, plots: Mapping[tuple[str, str], Path], root: Path) -> str:
    lines = [f"# Nightly benchmark: {report.suite}", "", f"**{report.verdict.summary()}**", ""]
    lines += [*_intro(report), ""]
    if _problems(report.verdict):
        lines += ["## Problems", "", *(f"- {p}" for p in _problems(report.verdict)), ""]
    lines += ["## Figures", "", _md_row(HEADERS), "|" + "---|" * len(HEADERS)]
    lines += [_md_row(row) for row in _rows(report.verdict)]
    lines += ["", "## Trends (last nights, tonight last)", ""]
    lines += [f"![{e}: {n}]({p.relative_to(root).as_posix()})" for (e, n), p in plots.items()]
    lines += ["", "## Environment", "", "| tag | value |", "|---|---|"]
    lines += [_md_row(pair) for pair in _environment(report)]
    return "\n".join(lines) + "\n"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _html(report: NightReport, plots: Mapping[tuple[str, str], Path]) -> str:
    esc = html.escape
    problems = "".join(f"<li>{esc(p)}</li>" for p in _problems(report.verdict))
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADERS)
    body = "".join(
        _html_row(row, c)
        for row, c in zip(_rows(report.verdict), report.verdict.comparisons, strict=True)
    )
    images = "".join(
        f'<figure><img alt="{esc(entry)}: {esc(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(path.read_bytes()).decode()}"/></figure>'
        for (entry, name), path in plots.items()
    )
    env = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in _environment(report))
    intro = "".join(f"<p>{esc(line)}</p>" for line in _intro(report))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>Nightly benchmark: {esc(report.suite)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Nightly benchmark: {esc(report.suite)}</h1>"
        f"<p class='verdict'><strong>{esc(report.verdict.summary())}</strong></p>{intro}"
        + (f"<h2>Problems</h2><ul>{problems}</ul>" if problems else "")
        + f"<h2>Figures</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<h2>Trends (last nights, tonight last)</h2>{images}"
        f"<h2>Environment</h2><table>{env}</table></body></html>"
    )


def _html_row(cells: Sequence[str], comparison: Comparison) -> str:
    marked = {Status.REGRESSED: "regressed", Status.IMPROVED: "improved"}.get(comparison.status)
    cls = f" class='{marked}'" if marked else ""
    return "<tr>" + "".join(f"<td{cls}>{html.escape(c)}</td>" for c in cells) + "</tr>"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
