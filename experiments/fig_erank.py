"""v1 Fig. 6 (v3 Fig. 14): effective rank of the update dW = W_t - W0 per layer, full FT vs LoRA ranks.

Roy-Vetterli effective rank (``erank_delta`` in matrices.parquet). Per run, the value of a layer is the mean
over its analysed modules (or one ``--module``); seeds are averaged. One panel per task, log y-axis
(full FT sits in the hundreds, LoRA near its rank), colours as in Fig. 5.

    python experiments/fig_erank.py <analysis_dir> --out results/figures [--module v]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import figdata
import figstyle
import pandas as pd

from lora_vs_full.cli._common import user_errors_exit

PAPER_FIGURE = "v1 Fig. 6 (v3 Fig. 14)"


def erank_table(
    matrices: str | Path | pd.DataFrame,
    *,
    module: str | None = None,
    runs: list[str] | None = None,
    tasks: list[str] | None = None,
) -> pd.DataFrame:
    """Plotted numbers: model, task, method, rank, alpha, lr, label, layer, module ('mean' or the one
    chosen), erank_delta (mean over modules, then over seeds), erank_min, erank_max (seed spread), n_seeds."""
    df = figdata.final_only(figdata.load_matrices(matrices))
    df = figdata.pick(df, "run", runs, what="matrices table")
    df = figdata.pick(df, "task", tasks, what="matrices table")
    df = figdata.pick(df, "module", module, what="matrices table")
    figdata.check_one_run_per_seed(df)
    keys = [*figdata.CURVE_COLUMNS, "layer"]
    per_run = df.groupby([*keys, "run"], dropna=False)["erank_delta"].mean().reset_index()
    curves = (
        per_run.groupby(keys, dropna=False)
        .agg(
            erank_delta=("erank_delta", "mean"),
            erank_min=("erank_delta", "min"),
            erank_max=("erank_delta", "max"),
            n_seeds=("run", "nunique"),
        )
        .reset_index()
        .assign(module=module or "mean")
    )
    curves = figdata.add_curve_labels(curves)
    cols = [
        *figdata.CURVE_COLUMNS,
        "label",
        "layer",
        "module",
        "erank_delta",
        "erank_min",
        "erank_max",
        "n_seeds",
    ]
    return figdata.sort_panels(figdata.curve_order(curves[cols])).reset_index(drop=True)


def plot_erank(table: pd.DataFrame):
    """Draw :func:`erank_table`'s output; returns the Figure."""
    table = table.assign(panel=figdata.panel_names(table))
    panels = list(dict.fromkeys(table["panel"]))
    colors = figstyle.rank_colors(table.loc[table["method"] != "full", "rank"].dropna())
    with figstyle.style():
        fig, axes = figstyle.panel_grid(len(panels))
        handles = {}
        for ax, panel in zip(axes, panels, strict=True):
            sub = table[table["panel"] == panel]
            for label in dict.fromkeys(sub["label"]):
                c = sub[sub["label"] == label].sort_values("layer")
                method, rank = c["method"].iloc[0], c["rank"].iloc[0]
                color = figstyle.FULL_COLOR if method == "full" else colors[int(rank)]
                (line,) = ax.plot(c["layer"], c["erank_delta"], "o-", ms=3, color=color, label=label)
                if c["n_seeds"].max() > 1:
                    ax.fill_between(c["layer"], c["erank_min"], c["erank_max"], color=color, alpha=0.15, lw=0)
                handles.setdefault(label, line)
            ax.set_yscale("log")
            figstyle.plain_log_ticks(ax.yaxis)
            ax.set_title(panel)
            ax.set_xlabel("layer")
            layers = sorted(sub["layer"].unique())
            ax.set_xticks(layers[:: max(1, len(layers) // 12)])
        module = table["module"].iloc[0]
        ylab = "effective rank of ΔW\n" + (
            "(mean over modules)" if module == "mean" else f"(module {module})"
        )
        for ax in axes[:: min(len(axes), 4)]:
            ax.set_ylabel(ylab)
        order = figdata.curve_order(table.drop_duplicates("label"))["label"]
        figstyle.legend(fig, {lab: handles[lab] for lab in order})  # global curve order
        fig.tight_layout()
    return fig


def make_erank(
    matrices: str | Path | pd.DataFrame,
    out_dir: str | Path,
    *,
    module: str | None = None,
    runs: list[str] | None = None,
    tasks: list[str] | None = None,
    name: str = "erank",
) -> list[Path]:
    """Write ``<name>.{pdf,png,csv}``; return the paths."""
    table = erank_table(matrices, module=module, runs=runs, tasks=tasks)
    title = "Effective rank of the fine-tuning update per layer" + (f" ({module})" if module else "")
    return figstyle.save(plot_erank(table), table, out_dir, name, paper=PAPER_FIGURE, title=title)


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("analysis_dir", help="directory written by lvf-analyze (holds matrices.parquet)")
    ap.add_argument("--out", default="results/figures")
    ap.add_argument("--module", help="one module (q, k, v, o, fc1, fc2, ...) instead of the mean")
    ap.add_argument("--tasks", nargs="+")
    ap.add_argument("--runs", nargs="+")
    ap.add_argument("--name", default="erank")
    args = ap.parse_args(argv)
    for p in make_erank(
        args.analysis_dir, args.out, module=args.module, runs=args.runs, tasks=args.tasks, name=args.name
    ):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
