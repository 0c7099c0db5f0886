"""v1 Fig. 8: continual learning -- probe accuracy on every task after every stage, LoRA ranks vs full FT.

Reads the tidy tables of ``lvf-continual`` (``<out>/continual.parquet`` and
``<out>/continual_intruders.parquet``). One panel per evaluated task: probe accuracy against stage
(0 = the pretrained model), one curve per method/rank (seeds averaged), the pretrained baseline dotted,
the stage where that task was trained shaded. A last panel: intruder dimensions (k = 10, epsilon = 0.5,
summed over matrices, against the ORIGINAL pretrained weights) against stage.

    python experiments/fig8.py results/continual/offline --out results/figures

writes ``fig8.{pdf,png,csv}``. :func:`reproduce_fig8` runs the whole sweep of a preset first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import figstyle
import pandas as pd

from lora_vs_full import records
from lora_vs_full.cli._common import user_errors_exit
from lora_vs_full.errors import UserError

PAPER_FIGURE = "v1 Fig. 8 (continual learning)"
ACC_COLUMNS = ("method", "rank", "stage", "trained_task", "eval_task", "accuracy")
INTR_COLUMNS = ("method", "rank", "stage", "k", "epsilon", "n_intruders")
# Sweeps run by reproduce_fig8: (method, rank) pairs per preset.
PRESET_RUNS = {
    "offline": [("full", None), ("lora", 1), ("lora", 8), ("lora", 64)],
    "paper": [("full", None), ("lora", 1), ("lora", 8), ("lora", 64)],
}
OFFLINE_SIX_TASKS = "sequence.tasks=[mnli,qqp,sst2,siqa,winogrande,fever]"


def _read(path: Path, columns, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path} is missing: run `lvf-continual out={path.parent}` first (it writes {what})")
    df = pd.read_parquet(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks columns {missing}: regenerate it with lvf-continual")
    if df.empty:
        raise UserError(f"{path} has no rows: run `lvf-continual out={path.parent}` first")
    return df


def fig8_table(out: str | Path, *, k: int = records.HEADLINE_K, epsilon: float = records.HEADLINE_EPSILON):
    """The numbers Fig. 8 draws, long format: panel, metric (accuracy | n_intruders), method, rank, label,
    stage, trained_task, value, n_seeds. Accuracy rows are means over seeds per method/rank/stage/task."""
    out = Path(out)
    acc = _read(out / "continual.parquet", ACC_COLUMNS, "continual.parquet")
    intr = _read(out / "continual_intruders.parquet", INTR_COLUMNS, "continual_intruders.parquet")
    keys = ["method", "rank", "stage"]
    acc = (acc.groupby([*keys, "trained_task", "eval_task"], dropna=False)["accuracy"]
           .agg(value="mean", n_seeds="size").reset_index())  # fmt: skip
    acc = acc.assign(metric="accuracy", panel=acc["eval_task"])
    sel = intr[(intr["k"] == k) & ((intr["epsilon"] - epsilon).abs() < 1e-9)]
    if sel.empty:
        raise UserError(f"no intruder rows at k={k}, epsilon={epsilon} in {out}: pick values from its grid")
    sel = (sel.groupby([*keys, "trained_task"], dropna=False)["n_intruders"]
           .agg(value="mean", n_seeds="size").reset_index())  # fmt: skip
    sel = sel.assign(metric="n_intruders", panel=f"intruders (k={k}, ε={epsilon:g})", eval_task=pd.NA)
    table = pd.concat([acc, sel], ignore_index=True)
    table["label"] = [
        figstyle.method_label(m, r) for m, r in zip(table["method"], table["rank"], strict=True)
    ]
    cols = [
        "panel",
        "metric",
        "method",
        "rank",
        "label",
        "stage",
        "trained_task",
        "eval_task",
        "value",
        "n_seeds",
    ]
    return table[cols].sort_values(["metric", "panel", "method", "rank", "stage"]).reset_index(drop=True)


def _stage_names(table: pd.DataFrame) -> dict[int, str]:
    """Stage number -> task trained in it (0 -> 'pretrained'), from the table itself."""
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
    ranks = table.loc[table["method"] != "full", "rank"].dropna()
    colors = figstyle.rank_colors(ranks) if len(ranks) else {}  # a full-FT-only table has no ranks
    ticks = sorted(stages)
    with figstyle.style():
        fig, axes = figstyle.panel_grid(len(panels), max_cols=4, sharey=False)
        handles = {}
        for ax, panel in zip(axes, panels, strict=True):
            sub = table[table["panel"] == panel]
            if panel in stages.values():  # the stage that trained this task
                s = next(s for s, t in stages.items() if t == panel)
                span = ax.axvspan(s - 0.4, s + 0.4, color="0.88", lw=0, zorder=0)
                handles.setdefault("stage that trained the task", span)
            for label in dict.fromkeys(sub.sort_values(["method", "rank"])["label"]):
                c = sub[sub["label"] == label].sort_values("stage")
                method, rank = c["method"].iloc[0], c["rank"].iloc[0]
                color = figstyle.FULL_COLOR if method == "full" else colors[int(rank)]
                (line,) = ax.plot(c["stage"], c["value"], color=color, marker="o", ms=3, label=label)
                handles.setdefault(label, line)
            if sub["metric"].iloc[0] == "accuracy":
                base = sub.loc[sub["stage"] == 0, "value"].mean()  # same pretrained body for every method
                (bl,) = ax.plot(
                    ticks, [base] * len(ticks), color="0.45", ls=":", lw=1.2, label="pretrained (probe)"
                )
                handles.setdefault("pretrained (probe)", bl)
                ax.set_ylabel("probe accuracy")
            else:
                ax.set_ylim(bottom=0)
                ax.set_ylabel("# intruder dimensions")
            ax.set_title(panel)
            # "1 mnli", rotated: six task names side by side would overlap
            ax.set_xticks(ticks, [f"{s} {stages[s]}" if s else "0 pre" for s in ticks], fontsize=6.5,
                          rotation=35, ha="right", rotation_mode="anchor")  # fmt: skip
            ax.set_xlim(-0.5, ticks[-1] + 0.5)
            ax.set_xlabel("after stage (task trained)")
        fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
    return fig


def make_fig8(out: str | Path, fig_dir: str | Path, *, name: str = "fig8", k: int = records.HEADLINE_K,
              epsilon: float = records.HEADLINE_EPSILON) -> list[Path]:  # fmt: skip
    """Write ``<fig_dir>/<name>.{pdf,png,csv}`` from the tables under ``out``; return the paths."""
    table = fig8_table(out, k=k, epsilon=epsilon)
    fig = plot_fig8(table)
    title = "Continual learning: probe accuracy per task after each stage; intruders vs stage"
    return figstyle.save(fig, table, fig_dir, name, paper=PAPER_FIGURE, title=title)


def reproduce_fig8(preset: str = "offline", data_dir: str | None = None, *, fig_dir: str | Path = "results/figures",
                   overrides: tuple[str, ...] = (), log=print) -> list[Path]:  # fmt: skip
    """Run the preset's sweep (``PRESET_RUNS``; finished runs are skipped, crashed ones resume), then draw.

    ``offline`` without ``data_dir``: MiniLM on synth_sentiment -> synth_nli; with ``data_dir`` (e.g.
    ``../shared/data/raw``): the paper's six tasks from the original files with the preset's small caps.
    ``paper``: RoBERTa-base, six tasks (Hub, or ``data_dir``), meant for a GPU.
    """
    from lora_vs_full.continual import compose_continual, run_continual

    if preset not in PRESET_RUNS:
        raise UserError(f"unknown preset {preset!r}: use one of {', '.join(PRESET_RUNS)}")
    extra = [f"experiment=continual_{preset}", *overrides]
    if data_dir is not None:
        extra.append(f"sequence.data_dir={data_dir}")
        if preset == "offline":
            # six stages x six probes on 2 CPU cores: smaller caps than the two-task preset
            extra += [OFFLINE_SIX_TASKS, "sequence.max_train_samples=1000", "sequence.max_eval_samples=200",
                      "optim.max_steps=50", "probe.train_samples=200", "probe.steps=100"]  # fmt: skip
    out = None
    for method, rank in PRESET_RUNS[preset]:
        run = [f"method={method}"] + ([f"method.rank={rank}"] if rank is not None else [])
        cfg = compose_continual(extra + run)
        log(f"fig8 [{preset}]: {method}{'' if rank is None else f' r={rank}'} -> {cfg.out}")
        out = run_continual(cfg, log=log).parent
    return make_fig8(
        out, fig_dir, name=f"fig8-{preset}" + ("-six" if data_dir and preset == "offline" else "")
    )


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("continual_dir", help="lvf-continual's out directory (holds continual.parquet)")
    ap.add_argument("--out", default="results/figures", help="output directory (default: %(default)s)")
    ap.add_argument("--k", type=int, default=records.HEADLINE_K)
    ap.add_argument("--epsilon", type=float, default=records.HEADLINE_EPSILON)
    ap.add_argument("--name", default="fig8", help="file stem (default: %(default)s)")
    args = ap.parse_args(argv)
    for p in make_fig8(args.continual_dir, args.out, name=args.name, k=args.k, epsilon=args.epsilon):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
