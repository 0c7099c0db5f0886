"""How intruders appear during training (PAPER.md §2): a LoRA run beside full FT, every saved checkpoint.

Reads ``results/tables/evolution-<preset>/steps.csv`` (per run x step, over the analysed matrices; written by
``lvf-reproduce evolution``, lora_vs_full/reproduce/evolution.py, from ``evolution.csv``: one row per step x
matrix). Four panels against the training step: (a) intruder dimensions at (k, epsilon) summed over the
matrices; (b) the top intruder's singular value (mean over the matrices that have one) with the mean largest
singular value dashed for scale; (c) its position among the tuned singular values (median over matrices,
1 = the top); (d) its max |cos| to the pretrained vectors (mean; lower = further from every pretrained
direction). Full FT is black; matrices without an intruder at a step do not enter (b)-(d). Several seeds:
the mean with a Student-t band across seeds.

    python experiments/fig_evolution.py --preset offline   # -> results/figures/evolution-offline/evolution.{png,pdf,csv}
"""

from __future__ import annotations

import argparse
import json

import figstyle
import pandas as pd

from lora_vs_full import layout
from lora_vs_full.cli._common import user_errors_exit
from lora_vs_full.errors import UserError

PAPER_FIGURE = "PAPER.md §2: evolution of intruders over training (appendix)"
PANELS = (
    ("n_intruders", "# intruders (sum over matrices)"),
    ("top_sigma_mean", "top intruder's singular value"),
    ("top_rank_median", "top intruder's rank among tuned sigmas"),
    ("top_max_cos_mean", "top intruder's max |cos| to W0"),
)


def load(preset: str) -> tuple[pd.DataFrame, dict]:
    d = layout.tables_dir(f"evolution-{preset}")
    if not (d / "steps.csv").is_file() or not (d / "summary.json").is_file():
        raise UserError(
            f"{d} has no steps.csv/summary.json: produce it with make reproduce-evolution PRESET={preset} "
            "DATA_DIR=../shared/data/raw"
        )
    return pd.read_csv(d / "steps.csv"), json.loads((d / "summary.json").read_text())["meta"]


def across_seeds(steps: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method, rank, step): each panel's mean over seeds with a Student-t interval (NaN width with
    one seed) -- the drawn numbers."""
    from lora_vs_full import stats

    rows = []
    cols = [c for c, _ in PANELS] + ["sigma_1_mean"]
    for (task, method, rank, step), g in steps.groupby(
        ["task", "method", "rank", "step"], dropna=False, sort=True
    ):
        row = {"task": task, "method": method, "rank": rank, "step": step, "n_seeds": g["seed"].nunique()}
        for c in cols:
            est = stats.t_interval(g[c])
            row.update({c: est.mean, f"{c}_low": est.low, f"{c}_high": est.high})
        rows.append(row)
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, meta: dict):
    import matplotlib.pyplot as plt

    with figstyle.style():
        fig, axes = plt.subplots(1, 4, figsize=(4 * figstyle.PANEL_WIDTH * 0.85, figstyle.PANEL_HEIGHT))
        colors = figstyle.rank_colors(table.loc[table["method"] != "full", "rank"].dropna())
        for (_task, method, rank), g in table.groupby(["task", "method", "rank"], dropna=False, sort=False):
            g = g.sort_values("step")
            color = figstyle.FULL_COLOR if method == "full" else colors[int(rank)]
            name = figstyle.method_label(method, rank) + (
                f" ({g['n_seeds'].max()} seeds)" if g["n_seeds"].max() > 1 else ""
            )
            for ax, (col, ylabel) in zip(axes, PANELS, strict=True):
                ax.plot(g["step"], g[col], marker="o", ms=3, color=color, label=name)
                if g["n_seeds"].max() > 1:
                    ax.fill_between(
                        g["step"], g[f"{col}_low"], g[f"{col}_high"], color=color, alpha=0.15, lw=0
                    )
                if col == "top_sigma_mean":
                    ax.plot(g["step"], g["sigma_1_mean"], ls="--", lw=0.8, color=color)
                ax.set_xlabel("training step")
                ax.set_ylabel(ylabel)
        axes[0].set_title(f"k={meta['k']}, eps={meta['epsilon']}", fontsize="small")
        axes[1].set_title("dashed: mean largest sigma", fontsize="small")
        axes[2].invert_yaxis()  # rank 1 at the top
        axes[0].legend(fontsize="small")
        fig.tight_layout()
    return fig


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="offline", help="offline | paper (results/tables/evolution-<preset>)")
    args = ap.parse_args(argv)
    steps, meta = load(args.preset)
    out = layout.figures_dir(f"evolution-{args.preset}")
    table = across_seeds(steps)
    paths = figstyle.save(plot(table, meta), table, out, "evolution", paper=PAPER_FIGURE,
                          title="Intruder dimensions over training")  # fmt: skip
    print(steps[["method", "rank", "step", "n_intruders", "top_sigma_mean", "top_rank_median", "top_max_cos_mean"]]
          .to_string(index=False))  # fmt: skip
    for p in paths:
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
