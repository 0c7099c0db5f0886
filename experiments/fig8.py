"""v1 Fig. 8: continual learning -- probe accuracy on every task after every stage, LoRA ranks vs full FT.

Draws the tables ``lvf-reproduce fig8`` wrote (lora_vs_full/reproduce/continual.py) under
``results/tables/fig8-<preset>[-synthetic]/``:

- one panel per task: probe accuracy against stage (0 = the pretrained model), one curve per method
  (mean over seeds, error bars = 95 % t interval across seeds, or the eval set's Wilson interval when
  there is one seed), the pretrained baseline dotted, the stage that trained the task shaded. A stage
  that did NOT pass the learned-stage gate is marked with a red cross on its own panel (``k/n`` = seeds
  that failed it);
- a panel of intruder dimensions (k = 10, epsilon = 0.5, summed over matrices, against the ORIGINAL
  pretrained weights) against stage, with the same error bars;
- a last panel: mean forgetting of the earlier learnable tasks against stage, over the runs that learned
  every learnable stage up to it (stage_forgetting.csv; the comparison of summary.json's ``by_stage``).

    python experiments/fig8.py --preset offline        # -> results/figures/fig8-offline[-synthetic]/fig8.{png,pdf,csv}
    python experiments/fig8.py --tables <dir> --out <dir>

and prints the headline stored in ``summary.json`` (the gate, forgetting with intervals, the verdict).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import figstyle
import numpy as np
import pandas as pd

from lora_vs_full import layout
from lora_vs_full.cli._common import user_errors_exit
from lora_vs_full.errors import UserError

PAPER_FIGURE = "v1 Fig. 8 (continual learning)"
FILES = {
    "accuracy": ("method", "rank", "label", "stage", "trained_task", "eval_task", "accuracy", "seed_low",
                 "seed_high", "n_seeds", "binom_low", "binom_high"),
    "stages": ("method", "rank", "seed", "stage", "trained_task", "learned"),
    "intruders": ("method", "rank", "label", "stage", "k", "epsilon", "n_intruders", "low", "high", "n_seeds"),
    "stage_forgetting": ("method", "rank", "seed", "stage", "forgetting", "eligible"),
}  # fmt: skip
FORGETTING_PANEL = "forgetting of earlier tasks (runs learned so far)"


def read_tables(tables: str | Path) -> dict[str, pd.DataFrame]:
    """The three CSVs the figure draws, checked (a missing file or column is a one-line UserError)."""
    tables = Path(tables)
    out = {}
    for stem, columns in FILES.items():
        path = tables / f"{stem}.csv"
        if not path.is_file():
            raise UserError(
                f"{path} is missing: run `make reproduce-fig8 PRESET=...` (lvf-reproduce fig8) first"
            )
        df = pd.read_csv(path)
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise UserError(f"{path} lacks columns {missing}: regenerate it with lvf-reproduce fig8")
        if df.empty:
            raise UserError(f"{path} has no rows: run lvf-reproduce fig8 first")
        df["rank"] = df["rank"].astype("Int64")
        out[stem] = df
    return out


def fig8_table(tables: str | Path) -> pd.DataFrame:
    """The numbers Fig. 8 draws, long format: panel, metric (accuracy | n_intruders), method, rank, label,
    stage, trained_task, value, low, high (the error bar), n_seeds, unlearned (seeds that failed the gate
    at this stage on this task's own panel; 0 elsewhere), n_runs."""
    t = read_tables(tables)
    acc = t["accuracy"].copy()
    one_seed = acc["n_seeds"] < 2
    acc["low"] = np.where(one_seed, acc["binom_low"], acc["seed_low"])
    acc["high"] = np.where(one_seed, acc["binom_high"], acc["seed_high"])
    gate = t["stages"].groupby(["method", "rank", "stage", "trained_task"], dropna=False)["learned"]
    fails = gate.agg(unlearned=lambda s: int((~s.astype(bool)).sum()), n_runs="size").reset_index()
    acc = acc.merge(fails.rename(columns={"trained_task": "eval_task"}), on=["method", "rank", "stage", "eval_task"],
                    how="left")  # fmt: skip
    acc["unlearned"] = acc["unlearned"].fillna(0).astype(int)
    acc = acc.assign(metric="accuracy", panel=acc["eval_task"], value=acc["accuracy"])
    intr = t["intruders"]
    k, eps = int(intr["k"].iloc[0]), float(intr["epsilon"].iloc[0])
    stages = t["accuracy"].dropna(subset=["trained_task"]).groupby("stage")["trained_task"].first()
    intr = intr.assign(metric="n_intruders", panel=f"intruders (k={k}, ε={eps:g})", value=intr["n_intruders"],
                       eval_task=pd.NA, unlearned=0, trained_task=intr["stage"].map(stages))  # fmt: skip
    forg = _forgetting_by_stage(t["stage_forgetting"]).assign(trained_task=lambda d: d["stage"].map(stages))
    cols = ["panel", "metric", "method", "rank", "label", "stage", "trained_task", "eval_task", "value", "low",
            "high", "n_seeds", "unlearned", "n_runs"]  # fmt: skip
    table = pd.concat([acc.reindex(columns=cols), intr.reindex(columns=cols), forg.reindex(columns=cols)],
                      ignore_index=True)  # fmt: skip
    return table.sort_values(["metric", "panel", "method", "rank", "stage"]).reset_index(drop=True)


def _forgetting_by_stage(sf: pd.DataFrame) -> pd.DataFrame:
    """Per (method, stage): mean forgetting of the earlier learnable tasks over the runs that learned every
    learnable stage so far (``eligible`` in stage_forgetting.csv), with its 95 % t interval across them."""
    from lora_vs_full.continual.summary import method_label
    from lora_vs_full.stats import t_interval

    rows = []
    for (method, rank, stage), g in sf[sf["eligible"].astype(bool)].groupby(
        ["method", "rank", "stage"], dropna=False
    ):
        e = t_interval(g["forgetting"])
        rows.append({"method": method, "rank": rank, "label": method_label(method, rank), "stage": int(stage),
                     "value": e.mean, "low": e.low, "high": e.high, "n_seeds": e.n, "n_runs": len(g)})  # fmt: skip
    out = pd.DataFrame(
        rows, columns=["method", "rank", "label", "stage", "value", "low", "high", "n_seeds", "n_runs"]
    )
    return out.assign(metric="forgetting", panel=FORGETTING_PANEL, eval_task=pd.NA, unlearned=0)


def _stage_names(table: pd.DataFrame) -> dict[int, str]:
    names = {0: "pretrained"}
    for stage, task in table.dropna(subset=["trained_task"]).groupby("stage")["trained_task"].first().items():
        names[int(stage)] = str(task)
    return names


def plot_fig8(table: pd.DataFrame):
    """Draw :func:`fig8_table`'s output; returns the matplotlib Figure (nothing is saved)."""
    stages = _stage_names(table)
    order = [t for s, t in sorted(stages.items()) if s > 0]
    acc = table[table["metric"] == "accuracy"]
    panels = [t for t in order if t in set(acc["panel"])] + sorted(set(acc["panel"]) - set(order))
    panels.append(table.loc[table["metric"] == "n_intruders", "panel"].iloc[0])
    if (table["metric"] == "forgetting").any():
        panels.append(FORGETTING_PANEL)
    ranks = table.loc[table["method"] != "full", "rank"].dropna()
    colors = figstyle.rank_colors(ranks) if len(ranks) else {}
    ticks = sorted(stages)
    labels = list(dict.fromkeys(table.sort_values(["method", "rank"])["label"]))
    offsets = {lab: (i - (len(labels) - 1) / 2) * 0.07 for i, lab in enumerate(labels)}  # bars side by side
    with figstyle.style():
        fig, axes = figstyle.panel_grid(len(panels), max_cols=4, sharey=False)
        handles = {}
        for ax, panel in zip(axes, panels, strict=True):
            sub = table[table["panel"] == panel]
            if panel in stages.values():
                s = next(s for s, t in stages.items() if t == panel)
                span = ax.axvspan(s - 0.4, s + 0.4, color="0.88", lw=0, zorder=0)
                handles.setdefault("stage that trained the task", span)
            for label in labels:
                c = sub[sub["label"] == label].sort_values("stage")
                if c.empty:
                    continue
                method, rank = c["method"].iloc[0], c["rank"].iloc[0]
                color = figstyle.FULL_COLOR if method == "full" else colors[int(rank)]
                x = c["stage"] + offsets[label]
                # bars clipped to what the metric can take (accuracy in [0, 1], counts >= 0): a t interval
                # over two seeds (t = 12.7) would otherwise flatten the panel
                metric = c["metric"].iloc[0]
                top, bottom = {"accuracy": (1.0, 0.0), "forgetting": (1.0, -1.0)}.get(metric, (np.inf, 0.0))
                lo, hi = c["low"].clip(lower=bottom), c["high"].clip(upper=top)
                err = np.vstack([c["value"] - lo, hi - c["value"]])
                err = np.where(np.isfinite(err), np.clip(err, 0, None), 0)
                line = ax.errorbar(x, c["value"], yerr=err, color=color, marker="o", ms=3, lw=1.2, capsize=2,
                                   elinewidth=0.8, label=label)  # fmt: skip
                handles.setdefault(label, line)
                bad = c[c["unlearned"] > 0]
                for xs, ys, u, n in zip(bad["stage"] + offsets[label], bad["value"], bad["unlearned"], bad["n_runs"],
                                        strict=True):  # fmt: skip
                    (cross,) = ax.plot(
                        [xs], [ys], marker="x", ms=9, mew=2, color="crimson", ls="none", zorder=5
                    )
                    ax.annotate(f"{int(u)}/{int(n)}", (xs, ys), xytext=(4, -10), textcoords="offset points",
                                fontsize=6, color="crimson")  # fmt: skip
                    handles.setdefault("stage not learned (seeds failing the gate)", cross)
            if sub["metric"].iloc[0] == "accuracy":
                base = sub.loc[sub["stage"] == 0, "value"].mean()
                (bl,) = ax.plot(ticks, [base] * len(ticks), color="0.45", ls=":", lw=1.2)
                handles.setdefault("pretrained (probe)", bl)
                ax.set_ylabel("probe accuracy")
            elif sub["metric"].iloc[0] == "forgetting":
                ax.axhline(0, color="0.45", ls=":", lw=1.2)
                ax.set_ylabel("accuracy after own stage − now")
            else:
                ax.set_ylim(bottom=0)
                ax.set_ylabel("# intruder dimensions")
            ax.set_title(panel)
            ax.set_xticks(ticks, [f"{s} {stages[s]}" if s else "0 pre" for s in ticks], fontsize=6.5,
                          rotation=35, ha="right", rotation_mode="anchor")  # fmt: skip
            ax.set_xlim(-0.5, ticks[-1] + 0.5)
            ax.set_xlabel("after stage (task trained)")
        figstyle.legend(fig, handles)
        fig.tight_layout()
    return fig


def make_fig8(tables: str | Path, fig_dir: str | Path, *, name: str = "fig8") -> list[Path]:
    """Write ``<fig_dir>/<name>.{pdf,png,csv}`` from the tables in ``tables``; return the paths."""
    table = fig8_table(tables)
    fig = plot_fig8(table)
    title = (
        "Continual learning: probe accuracy per task after each stage (95 % intervals); intruders vs stage"
    )
    paths = figstyle.save(fig, table, fig_dir, name, paper=PAPER_FIGURE, title=title)
    _shrink_png(next(p for p in paths if p.suffix == ".png"))
    return paths


def _shrink_png(path: Path, colors: int = 128) -> None:
    """Seven panels at 200 dpi make a ~400 KB PNG; a 128-colour palette (flat plot colours, text
    antialiasing kept) brings it under the repository's 200 KB per committed file. Metadata is kept."""
    from PIL import Image, PngImagePlugin

    from lora_vs_full.storage import atomic_write_with

    with Image.open(path) as im:
        info = PngImagePlugin.PngInfo()
        for k, v in im.info.items():
            if isinstance(v, str):
                info.add_text(k, v)
        small = im.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    atomic_write_with(path, lambda p: small.save(p, format="PNG", optimize=True, pnginfo=info))


def preset_dirs(preset: str) -> list[str]:
    """Names of the existing table directories of a preset (``fig8-<preset>`` and/or its synthetic twin)."""
    names = [f"fig8-{preset}", f"fig8-{preset}-synthetic"]
    found = [n for n in names if layout.tables_dir(n).is_dir()]
    if not found:
        raise UserError(f"no tables for preset {preset!r} under {layout.tables_dir('')}: "
                        f"run `make reproduce-fig8 PRESET={preset}` first")  # fmt: skip
    return found


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None, help="draw results/tables/fig8-<preset>[-synthetic]")
    ap.add_argument("--tables", default=None, help="a tables directory (instead of --preset)")
    ap.add_argument("--out", default=None, help="output directory (default: results/figures/<tables name>)")
    args = ap.parse_args(argv)
    if (args.preset is None) == (args.tables is None):
        raise UserError("give exactly one of --preset offline|paper or --tables <dir>")
    dirs = [layout.tables_dir(n) for n in preset_dirs(args.preset)] if args.preset else [Path(args.tables)]
    for d in dirs:
        out = Path(args.out) if args.out else layout.figures_dir(d.name)
        for p in make_fig8(d, out):
            print(f"wrote {p}")
        summary = d / "summary.json"
        if summary.is_file():
            print(json.loads(summary.read_text(encoding="utf-8")).get("headline", ""))


if __name__ == "__main__":
    main()
