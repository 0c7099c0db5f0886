"""v3 Table 3: scaling the intruder dimensions of a LoRA fine-tune by lambda -- accuracy vs forgetting.

Draws ``results/tables/table3-<preset>/table3.csv`` (written by ``lvf-reproduce table3``): one row per
(condition, lambda) -- ``intruder`` (the top intruder of every matrix scaled), ``control`` (a non-intruder
direction of W_t with the same singular value, scaled alike), ``peft_reduce`` (PEFT's
reduce_intruder_dimension) -- with the % change of accuracy and of forgetting vs lambda = 1 and their 95 %
intervals (paired over the 872 SST-2 dev examples / the scored texts). Writes ``table3.md`` (the paper-style
table with a "distinguishable from zero" column) and ``table3.{png,pdf,csv}`` (both % changes against lambda,
error bars) under ``results/figures/table3-<preset>/``.

    python experiments/table3.py --preset offline
"""

from __future__ import annotations

import argparse
from pathlib import Path

import figstyle
import pandas as pd

from lora_vs_full import layout
from lora_vs_full.cli._common import user_errors_exit
from lora_vs_full.errors import UserError
from lora_vs_full.storage import atomic_write_text

PAPER_TABLE = "v3 Table 3 (scaling intruder dimensions by lambda)"
HINT = "produce it with: make reproduce-table3 PRESET=offline DATA_DIR=../shared/data/raw"
COLUMNS = ("condition", "lambda", "accuracy", "accuracy_change_pct", "accuracy_change_pct_low",
           "accuracy_change_pct_high", "accuracy_distinct", "forgetting", "forgetting_change_pct",
           "forgetting_change_pct_low", "forgetting_change_pct_high", "forgetting_distinct")  # fmt: skip
PAPER_ROWS = "paper (QQP r = 8): λ 0.7 → acc −0.0 %, forgetting −33.2 %; λ 0.1 → −3.3 % / −52.0 %"


def load(tables: str | Path) -> pd.DataFrame:
    path = Path(tables) / "table3.csv"
    if not path.is_file():
        raise UserError(f"{path} does not exist; {HINT}")
    df = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks columns {missing}; {HINT}")
    if not ((df["condition"] == "intruder") & (df["lambda"] == 1.0)).any():
        raise UserError(f"{path} has no intruder row at lambda = 1 (the reference); {HINT}")
    return df


def _ci(r, key: str) -> str:
    return f"{r[key]:+.1f} [{r[key + '_low']:+.1f}, {r[key + '_high']:+.1f}]"


def markdown(df: pd.DataFrame) -> str:
    """Paper-style rows: % changes vs lambda = 1 with 95 % intervals and whether each excludes 0."""
    lines = ["| condition | λ | accuracy | Δ accuracy % [95 % CI] | Δ forgetting % [95 % CI] | distinguishable from 0 (acc / forgetting) |",
             "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in df.to_dict("records"):
        if r["condition"] != "peft_reduce" and r["lambda"] == 1.0:
            continue  # the reference: every change is 0 by construction
        yes = lambda b: "yes" if bool(b) else "no"  # noqa: E731
        lines.append(f"| {r['condition']} | {r['lambda']:g} | {r['accuracy']:.4f} | {_ci(r, 'accuracy_change_pct')} "
                     f"| {_ci(r, 'forgetting_change_pct')} | {yes(r['accuracy_distinct'])} / {yes(r['forgetting_distinct'])} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(df: pd.DataFrame):
    import matplotlib.pyplot as plt

    style = {
        "intruder": dict(color="C3", marker="o", ls="-"),
        "control": dict(color="0.4", marker="s", ls="--"),
    }
    with figstyle.style():
        fig, axes = plt.subplots(1, 2, figsize=(figstyle.PANEL_WIDTH * 2, figstyle.PANEL_HEIGHT))
        for ax, key in zip(axes, ("accuracy_change_pct", "forgetting_change_pct"), strict=True):
            for cond, kw in style.items():
                c = df[df["condition"] == cond].sort_values("lambda")
                if len(c):
                    ax.errorbar(c["lambda"], c[key], yerr=[c[key] - c[key + "_low"], c[key + "_high"] - c[key]],
                                capsize=2, ms=3.5, label=f"{cond} scaled", **kw)  # fmt: skip
            p = df[df["condition"] == "peft_reduce"]
            if len(p):
                ax.errorbar(p["lambda"], p[key], yerr=[p[key] - p[key + "_low"], p[key + "_high"] - p[key]],
                            fmt="*", ms=9, color="C0", capsize=2, label="PEFT reduce_intruder_dimension")  # fmt: skip
            ax.axhline(0.0, color="0.7", lw=0.8, ls=":")
            ax.set_xlabel("λ (scale of the scaled direction's singular value)")
            ax.set_ylabel("Δ accuracy % vs λ = 1" if key.startswith("acc") else "Δ forgetting % vs λ = 1")
        axes[1].legend(fontsize=6)
        fig.suptitle("Scaling intruder dimensions (95 % paired intervals)", fontsize=9)
        fig.tight_layout()
    return fig


def make_table3(tables: str | Path, out: str | Path) -> list[Path]:
    df = load(tables)
    out = Path(out)
    head = f"# Table 3 (paper v3), offline\n\nFrom {Path(tables) / 'table3.csv'}. {PAPER_ROWS}.\n\n"
    paths = [atomic_write_text(out / "table3.md", head + markdown(df))]
    cols = ["condition", "lambda", "accuracy_change_pct", "accuracy_change_pct_low", "accuracy_change_pct_high",
            "forgetting_change_pct", "forgetting_change_pct_low", "forgetting_change_pct_high"]  # fmt: skip
    return paths + figstyle.save(
        plot(df),
        df[cols],
        out,
        "table3",
        paper=PAPER_TABLE,
        title="Scaling intruders: Δ accuracy and Δ forgetting vs λ",
    )


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None, help="draw results/tables/table3-<preset>")
    ap.add_argument("--tables", default=None, help="a tables directory (instead of --preset)")
    ap.add_argument("--out", default=None, help="output directory (default: results/figures/<tables name>)")
    args = ap.parse_args(argv)
    if (args.preset is None) == (args.tables is None):
        raise UserError("give exactly one of --preset offline|paper or --tables <dir>")
    tables = layout.tables_dir(f"table3-{args.preset}") if args.preset else Path(args.tables)
    for p in make_table3(tables, Path(args.out) if args.out else layout.figures_dir(tables.name)):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
