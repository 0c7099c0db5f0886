"""Sweeps of LoRA configurations against intruder counts: alpha rule, PEFT variants, B-only, dataset size.

One preset shape serves four figures (conf/reproduce/{alpha,variants,bonly,datasize}_<preset>.yaml): named
``groups`` of lvf-train overrides (a curve each), optionally crossed with ``x_values`` of one override key
(``x_key``: the rank, the training-set size), plus an optional full fine-tuning reference, for every task
and seed::

    preset -> results/runs/<runs_name>/            (lvf-train, in-process; runs shared between the figures)
      -> results/work/<runs_name>/analysis/<run>/  (lvf-analyze per run, k = the preset's k)
      -> results/tables/<figure>-<preset>/runs.csv      one row per run: accuracy (+ Wilson interval over the
                                                        eval examples), intruders at (k, epsilon)
                                                 curves.csv    intruders (sum over matrices) vs epsilon per run
                                                 summary.csv   per (task, group, x): means with t intervals
                                                               across seeds (NaN width with one seed)
                                                 summary.json  the same, nested, for the docs' lvf:value markers
    experiments/fig_<figure>.py draws from those tables.

The four presets share one runs directory (``runs_name``) so a configuration two figures need (LoRA r = 8,
alpha = 2r is the baseline of all four) trains once. Every step is idempotent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from lora_vs_full.errors import UserError
from lora_vs_full.reproduce import common
from lora_vs_full.storage import atomic_write_json, atomic_write_with, read_json


@dataclass
class SweepPreset:
    """conf/reproduce/{alpha,variants,bonly,datasize}_*.yaml."""

    figure: str = "variants"
    preset: str = "offline"
    paper: str = ""
    claim: str = ""  # the paper's statement the figure tests (docs/figures.md)
    model: str = "minilm"
    experiment: str | None = None
    tasks: list[str] = field(default_factory=list)
    data_tasks: list[str] = field(default_factory=list)
    runs_name: str | None = None  # results/runs/<runs_name>/ (default <figure>-<preset>)
    x_key: str | None = None  # lvf-train key swept along the x axis, e.g. method.rank
    x_label: str | None = None  # axis label
    x_values: list[Any] = field(default_factory=list)
    groups: dict[str, Any] = field(default_factory=dict)  # curve label -> lvf-train overrides (key -> value)
    full: bool = False  # add a full fine-tuning reference run per task and seed
    seeds: list[int] = field(default_factory=lambda: [42])
    gpu: bool = False
    train_overrides: dict = field(default_factory=dict)
    analyze_overrides: dict = field(default_factory=dict)
    k: int = 10
    epsilon: float = 0.5


FULL = "full FT"


def name(cfg) -> str:
    return f"{cfg.figure}-{cfg.preset}"


def runs_name(cfg) -> str:
    return cfg.runs_name or name(cfg)


def plan(cfg, data_dir: str | None) -> list[dict]:
    """Every run of the preset: ``{"task", "group", "x", "seed", "overrides"}`` (also what tests check)."""
    tasks = list(cfg.data_tasks if data_dir else cfg.tasks)
    if not tasks:
        raise UserError(
            f"preset {cfg.figure}_{cfg.preset} lists no tasks{' for DATA_DIR' if data_dir else ''}"
        )
    if not cfg.groups and not cfg.full:
        raise UserError(f"preset {cfg.figure}_{cfg.preset} has no groups: list the configurations to compare")
    if cfg.x_values and not cfg.x_key:
        raise UserError(
            f"preset {cfg.figure}_{cfg.preset} has x_values but no x_key (e.g. x_key: method.rank)"
        )
    if not cfg.seeds:
        raise UserError(f"preset {cfg.figure}_{cfg.preset}: seeds=[] trains nothing; give at least one seed")
    base = [f"model={cfg.model}", f"paths.runs_dir={common.runs_dir(runs_name(cfg))}"]
    if cfg.experiment:
        base.insert(0, f"experiment={cfg.experiment}")
    if data_dir:
        base.append(f"task.data_dir={Path(data_dir).resolve()}")
    base += common.to_overrides(cfg.train_overrides)
    xs = list(cfg.x_values) or [None]
    runs_root = common.runs_dir(runs_name(cfg))
    out = []
    for task in tasks:
        for group, ov in cfg.groups.items():
            for x in xs:
                x_ov = [] if x is None else [f"{cfg.x_key}={common._fmt(x)}"]
                for seed in cfg.seeds:
                    overrides = [*base, f"task={task}", f"seed={int(seed)}", *common.to_overrides(ov), *x_ov]
                    overrides = _own_dir(cfg, overrides, x, runs_root)
                    out.append(
                        {"task": task, "group": str(group), "x": x, "seed": int(seed), "overrides": overrides}
                    )
        if cfg.full:
            for seed in cfg.seeds:
                overrides = [*base, f"task={task}", f"seed={int(seed)}", "method=full"]
                out.append(
                    {"task": task, "group": FULL, "x": None, "seed": int(seed), "overrides": overrides}
                )
    return out


def _own_dir(cfg, overrides: list[str], x, runs_root: Path) -> list[str]:
    """Run names carry the method, not ``task.*`` / ``optim.*`` values: a swept value of such a key trains into
    ``<runs>/<key>-<x>/`` -- except the recipe's own value, whose run is the shared baseline."""
    if x is None or not cfg.x_key or cfg.x_key.startswith("method.") or cfg.x_key == "seed":
        return overrides
    from lora_vs_full.config import compose_train

    default = OmegaConf.select(
        compose_train([o for o in overrides if not o.startswith(f"{cfg.x_key}=")]), cfg.x_key
    )
    if default == x:
        return overrides
    own = f"paths.runs_dir={runs_root / f'{cfg.x_key}-{common._fmt(x)}'}"
    return [own if o.startswith("paths.runs_dir=") else o for o in overrides]


def sweep(cfg, data_dir: str | None) -> list[list[str]]:
    """The lvf-train override lists (what lvf-preflight plans)."""
    return [p["overrides"] for p in plan(cfg, data_dir)]


def write_csv(df: pd.DataFrame, stem: Path) -> Path:
    """``<stem>.csv`` atomically (committed tables are CSV only: small, diffable, exact)."""
    return atomic_write_with(Path(stem).with_suffix(".csv"), lambda p: df.to_csv(p, index=False))


def eval_count(run_dir: Path) -> int | None:
    """Examples in the final evaluation (metrics.jsonl's last eval event)."""
    n = None
    path = Path(run_dir) / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            ev = json.loads(line)
            if ev.get("event") == "eval":
                n = ev.get("n")
    return n


def analyse_run(run_dir: Path, out: Path, analyze_overrides: dict, *, k: int, steps: bool = False) -> Path:
    """lvf-analyze runs=<run_dir> out=<out> (idempotent: an up-to-date part is skipped)."""
    from lora_vs_full.cli.analyze import run as analyze

    ov = common.to_overrides(analyze_overrides)
    if not any(o.startswith("ks=") for o in ov):
        ov.append(f"ks=[{int(k)}]")
    analyze(common.compose_command("analyze", [f"runs={run_dir}", f"out={out}", f"steps={str(steps).lower()}",
                                               "progress=false", *ov]))  # fmt: skip
    return out


def intruder_curve(intruders: pd.DataFrame, *, k: int) -> pd.DataFrame:
    """Final checkpoint, one k: ``epsilon -> n_intruders`` summed over the matrices (paper §1)."""
    df = intruders[(intruders["k"] == k) & intruders["step"].isna()]
    if df.empty:
        raise UserError(f"the analysis has no rows at k={k}; re-run it with ks=[{k}] or set the preset's k")
    df = df.assign(epsilon=df["epsilon"].astype(float).round(6))
    return df.groupby("epsilon", as_index=False).agg(
        n_intruders=("n_intruders", "sum"), n_matrices=("matrix", "nunique")
    )


def run_row(item: dict, run_dir: Path, curve: pd.DataFrame, *, epsilon: float) -> dict:
    from lora_vs_full import stats

    final = read_json(Path(run_dir) / "final.json")
    n = eval_count(run_dir)
    acc = final.get("eval_accuracy")
    est = stats.binomial(round(acc * n), n) if (acc is not None and n) else None
    at = curve[(curve["epsilon"] - epsilon).abs() < 1e-9]
    return {
        "task": item["task"], "group": item["group"], "x": item["x"], "seed": item["seed"], "run": final["run_id"],
        "method": final.get("method"), "variant": final.get("variant"), "train": final.get("train"),
        "rank": final.get("rank"), "alpha": final.get("alpha"), "lr": final.get("lr"), "steps": final.get("steps"),
        "eval_accuracy": acc, "eval_n": n, "acc_low": est.low if est else math.nan,
        "acc_high": est.high if est else math.nan, "diverged": final.get("diverged"),
        "n_intruders": int(at["n_intruders"].iloc[0]) if len(at) else None,
        "n_matrices": int(curve["n_matrices"].max()), "substitutions": "; ".join(final.get("substitutions") or []),
    }  # fmt: skip


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, group, x): mean intruders and accuracy across seeds with Student-t intervals."""
    from lora_vs_full import stats

    rows = []
    for (task, group, x), sub in runs.groupby(["task", "group", "x"], dropna=False, sort=False):
        n_int = stats.t_interval(sub["n_intruders"].astype(float))
        acc = stats.t_interval(sub["eval_accuracy"].astype(float))
        single = len(sub) == 1  # one seed: the accuracy interval is Wilson's over the eval examples
        rows.append({
            "task": task, "group": group, "x": x, "n_seeds": len(sub),
            "intruders_mean": n_int.mean, "intruders_low": n_int.low, "intruders_high": n_int.high,
            "acc_mean": acc.mean, "acc_low": sub["acc_low"].iloc[0] if single else acc.low,
            "acc_high": sub["acc_high"].iloc[0] if single else acc.high,
            "acc_interval": "wilson (eval examples)" if single else "t (seeds)",
            "rank": sub["rank"].iloc[0], "alpha": sub["alpha"].iloc[0], "lr": sub["lr"].iloc[0],
        })  # fmt: skip
    return pd.DataFrame(rows)


def _slug(v) -> str:
    text = "none" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    return text.replace(".", "p").replace(" ", "_")


def _num(v):
    """NaN (an interval from one seed) -> None, so the JSON stays standard."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def summary_json(summary: pd.DataFrame) -> dict:
    """``{task: {group: {x: {intruders: {mean, low, high}, accuracy: {...}, n_seeds}}}}`` (no dots in keys)."""
    out: dict = {}
    for r in summary.to_dict("records"):
        x = r["x"]
        x = (
            None
            if x is None or (isinstance(x, float) and math.isnan(x))
            else (int(x) if float(x).is_integer() else x)
        )
        node = out.setdefault(_slug(r["task"]), {}).setdefault(_slug(r["group"]), {})
        node[_slug(x)] = {
            "intruders": {k: _num(r[f"intruders_{k}"]) for k in ("mean", "low", "high")},
            "accuracy": {k: _num(r[f"acc_{k}"]) for k in ("mean", "low", "high")},  # NaN bound -> null
            "n_seeds": int(r["n_seeds"]),
        }
    return out


def reproduce(cfg, data_dir: str | None = None, log=print) -> list[Path]:
    """Train + analyse every run of the preset, then write the tables (partial when some runs fail)."""
    if cfg.gpu:
        common.require_gpu(cfg.preset, "training")
    work, tables = common.work_dir(runs_name(cfg)) / "analysis", common.tables_dir(name(cfg))
    rows, curves, failed = [], [], []
    items = plan(cfg, data_dir)
    for i, item in enumerate(items, 1):
        log(
            f"[{cfg.figure} {i}/{len(items)}] {item['task']} {item['group']} x={item['x']} seed={item['seed']}"
        )
        try:
            (run_dir,) = common.train_runs([item["overrides"]], log=log)
            from lora_vs_full.records import file_safe

            # one analysis folder per run directory (run ids repeat across a swept task/optim value)
            rel = Path(run_dir).resolve().relative_to(common.runs_dir(runs_name(cfg)).resolve())
            out = analyse_run(run_dir, work / file_safe(str(rel)), cfg.analyze_overrides, k=cfg.k)
            curve = intruder_curve(pd.read_parquet(out / "intruders.parquet"), k=cfg.k)
        except UserError as exc:
            failed.append(f"{item['group']} x={item['x']} seed={item['seed']}: {str(exc).splitlines()[-1]}")
            log(f"error: {failed[-1]}")
            continue
        rows.append(run_row(item, run_dir, curve, epsilon=cfg.epsilon))
        curves.append(curve.assign(task=item["task"], group=item["group"], x=item["x"], seed=item["seed"],
                                   run=rows[-1]["run"]))  # fmt: skip
    paths: list[Path] = []
    if rows:
        runs = pd.DataFrame(rows)
        paths.append(write_csv(runs, tables / "runs"))
        cols = ["task", "group", "x", "seed", "run", "epsilon", "n_intruders", "n_matrices"]
        paths.append(write_csv(pd.concat(curves, ignore_index=True)[cols], tables / "curves"))
        summary = summarise(runs)
        paths.append(write_csv(summary, tables / "summary"))
        meta = {
            "figure": cfg.figure,
            "k": cfg.k,
            "epsilon": cfg.epsilon,
            "x_key": cfg.x_key,
            "paper": cfg.paper,
        }
        paths.append(atomic_write_json(tables / "summary.json", {"meta": meta, **summary_json(summary)}))
        paths.append(common.write_provenance(tables, preset=f"{cfg.figure}_{cfg.preset}", data_dir=data_dir,
                                             runs=len(rows), failed=failed))  # fmt: skip
        log(f"tables: {tables}/runs.csv, summary.csv")
    if failed:
        raise UserError(
            f"{len(failed)} of {len(items)} runs failed ({len(rows)} tabled): " + " | ".join(failed)
        )
    return paths
