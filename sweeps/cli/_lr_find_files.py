"""``lrsweep lr-find``'s files: the plot (``--out``) and the curve (``--json``), checked before
the range test runs and written after it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and matplotlib load when the command runs, not for --help
    from trainers import LRFindResult


def save(curve: LRFindResult, out: Path, json_out: Path | None) -> None:
    """The plot in ``out``, and the curve as JSON in ``json_out`` when asked."""
    from trainers.plots import plot_lr_find

    plot_lr_find(curve, out)
    if json_out is not None:
        curve.to_json(json_out)


def kept(curve: LRFindResult | None, out: Path, json_out: Path | None) -> str:
    """Save a curve no rule could read (:func:`save`); say where, or ''."""
    if curve is None:
        return ""
    save(curve, out, json_out)
    if json_out is None:
        return f" The measured curve is plotted in {str(out)!r}."
    return (
        f" The measured curve is plotted in {str(out)!r} and saved in {str(json_out)!r} "
        "(LRFindResult.from_json(...).suggest(rule) reads it with another rule)."
    )


def _checked_output(option: str, target: Path, *, plot: bool) -> Path:
    """``target`` if the file can be written there, checked before the test runs.

    A plot path without a suffix gets ``.png``, the name matplotlib gives the file.

    Raises:
        FileNotFoundError: its folder does not exist.
        ValueError: it is a folder, its folder cannot be written (a probe file is made there
            and removed), or (a plot) its format is not one matplotlib writes here
            (``.pgf`` needs the TeX program matplotlib runs for it).
    """
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"{option} {str(target)!r}: the folder {str(target.parent)!r} does not exist."
        )
    if target.is_dir():
        example = target / ("lr_find.png" if plot else "lr_find.json")
        raise ValueError(f"{option} {str(target)!r} is a folder; give a file name, e.g. {example}.")
    try:  # a read-only folder: said now, not after the test (files are written beside it too)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".lrsweep-probe-"):
            pass
    except OSError as error:
        raise ValueError(
            f"{option} {str(target)!r}: cannot write in the folder {str(target.parent)!r} "
            f"({error.strerror or error}); give a path in a folder you can write to."
        ) from None
    if not plot:
        return target
    if not target.suffix:
        return target.with_name(target.name + ".png")
    from matplotlib import rcParams
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if target.suffix[1:].lower() not in formats:
        raise ValueError(
            f"{option} {str(target)!r}: matplotlib cannot write {target.suffix!r} files; end the "
            f"name with one of {', '.join('.' + name for name in sorted(formats))}."
        )
    texsystem = str(rcParams["pgf.texsystem"])
    if target.suffix.lower() == ".pgf" and shutil.which(texsystem) is None:
        raise ValueError(
            f"{option} {str(target)!r}: matplotlib writes .pgf files with {texsystem}, which is "
            "not installed; install a TeX system or end the name with .pdf, .svg or .png."
        )
    return target


def checked_outputs(out: Path, json_out: Path | None) -> tuple[Path, Path | None]:
    """The plot's and the curve's paths (:func:`_checked_output`), refused when they coincide."""
    out = _checked_output("--out", out, plot=True)
    if json_out is not None:
        json_out = _checked_output("--json", json_out, plot=False)
        if json_out.resolve() == out.resolve():
            raise ValueError(
                f"--json {str(json_out)!r} and --out name the same file; the curve would "
                "overwrite the plot. Give --json a name of its own, e.g. lr_find.json."
            )
    return out, json_out
