"""Shared reading/drawing for the sweep figures (alpha, variants, bonly, datasize): tables in, panels out.

Tables (written by ``lvf-reproduce <figure>``, lora_vs_full/reproduce/variants.py) under
``results/tables/<figure>-<preset>/``: ``runs.csv`` (one row per run), ``curves.csv`` (intruders vs epsilon
per run), ``summary.csv`` (per task x group x x: means with intervals) and ``summary.json`` (its meta: k,
epsilon). Only draws: nothing here trains or analyses.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import figstyle
import numpy as np
import pandas as pd

from lora_vs_full import layout
from lora_vs_full.errors import UserError

FULL = "full FT"  # the group name of the full fine-tuning reference (reproduce/variants.py)


def tables(figure: str, preset: str) -> dict:
    """``{"runs", "curves", "summary": DataFrame, "meta": dict, "dir": Path}`` of a reproduction."""
    d = layout.tables_dir(f"{figure}-{preset}")
    missing = [f for f in ("runs.csv", "curves.csv", "summary.csv", "summary.json") if not (d / f).is_file()]
    if missing:
        raise UserError(
            f"{d} lacks {', '.join(missing)}: produce it with make reproduce-{figure} PRESET={preset} "
            "DATA_DIR=../shared/data/raw"
        )
    meta = json.loads((d / "summary.json").read_text())["meta"]
    read = {n: pd.read_csv(d / f"{n}.csv") for n in ("runs", "curves", "summary")}
    return {**read, "meta": meta, "dir": d}


def out_dir(figure: str, preset: str) -> Path:
    return layout.figures_dir(f"{figure}-{preset}")


def group_colors(groups) -> dict[str, tuple]:
    """Black for full FT, tab10 for the other groups in their table order."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    others = [g for g in dict.fromkeys(groups) if g != FULL]
    colors = {g: cmap(i % 10) for i, g in enumerate(others)}
    colors[FULL] = figstyle.FULL_COLOR
    return colors


def yerr(df: pd.DataFrame, prefix: str) -> np.ndarray | None:
    """Asymmetric error bars from ``<prefix>_low`` / ``<prefix>_high``; None when every interval is NaN
    (one seed: no spread across seeds to draw)."""
    lo, hi, mean = df[f"{prefix}_low"], df[f"{prefix}_high"], df[f"{prefix}_mean"]
    if lo.isna().all():
        return None
    return np.vstack([(mean - lo).fillna(0).clip(lower=0), (hi - mean).fillna(0).clip(lower=0)])


def interval_text(mean: float, low: float, high: float, fmt: str = ".3g") -> str:
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return f"{mean:{fmt}}"
    return f"{mean:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Intruders vs epsilon, mean (and min/max) across seeds per task x group x x."""
    keys = ["task", "group", "x", "epsilon"]
    return (
        curves.groupby(keys, dropna=False, sort=False)
        .agg(
            n_intruders=("n_intruders", "mean"),
            n_min=("n_intruders", "min"),
            n_max=("n_intruders", "max"),
            n_seeds=("seed", "nunique"),
        )  # fmt: skip
        .reset_index()
    )


def _panels(n_rows: int):
    import matplotlib.pyplot as plt

    return plt.subplots(
        n_rows, 2, figsize=(2 * figstyle.PANEL_WIDTH, figstyle.PANEL_HEIGHT * n_rows), squeeze=False
    )


def plot_vs_x(summary: pd.DataFrame, meta: dict, *, xlabel: str, log_base: int = 2):
    """Per task: intruders (left) and accuracy (right) against the swept value, a line per group; full FT
    (x empty) as a black horizontal line. Error bars: the summary's intervals (none with one seed for
    intruders; Wilson's over the eval examples for a single run's accuracy)."""
    tasks = list(dict.fromkeys(summary["task"]))
    colors = group_colors(summary["group"])
    ylabels = {"intruders": f"# intruders (k={meta['k']}, eps={meta['epsilon']})", "acc": "eval accuracy"}
    with figstyle.style():
        fig, axes = _panels(len(tasks))
        for row, task in zip(axes, tasks, strict=True):
            sub = summary[summary["task"] == task]
            for ax, prefix in zip(row, ("intruders", "acc"), strict=True):
                for group, g in sub.groupby("group", sort=False):
                    if group == FULL or g["x"].isna().all():
                        ax.axhline(g[f"{prefix}_mean"].iloc[0], color=colors[group], lw=1.2, label=group)
                        continue
                    g = g.sort_values("x")
                    ax.errorbar(g["x"], g[f"{prefix}_mean"], yerr=yerr(g, prefix), marker="o", capsize=3,
                                color=colors[group], label=group)  # fmt: skip
                ax.set_xscale("log", base=log_base)
                figstyle.plain_log_ticks(ax.xaxis)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabels[prefix])
                ax.set_title(task)
            row[0].legend(fontsize="small")
        fig.tight_layout()
    return fig


def plot_curves(curves: pd.DataFrame, summary: pd.DataFrame, meta: dict):
    """Per task: intruders vs epsilon per group (left; mean over seeds, min-max band with several) and each
    group's accuracy with its interval (right), full FT in black. The dotted line marks the headline epsilon."""
    curves = mean_curves(curves)
    curves = curves[curves["epsilon"] < 1 - 1e-9]  # at epsilon = 1 every top-k vector counts: drawn nowhere
    x_name = str(meta.get("x_key") or "x").rsplit(".", 1)[-1]
    tasks = list(dict.fromkeys(summary["task"]))
    colors = group_colors(summary["group"])
    with figstyle.style():
        fig, axes = _panels(len(tasks))
        for row, task in zip(axes, tasks, strict=True):
            ax, bx = row
            c = curves[curves["task"] == task]
            for (group, x), g in c.groupby(["group", "x"], dropna=False, sort=False):
                g = g.sort_values("epsilon")
                ax.plot(g["epsilon"], g["n_intruders"], color=colors[group], label=group if pd.isna(x) else f"{group} ({x_name}={x:g})",
                        lw=1.6 if group != FULL else 1.2)  # fmt: skip
                if g["n_seeds"].max() > 1:
                    ax.fill_between(
                        g["epsilon"], g["n_min"], g["n_max"], color=colors[group], alpha=0.15, lw=0
                    )
            ax.axvline(meta["epsilon"], color="grey", ls=":", lw=1)
            ax.set_xlabel("epsilon (max |cos| threshold)")
            ax.set_ylabel(f"# intruders (k={meta['k']}, sum over matrices)")
            ax.set_title(task)
            ax.legend(fontsize="x-small")
            s = summary[summary["task"] == task].reset_index(drop=True)
            pos = np.arange(len(s))
            err = yerr(s, "acc")
            for i, r in s.iterrows():
                e = None if err is None else err[:, [i]]
                bx.errorbar([i], [r["acc_mean"]], yerr=e, marker="o", capsize=3, color=colors[r["group"]])
            bx.set_xticks(pos, [str(g) for g in s["group"]], rotation=45, ha="right")
            bx.set_ylabel("eval accuracy")
            bx.set_title(f"{task}: accuracy ({s['acc_interval'].iloc[0]})", fontsize="small")
        fig.tight_layout()
    return fig


def draw(figure: str, preset: str, *, kind: str, paper: str, title: str, xlabel: str = "", log_base: int = 2,
         headline=None) -> list[Path]:  # fmt: skip
    """Read the tables, draw (``kind`` = "x" or "curves"), save ``<figure>.{png,pdf,csv}`` + the headline CSV."""
    t = tables(figure, preset)
    out = out_dir(figure, preset)
    if kind == "x":
        fig, data = plot_vs_x(t["summary"], t["meta"], xlabel=xlabel, log_base=log_base), t["summary"]
    else:
        fig, data = plot_curves(t["curves"], t["summary"], t["meta"]), mean_curves(t["curves"])
        data = data[data["epsilon"] < 1 - 1e-9]  # as drawn
    paths = figstyle.save(fig, data, out, figure, paper=paper, title=title)
    head = headline(t) if headline else default_headline(t["summary"])
    paths.append(figstyle.write_csv(head, out / f"{figure}_headline.csv"))
    print(head.to_string(index=False))
    for p in paths:
        print(f"wrote {p}")
    return paths


def default_headline(summary: pd.DataFrame) -> pd.DataFrame:
    cols = ["task", "group", "x", "n_seeds", "rank", "alpha", "lr", "intruders_mean", "intruders_low",
            "intruders_high", "acc_mean", "acc_low", "acc_high", "acc_interval"]  # fmt: skip
    return summary[cols].reset_index(drop=True)
