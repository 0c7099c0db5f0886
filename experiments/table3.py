"""v3 Table 3: scaling the intruder dimensions of a LoRA fine-tune by lambda -- accuracy vs forgetting.

Reads ``lvf-intervene``'s table (``<dir>/intervention.parquet``: one row per condition x lambda, plus PEFT's
``peft_reduce`` row for LoRA runs). The paper (v3, QQP, LoRA r = 8) reports the % change of accuracy and of
forgetting relative to lambda = 1 (the unmodified fine-tune): at lambda = 0.7 accuracy is unchanged and
forgetting drops by 33 %. The ``control`` condition scales each intruder's pretrained neighbour instead, so a
drop that the control does not show is due to the intruders themselves.

    python experiments/table3.py results/forgetting/table3-offline --out results/figures

writes ``table3.csv`` / ``table3.md`` (one row per lambda: accuracy, forgetting and their % changes for the
intruder and control conditions; then the PEFT row) and ``table3-lambda.{pdf,png,csv}`` (accuracy and
forgetting against lambda). :func:`reproduce_table3` picks the preset's run and runs lvf-intervene first.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import figdata
import figstyle
import pandas as pd

from lora_vs_full.cli._common import user_errors_exit
from lora_vs_full.errors import UserError
from lora_vs_full.storage import atomic_write_text

PAPER_TABLE = "v3 Table 3 (scaling intruder dimensions by lambda)"
INTERVENE_HINT = "produce it with: lvf-intervene run=<lvf-train run dir> text_file=<file> out=<dir>"
COLUMNS = ("run", "condition", "lambda", "accuracy", "forgetting", "accuracy_change_pct",
           "forgetting_change_pct", "n_scaled", "head")  # fmt: skip
# Which run each preset intervenes on: (task | None = the preset's first task, LoRA rank). The paper used
# QQP r = 8; offline uses r = 1, the rank with the most intruders in the offline Fig. 5 runs (PAPER.md §10).
PRESET_RUN = {"offline": (None, 1), "paper": ("qqp", 8)}
# Offline: 4 lambdas (incl. the paper's 0.7) x 2 conditions + PEFT = 9 measurements on a small text sample
# and eval subset; the default 8-lambda sweep took over 35 min on 2 loaded cores.
PRESET_OVERRIDES = {
    "offline": (
        "lambdas=[0,0.5,0.7,1]",
        "corpus.n_texts=16",
        "scoring.max_length=64",
        "eval.max_samples=200",
        "progress=false",
    ),  # fmt: skip
    "paper": (),
}


def load_intervention(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """``intervention`` table of lvf-intervene (a directory or a DataFrame), validated."""
    df = figdata.read_table(source, "intervention", COLUMNS, INTERVENE_HINT)
    where = "the intervention table" if isinstance(source, pd.DataFrame) else str(Path(source))
    if df["run"].nunique() > 1:
        raise UserError(f"{where} mixes runs {sorted(df['run'].unique())}: one lvf-intervene out dir per run")
    if not ((df["condition"] == "intruder") & (df["lambda"] == 1.0)).any():
        raise UserError(
            f"{where} has no intruder row at lambda = 1 (the reference); rerun lvf-intervene with 1 in lambdas"
        )
    return df


def table3(source) -> pd.DataFrame:
    """Table 3, wide: one row per lambda with ``<condition>_{accuracy,forgetting,acc_pct,forget_pct}`` for the
    intruder and control conditions, then one ``PEFT reduce_intruder_dimension`` row (lambda 0.75, k = 10,
    epsilon = 0.5, every intruder) when present. % changes are relative to the same condition at lambda = 1,
    exactly as lvf-intervene computed them."""
    df = load_intervention(source)
    sweep = df[df["condition"].isin(["intruder", "control"])]
    wide = None
    for cond in ("intruder", "control"):
        part = sweep[sweep["condition"] == cond].set_index("lambda")[
            ["accuracy", "forgetting", "accuracy_change_pct", "forgetting_change_pct"]
        ]
        if part.empty:
            continue
        part.columns = [f"{cond}_{c}" for c in ("accuracy", "forgetting", "acc_pct", "forget_pct")]
        wide = part if wide is None else wide.join(part, how="outer")
    wide = wide.reset_index().sort_values("lambda")
    wide.insert(0, "row", [f"lambda = {x:g}" for x in wide["lambda"]])
    peft = df[df["condition"] == "peft_reduce"]
    if len(peft):
        p = peft.iloc[0]
        extra = {c: pd.NA for c in wide.columns} | {
            "row": "PEFT reduce_intruder_dimension (all top-10 intruders, eps 0.5)",
            "lambda": p["lambda"],
            "intruder_accuracy": p["accuracy"],
            "intruder_forgetting": p["forgetting"],
            "intruder_acc_pct": p["accuracy_change_pct"],
            "intruder_forget_pct": p["forgetting_change_pct"],
        }
        wide = pd.concat([wide, pd.DataFrame([extra])], ignore_index=True)
    return wide.reset_index(drop=True)


def _fmt(v, spec: str) -> str:
    return "—" if pd.isna(v) else format(v, spec)


def markdown(table: pd.DataFrame, run: str, head: str) -> str:
    """The paper-style Markdown table (% changes vs lambda = 1; absolute values alongside)."""
    lines = [
        f"# Table 3 (paper v3): scaling intruder dimensions -- {run}",
        "",
        f"Pseudo-loss head: {head}. Changes are % vs lambda = 1 of the same condition; forgetting = pseudo-loss "
        "- base pseudo-loss. Control = each intruder's pretrained neighbour scaled instead.",
        "",
        "| | intruder Δ acc % | intruder Δ forgetting % | control Δ acc % | control Δ forgetting % "
        "| intruder acc | intruder forgetting |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table.to_dict("records"):
        lines.append(
            f"| {r['row']} | {_fmt(r.get('intruder_acc_pct'), '+.1f')} | {_fmt(r.get('intruder_forget_pct'), '+.1f')} "
            f"| {_fmt(r.get('control_acc_pct'), '+.1f')} | {_fmt(r.get('control_forget_pct'), '+.1f')} "
            f"| {_fmt(r.get('intruder_accuracy'), '.4f')} | {_fmt(r.get('intruder_forgetting'), '+.4f')} |"
        )
    return "\n".join(lines) + "\n"


def lambda_plot_table(source) -> pd.DataFrame:
    """Long numbers the lambda plot draws: condition, lambda, metric (accuracy | forgetting), value."""
    df = load_intervention(source)
    long = df.melt(id_vars=["condition", "lambda"], value_vars=["accuracy", "forgetting"], var_name="metric")
    return long.sort_values(["metric", "condition", "lambda"]).reset_index(drop=True)


def plot_lambda(long: pd.DataFrame, note: str = ""):
    """Two panels (accuracy, forgetting) against lambda; intruder solid, control dashed, PEFT a star."""
    import matplotlib.pyplot as plt

    style = {
        "intruder": dict(color="C3", ls="-", marker="o"),
        "control": dict(color="0.4", ls="--", marker="s"),
    }
    with figstyle.style():
        fig, axes = plt.subplots(1, 2, figsize=(figstyle.PANEL_WIDTH * 2, figstyle.PANEL_HEIGHT))
        for ax, metric in zip(axes, ("accuracy", "forgetting"), strict=True):
            sub = long[long["metric"] == metric]
            for cond, kw in style.items():
                c = sub[sub["condition"] == cond].sort_values("lambda")
                if len(c):
                    ax.plot(c["lambda"], c["value"], ms=3.5, label=f"{cond} scaled", **kw)
            p = sub[sub["condition"] == "peft_reduce"]
            if len(p):
                ax.scatter(p["lambda"], p["value"], marker="*", s=90, color="C0", zorder=4,
                           label="PEFT reduce_intruder_dimension")  # fmt: skip
            ax.axvline(1.0, color="0.7", lw=0.8, ls=":")
            ax.set_xlabel("λ (scale of the intruder's singular value)")
            ax.set_ylabel("eval accuracy" if metric == "accuracy" else "forgetting (pseudo-loss − base)")
        axes[1].legend()
        fig.suptitle("Scaling intruder dimensions" + (f" [{note}]" if note else ""), fontsize=9)
        fig.tight_layout()
    return fig


def make_table3(source, fig_dir: str | Path, *, name: str = "table3", log=print) -> list[Path]:
    """Write ``<name>.csv``, ``<name>.md`` and ``<name>-lambda.{pdf,png,csv}`` under ``fig_dir``."""
    df = load_intervention(source)
    table = table3(df)
    head = str(df["head"].iloc[0])
    note = "probe MLM head (base ships none)" if head == "probe" else ""
    if note:
        log(f"table3: {note}; forgetting is comparable only within this table")
    fig_dir = Path(fig_dir)
    paths = [figstyle.write_csv(table, fig_dir / f"{name}.csv"),
             atomic_write_text(fig_dir / f"{name}.md", markdown(table, str(df["run"].iloc[0]), head))]  # fmt: skip
    fig = plot_lambda(lambda_plot_table(df), note)
    title = "Accuracy and forgetting vs lambda: intruder vs control scaling"
    paths += figstyle.save(
        fig, lambda_plot_table(df), fig_dir, f"{name}-lambda", paper=PAPER_TABLE, title=title
    )
    return paths


def pick_run(runs_dir: Path, task: str, rank: int) -> Path:
    """The complete LoRA run of ``task`` at ``rank`` under ``runs_dir`` (lowest seed when several)."""
    from lora_vs_full.weights import find_runs

    hint = "train it with: make reproduce-fig5 (or lvf-train method=lora method.rank=...)"
    if not Path(runs_dir).is_dir():
        raise UserError(f"runs directory {runs_dir} does not exist; {hint}")
    found = [
        rc for rc in find_runs(f"{runs_dir}/*/{task}/lora-r{rank}-*/seed*")
        if rc.meta.get("method") == "lora" and int(rc.meta.get("rank") or -1) == rank
    ]  # fmt: skip
    if not found:
        raise UserError(f"no complete LoRA r={rank} run of task {task} under {runs_dir}; {hint}")
    return sorted(found, key=lambda rc: int(rc.meta.get("seed") or 0))[0].run_dir


def reproduce_table3(preset: str = "offline", data_dir: str | None = None, *, fig_dir: str | Path = "results/figures",
                     log=print) -> list[Path]:  # fmt: skip
    """Ensure the preset's Fig. 5 runs, run lvf-intervene on its LoRA run (PRESET_RUN), write Table 3."""
    import presets

    if preset not in PRESET_RUN:
        raise UserError(f"unknown preset {preset!r}: use one of {', '.join(PRESET_RUN)}")
    runs = presets.ensure_fig5_runs(preset, data_dir, log=log)
    p = presets.FIG5[preset]
    task, rank = PRESET_RUN[preset]
    task = task or (p.data_tasks if data_dir else p.tasks)[0]
    run = pick_run(runs, task, rank)
    name = f"table3-{preset}" + ("-wikitext" if data_dir else "")
    out = presets.RESULTS / "forgetting" / name
    text = presets.forgetting_text(preset, data_dir, out, log=log)
    args = [f"run={run}", f"out={out}", *PRESET_OVERRIDES[preset]]
    if text is not None:
        args.append(f"text_file={text}")
    t0 = time.perf_counter()
    presets.lvf("intervene", *args, log=log)
    log(f"table3 [{preset}]: lvf-intervene took {time.perf_counter() - t0:.0f} s")
    return make_table3(out, fig_dir, name=name, log=log)


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("intervene_dir", help="lvf-intervene's out directory (holds intervention.parquet)")
    ap.add_argument("--out", default="results/figures", help="output directory (default: %(default)s)")
    ap.add_argument("--name", default="table3", help="file stem (default: %(default)s)")
    args = ap.parse_args(argv)
    for p in make_table3(args.intervene_dir, args.out, name=args.name):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
