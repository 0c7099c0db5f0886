"""Singular values before and after fine-tuning (sigma of W0 vs W_t) for one matrix, log scale, top-50.

One panel per run. Intruders among the top-k (stored ``max_cos`` < epsilon) are circled on the
fine-tuned spectrum, which shows the paper's observation that intruders sit among the LARGEST singular
values of the fine-tuned matrix (v1 §4; evolution over training in v1 Fig. 7).

    python experiments/fig_spectra.py <analysis_dir> --runs RUN [RUN ...] --matrix layer3.v --out results/figures
"""

from __future__ import annotations

import argparse
from pathlib import Path

import figdata
import figstyle
import numpy as np
import pandas as pd

from lora_vs_full import records
from lora_vs_full.cli._common import user_errors_exit
from lora_vs_full.errors import UserError

PAPER_FIGURE = "v1 §4 spectra before/after (companion to v1 Fig. 3/7)"


def spectra_table(
    analysis_dir: str | Path,
    runs: list[str],
    matrix: str,
    *,
    top: int = 50,
    k: int = records.HEADLINE_K,
    epsilon: float = records.HEADLINE_EPSILON,
) -> pd.DataFrame:
    """Drawn points: run, matrix, index (0-based, descending sigma), sigma_base, sigma_tuned,
    max_cos (NaN beyond the stored top vectors), intruder (index < k and max_cos < epsilon)."""
    if not runs:
        raise UserError("no runs given; pass --runs RUN [RUN ...] (run ids as in intruders.parquet)")
    frames = []
    for run in runs:
        s = figdata.load_spectra(analysis_dir, run, matrix)
        n = min(top, len(s["sigma_base"]), len(s["sigma_tuned"]))
        max_cos = np.full(n, np.nan)
        m = min(n, len(s["max_cos"]))
        max_cos[:m] = s["max_cos"][:m]
        idx = np.arange(n)
        frames.append(
            pd.DataFrame(
                {
                    "run": run,
                    "matrix": matrix,
                    "index": idx,
                    "sigma_base": s["sigma_base"][:n],
                    "sigma_tuned": s["sigma_tuned"][:n],
                    "max_cos": max_cos,
                    "intruder": (idx < k) & (max_cos < epsilon),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def plot_spectra(table: pd.DataFrame, labels: dict[str, str] | None = None):
    """Draw :func:`spectra_table`'s output; returns the Figure."""
    runs = list(dict.fromkeys(table["run"]))
    labels = labels or {r: r for r in runs}
    with figstyle.style():
        fig, axes = figstyle.panel_grid(len(runs), sharey=True)
        for ax, run in zip(axes, runs, strict=True):
            sub = table[table["run"] == run]
            x = sub["index"] + 1
            ax.plot(x, sub["sigma_base"], color="0.55", lw=1.2, label="pretrained $W_0$")
            ax.plot(x, sub["sigma_tuned"], color="tab:blue", lw=1.2, ls="--", label="fine-tuned $W_t$")
            intr = sub[sub["intruder"]]
            ax.plot(
                intr["index"] + 1, intr["sigma_tuned"], "o", mfc="none", mec="tab:red", ms=6, label="intruder"
            )
            ax.set_yscale("log")
            figstyle.plain_log_ticks(ax.yaxis)
            ax.set_xlabel("singular value index")
            ax.set_title(f"{labels.get(run, run)}\n{sub['matrix'].iloc[0]}")
        axes[0].set_ylabel("singular value σ")
        axes[0].legend(loc="upper right")
        fig.tight_layout()
    return fig


def make_spectra(
    analysis_dir: str | Path,
    runs: list[str],
    matrix: str,
    out_dir: str | Path,
    *,
    top: int = 50,
    k: int = records.HEADLINE_K,
    epsilon: float = records.HEADLINE_EPSILON,
    name: str | None = None,
) -> list[Path]:
    """Write ``spectra_<matrix>.{pdf,png,csv}`` (or ``<name>.*``); return the paths."""
    table = spectra_table(analysis_dir, runs, matrix, top=top, k=k, epsilon=epsilon)
    intruders = Path(analysis_dir) / "intruders.parquet"
    labels = figdata.run_labels(pd.read_parquet(intruders) if intruders.is_file() else None, runs)
    fig = plot_spectra(table, labels)
    title = f"Singular values of W0 and W_t, top-{top}, {matrix}"
    return figstyle.save(fig, table, out_dir, name or f"spectra_{matrix}", paper=PAPER_FIGURE, title=title)


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("analysis_dir")
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--matrix", required=True, help="canonical matrix id, e.g. layer3.v")
    ap.add_argument("--out", default="results/figures")
    ap.add_argument("--top", type=int, default=50)
    ap.add_argument("--k", type=int, default=records.HEADLINE_K)
    ap.add_argument("--epsilon", type=float, default=records.HEADLINE_EPSILON)
    args = ap.parse_args(argv)
    for p in make_spectra(
        args.analysis_dir, args.runs, args.matrix, args.out, top=args.top, k=args.k, epsilon=args.epsilon
    ):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
