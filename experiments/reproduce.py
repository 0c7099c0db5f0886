"""Driver behind `make demo` and `make reproduce-*`: runs -> analysis table -> figures, each step idempotent.

    python experiments/reproduce.py fig5 --preset offline [--data-dir ../shared/data/raw]
    python experiments/reproduce.py fig5 --preset paper          # RoBERTa-base, six tasks; GPU + Hub
    python experiments/reproduce.py fig5 --preset llama          # analysis only: public LLaMA-2-7B fine-tunes
    python experiments/reproduce.py fig8 | fig9 | table3 --preset offline|paper
    python experiments/reproduce.py figures                      # redraw everything from existing tables

A crash or Ctrl-C loses at most the run in progress: rerunning fills only the gaps. The last lines printed
say where the figures and tables are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import fig5
import fig_erank
import fig_heatmap
import fig_similarity
import fig_spectra
import figdata
import pandas as pd
import presets

from lora_vs_full import records
from lora_vs_full.cli._common import user_errors_exit
from lora_vs_full.errors import UserError
from lora_vs_full.storage import write_table

FIGURES = presets.RESULTS / "figures"


def _accuracies(runs_dir: Path) -> pd.DataFrame:
    rows = []
    for final in sorted(runs_dir.glob("*/*/*/seed*/final.json")):
        f = json.loads(final.read_text())
        rows.append({"run": f["run_id"], "eval_accuracy": f.get("eval_accuracy")})
    return pd.DataFrame(rows, columns=["run", "eval_accuracy"])


def headline(analysis: Path, runs_dir: Path | None) -> pd.DataFrame:
    """Per run: dev accuracy and intruders (k = 10, summed over matrices) at eps = 0.3 / 0.5 / 0.7 / 0.9."""
    df = figdata.final_only(figdata.at_k(figdata.load_intruders(analysis), records.HEADLINE_K))
    eps = (0.3, 0.5, 0.7, 0.9)
    df = df[df["epsilon"].round(2).isin(eps)]
    sums = df.groupby(["run", "epsilon"])["n_intruders"].sum().unstack("epsilon")  # sum over matrices
    sums.columns = [f"eps={e:.1f}" for e in sums.columns]
    meta = df.drop_duplicates("run").set_index("run")[["task", "method", "rank", "lr"]]
    wide = meta.join(sums).reset_index()
    if runs_dir is not None:
        wide = wide.merge(_accuracies(runs_dir), on="run", how="left")
    wide["_full"] = wide["method"] == "full"
    return wide.sort_values(["task", "_full", "rank"]).drop(columns="_full").reset_index(drop=True)


def draw_fig5(preset: str, runs_dir: Path | None = None, log=print) -> list[Path]:
    """Fig. 5 plus the companion figures (similarity, heat map, spectra, effective rank) from the tables."""
    analysis, out = presets.analysis_dir(preset), presets.figures_dir(preset)
    if not (analysis / "intruders.parquet").is_file():
        raise UserError(f"no analysis table at {analysis}: run `make reproduce-fig5 PRESET={preset}` first")
    paths = fig5.make_fig5(analysis, out)
    table = figdata.load_intruders(analysis)
    at = figdata.at_epsilon(figdata.at_k(figdata.final_only(table), records.HEADLINE_K), 0.5)
    for task in sorted(table["task"].dropna().unique()):
        lora = sorted(int(r) for r in table[(table.task == task) & (table.method == "lora")]["rank"].unique())
        has_full = ((table.task == task) & (table.method == "full")).any()
        if not lora:
            continue
        runs = figdata.runs_for(table, task, ranks=lora[:2], full=has_full)
        low = at[at.run == runs[-2 if len(lora) > 1 else -1]]
        matrix = low.groupby("matrix")["n_intruders"].sum().idxmax()  # the lowest rank's busiest matrix
        paths += fig_similarity.make_similarity(analysis, runs, matrix, out, name=f"similarity-{task}")
        paths += fig_heatmap.make_heatmap(table, runs, out, name=f"heatmap-{task}")
        paths += fig_spectra.make_spectra(analysis, runs, matrix, out, name=f"spectra-{task}")
    paths += fig_erank.make_erank(analysis, out)
    head = headline(analysis, runs_dir)
    write_table(head, out / "headline")
    log("")
    log(f"Headline ({preset}): dev accuracy and intruder dimensions (k = 10, summed over matrices)")
    log(head.drop(columns=["run"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    log("")
    log(f"figure: {out / 'fig5.pdf'} (+ .png, exact numbers in fig5.csv)")
    log(f"tables: {analysis / 'intruders.parquet'}, {analysis / 'matrices.parquet'}, {out / 'headline.csv'}")
    return paths


def reproduce_fig5(preset: str, data_dir: str | None, log=print) -> list[Path]:
    if preset == "llama":
        return reproduce_llama(log)
    runs = presets.ensure_fig5_runs(preset, data_dir, log=log)
    analysis = presets.analysis_dir(preset)
    presets.lvf("analyze", f"runs={runs}/*/*/*/seed*", f"out={analysis}", "progress=false", log=log)
    return draw_fig5(preset, runs, log=log)


def reproduce_llama(log=print) -> list[Path]:
    """Analysis only (PAPER.md §7): LLaMA-2-7B vs its public LoRA and full fine-tunes, streamed from the Hub."""
    presets.require_gpu("llama", "analysis (7B matrices, float64 SVD)")
    analysis = presets.analysis_dir("llama")
    tables = {"intruders": [], "matrices": []}
    for hub_id, task, method, rank in presets.LLAMA_TUNED:
        part = analysis / "parts" / records.file_safe(hub_id)
        if not (part / "intruders.parquet").is_file():
            presets.lvf(
                "analyze", f"base={presets.LLAMA_BASE}", f"tuned={hub_id}", f"out={part}", f"label={hub_id}",
                log=log,
            )  # fmt: skip
        for name in tables:
            df = pd.read_parquet(part / f"{name}.parquet")
            df = df.assign(model="llama-2-7b", task=task, method=method, rank=rank)
            tables[name].append(df)
    for name, dfs in tables.items():
        write_table(pd.concat(dfs, ignore_index=True), analysis / name)
    return draw_fig5("llama", None, log=log)


def redraw_all(log=print) -> list[Path]:
    """Every figure whose tables exist; trains and analyses nothing."""
    paths = []
    for analysis in sorted((presets.RESULTS / "analysis").glob("fig5-*")):
        preset = analysis.name.removeprefix("fig5-")
        runs = presets.runs_dir(preset)
        paths += draw_fig5(preset, runs if runs.is_dir() else None, log=log)
    for out in sorted((presets.RESULTS / "continual").glob("*/continual.parquet")):
        import fig8

        paths += fig8.make_fig8(out.parent, FIGURES, name=f"fig8-{out.parent.name}")
    for out in sorted((presets.RESULTS / "forgetting").glob("fig9-*/pseudoloss.parquet")):
        import fig9

        paths += fig9.make_fig9(out.parent, FIGURES, name=out.parent.name)
    for out in sorted((presets.RESULTS / "forgetting").glob("table3-*/intervention.parquet")):
        import table3

        paths += table3.make_table3(out.parent, FIGURES, name=out.parent.name)
    if not paths:
        raise UserError(
            "no result tables to draw yet: run `make demo` or `make reproduce-fig5 PRESET=offline` first"
        )
    return paths


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["fig5", "fig8", "fig9", "table3", "figures"])
    ap.add_argument("--preset", default="paper", choices=["paper", "offline", "llama"])
    ap.add_argument("--data-dir", default=None, help="original dataset release files (offline clusters)")
    args = ap.parse_args(argv)
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise UserError(f"DATA_DIR={args.data_dir} is not a directory")
    if args.preset == "llama" and args.what != "fig5":
        raise UserError("PRESET=llama exists for fig5 only (analysis of public checkpoints)")
    if args.what == "fig5":
        paths = reproduce_fig5(args.preset, args.data_dir)
    elif args.what == "fig8":
        import fig8

        paths = fig8.reproduce_fig8(args.preset, args.data_dir, fig_dir=FIGURES)
    elif args.what == "fig9":
        import fig9

        paths = fig9.reproduce_fig9(args.preset, args.data_dir, fig_dir=FIGURES)
    elif args.what == "table3":
        import table3

        paths = table3.reproduce_table3(args.preset, args.data_dir, fig_dir=FIGURES)
    else:
        paths = redraw_all()
    print(f"\n{len(paths)} files written; figures under {FIGURES}")


if __name__ == "__main__":
    main()
