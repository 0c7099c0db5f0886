"""Paper v3 §5: intruder dimensions vs forgetting and vs accuracy across learning rates (LoRA r = 8).

Draws ``results/tables/correlation-<preset>/`` (written by ``lvf-reproduce correlation``): ``runs.csv`` (one
row per learning rate: intruders at k = 10, eps = 0.5 summed over matrices, forgetting with its 95 % bootstrap
interval over texts, SST-2 dev accuracy) and ``rho.json`` (Spearman rho and p). Two panels, the rho in each
title; the paper reports rho = 0.971 (p << 0.001) for intruders vs pseudo-loss and rho = -0.338 (p = 0.218)
vs accuracy on RoBERTa-base MNLI.

    python experiments/fig_correlation.py --preset offline   # -> results/figures/correlation-offline/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import figstyle
import pandas as pd

from lora_vs_full import layout
from lora_vs_full.cli._common import user_errors_exit
from lora_vs_full.errors import UserError

PAPER_FIGURE = "v3 §5 (intruders vs forgetting / accuracy, Spearman)"
HINT = "produce it with: make reproduce-correlation PRESET=offline DATA_DIR=../shared/data/raw"
COLUMNS = ("lr", "n_intruders", "forgetting", "forgetting_low", "forgetting_high", "eval_accuracy")


def load(tables: str | Path) -> tuple[pd.DataFrame, dict]:
    tables = Path(tables)
    if not (tables / "runs.csv").is_file() or not (tables / "rho.json").is_file():
        raise UserError(f"{tables} lacks runs.csv / rho.json; {HINT}")
    df = pd.read_csv(tables / "runs.csv")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{tables / 'runs.csv'} lacks columns {missing}; {HINT}")
    return df, json.loads((tables / "rho.json").read_text(encoding="utf-8"))


def plot(df: pd.DataFrame, rho: dict):
    import matplotlib.pyplot as plt

    with figstyle.style():
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(figstyle.PANEL_WIDTH * 2, figstyle.PANEL_HEIGHT))
        sc = ax.scatter(
            df["n_intruders"], df["forgetting"], c=df["lr"], cmap="plasma", norm="log", zorder=3, s=24
        )
        ax.errorbar(df["n_intruders"], df["forgetting"], yerr=[df["forgetting"] - df["forgetting_low"],
                    df["forgetting_high"] - df["forgetting"]], fmt="none", ecolor="0.5", capsize=2)  # fmt: skip
        bx.scatter(
            df["n_intruders"], df["eval_accuracy"], c=df["lr"], cmap="plasma", norm="log", zorder=3, s=24
        )
        f, a = rho["intruders_vs_forgetting"], rho["intruders_vs_accuracy"]
        ax.set_title(f"Spearman ρ = {f['rho']:+.2f} (p = {f['p']:.2g})")
        bx.set_title(f"Spearman ρ = {a['rho']:+.2f} (p = {a['p']:.2g})")
        ax.set_xlabel(f"intruders (k = {rho['k']}, ε = {rho['epsilon']}, all matrices)")
        bx.set_xlabel(ax.get_xlabel())
        ax.set_ylabel("forgetting (pseudo-loss − base, nats)")
        bx.set_ylabel("SST-2 dev accuracy")
        fig.colorbar(sc, ax=[ax, bx], label="learning rate")
        fig.suptitle(f"LoRA r = {rho['rank']} across learning rates ({rho['n_runs']} runs)", fontsize=9)
    return fig


def make(tables: str | Path, out: str | Path) -> list[Path]:
    df, rho = load(tables)
    cols = ["lr", "n_intruders", "forgetting", "forgetting_low", "forgetting_high", "eval_accuracy"]
    return figstyle.save(plot(df, rho), df[cols], out, "correlation", paper=PAPER_FIGURE,
                         title="Intruders vs forgetting and accuracy across learning rates")  # fmt: skip


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None, help="draw results/tables/correlation-<preset>")
    ap.add_argument("--tables", default=None, help="a tables directory (instead of --preset)")
    ap.add_argument("--out", default=None, help="output directory (default: results/figures/<tables name>)")
    args = ap.parse_args(argv)
    if (args.preset is None) == (args.tables is None):
        raise UserError("give exactly one of --preset offline|paper or --tables <dir>")
    tables = layout.tables_dir(f"correlation-{args.preset}") if args.preset else Path(args.tables)
    for p in make(tables, Path(args.out) if args.out else layout.figures_dir(tables.name)):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
