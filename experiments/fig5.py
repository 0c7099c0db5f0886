"""v1 Fig. 5 (v3 Fig. 4): number of intruder dimensions against epsilon, full FT vs LoRA ranks.

For every run, the count at (k, epsilon) is the SUM over all analysed matrices (paper §1); seeds of one
configuration are averaged (spread shown faintly). One panel per task, one curve per LoRA rank (sequential
colours) plus full fine-tuning (black); dotted line at the headline epsilon = 0.5.

    python experiments/fig5.py --preset offline        # a reproduction's tables -> results/figures/fig5-offline
    python experiments/fig5.py <lvf-analyze out dir> --out <dir>

writes ``fig5.{pdf,png,csv}`` and ``fig5_headline.csv`` (intruders at k = 10, epsilon = 0.5 per task x
rank | full) and prints the headline.

``--metric energy_share`` (or ``nearest_rank``) plots, instead of the count, the share of the top-k spectral energy carried by
intruders (records.INTRUDER_SCALE_COLUMNS, mean over matrices): at 4096 dimensions counts saturate (every
top-k vector of a random direction falls below eps = 0.5), the energy share does not (PAPER.md §13). Count
plots draw the random-direction expectation (``n_random`` summed over matrices) as a grey reference
when the table has it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import figdata
import figstyle
import pandas as pd

from lora_vs_full import layout, records
from lora_vs_full.cli._common import user_errors_exit
from lora_vs_full.errors import UserError

PAPER_FIGURE = "v1 Fig. 5 (v3 Fig. 4)"
METRICS = {  # metric -> (table column, aggregation over a run's matrices, y-axis label)
    "count": ("n_intruders", "sum", "# intruder dimensions (k={k})"),
    "energy_share": ("energy_share", "mean", "intruder share of top-{k} energy (mean over matrices)"),
    # NaN where a matrix has no intruder: the mean is over the matrices that have one
    "nearest_rank": ("nearest_rank", "mean", "normalised rank of intruders' nearest pretrained vector"),
}


def _metric(metric: str) -> tuple[str, str, str]:
    try:
        return METRICS[metric]
    except KeyError:
        raise UserError(f"metric={metric!r} is not known; use one of {', '.join(METRICS)}") from None


def _check_run_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Curves need method (and rank for LoRA); model/task may be absent (a pair analysis without them)."""
    bad = df[df["method"].isna() | ((df["method"] != "full") & df["rank"].isna())]
    if not bad.empty:
        raise UserError(
            f"run {bad['run'].iloc[0]!r} has no method/rank in the table (written by an older lvf-analyze pair "
            "mode); re-run lvf-analyze, which reads them from the adapter config"
        )
    return df.assign(model=df["model"].fillna("model"), task=df["task"].fillna("all"))


HEADLINE_EPSILONS = (0.3, 0.5, 0.7, 0.9)


def fig5_table(
    intruders: str | Path | pd.DataFrame,
    *,
    k: int = records.HEADLINE_K,
    runs: list[str] | None = None,
    tasks: list[str] | None = None,
    metric: str = "count",
) -> pd.DataFrame:
    """The plotted numbers: one row per curve x epsilon.

    Columns: model, task, method, rank, alpha, lr, label, epsilon, n_intruders (mean over seeds of the
    per-run sum over matrices), n_min, n_max (seed spread), n_seeds, n_matrices (matrices per run; the
    count is bounded by k * n_matrices), and n_random (random-direction expectation) when the table has it.
    ``metric="energy_share"``: the value column is ``energy_share`` (per-run mean over matrices) instead.
    """
    column, agg, _ = _metric(metric)
    df = figdata.final_only(figdata.load_intruders(intruders))
    if column not in df.columns:
        raise UserError(f"the intruders table has no {column!r} column; re-run lvf-analyze to add it")
    df = _check_run_columns(df)
    df = figdata.pick(df, "run", runs, what="intruders table")
    df = figdata.pick(df, "task", tasks, what="intruders table")
    df = figdata.at_k(df, k)
    # Public checkpoints (lvf-analyze tuned=[...] / manifest) carry no seed: each is its own curve, so two
    # full fine-tunes of one base (the Alpaca pair) are drawn side by side instead of averaged.
    per_checkpoint = bool(df["seed"].isna().all())
    if not per_checkpoint:
        figdata.check_one_run_per_seed(df)
    # Round the grid so 0.1 + 0.2-style float noise cannot split one epsilon into two groups.
    df = df.assign(epsilon=df["epsilon"].astype(float).round(6))
    keys = [*figdata.CURVE_COLUMNS, *(["run"] if per_checkpoint else []), "epsilon"]
    extra = {"n_random": ("n_random", "sum")} if metric == "count" and "n_random" in df.columns else {}
    per_run = (
        df.groupby(list(dict.fromkeys([*keys, "run"])), dropna=False)
        .agg(**{column: (column, agg)}, n_matrices=("matrix", "nunique"), **extra)
        .reset_index()
    )
    curves = (
        per_run.groupby(keys, dropna=False)
        .agg(
            **{column: (column, "mean")},
            n_min=(column, "min"),
            n_max=(column, "max"),
            n_seeds=("run", "nunique"),
            n_matrices=("n_matrices", "max"),
            **{k: (k, "mean") for k in extra},
        )
        .reset_index()
    )
    curves = figdata.add_curve_labels(curves)
    if per_checkpoint:  # same label for two checkpoints of one panel: name them by their Hub org / folder
        dup = curves.duplicated(["model", "task", "label", "epsilon"], keep=False)
        owner = curves["run"].astype(str).map(lambda r: r.strip("/").split("/")[0] if "/" in r else r)
        curves.loc[dup, "label"] = curves.loc[dup, "label"] + " (" + owner[dup] + ")"
    cols = [
        *figdata.CURVE_COLUMNS,
        "label",
        "epsilon",
        column,
        "n_min",
        "n_max",
        "n_seeds",
        "n_matrices",
        *extra,
    ]
    return figdata.sort_panels(figdata.curve_order(curves[cols])).reset_index(drop=True)


def _value_column(table: pd.DataFrame) -> str:
    return next(col for col, _, _ in METRICS.values() if col in table.columns)


def headline(table: pd.DataFrame, *, epsilon: float = records.HEADLINE_EPSILON) -> pd.DataFrame:
    """Task x (LoRA rank | full) values (counts, or energy shares) at ``epsilon`` from :func:`fig5_table`."""
    at = figdata.at_epsilon(table, epsilon).assign(panel=lambda d: figdata.panel_names(d))
    order = list(dict.fromkeys(figdata.curve_order(at)["label"]))
    wide = at.pivot_table(index="panel", columns="label", values=_value_column(table), aggfunc="first")
    wide = wide.loc[list(dict.fromkeys(at["panel"])), [c for c in order if c in wide.columns]]  # table order
    return wide.reset_index().rename(columns={"panel": "task"}).rename_axis(columns=None)


def plot_fig5(table: pd.DataFrame, *, k: int = records.HEADLINE_K, epsilon: float = records.HEADLINE_EPSILON):
    """Draw :func:`fig5_table`'s output; returns the matplotlib Figure (nothing is saved)."""
    value = _value_column(table)
    ylabel = next(lab for col, _, lab in METRICS.values() if col == value).format(k=k)
    table = table.assign(panel=figdata.panel_names(table))
    panels = list(dict.fromkeys(table["panel"]))
    colors = figstyle.rank_colors(table.loc[table["method"] != "full", "rank"].dropna())
    # One dash per configuration of a rank, fixed across panels (lr variants: solid, dashed, ...).
    dashes = ["-", "--", "-.", ":"]
    configs = figdata.curve_order(table.drop_duplicates("label"))  # legend order over all panels
    n_before = configs.groupby(["method", configs["rank"].astype("Float64")], dropna=False).cumcount()
    style = {lab: dashes[i % len(dashes)] for lab, i in zip(configs["label"], n_before, strict=True)}
    with figstyle.style():
        fig, axes = figstyle.panel_grid(len(panels))
        handles = {}
        for ax, panel in zip(axes, panels, strict=True):
            sub = table[table["panel"] == panel]
            for label in dict.fromkeys(sub["label"]):
                c = sub[sub["label"] == label].sort_values("epsilon")
                method, rank = c["method"].iloc[0], c["rank"].iloc[0]
                color = figstyle.FULL_COLOR if method == "full" else colors[int(rank)]
                (line,) = ax.plot(c["epsilon"], c[value], color=color, ls=style[label], label=label)
                if c["n_seeds"].max() > 1:
                    ax.fill_between(c["epsilon"], c["n_min"], c["n_max"], color=color, alpha=0.15, lw=0)
                handles.setdefault(label, line)
            if "n_random" in sub.columns:  # the same for every curve of a model: draw the first one's
                ref = sub[sub["label"] == sub["label"].iloc[0]].sort_values("epsilon")
                (line,) = ax.plot(ref["epsilon"], ref["n_random"], color="0.6", ls=":", lw=1.2)
                handles.setdefault("random directions", line)
            ax.axvline(epsilon, color="0.4", ls=":", lw=1)
            ax.set_title(panel)
            ax.set_xlim(0, 1)
            ax.set_ylim(bottom=0)
            ax.set_xlabel("ε (max |cos| threshold)")
        for ax in axes[:: min(len(axes), 4)]:
            ax.set_ylabel(ylabel)
        order = [*configs["label"], *(["random directions"] if "random directions" in handles else [])]
        figstyle.legend(fig, {lab: handles[lab] for lab in order})  # global curve order
        fig.tight_layout()
    return fig


def make_fig5(
    intruders: str | Path | pd.DataFrame,
    out_dir: str | Path,
    *,
    k: int = records.HEADLINE_K,
    epsilon: float = records.HEADLINE_EPSILON,
    runs: list[str] | None = None,
    tasks: list[str] | None = None,
    name: str = "fig5",
    metric: str = "count",
) -> list[Path]:
    """Write ``<name>.{pdf,png,csv}`` and ``<name>_headline.csv`` into ``out_dir``; return their paths."""
    table = fig5_table(intruders, k=k, runs=runs, tasks=tasks, metric=metric)
    fig = plot_fig5(table, k=k, epsilon=epsilon)
    title = {
        "count": f"Intruder dimensions vs epsilon (k={k}, summed over matrices)",
        "energy_share": f"Intruder share of the top-{k} spectral energy vs epsilon (mean over matrices)",
        "nearest_rank": f"Normalised rank of the intruders' nearest pretrained vectors vs epsilon (k={k})",
    }[metric]
    paths = figstyle.save(fig, table, out_dir, name, paper=PAPER_FIGURE, title=title)
    paths.append(figstyle.write_csv(headline(table, epsilon=epsilon), Path(out_dir) / f"{name}_headline.csv"))
    return paths


def run_headline(analysis: str | Path | pd.DataFrame, runs: pd.DataFrame | None) -> pd.DataFrame:
    """Per run: dev accuracy (from the reproduction's runs.csv) and intruders (k = 10, summed over matrices)
    at eps = 0.3 / 0.5 / 0.7 / 0.9."""
    df = figdata.final_only(figdata.at_k(figdata.load_intruders(analysis), records.HEADLINE_K))
    df = df[df["epsilon"].round(2).isin(HEADLINE_EPSILONS)]
    sums = df.groupby(["run", "epsilon"])["n_intruders"].sum().unstack("epsilon")  # sum over matrices
    sums.columns = [f"eps={e:.1f}" for e in sums.columns]
    meta = df.drop_duplicates("run").set_index("run")[["task", "method", "rank", "lr"]]
    wide = meta.join(sums).reset_index()
    if runs is not None:
        keep = [c for c in ("run", "eval_accuracy", "acc_low", "acc_high", "eval_n") if c in runs.columns]
        wide = wide.merge(runs[keep], on="run", how="left")
        wide = _vs_full(wide)
    wide["_full"] = wide["method"] == "full"
    return wide.sort_values(["task", "_full", "rank"]).drop(columns="_full").reset_index(drop=True)


def _vs_full(wide: pd.DataFrame) -> pd.DataFrame:
    """``d_acc`` (this run minus full FT of the same task, first full run) with Newcombe's 95 % interval
    ``d_low``/``d_high``: an interval containing 0 is no measurable accuracy difference."""
    from lora_vs_full import stats

    out = wide.assign(d_acc=float("nan"), d_low=float("nan"), d_high=float("nan"))
    if "eval_n" not in out.columns:
        return out
    for _task, rows in out.groupby("task"):
        full = rows[(rows["method"] == "full") & rows["eval_n"].notna()]
        if full.empty:
            continue
        f = full.iloc[0]
        for i, r in rows.iterrows():
            if r["method"] == "full" or pd.isna(r["eval_n"]):
                continue
            n, nf = int(r["eval_n"]), int(f["eval_n"])
            e = stats.proportion_difference(
                round(r["eval_accuracy"] * n), n, round(f["eval_accuracy"] * nf), nf
            )
            out.loc[i, ["d_acc", "d_low", "d_high"]] = [e.mean, e.low, e.high]
    return out


def draw_all(analysis: Path, out: Path, runs_csv: Path | None = None, log=print) -> list[Path]:
    """Fig. 5 plus its companions (similarity, heat map, spectra, effective rank) and the headline table."""
    import fig_erank
    import fig_heatmap
    import fig_similarity
    import fig_spectra

    if not (analysis / "intruders.parquet").is_file():
        raise UserError(f"no analysis table at {analysis}: run `make reproduce-fig5 PRESET=...` first")
    paths = make_fig5(analysis, out)
    table = figdata.load_intruders(analysis)
    at = figdata.at_epsilon(figdata.at_k(figdata.final_only(table), records.HEADLINE_K), 0.5)
    for task in sorted(table["task"].dropna().unique()):
        lora = sorted(
            int(r) for r in table[(table.task == task) & (table.method == "lora")]["rank"].dropna().unique()
        )
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
    runs = pd.read_csv(runs_csv) if runs_csv is not None and runs_csv.is_file() else None
    head = run_headline(analysis, runs)
    paths.append(figstyle.write_csv(head, out / "headline.csv"))
    log("")
    log("Headline: dev accuracy and intruder dimensions (k = 10, summed over matrices)")
    log(head.drop(columns=["run"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if runs is not None and "substitutions" in runs:  # substitute data files (final.json), named visibly
        for note in sorted({n for v in runs["substitutions"].dropna() for n in str(v).split("; ") if n}):
            log(f"NOTE: substitute data: {note}")
    log("")
    log(f"figure: {out / 'fig5.png'} (exact numbers in fig5.csv); headline: {out / 'headline.csv'}")
    log(f"analysis tables: {analysis / 'intruders.parquet'}, {analysis / 'matrices.parquet'}")
    return paths


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "analysis_dir", nargs="?", help="directory written by lvf-analyze (holds intruders.parquet)"
    )
    ap.add_argument(
        "--preset",
        help="draw a reproduction: results/work/fig5-<preset>/analysis -> results/figures/fig5-<preset>",
    )
    ap.add_argument("--out", default="results/figures", help="output directory (default: %(default)s)")
    ap.add_argument("--k", type=int, default=records.HEADLINE_K)
    ap.add_argument("--epsilon", type=float, default=records.HEADLINE_EPSILON, help="headline epsilon")
    ap.add_argument("--tasks", nargs="+", help="only these tasks")
    ap.add_argument("--runs", nargs="+", help="only these run ids")
    ap.add_argument("--name", default="fig5", help="file stem (default: %(default)s)")
    ap.add_argument(
        "--metric", choices=sorted(METRICS), default="count", help="count (paper) or energy_share"
    )
    args = ap.parse_args(argv)
    if args.preset:
        name = f"fig5-{args.preset}"
        draw_all(
            layout.work_dir(name) / "analysis", layout.figures_dir(name), layout.tables_dir(name) / "runs.csv"
        )
        return
    if not args.analysis_dir:
        raise UserError("give an analysis directory or --preset offline|paper|llama")
    paths = make_fig5(
        args.analysis_dir,
        args.out,
        k=args.k,
        epsilon=args.epsilon,
        runs=args.runs,
        tasks=args.tasks,
        name=args.name,
        metric=args.metric,
    )
    table = pd.read_csv(paths[-1])
    what = {"count": "intruder dimensions", "energy_share": "intruder energy share"}.get(
        args.metric, args.metric
    )
    print(f"{what} at k={args.k}, epsilon={args.epsilon} (over matrices, mean over seeds):")
    print(table.to_string(index=False))
    for p in paths:
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
