"""Forgetting reproductions: v1 Fig. 9 (pseudo-loss vs rank), v3 Table 3 (scaling intruders) and the v3 §5
correlation (intruders vs forgetting / accuracy across learning rates).

    preset conf/reproduce/{fig9,table3,correlation}_<preset>.yaml
      -> results/runs/<runs_name>/ (lvf-train, in-process; the three share one runs dir, so the correlation's
         run at the default learning rate and Table 3's run are Fig. 9's r = 8 seed)
      -> results/work/<figure>-<preset>/ (lvf-pseudoloss / lvf-intervene parts: reruns fill gaps only)
      -> results/tables/<figure>-<preset>/*.csv + summary.json (headline numbers with 95 % intervals)
         + provenance.json
    experiments/fig9.py, table3.py, fig_correlation.py then draw from those tables.

Text: WikiText-2 test is scored and the MiniLM probe head is fitted on WikiText-2 valid (``DATA_DIR``);
without a data dir the offline presets score the project's own prose (:func:`docs_corpus`, a weak proxy) and
fit the probe on the rest of it; the paper presets read WikiText from the Hub. Intervals: forgetting of one run
is a paired bootstrap over texts (``lvf-pseudoloss``); across seeds a Student-t interval
(``lora_vs_full.stats.t_interval``); Spearman's rho with scipy's p-value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lora_vs_full import stats
from lora_vs_full.errors import UserError
from lora_vs_full.reproduce import common
from lora_vs_full.storage import atomic_write_json, atomic_write_text, atomic_write_with, read_json

DOC_SOURCES = ("README.md", "docs/*.md")
WIKITEXT = "WikiText/wikitext-2-raw"


@dataclass
class _Forgetting:
    """Fields every forgetting preset shares (conf/reproduce/<figure>_<preset>.yaml)."""

    figure: str = "fig9"
    preset: str = "offline"
    paper: str = ""
    model: str = "minilm"
    experiment: str | None = "offline_sst2"
    tasks: list[str] = field(default_factory=lambda: ["synth_sentiment"])  # without DATA_DIR
    data_tasks: list[str] = field(default_factory=lambda: ["sst2"])  # with DATA_DIR
    gpu: bool = False
    runs_name: str = "forgetting-offline"  # results/runs/<runs_name>: shared by fig9, table3, correlation
    train_overrides: dict = field(default_factory=dict)
    n_texts: int = 120  # scored lines (paired across runs)
    max_length: int = 32  # tokens per scored line: each line costs ~max_length forward rows
    fit_n_texts: int = 400  # probe head fit lines (disjoint from the scored ones)
    scoring_overrides: dict = field(default_factory=dict)  # extra lvf-pseudoloss / lvf-intervene overrides


@dataclass
class Fig9Preset(_Forgetting):
    ranks: list[int] = field(default_factory=lambda: [1, 8, 64])
    full: bool = True
    seeds: list[int] = field(default_factory=lambda: [42, 43, 44])
    # per-configuration seeds ("full", "r8", ...), e.g. a reduced run on a shared machine:
    #   seeds=[42] '++seeds_for={r8:[42,43,44],full:[42,43,44]}'
    seeds_for: dict = field(default_factory=dict)


@dataclass
class Table3Preset(_Forgetting):
    figure: str = "table3"
    rank: int = 8
    seed: int = 42
    lambdas: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    mode: str = "top1"
    k: int = 10
    epsilon: float = 0.5
    control_kind: str = "size_matched"
    control_lambdas: list[float] | None = None  # None = the same grid as the intruder rows
    eval_max_samples: int | None = None  # None = the whole eval set (SST-2 dev: 872)


@dataclass
class CorrelationPreset(_Forgetting):
    figure: str = "correlation"
    rank: int = 8
    seed: int = 42
    lrs: list[float | None] = field(default_factory=lambda: [None])  # None = the experiment's own lr rule
    k: int = 10
    epsilon: float = 0.5


def name(cfg) -> str:
    return f"{cfg.figure}-{cfg.preset}"


# ---------------------------------------------------------------------------------------------- text


def docs_corpus(repo: str | Path, dest: str | Path) -> Path:
    """The project's own prose (README + docs/*.md, markdown stripped), one sentence-ish line per text.

    The offline text without WikiText: English the project wrote, not the fine-tuning data. A weak proxy
    (technical register, a few hundred lines, far from a web/books pre-training mix).
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
                s = re.sub(r"^([-*+]|\d+\.)\s+", "", s)
                s = re.sub(r"[`*_]", "", s)
                s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s)
                if sum(w.isalpha() for w in s.split()) >= 6:
                    lines.append(s)
    if not lines:
        raise UserError(f"no prose found in {repo}/{DOC_SOURCES}: pass DATA_DIR with WikiText instead")
    atomic_write_text(Path(dest), "\n".join(lines) + "\n")
    return Path(dest)


def texts_for(cfg, data_dir: str | None, work: Path, log=print) -> tuple[str | None, str | None]:
    """``(text_file, fit_text_file)``: WikiText-2 test / valid from ``data_dir``; offline without it the
    project's prose (fit = its non-scored rest, ``fit_text_file`` None); paper without it: the Hub."""
    if data_dir is not None:
        test, valid = (
            Path(data_dir) / WIKITEXT / "wiki.test.raw",
            Path(data_dir) / WIKITEXT / "wiki.valid.raw",
        )
        if not test.is_file() or not valid.is_file():
            raise UserError(
                f"DATA_DIR={data_dir} has no {WIKITEXT}/wiki.{{test,valid}}.raw: add them or drop DATA_DIR"
            )
        return str(test.resolve()), str(valid.resolve())
    if cfg.preset == "offline":
        text = docs_corpus(Path(__file__).resolve().parents[2], work / "corpus-docs.txt")
        log(f"[{name(cfg)}] no WikiText file: scoring the project's prose ({text}), a weak proxy")
        return str(text), None
    return None, None


def scoring_overrides(cfg, data_dir, work: Path, log=print) -> list[str]:
    text, fit = texts_for(cfg, data_dir, work, log)
    ov = [
        f"corpus.n_texts={int(cfg.n_texts)}",
        f"fit_corpus.n_texts={int(cfg.fit_n_texts)}",
        f"scoring.max_length={int(cfg.max_length)}",
        "progress=false",
    ]
    ov += [f"text_file={text}"] if text else []
    ov += [f"fit_text_file={fit}"] if fit else []
    return ov + common.to_overrides(cfg.scoring_overrides)


# ---------------------------------------------------------------------------------------------- runs


def _train_common(cfg, data_dir) -> tuple[list[str], str]:
    task = (cfg.data_tasks if data_dir else cfg.tasks)[0]
    ov = [f"model={cfg.model}", f"paths.runs_dir={common.runs_dir(cfg.runs_name)}", f"task={task}"]
    if cfg.experiment:
        ov.insert(0, f"experiment={cfg.experiment}")
    if data_dir:
        ov.append(f"task.data_dir={Path(data_dir).resolve()}")
    return ov + common.to_overrides(cfg.train_overrides), task


def fig9_sweep(cfg, data_dir) -> list[list[str]]:
    ov, _ = _train_common(cfg, data_dir)
    methods = {f"r{int(r)}": ["method=lora", f"method.rank={int(r)}"] for r in cfg.ranks}
    if cfg.full:
        methods["full"] = ["method=full"]
    unknown = set(cfg.seeds_for) - set(methods)
    if unknown:
        raise UserError(
            f"seeds_for names {sorted(unknown)}, which the preset does not train; use {sorted(methods)}"
        )
    return [
        [*ov, *m, f"seed={int(s)}"] for key, m in methods.items() for s in cfg.seeds_for.get(key, cfg.seeds)
    ]


def correlation_sweep(cfg, data_dir) -> list[list[str]]:
    ov, _ = _train_common(cfg, data_dir)
    lora = ["method=lora", f"method.rank={int(cfg.rank)}", f"seed={int(cfg.seed)}"]
    return [[*ov, *lora, *([] if lr is None else [f"method.lr={lr}"])] for lr in cfg.lrs]


# Execution settings added to lvf-train's schema after some offline runs were trained (fp32 on a CPU either
# way): a complete run whose stored config differs from today's ONLY in these keys is reused, and said so.
_EXECUTION_ONLY = ("optim.attn_implementation", "optim.compile", "optim.fused_adamw", "optim.tf32",
                   "optim.precision", "optim.group_by_length: None -> False", "optim.bf16: False -> None")  # fmt: skip


def _ensure(cfg, sweep: list[list[str]], log) -> list[Path]:
    """Train (idempotently) every run of ``sweep``; returns their dirs in sweep order."""
    from lora_vs_full.config import compose_train
    from lora_vs_full.runs import _stored_changes, is_complete, run_dir_for

    if cfg.gpu:
        common.require_gpu(cfg.preset, "training")
    dirs, todo = [], []
    for ov in sweep:
        d = run_dir_for(compose_train(ov))
        changes = _stored_changes(d, compose_train(ov)) if is_complete(d) else None
        if changes and all(c.startswith(_EXECUTION_ONLY) for c in changes):
            log(f"reusing {d}: made before lvf-train gained execution settings ({'; '.join(changes)})")
        else:
            todo.append(ov)
        dirs.append(d)
    common.train_runs(todo, log=log)
    return dirs


def _score(cfg, run_dirs: list[Path], data_dir, log) -> pd.DataFrame:
    """lvf-pseudoloss over every complete run of the shared runs dir (parts reused across reruns and between
    fig9 and the correlation, one base row), returned for ``run_dirs`` + the base row."""
    from lora_vs_full.cli.pseudoloss import score

    work = common.work_dir(cfg.runs_name + "-pseudoloss")
    ov = [
        f"runs={common.runs_dir(cfg.runs_name)}/*/*/*/seed*",
        f"out={work}",
        *scoring_overrides(cfg, data_dir, work, log),
    ]
    df = score(common.compose_command("pseudoloss", ov))
    wanted = {read_json(Path(d) / "final.json")["run_id"] for d in run_dirs}
    return df[(df["method"] == "base") | df["run"].isin(wanted)].reset_index(drop=True)


def _csv(df: pd.DataFrame, path: Path) -> Path:
    """A committed table: CSV only, written atomically."""
    return atomic_write_with(path, lambda p: df.to_csv(p, index=False))


def _ci(mean, low, high, spec: str = "+.3f") -> str:
    """``"+0.112 [+0.080, +0.141]"``: a number with its 95 % interval, for the docs tables (``*_doc.csv``)."""
    if mean is None or not np.isfinite(mean):
        return "–"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{mean:{spec}} (one seed: no interval)"
    return f"{mean:{spec}} [{low:{spec}}, {high:{spec}}]"


# ---------------------------------------------------------------------------------------------- fig9


def fig9_tables(pl: pd.DataFrame) -> pd.DataFrame:
    """Seeds aggregated: one row per (method, rank) with mean and t-interval across seeds of forgetting and
    accuracy, and the mean within-run (over texts) interval half-width; the base row has forgetting 0."""
    runs = pl[pl["method"].isin(["lora", "full"])]
    rows = []
    for (method, rank), g in runs.groupby(["method", "rank"], dropna=False):
        f, a = stats.t_interval(g["forgetting"]), stats.t_interval(g["eval_accuracy"])
        rows.append({
            "method": method, "rank": rank, "n_seeds": len(g), "pseudo_loss": g["pseudo_loss"].mean(),
            "forgetting": f.mean, "forgetting_low": f.low, "forgetting_high": f.high,
            "text_half_width": float(((g["forgetting_high"] - g["forgetting_low"]) / 2).mean()),
            "accuracy": a.mean, "accuracy_low": a.low, "accuracy_high": a.high,
        })  # fmt: skip
    base = pl[pl["method"] == "base"].iloc[0]
    rows.append({"method": "base", "rank": np.nan, "n_seeds": 1, "pseudo_loss": base["pseudo_loss"],
                 "forgetting": 0.0, "forgetting_low": 0.0, "forgetting_high": 0.0, "text_half_width": 0.0})  # fmt: skip
    order = {"base": 0, "full": 1, "lora": 2}
    out = pd.DataFrame(rows)
    return (
        out.assign(_o=out["method"].map(order))
        .sort_values(["_o", "rank"])
        .drop(columns="_o")
        .reset_index(drop=True)
    )


def _welch(a, b) -> dict:
    """mean(a) - mean(b) across seeds with Welch's 95 % interval (scipy.stats.ttest_ind)."""
    from scipy import stats as st

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if min(a.size, b.size) < 2:
        return {"mean": float(a.mean() - b.mean()), "low": None, "high": None}
    ci = st.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return {"mean": float(a.mean() - b.mean()), "low": float(ci.low), "high": float(ci.high),
            "distinguishable": stats.distinguishable(ci.low, ci.high)}  # fmt: skip


def seed_differences(pl: pd.DataFrame) -> dict:
    """The comparisons Fig. 9's claims rest on: forgetting of full FT minus each LoRA rank, and every other rank
    minus r = 8 (the U-shape), across seeds (Welch)."""
    runs = pl[pl["method"].isin(["lora", "full"])]
    f = {("full" if m == "full" else f"r{int(r)}"): g["forgetting"].to_numpy()
         for (m, r), g in runs.groupby(["method", "rank"], dropna=False)}  # fmt: skip
    out = {}
    for key, vals in f.items():
        if key != "full" and "full" in f:
            out[f"full_minus_{key}_forgetting"] = _welch(f["full"], vals)
    if "r8" in f:
        for key in (k for k in f if k not in ("full", "r8")):
            out[f"{key}_minus_r8_forgetting"] = _welch(f[key], f["r8"])
    return out


def text_differences(pl: pd.DataFrame, texts_path: Path) -> dict:
    """Same seed, same texts: forgetting of full FT (and of every other rank) minus LoRA r = 8 at the lowest seed
    both have, as a paired bootstrap over texts -- the comparison a one-seed configuration still allows."""
    if not texts_path.is_file():
        return {}
    texts = pd.read_parquet(texts_path)
    runs = pl[pl["method"].isin(["lora", "full"])]
    r8 = runs[(runs["method"] == "lora") & (runs["rank"] == 8)]
    out = {}
    for (m, r), g in runs.groupby(["method", "rank"], dropna=False):
        key = "full" if m == "full" else f"r{int(r)}"
        common_seeds = sorted(set(g["seed"]) & set(r8["seed"]))
        if key == "r8" or not common_seeds:
            continue
        seed = common_seeds[0]
        a = texts[texts["run"] == g[g["seed"] == seed]["run"].iloc[0]].sort_values("text")["pseudo_loss"]
        b = texts[texts["run"] == r8[r8["seed"] == seed]["run"].iloc[0]].sort_values("text")["pseudo_loss"]
        est = stats.paired_bootstrap(a.to_numpy(), b.to_numpy())
        out[f"{key}_minus_r8_seed{int(seed)}_texts"] = {"mean": est.mean, "low": est.low, "high": est.high,
                                                        "distinguishable": est.distinguishable()}  # fmt: skip
    return out


def _run_rows(pl: pd.DataFrame) -> pd.DataFrame:
    cols = ["run", "method", "rank", "lr", "seed", "eval_accuracy", "pseudo_loss", "forgetting", "forgetting_low",
            "forgetting_high", "n_texts", "head"]  # fmt: skip
    return pl[cols].sort_values(["method", "rank", "lr", "seed"], na_position="first").reset_index(drop=True)


def reproduce_fig9(cfg, data_dir: str | None = None, log=print) -> list[Path]:
    """Train the preset's ranks x seeds (+ full FT), score every run paired with the base, write the tables."""
    run_dirs = _ensure(cfg, fig9_sweep(cfg, data_dir), log)
    pl = _score(cfg, run_dirs, data_dir, log)
    tables = common.tables_dir(name(cfg))
    agg = fig9_tables(pl)
    paths = [_csv(_run_rows(pl), tables / "runs.csv"), _csv(agg, tables / "fig9.csv")]
    doc = pd.DataFrame({
        "fine-tune": ["base (untouched)" if m == "base" else ("full FT" if m == "full" else f"LoRA r = {int(r)}")
                      for m, r in zip(agg["method"], agg["rank"], strict=True)],
        "seeds": agg["n_seeds"],
        "forgetting (nats) [95 % CI across seeds]": [_ci(*x) for x in zip(agg["forgetting"], agg["forgetting_low"], agg["forgetting_high"], strict=True)],
        "within-run CI half-width (texts)": [f"{x:.3f}" for x in agg["text_half_width"]],
        "SST-2 dev accuracy [95 % CI across seeds]": [_ci(*x, spec=".3f") for x in zip(agg.get("accuracy", np.nan), agg.get("accuracy_low", np.nan), agg.get("accuracy_high", np.nan), strict=True)],
    })  # fmt: skip
    paths.append(_csv(doc, tables / "fig9_doc.csv"))
    summary = {
        "head": str(pl["head"].iloc[0]),
        "n_texts": int(pl["n_texts"].max()),
        "max_text_half_width": float(agg["text_half_width"].max()),
        "seeds": list(cfg.seeds),
        "seeds_by_config": "; ".join(
            f"{'full FT' if m == 'full' else f'r = {int(r)}'}: {', '.join(str(int(x)) for x in sorted(g['seed']))}"
            for (m, r), g in pl[pl["method"] != "base"].groupby(["method", "rank"], dropna=False)
        ),
    }
    for r in agg[agg["method"] != "base"].to_dict("records"):
        key = "full" if r["method"] == "full" else f"lora_r{int(r['rank'])}"
        summary[f"{key}_forgetting"] = {
            "mean": r["forgetting"],
            "low": r["forgetting_low"],
            "high": r["forgetting_high"],
        }
        summary[f"{key}_accuracy"] = {
            "mean": r["accuracy"],
            "low": r["accuracy_low"],
            "high": r["accuracy_high"],
        }
    summary |= seed_differences(pl)
    summary |= text_differences(
        pl, common.work_dir(cfg.runs_name + "-pseudoloss") / "pseudoloss_texts.parquet"
    )
    paths.append(atomic_write_json(tables / "summary.json", _round(summary)))
    paths.append(
        common.write_provenance(tables, preset=f"fig9_{cfg.preset}", data_dir=data_dir, runs=len(run_dirs))
    )
    for r in agg.to_dict("records"):
        what = (
            "base"
            if r["method"] == "base"
            else ("full FT" if r["method"] == "full" else f"LoRA r={int(r['rank'])}")
        )
        log(f"fig9 {what:>10}: forgetting {r['forgetting']:+.4f} [{r['forgetting_low']:+.4f}, {r['forgetting_high']:+.4f}] "
            f"({r['n_seeds']} seeds), accuracy {r.get('accuracy', float('nan')):.4f}")  # fmt: skip
    log(f"fig9: from {tables / 'fig9.csv'} (per run: {tables / 'runs.csv'})")
    return paths


# ---------------------------------------------------------------------------------------------- table3


def reproduce_table3(cfg, data_dir: str | None = None, log=print) -> list[Path]:
    """Train (or reuse) the LoRA r = ``rank`` run, run lvf-intervene on it, write Table 3 with intervals."""
    from lora_vs_full.cli.intervene import intervene

    ov, _ = _train_common(cfg, data_dir)
    (run,) = _ensure(
        cfg, [[*ov, "method=lora", f"method.rank={int(cfg.rank)}", f"seed={int(cfg.seed)}"]], log
    )
    work = common.work_dir(name(cfg))
    lams = "[" + ",".join(f"{x:g}" for x in cfg.lambdas) + "]"
    iv = [f"run={run}", f"out={work}", f"lambdas={lams}", f"mode={cfg.mode}", f"k={int(cfg.k)}",
          f"epsilon={cfg.epsilon}", f"control_kind={cfg.control_kind}", *scoring_overrides(cfg, data_dir, work, log)]  # fmt: skip
    if data_dir:
        iv.append(f"eval.data_dir={Path(data_dir).resolve()}")
    if cfg.control_lambdas is not None:
        iv.append("control_lambdas=[" + ",".join(f"{x:g}" for x in cfg.control_lambdas) + "]")
    if cfg.eval_max_samples is not None:
        iv.append(f"eval.max_samples={int(cfg.eval_max_samples)}")
    df = intervene(common.compose_command("intervene", iv))
    tables = common.tables_dir(name(cfg))
    keep = ["condition", "lambda", "n_scaled", "sigma_scaled", "accuracy", "accuracy_low", "accuracy_high",
            "n_examples", "forgetting", "forgetting_low", "forgetting_high", "n_texts", "delta_accuracy",
            "delta_accuracy_low", "delta_accuracy_high", "accuracy_change_pct", "accuracy_change_pct_low",
            "accuracy_change_pct_high", "accuracy_distinct", "delta_forgetting", "delta_forgetting_low",
            "delta_forgetting_high", "forgetting_change_pct", "forgetting_change_pct_low",
            "forgetting_change_pct_high", "forgetting_distinct", "head"]  # fmt: skip
    table = df[keep].reset_index(drop=True)
    paths = [_csv(table, tables / "table3.csv")]
    shown = table[(table["condition"] == "peft_reduce") | (table["lambda"] != 1.0)]
    yes = {True: "yes", False: "no"}
    doc = pd.DataFrame({
        "condition": shown["condition"], "λ": shown["lambda"].map(lambda x: f"{x:g}"),
        "accuracy": shown["accuracy"].map(lambda x: f"{x:.3f}"),
        "Δ accuracy % [95 % CI]": [_ci(*x, spec="+.1f") for x in zip(shown["accuracy_change_pct"], shown["accuracy_change_pct_low"], shown["accuracy_change_pct_high"], strict=True)],
        "Δ forgetting % [95 % CI]": [_ci(*x, spec="+.1f") for x in zip(shown["forgetting_change_pct"], shown["forgetting_change_pct_low"], shown["forgetting_change_pct_high"], strict=True)],
        "distinguishable from 0 (acc / forgetting)": [f"{yes[bool(a)]} / {yes[bool(f)]}" for a, f in zip(shown["accuracy_distinct"], shown["forgetting_distinct"], strict=True)],
    })  # fmt: skip
    paths.append(_csv(doc, tables / "table3_doc.csv"))
    summary = {"run": str(df["run"].iloc[0]), "head": str(df["head"].iloc[0]), "n_examples": int(df["n_examples"].max()),
               "n_texts": int(df["n_texts"].max()), "control_kind": cfg.control_kind,
               "n_matrices_scaled": int(df["n_matrices"].max()),
               "control_lambdas": ", ".join(f"{x:g}" for x in sorted(table.loc[table["condition"] == "control", "lambda"]) if x != 1.0)}  # fmt: skip
    for r in table.to_dict("records"):
        key = f"{r['condition']}_lam{r['lambda']:g}".replace(".", "p")  # docs read keys split on "."
        summary[key] = {
            "accuracy_change_pct": [r["accuracy_change_pct"], r["accuracy_change_pct_low"], r["accuracy_change_pct_high"]],
            "forgetting_change_pct": [r["forgetting_change_pct"], r["forgetting_change_pct_low"], r["forgetting_change_pct_high"]],
            "accuracy_distinct": bool(r["accuracy_distinct"]), "forgetting_distinct": bool(r["forgetting_distinct"]),
        }  # fmt: skip
    ref = table[(table["condition"] == "intruder") & (table["lambda"] == 1.0)].iloc[0]
    summary["reference_forgetting"] = [ref["forgetting"], ref["forgetting_low"], ref["forgetting_high"]]
    summary["reference_accuracy"] = [ref["accuracy"], ref["accuracy_low"], ref["accuracy_high"]]
    paths.append(atomic_write_json(tables / "summary.json", _round(summary)))
    paths.append(
        common.write_provenance(tables, preset=f"table3_{cfg.preset}", data_dir=data_dir, run=str(run))
    )
    for r in table.to_dict("records"):
        log(f"table3 {r['condition']:>11} λ={r['lambda']:<4g}: Δacc {r['accuracy_change_pct']:+.1f}% "
            f"[{r['accuracy_change_pct_low']:+.1f}, {r['accuracy_change_pct_high']:+.1f}]  Δforgetting "
            f"{r['forgetting_change_pct']:+.1f}% [{r['forgetting_change_pct_low']:+.1f}, {r['forgetting_change_pct_high']:+.1f}]")  # fmt: skip
    log(f"table3: from {tables / 'table3.csv'}")
    return paths


# ---------------------------------------------------------------------------------------------- correlation


def count_intruders(run_dir: Path, *, k: int, epsilon: float, preset: str = "all_linear") -> int:
    """Intruders among the top-k left vectors (|cos| < epsilon to every pretrained one), summed over matrices."""
    from lora_vs_full.cli.intervene import _matrices
    from lora_vs_full.forgetting.scorer import load_encoder
    from lora_vs_full.runs import load_run_model, read_final
    from lora_vs_full.spectral.intruders import intruder_counts, max_abs_cos
    from lora_vs_full.spectral.svd import thin_svd

    final = read_final(run_dir)
    model, _, _ = load_run_model(run_dir, merged=True)
    base = _matrices(load_encoder(str(final["base_model"]), revision=final.get("base_revision")), preset)
    total = 0
    for key, W in _matrices(model, preset).items():
        m = max_abs_cos(thin_svd(W.detach()).U, thin_svd(base[key].detach()).U, k)
        total += int(intruder_counts(m, [k], [epsilon])[0, 0])
    return total


def reproduce_correlation(cfg, data_dir: str | None = None, log=print) -> list[Path]:
    """r = ``rank`` at each learning rate: intruders, forgetting (paired CI) and accuracy per run; Spearman."""
    run_dirs = _ensure(cfg, correlation_sweep(cfg, data_dir), log)
    pl = _score(cfg, run_dirs, data_dir, log)
    work = common.work_dir(name(cfg))
    rows = []
    for d in run_dirs:
        final = read_json(Path(d) / "final.json")
        cache = work / "intruders" / f"{final['run_id'].replace('/', '__')}.json"
        src = {"final": (Path(d) / "final.json").read_text(), "k": int(cfg.k), "epsilon": float(cfg.epsilon)}
        if cache.is_file() and read_json(cache).get("source") == src:
            n = read_json(cache)["n_intruders"]
        else:
            log(f"correlation: counting intruders of {final['run_id']}")
            n = count_intruders(Path(d), k=int(cfg.k), epsilon=float(cfg.epsilon))
            atomic_write_json(cache, {"source": src, "n_intruders": n})
        r = pl[pl["run"] == final["run_id"]].iloc[0]
        rows.append({"run": final["run_id"], "lr": final["lr"], "n_intruders": n, "eval_accuracy": final["eval_accuracy"],
                     "diverged": bool(final.get("diverged")), "forgetting": r["forgetting"],
                     "forgetting_low": r["forgetting_low"], "forgetting_high": r["forgetting_high"],
                     "head": r["head"]})  # fmt: skip
    table = pd.DataFrame(rows).sort_values("lr").reset_index(drop=True)
    rho_f, p_f = stats.spearman(table["n_intruders"], table["forgetting"])
    rho_a, p_a = stats.spearman(table["n_intruders"], table["eval_accuracy"])
    rho_lr, p_lr = stats.spearman(table["lr"], table["n_intruders"])
    tables = common.tables_dir(name(cfg))
    rho = {
        "intruders_vs_forgetting": {"rho": rho_f, "p": p_f},
        "intruders_vs_accuracy": {"rho": rho_a, "p": p_a},
        "lr_vs_intruders": {"rho": rho_lr, "p": p_lr},
        "n_runs": len(table), "rank": int(cfg.rank), "k": int(cfg.k), "epsilon": float(cfg.epsilon),
        "paper": {"intruders_vs_forgetting": {"rho": 0.971, "p": "<< 0.001"},
                  "intruders_vs_accuracy": {"rho": -0.338, "p": 0.218}, "setting": "RoBERTa-base MNLI (v3 §5)"},
    }  # fmt: skip
    paths = [_csv(table, tables / "runs.csv"), atomic_write_json(tables / "rho.json", _round(rho))]
    doc = pd.DataFrame({
        "learning rate": table["lr"].map(lambda x: f"{x:.3g}"), "intruders (k=10, ε=0.5)": table["n_intruders"],
        "forgetting (nats) [95 % CI over texts]": [_ci(*x) for x in zip(table["forgetting"], table["forgetting_low"], table["forgetting_high"], strict=True)],
        "SST-2 dev accuracy": table["eval_accuracy"].map(lambda x: f"{x:.3f}"),
    })  # fmt: skip
    paths.append(_csv(doc, tables / "runs_doc.csv"))
    summary = {"rho_intruders_forgetting": rho_f, "p_intruders_forgetting": p_f, "rho_intruders_accuracy": rho_a,
               "p_intruders_accuracy": p_a, "n_runs": len(table), "head": str(table["head"].iloc[0]),
               "max_text_half_width": float(((table["forgetting_high"] - table["forgetting_low"]) / 2).max())}  # fmt: skip
    paths.append(atomic_write_json(tables / "summary.json", _round(summary)))
    paths.append(
        common.write_provenance(
            tables, preset=f"correlation_{cfg.preset}", data_dir=data_dir, runs=len(run_dirs)
        )
    )
    log(f"correlation ({len(table)} runs, r={cfg.rank}): intruders vs forgetting rho {rho_f:+.3f} (p {p_f:.3g}); "
        f"intruders vs accuracy rho {rho_a:+.3f} (p {p_a:.3g}) -- from {tables / 'rho.json'}")  # fmt: skip
    return paths


def _round(obj, nd: int = 6):
    """JSON-ready: floats rounded (NaN -> None), numpy scalars unwrapped, recursively."""
    if isinstance(obj, dict):
        return {k: _round(v, nd) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, nd) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else round(float(obj), nd)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
