"""Where the intruders are: layer x module heat map of intruder counts (k = 10, epsilon = 0.5) per run.

Supports the paper's per-matrix reading of v1 Fig. 5 (which layers/modules carry the intruder dimensions).
One panel per run, shared colour scale, each cell annotated with its count; grey = matrix not analysed.

    python experiments/fig_heatmap.py <analysis_dir> --runs RUN [RUN ...] --out results/figures
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

PAPER_FIGURE = "v1 Fig. 5 companion: intruders per layer x module (not a paper panel)"


def heatmap_table(
    intruders: str | Path | pd.DataFrame,
    runs: list[str],
    *,
    k: int = records.HEADLINE_K,
    epsilon: float = records.HEADLINE_EPSILON,
) -> pd.DataFrame:
    """Drawn cells: run, layer, module, matrix, n_intruders at (k, epsilon), final checkpoints only."""
    df = figdata.final_only(figdata.load_intruders(intruders))
    df = figdata.pick(df, "run", runs, what="intruders table")
    df = figdata.at_epsilon(figdata.at_k(df, k), epsilon)
    cols = ["run", "layer", "module", "matrix", "n_intruders"]
    return df[cols].sort_values(["run", "layer", "module"]).reset_index(drop=True)


def _module_order(modules) -> list[str]:
    known = [m for m in figdata.MODULE_ORDER if m in set(modules)]
    return known + sorted(set(modules) - set(known))


def plot_heatmap(
    table: pd.DataFrame, labels: dict[str, str] | None = None, *, k: int = 10, epsilon: float = 0.5
):
    """Draw :func:`heatmap_table`'s output; returns the Figure."""
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(table["run"]))
    labels = labels or {r: r for r in runs}
    modules = _module_order(table["module"].unique())
    layers = sorted(table["layer"].unique())
    vmax = max(1, int(table["n_intruders"].max()))
    cmap = plt.get_cmap("Reds").with_extremes(bad="0.85")  # grey = matrix not analysed
    with figstyle.style(), plt.rc_context({"axes.grid": False}):
        fig, axes = plt.subplots(
            1,
            len(runs),
            figsize=(0.45 * len(modules) * len(runs) + 1.6, 0.32 * len(layers) + 1.4),
            squeeze=False,
        )
        axes = list(axes.ravel())
        for ax, run in zip(axes, runs, strict=True):
            sub = table[table["run"] == run]
            grid = np.full((len(layers), len(modules)), np.nan)
            for _, row in sub.iterrows():
                grid[layers.index(row["layer"]), modules.index(row["module"])] = row["n_intruders"]
            im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
            for (i, j), v in np.ndenumerate(grid):
                if not np.isnan(v):
                    ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7,
                            color="white" if v > 0.6 * vmax else "black")  # fmt: skip
            ax.set_xticks(range(len(modules)), modules)
            ax.set_yticks(range(len(layers)), [str(x) for x in layers])
            ax.set_xlabel("module")
            total = int(np.nansum(grid))
            ax.set_title(f"{labels.get(run, run)}\n{total} intruders (k={k}, ε={epsilon:g})")
        axes[0].set_ylabel("layer")
        fig.colorbar(im, ax=axes, shrink=0.9, label="# intruders")
    return fig


def make_heatmap(
    intruders: str | Path | pd.DataFrame,
    runs: list[str],
    out_dir: str | Path,
    *,
    k: int = records.HEADLINE_K,
    epsilon: float = records.HEADLINE_EPSILON,
    name: str = "heatmap",
) -> list[Path]:
    """Write ``<name>.{pdf,png,csv}``; return the paths."""
    source = figdata.load_intruders(intruders)  # read once: the table and the panel labels
    table = heatmap_table(source, runs, k=k, epsilon=epsilon)
    fig = plot_heatmap(table, figdata.run_labels(source, runs), k=k, epsilon=epsilon)
    title = f"Intruder dimensions per layer and module (k={k}, eps={epsilon})"
    return figstyle.save(fig, table, out_dir, name, paper=PAPER_FIGURE, title=title)


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("analysis_dir")
    ap.add_argument("--runs", nargs="+", required=True, help="run ids, one panel each")
    ap.add_argument("--out", default="results/figures")
    ap.add_argument("--k", type=int, default=records.HEADLINE_K)
    ap.add_argument("--epsilon", type=float, default=records.HEADLINE_EPSILON)
    ap.add_argument("--name", default="heatmap")
    args = ap.parse_args(argv)
    for p in make_heatmap(
        args.analysis_dir, args.runs, args.out, k=args.k, epsilon=args.epsilon, name=args.name
    ):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
