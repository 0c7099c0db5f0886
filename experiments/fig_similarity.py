"""Cosine-similarity matrices in the style of v1 Fig. 3: |U_tuned^T U_pretrained| over the top-N vectors.

One panel per run at the same matrix (e.g. full FT | LoRA r=1 | LoRA r=8). As in the paper, fine-tuned
singular vectors run along the x-axis and pretrained ones along the y-axis, so full fine-tuning shows a
near-diagonal and an intruder shows up as a blank column. Intruders among the top-k (max |cos| over ALL
pretrained vectors < epsilon, the stored ``max_cos``) are marked with a red triangle above their column.

    python experiments/fig_similarity.py <analysis_dir> --runs RUN1 RUN2 --matrix layer3.v --out results/figures
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

PAPER_FIGURE = "v1 Fig. 3 (similarity matrices; v3 Fig. 2)"
CMAP = "Blues"  # white = 0, so intruder columns read as blank, as in the paper


def similarity_table(
    analysis_dir: str | Path,
    runs: list[str],
    matrix: str,
    *,
    n: int = 10,
    k: int = records.HEADLINE_K,
    epsilon: float = records.HEADLINE_EPSILON,
) -> pd.DataFrame:
    """Long table of the drawn cells: run, matrix, tuned_index, pretrained_index (0-based, by singular value),
    abs_cos, max_cos (of the tuned vector over all pretrained vectors), intruder (tuned_index < k and
    max_cos < epsilon)."""
    if not runs:
        raise UserError("no runs given; pass --runs RUN [RUN ...] (run ids as in intruders.parquet)")
    frames = []
    for run in runs:
        s = figdata.load_spectra(analysis_dir, run, matrix)
        size = min(n, *s["similarity"].shape)
        sim = s["similarity"][:size, :size]
        max_cos = np.full(size, np.nan)
        top = min(size, len(s["max_cos"]))
        max_cos[:top] = s["max_cos"][:top]
        tuned, pre = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        intruder = (np.arange(size) < k) & (max_cos < epsilon)
        frames.append(
            pd.DataFrame(
                {
                    "run": run,
                    "matrix": matrix,
                    "tuned_index": tuned.ravel(),
                    "pretrained_index": pre.ravel(),
                    "abs_cos": sim.ravel(),
                    "max_cos": max_cos[tuned.ravel()],
                    "intruder": intruder[tuned.ravel()],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def plot_similarity(table: pd.DataFrame, labels: dict[str, str] | None = None):
    """Draw :func:`similarity_table`'s output, one panel per run; returns the Figure."""
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(table["run"]))
    labels = labels or {r: r for r in runs}
    with figstyle.style(), plt.rc_context({"axes.grid": False}):
        fig, axes = figstyle.panel_grid(len(runs), max_cols=4, sharey=False)
        for ax, run in zip(axes, runs, strict=True):
            sub = table[table["run"] == run]
            size = int(sub["tuned_index"].max()) + 1
            grid = np.zeros((size, size))
            grid[sub["pretrained_index"], sub["tuned_index"]] = sub["abs_cos"]  # rows = pretrained (y)
            im = ax.imshow(grid, cmap=CMAP, vmin=0, vmax=1, origin="upper", interpolation="nearest")
            cols = sub.loc[sub["intruder"], "tuned_index"].unique()
            ax.plot(cols, np.full(len(cols), -0.9), "v", color="tab:red", ms=5, clip_on=False)
            ax.set_ylim(size - 0.5, -1.4)  # room above row 0 for the intruder markers
            ticks = np.arange(0, size, max(1, size // 5))
            ax.set_xticks(ticks, [str(t + 1) for t in ticks])
            ax.set_yticks(ticks, [str(t + 1) for t in ticks])
            ax.set_xlabel("fine-tuned singular vector")
            ax.set_title(f"{labels.get(run, run)}\n{sub['matrix'].iloc[0]}: {len(cols)} intruder(s)")
            for spine in ax.spines.values():
                spine.set_visible(True)
        axes[0].set_ylabel("pretrained singular vector")
        fig.colorbar(im, ax=axes, shrink=0.8, label="|cos|")
    return fig


def make_similarity(
    analysis_dir: str | Path,
    runs: list[str],
    matrix: str,
    out_dir: str | Path,
    *,
    n: int = 10,
    k: int = records.HEADLINE_K,
    epsilon: float = records.HEADLINE_EPSILON,
    name: str | None = None,
) -> list[Path]:
    """Write ``similarity_<matrix>.{pdf,png,csv}`` (or ``<name>.*``); return the paths."""
    table = similarity_table(analysis_dir, runs, matrix, n=n, k=k, epsilon=epsilon)
    intruders = Path(analysis_dir) / "intruders.parquet"
    labels = figdata.run_labels(pd.read_parquet(intruders) if intruders.is_file() else None, runs)
    fig = plot_similarity(table, labels)
    title = (
        f"|cos| of top-{n} fine-tuned vs pretrained left singular vectors, {matrix} (k={k}, eps={epsilon})"
    )
    return figstyle.save(fig, table, out_dir, name or f"similarity_{matrix}", paper=PAPER_FIGURE, title=title)


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("analysis_dir")
    ap.add_argument("--runs", nargs="+", required=True, help="run ids, one panel each")
    ap.add_argument("--matrix", required=True, help="canonical matrix id, e.g. layer3.v")
    ap.add_argument("--out", default="results/figures")
    ap.add_argument("--n", type=int, default=10, help="top-N vectors shown (default: %(default)s)")
    ap.add_argument("--k", type=int, default=records.HEADLINE_K)
    ap.add_argument("--epsilon", type=float, default=records.HEADLINE_EPSILON)
    args = ap.parse_args(argv)
    for p in make_similarity(
        args.analysis_dir, args.runs, args.matrix, args.out, n=args.n, k=args.k, epsilon=args.epsilon
    ):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
