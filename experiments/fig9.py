"""v1 Fig. 9: forgetting of the pre-training distribution against LoRA rank, with intervals.

Draws ``results/tables/fig9-<preset>/`` (written by ``lvf-reproduce fig9``, lora_vs_full/reproduce/forgetting.py):
``fig9.csv`` (one row per method x rank: forgetting = pseudo-loss - base's, paired over texts, mean and
Student-t interval across seeds) and ``runs.csv`` (one row per run with its bootstrap interval over texts).
Left: forgetting against LoRA rank (log x) with the across-seed intervals as error bars, full FT as a black
line with its interval as a band, the base at 0. Right: forgetting against SST-2 dev accuracy, one point per
run with its within-run interval (the v2/v3 framing "LoRA forgets less at equal accuracy").

    python experiments/fig9.py --preset offline      # -> results/figures/fig9-offline/fig9.{png,pdf,csv}

Only draws: no training, no scoring. With the MiniLM base the pseudo-loss uses a probe MLM head (fitted on
held-out WikiText-2 valid lines); its values compare rows of this figure, not a real MLM's numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import figstyle
import numpy as np
import pandas as pd

from lora_vs_full import layout
from lora_vs_full.cli._common import user_errors_exit
from lora_vs_full.errors import UserError

PAPER_FIGURE = "v1 Fig. 9 (pseudo-loss vs LoRA rank; forgetting vs accuracy as in v2/v3)"
HINT = "produce it with: make reproduce-fig9 PRESET=offline DATA_DIR=../shared/data/raw"
AGG_COLUMNS = ("method", "rank", "n_seeds", "forgetting", "forgetting_low", "forgetting_high", "accuracy")
RUN_COLUMNS = (
    "run",
    "method",
    "rank",
    "seed",
    "eval_accuracy",
    "forgetting",
    "forgetting_low",
    "forgetting_high",
    "head",
)


def _read(path: Path, columns) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path} does not exist; {HINT}")
    df = pd.read_csv(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks columns {missing}; {HINT}")
    return df


def load(tables: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    tables = Path(tables)
    agg, runs = _read(tables / "fig9.csv", AGG_COLUMNS), _read(tables / "runs.csv", RUN_COLUMNS)
    if not agg["method"].isin(["lora", "full"]).any():
        raise UserError(f"{tables / 'fig9.csv'} holds no fine-tuned run; {HINT}")
    return agg, runs


def plot_fig9(agg: pd.DataFrame, runs: pd.DataFrame):
    import matplotlib.pyplot as plt

    lora = agg[agg["method"] == "lora"].sort_values("rank")
    full = agg[agg["method"] == "full"]
    colors = figstyle.rank_colors(lora["rank"].astype(int)) if len(lora) else {}
    with figstyle.style():
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(figstyle.PANEL_WIDTH * 2, figstyle.PANEL_HEIGHT))
        for r in full.to_dict("records"):
            lo, hi, what = r["forgetting_low"], r["forgetting_high"], f"{r['n_seeds']} seeds"
            if not (np.isfinite(lo) and np.isfinite(hi)):  # one seed: its interval over texts instead
                run = runs[runs["method"] == "full"].iloc[0]
                lo, hi, what = run["forgetting_low"], run["forgetting_high"], "1 seed, CI over texts"
            ax.axhline(r["forgetting"], color=figstyle.FULL_COLOR, lw=1.3, label=f"full FT ({what})")
            ax.axhspan(lo, hi, color=figstyle.FULL_COLOR, alpha=0.12, lw=0)
        ax.plot(lora["rank"], lora["forgetting"], color="0.6", lw=1, zorder=1)
        for r in lora.to_dict("records"):
            lo, hi, what = r["forgetting_low"], r["forgetting_high"], f"{r['n_seeds']} seeds"
            if not (np.isfinite(lo) and np.isfinite(hi)):  # one seed: its interval over texts instead
                run = runs[(runs["method"] == "lora") & (runs["rank"] == r["rank"])].iloc[0]
                lo, hi, what = run["forgetting_low"], run["forgetting_high"], "1 seed, CI over texts"
            ax.errorbar([r["rank"]], [r["forgetting"]], yerr=[[r["forgetting"] - lo], [hi - r["forgetting"]]],
                        fmt="o", ms=5, capsize=3, color=colors[int(r["rank"])], mfc="none" if "1 seed" in what else None,
                        label=f"LoRA r={int(r['rank'])} ({what})")  # fmt: skip
        ax.axhline(0.0, color="0.45", ls=":", lw=1.0, label="base (untouched)")
        if len(lora):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(lora["rank"].unique()))
            figstyle.plain_log_ticks(ax.xaxis)
        ax.set_xlabel("LoRA rank")
        ax.set_ylabel("forgetting (pseudo-loss − base, nats)")
        ax.set_title("mean, 95 % t-interval across seeds")
        ax.legend(fontsize=6)
        for r in runs[runs["method"].isin(["lora", "full"])].to_dict("records"):
            c = figstyle.FULL_COLOR if r["method"] == "full" else colors[int(r["rank"])]
            bx.errorbar([r["eval_accuracy"]], [r["forgetting"]], yerr=[[r["forgetting"] - r["forgetting_low"]],
                        [r["forgetting_high"] - r["forgetting"]]], fmt="s" if r["method"] == "full" else "o",
                        ms=4, capsize=2, color=c)  # fmt: skip
        bx.axhline(0.0, color="0.45", ls=":", lw=1.0)
        bx.set_xlabel("SST-2 dev accuracy")
        bx.set_ylabel("forgetting (nats)")
        bx.set_title("per run, 95 % bootstrap over texts")
        head = set(runs["head"].dropna())
        note = " [probe MLM head fitted on held-out text]" if "probe" in head else ""
        fig.suptitle("Forgetting of the pre-training distribution" + note, fontsize=9)
        fig.tight_layout()
    return fig


def make_fig9(tables: str | Path, out: str | Path) -> list[Path]:
    agg, runs = load(tables)
    fig = plot_fig9(agg, runs)
    return figstyle.save(
        fig, agg, out, "fig9", paper=PAPER_FIGURE, title="Forgetting vs LoRA rank, with intervals"
    )


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None, help="draw results/tables/fig9-<preset>")
    ap.add_argument("--tables", default=None, help="a tables directory (instead of --preset)")
    ap.add_argument("--out", default=None, help="output directory (default: results/figures/<tables name>)")
    args = ap.parse_args(argv)
    if (args.preset is None) == (args.tables is None):
        raise UserError("give exactly one of --preset offline|paper or --tables <dir>")
    tables = layout.tables_dir(f"fig9-{args.preset}") if args.preset else Path(args.tables)
    for p in make_fig9(tables, Path(args.out) if args.out else layout.figures_dir(tables.name)):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
