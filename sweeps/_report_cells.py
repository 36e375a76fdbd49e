"""How a sweep report's tables are written: headers, cells (numbers, percentages, mean ± std),
Markdown and CSV, and JSON rows."""

from __future__ import annotations

import csv
import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeps._report_rows import GroupRow, TrialRow

CSS = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}"
)
GROUP_HEADERS = (
    "strategy",
    "seeds",
    "chosen LR (median)",
    "best valid loss",
    "error rate",
    "regret",
    "regret (error pp)",
    "trials",
    "epochs run",
    "compute s",
    "compute vs grid",
)
TRIAL_HEADERS = (
    "run",
    "strategy",
    "seed",
    "lr",
    "stop",
    "best epoch",
    "diagnosis",
    "best valid loss",
    "error rate",
    "epochs",
    "compute s",
)


SCIENTIFIC_FROM = 1e6
"""Magnitude from which a fixed-point cell (``.4f``) is written ``3.828e+30``: a trial that
blew up keeps its best epoch's loss, which fixed point writes as dozens of digits."""


def _cell(value: float, spec: str) -> str:
    """``value`` in ``spec``; a fixed-point spec switches to 4 significant digits in
    scientific notation from :data:`SCIENTIFIC_FROM` on."""
    if spec.endswith("f") and abs(value) >= SCIENTIFIC_FROM:
        return format(value, ".3e")
    return format(value, spec)


def _fmt(value: float, spec: str = ".4f") -> str:
    return _cell(value, spec) if math.isfinite(value) else "-"


def _percent(fraction: float) -> str:
    """An error rate as the strategy table shows it (``1.67%``)."""
    return f"{100 * fraction:.2f}%" if math.isfinite(fraction) else "-"


def _mean_std(mean: float, std: float, spec: str, unit: str = "") -> str:
    """``mean ± std``; the mean alone without a spread (one seed), ``-`` without a mean (no
    trial of the group counts)."""
    if not math.isfinite(mean):
        return "-"
    spread = f" ± {_cell(std, spec)}" if math.isfinite(std) else ""
    return f"{_cell(mean, spec)}{unit}{spread}"


TTA_HEADER = "error rate (TTA)"


def with_tta(headers: tuple[str, ...], tta: bool) -> tuple[str, ...]:
    """``headers`` with :data:`TTA_HEADER` after "error rate" when ``tta``."""
    if not tta:
        return headers
    at = headers.index("error rate") + 1
    return (*headers[:at], TTA_HEADER, *headers[at:])


def group_cells(r: GroupRow, tta: bool = False) -> list[str]:
    return [
        r.group,
        f"{r.n_seeds}/{r.n_seeds_run}",
        _fmt(r.chosen_lr, ".2e"),
        _mean_std(r.valid_loss_mean, r.valid_loss_std, ".4f"),
        _mean_std(100 * r.error_rate_mean, 100 * r.error_rate_std, ".2f", unit="%"),
        *([_percent(r.tta_error_rate_mean)] if tta else []),
        _fmt(r.regret),
        _fmt(r.regret_error_pp, ".2f"),
        str(r.n_trials),
        str(r.epochs_run),
        _fmt(r.compute_s, ".1f"),
        _fmt(r.compute_vs_grid, ".2f"),
    ]


def trial_cells(t: TrialRow, tta: bool = False) -> list[str]:
    return [
        t.run_id[:8],
        t.group,
        str(t.seed),
        _fmt(t.lr, ".2e"),
        t.stop_reason,
        "" if t.best_epoch is None else str(t.best_epoch),
        t.diagnosis,
        _fmt(t.best_valid_loss),
        _percent(t.best_error_rate),
        *([_percent(t.best_tta_error_rate)] if tta else []),
        str(t.epochs_run),
        _fmt(t.compute_s, ".1f"),
    ]


def md_table(headers: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return out + ["| " + " | ".join(row) + " |" for row in rows]


def csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def json_row(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    """``row``'s ``columns``, a NaN or infinite number as ``None``."""
    return {
        key: None if isinstance(row[key], float) and not math.isfinite(row[key]) else row[key]
        for key in columns
    }
