"""How intruders appear during training: a LoRA run and full FT with saved steps, analysed at every step.

    preset (conf/reproduce/evolution_<preset>.yaml)
      -> results/runs/evolution-<preset>/       (lvf-train, optim.checkpoint_every_steps = the preset's)
      -> results/work/evolution-<preset>/analysis/<run>/   (lvf-analyze runs=<run> steps=true)
      -> results/tables/evolution-<preset>/evolution.csv   one row per (run, step, matrix), see evolution_table
                                            steps.csv      per (run, step): sums / means over the matrices
                                            runs.csv, summary.json, provenance.json
    experiments/fig_evolution.py draws it.

Paper (§2 of PAPER.md): the intruder's singular value grows during training and its direction settles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lora_vs_full.errors import UserError
from lora_vs_full.records import SPECTRA_DIR, file_safe
from lora_vs_full.reproduce import common
from lora_vs_full.reproduce.variants import analyse_run, write_csv
from lora_vs_full.storage import atomic_write_json, read_json


@dataclass
class EvolutionPreset:
    """conf/reproduce/evolution_*.yaml."""

    figure: str = "evolution"
    preset: str = "offline"
    paper: str = "PAPER.md §2: intruders over training (appendix)"
    model: str = "minilm"
    experiment: str | None = None
    tasks: list[str] = field(default_factory=list)
    data_tasks: list[str] = field(default_factory=list)
    lora: dict = field(
        default_factory=lambda: {"method": "lora", "method.rank": 8}
    )  # the LoRA run's overrides
    full: bool = True  # full fine-tuning beside it
    checkpoint_every_steps: int = 25
    seeds: list[int] = field(default_factory=lambda: [42])
    gpu: bool = False
    train_overrides: dict = field(default_factory=dict)
    analyze_overrides: dict = field(default_factory=dict)
    k: int = 10
    epsilon: float = 0.5


def name(cfg) -> str:
    return f"evolution-{cfg.preset}"


def sweep(cfg, data_dir: str | None) -> list[list[str]]:
    tasks = list(cfg.data_tasks if data_dir else cfg.tasks)
    if not tasks:
        raise UserError(f"preset evolution_{cfg.preset} lists no tasks{' for DATA_DIR' if data_dir else ''}")
    if int(cfg.checkpoint_every_steps) < 1:
        raise UserError(f"checkpoint_every_steps={cfg.checkpoint_every_steps} must be >= 1")
    base = [f"model={cfg.model}", f"paths.runs_dir={common.runs_dir(name(cfg))}",
            f"optim.checkpoint_every_steps={int(cfg.checkpoint_every_steps)}"]  # fmt: skip
    if cfg.experiment:
        base.insert(0, f"experiment={cfg.experiment}")
    if data_dir:
        base.append(f"task.data_dir={Path(data_dir).resolve()}")
    base += common.to_overrides(cfg.train_overrides)
    methods = [common.to_overrides(cfg.lora)] + ([["method=full"]] if cfg.full else [])
    return [[*base, f"task={t}", f"seed={int(s)}", *m] for t in tasks for m in methods for s in cfg.seeds]


def _spectra(analysis: Path, part: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    path = analysis / SPECTRA_DIR / f"{file_safe(part)}.safetensors"
    if not path.is_file():
        raise UserError(f"no spectra at {path}: re-run lvf-analyze steps=true on the run")
    return load_file(str(path))


def evolution_table(analysis: str | Path, *, k: int = 10, epsilon: float = 0.5) -> pd.DataFrame:
    """One row per (run, step, matrix) of an lvf-analyze output made with ``steps=true``.

    Columns: run, model, task, method, rank, seed, step (the final checkpoint gets the run's step count and
    is dropped when a saved step-<n> is the same step), matrix, layer, module, n_intruders (top-``k`` tuned
    vectors whose max |cos| to every pretrained vector is below ``epsilon``; equals lvf-analyze's count),
    top_rank (1-based position of the highest-sigma intruder among the tuned singular values; NaN when
    none), top_sigma (its singular value), top_max_cos (its max |cos|), sigma_1 (the largest tuned singular
    value, for scale), nearest (index of the pretrained vector it is closest to; NaN when none).
    """
    analysis = Path(analysis)
    intr = pd.read_parquet(analysis / "intruders.parquet")
    keys = ["run", "model", "task", "method", "rank", "seed", "step"]
    rows = []
    for ident, sub in intr.groupby(keys, dropna=False, sort=False):
        meta = dict(zip(keys, ident, strict=True))
        step = meta["step"]
        final = step is None or (isinstance(step, float) and math.isnan(step)) or pd.isna(step)
        part = meta["run"] if final else f"{meta['run']}@step-{int(step)}"
        tensors = _spectra(analysis, part)
        for matrix, layer, module in (
            sub[["matrix", "layer", "module"]].drop_duplicates().itertuples(index=False)
        ):
            max_cos = tensors[f"{matrix}.max_cos"].astype(np.float64)
            if len(max_cos) < k:
                raise UserError(
                    f"the spectra keep {len(max_cos)} vectors < k={k}; re-run lvf-analyze with ks=[{k}]"
                )
            sigma = tensors[f"{matrix}.sigma_tuned"].astype(np.float64)
            nearest = tensors.get(f"{matrix}.nearest")
            hits = np.flatnonzero(max_cos[:k] < epsilon)
            i = int(hits[0]) if len(hits) else None
            rows.append({
                **meta, "final": bool(final), "matrix": matrix, "layer": int(layer), "module": module,
                "n_intruders": int(len(hits)), "top_rank": i + 1 if i is not None else math.nan,
                "top_sigma": float(sigma[i]) if i is not None else math.nan,
                "top_max_cos": float(max_cos[i]) if i is not None else math.nan, "sigma_1": float(sigma[0]),
                "nearest": int(nearest[i]) if (i is not None and nearest is not None) else math.nan,
            })  # fmt: skip
    df = pd.DataFrame(rows)
    if df.empty:
        raise UserError(f"{analysis} has no rows to tabulate")
    df["step"] = df["step"].astype("Float64")
    return df


def with_final_steps(df: pd.DataFrame, final_steps: dict[str, int]) -> pd.DataFrame:
    """Give the final checkpoint its step count; drop it where a saved step-<n> is that same step."""
    df = df.copy()
    df.loc[df["final"], "step"] = df.loc[df["final"], "run"].map(final_steps).astype("Float64")
    dup = df.duplicated(["run", "step", "matrix"], keep=False) & df["final"]
    return df[~dup].sort_values(["run", "step", "layer", "module"]).reset_index(drop=True)


def step_summary(evo: pd.DataFrame) -> pd.DataFrame:
    """Per (run, step): total intruders, matrices with one, and the top intruders' mean sigma / rank / |cos|."""
    g = evo.groupby(["run", "task", "method", "rank", "seed", "step"], dropna=False, sort=True)
    return g.agg(
        n_intruders=("n_intruders", "sum"), n_matrices=("matrix", "nunique"),
        matrices_with_intruder=("top_rank", lambda s: int(s.notna().sum())),
        top_sigma_mean=("top_sigma", "mean"), top_rank_median=("top_rank", "median"),
        top_max_cos_mean=("top_max_cos", "mean"), sigma_1_mean=("sigma_1", "mean"),
    ).reset_index()  # fmt: skip


def reproduce(cfg, data_dir: str | None = None, log=print) -> list[Path]:
    from lora_vs_full.reproduce.variants import eval_count

    if cfg.gpu:
        common.require_gpu(cfg.preset, "training")
    work, tables = common.work_dir(name(cfg)) / "analysis", common.tables_dir(name(cfg))
    run_dirs = common.train_runs(sweep(cfg, data_dir), log=log)
    evos, runs = [], []
    for rd in run_dirs:
        final = read_json(Path(rd) / "final.json")
        out = analyse_run(rd, work / file_safe(final["run_id"]), cfg.analyze_overrides, k=cfg.k, steps=True)
        evo = evolution_table(out, k=cfg.k, epsilon=cfg.epsilon)
        evos.append(with_final_steps(evo, {final["run_id"]: int(final["steps"])}))
        runs.append({"run": final["run_id"], "task": final["task"], "method": final["method"], "rank": final["rank"],
                     "alpha": final["alpha"], "lr": final["lr"], "seed": final["seed"], "steps": final["steps"],
                     "eval_accuracy": final["eval_accuracy"], "eval_n": eval_count(rd),
                     "checkpoint_every_steps": int(cfg.checkpoint_every_steps)})  # fmt: skip
    evo = pd.concat(evos, ignore_index=True)
    steps = step_summary(evo)
    paths = [write_csv(evo.drop(columns=["final"]), tables / "evolution"), write_csv(steps, tables / "steps"),
             write_csv(pd.DataFrame(runs), tables / "runs")]  # fmt: skip
    summary = {}
    for (run, method), sub in steps.groupby(["run", "method"], sort=False):
        sub = sub.sort_values("step")
        first = sub[sub["n_intruders"] > 0]
        summary[file_safe(str(method))] = {
            "run": run, "final_intruders": int(sub["n_intruders"].iloc[-1]),
            "first_step_with_intruder": int(first["step"].iloc[0]) if len(first) else None,
            "top_sigma_first": float(first["top_sigma_mean"].iloc[0]) if len(first) else None,
            "top_sigma_final": float(sub["top_sigma_mean"].iloc[-1]) if len(first) else None,
            "top_max_cos_first": float(first["top_max_cos_mean"].iloc[0]) if len(first) else None,
            "top_max_cos_final": float(sub["top_max_cos_mean"].iloc[-1]) if len(first) else None,
        }  # fmt: skip
    meta = {"k": cfg.k, "epsilon": cfg.epsilon, "checkpoint_every_steps": int(cfg.checkpoint_every_steps)}
    paths.append(atomic_write_json(tables / "summary.json", {"meta": meta, **summary}))
    paths.append(
        common.write_provenance(tables, preset=f"evolution_{cfg.preset}", data_dir=data_dir, runs=len(runs))
    )
    log(f"tables: {tables}/evolution.csv ({len(evo)} rows), steps.csv")
    return paths
