"""One look for every figure, and the one way figures are saved.

``save(fig, data, out_dir, name, paper=...)`` writes three files atomically:
``<name>.pdf`` and ``<name>.png`` (with the reproduced paper version + figure in their metadata) and
``<name>.csv`` holding exactly the numbers drawn, so a figure can be re-checked or re-plotted without
the analysis tables. Colours: full fine-tuning is always black; LoRA ranks share one sequential colormap,
ordered by rank, so "r = 8" has the same colour in every figure of a set.

Figure scripts import this module as ``import figstyle`` (``experiments/`` is on ``sys.path`` when a script
there runs; tests and the notebook insert it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import matplotlib

# Scripts only write files, so Agg (no display needed). A backend chosen explicitly -- e.g. the inline
# backend a Jupyter kernel announces through MPLBACKEND -- is respected so notebooks can show figures.
if "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lora_vs_full.storage import atomic_write_with  # noqa: E402

PAPER = "Shuttleworth et al., LoRA vs Full Fine-tuning: An Illusion of Equivalence, arXiv 2410.21228"
FULL_COLOR = "black"
RANK_CMAP = "viridis"
# Upper end of viridis (yellow) is unreadable on white; use the dark-to-green part only.
_CMAP_RANGE = (0.0, 0.82)
PANEL_WIDTH = 3.4  # inches per panel: fits a two-column paper at 2 panels, a slide at 4
PANEL_HEIGHT = 2.8

STYLE = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.5,
    "legend.frameon": False,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,  # embed TrueType so text stays editable/searchable in the PDF
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Context in which every figure of the suite is drawn (rcParams restored afterwards)."""
    with plt.rc_context(STYLE):
        yield


def rank_colors(ranks: Iterable[int]) -> dict[int, tuple]:
    """Map each distinct LoRA rank to a colour, evenly spaced along the sequential colormap in rank order."""
    ranks = sorted({int(r) for r in ranks})
    cmap = plt.get_cmap(RANK_CMAP)
    lo, hi = _CMAP_RANGE
    pos = (
        np.linspace(lo, hi, len(ranks)) if len(ranks) > 1 else [lo] * len(ranks)
    )  # [] for full-FT-only tables
    return {r: cmap(p) for r, p in zip(ranks, pos, strict=True)}


def method_label(method: str, rank) -> str:
    """Legend text: ``full FT`` or ``LoRA r=8``."""
    if method == "full":
        return "full FT"
    return f"LoRA r={int(rank)}" if not pd.isna(rank) else "LoRA"


def panel_grid(n: int, *, max_cols: int = 4, sharey: bool = True, **kw):
    """``(fig, axes)`` with ``n`` panels in rows of at most ``max_cols``; unused axes are hidden."""
    ncols = min(n, max_cols)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(PANEL_WIDTH * ncols, PANEL_HEIGHT * nrows),
        sharey=sharey,
        squeeze=False,
        **kw,
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def legend(fig, handles: dict) -> None:
    """One legend for all panels (``handles``: label -> artist, in legend order): in an unused grid slot
    if :func:`panel_grid` left one, else to the right of the panels."""
    spare = [ax for ax in fig.axes if not ax.get_visible()]
    if spare:
        spare[0].set_visible(True)
        spare[0].axis("off")
        spare[0].legend(handles.values(), handles.keys(), loc="center left")
    else:
        fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5))


def save(
    fig,
    data: pd.DataFrame,
    out_dir: str | Path,
    name: str,
    *,
    paper: str,
    title: str,
) -> list[Path]:
    """Write ``<out_dir>/<name>.{pdf,png,csv}`` atomically and close ``fig``; return the three paths.

    ``paper`` names what is reproduced, e.g. ``"v1 Fig. 5 (v3 Fig. 4)"``; it goes into the PDF/PNG
    metadata together with ``title``. ``data`` must be the numbers actually drawn (long format).
    """
    out_dir = Path(out_dir)
    subject = f"{PAPER} -- {paper}"
    # CreationDate=None keeps the PDF byte-stable across reruns (no timestamp).
    pdf_meta = {"Title": title, "Subject": subject, "Creator": "lora-vs-full", "CreationDate": None}
    png_meta = {"Title": title, "Description": subject, "Software": "lora-vs-full (matplotlib)"}
    with style():  # savefig reads savefig.bbox/dpi from rcParams at save time, not at draw time
        paths = _save_all(fig, data, out_dir, name, pdf_meta, png_meta)
    plt.close(fig)
    return paths


def _save_all(fig, data, out_dir: Path, name: str, pdf_meta: dict, png_meta: dict) -> list[Path]:
    return [
        atomic_write_with(out_dir / f"{name}.pdf", lambda p: fig.savefig(p, format="pdf", metadata=pdf_meta)),
        atomic_write_with(out_dir / f"{name}.png", lambda p: fig.savefig(p, format="png", metadata=png_meta)),
        atomic_write_with(out_dir / f"{name}.csv", lambda p: data.to_csv(p, index=False)),
    ]


def plain_log_ticks(axis) -> None:
    """Label a log axis 0.5, 1, 2, 300 instead of 5x10^-1. When the view spans under two decades (so there
    would be at most two labelled powers of ten), the 2s and 5s of each decade are labelled too."""
    from matplotlib.ticker import FuncFormatter

    def minor_label(v, _):
        lo, hi = sorted(axis.get_view_interval())  # read at draw time, after autoscaling
        if v <= 0 or lo <= 0 or np.log10(hi / lo) >= 2:
            return ""
        mantissa = round(v / 10 ** np.floor(np.log10(v)), 6)
        return f"{v:g}" if mantissa in (2.0, 5.0) else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(minor_label))


def write_csv(data: pd.DataFrame, path: str | Path) -> Path:
    """A side table (e.g. the Fig. 5 headline) written atomically."""
    return atomic_write_with(Path(path), lambda p: data.to_csv(p, index=False))
