"""v1 Fig. 5 (v3 Fig. 4): train the preset's LoRA ranks and full FT, analyse every run, write the tables.

    preset (conf/reproduce/fig5_<preset>.yaml) -> results/runs/fig5-<preset>/ (lvf-train, in-process)
      -> results/work/fig5-<preset>/analysis/ (lvf-analyze, in-process: parquet + spectra)
      -> results/tables/fig5-<preset>/runs.csv (one row per run: accuracy, lr, steps)
      -> results/tables/fig5-<preset>/analysis/ (a small extract the notebook reads on a fresh clone)
    experiments/fig5.py then draws from those tables.

The llama preset trains nothing: it analyses public fine-tunes of one base (PAPER.md §7, §11).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lora_vs_full.errors import UserError
from lora_vs_full.reproduce import common
from lora_vs_full.storage import read_json, write_table


@dataclass
class Fig5Preset:
    """conf/reproduce/fig5_*.yaml. ``tasks`` without a data dir, ``data_tasks`` with DATA_DIR."""

    figure: str = "fig5"
    preset: str = "offline"
    paper: str = "v1 Fig. 5 (v3 Fig. 4)"
    model: str = "minilm"
    experiment: str | None = None  # conf/experiment preset carrying the recipe deltas
    tasks: list[str] = field(default_factory=list)
    data_tasks: list[str] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)
    full: bool = True
    seeds: list[int] = field(default_factory=lambda: [42])
    gpu: bool = False
    train_overrides: dict = field(default_factory=dict)  # extra lvf-train overrides, key -> value
    analyze_overrides: dict = field(default_factory=dict)  # extra lvf-analyze overrides
    # analysis-only presets (llama): a manifest (conf/manifests/<name>.yaml: groups of one base + its public
    # fine-tunes) analysed in one streamed pass per base, without training
    manifest: str | None = None


def name(cfg) -> str:
    return f"fig5-{cfg.preset}"


def sweep(cfg, data_dir: str | None) -> list[list[str]]:
    """The lvf-train override lists of every run of the preset (also what lvf-preflight plans)."""
    tasks = list(cfg.data_tasks if data_dir else cfg.tasks)
    if not tasks:
        raise UserError(f"preset fig5_{cfg.preset} lists no tasks{' for DATA_DIR' if data_dir else ''}")
    common_ov = [f"model={cfg.model}", f"paths.runs_dir={common.runs_dir(name(cfg))}"]
    if cfg.experiment:
        common_ov.insert(0, f"experiment={cfg.experiment}")
    if data_dir:
        common_ov.append(f"task.data_dir={Path(data_dir).resolve()}")
    common_ov += common.to_overrides(cfg.train_overrides)
    methods = [["method=lora", f"method.rank={int(r)}"] for r in cfg.ranks]
    if cfg.full:
        methods.append(["method=full"])
    return [
        [*common_ov, f"task={task}", f"seed={int(seed)}", *m]
        for task in tasks
        for m in methods
        for seed in cfg.seeds
    ]


def runs_table(run_dirs: list[Path]) -> pd.DataFrame:
    """One row per run from its final.json: what the headline prints beside the intruder counts.

    ``eval_n`` is the size of the evaluation set (the last ``eval`` event of metrics.jsonl) and
    ``acc_low`` / ``acc_high`` the Wilson 95 % interval of the accuracy over those examples.
    """
    import json

    from lora_vs_full import stats

    cols = ["run", "task", "method", "rank", "alpha", "lr", "seed", "steps", "eval_accuracy", "diverged"]
    rows = []
    for d in run_dirs:
        final = read_json(Path(d) / "final.json")
        row = {c: final.get(c if c != "run" else "run_id") for c in cols}
        evals = [
            json.loads(line)
            for line in (Path(d) / "metrics.jsonl").read_text().splitlines()
            if '"eval"' in line
        ]
        n = int(evals[-1]["n"]) if evals and "n" in evals[-1] else None
        ci = stats.binomial(round(row["eval_accuracy"] * n), n) if n else None
        row.update(eval_n=n, acc_low=ci.low if ci else None, acc_high=ci.high if ci else None)
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*cols, "eval_n", "acc_low", "acc_high"])
    return df.sort_values(["task", "method", "rank", "seed"], na_position="last")


def write_extract(analysis: Path, dest: Path, *, k: int = 10, sim_n: int = 20, top: int = 64) -> list[Path]:
    """A small copy of an analysis directory that the notebook reads on a fresh clone (committed).

    ``intruders`` at one k (every epsilon), ``matrices`` whole, and per run the spectra cut to the top
    ``sim_n`` x ``sim_n`` similarity block and the top ``top`` singular values, in float32 (~80 KB per run of 36
    matrices). Layout and columns are an analysis directory's, so every figure function reads it unchanged.
    """
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from lora_vs_full.records import SPECTRA_DIR
    from lora_vs_full.storage import atomic_write_with

    intruders = pd.read_parquet(analysis / "intruders.parquet")
    paths = list(write_table(intruders[intruders["k"] == k].reset_index(drop=True), dest / "intruders"))
    paths += list(write_table(pd.read_parquet(analysis / "matrices.parquet"), dest / "matrices"))
    for src in sorted((analysis / SPECTRA_DIR).glob("*.safetensors")):
        cut = {}
        for key, arr in load_file(str(src)).items():
            arr = arr[:sim_n, :sim_n] if arr.ndim == 2 else arr[:top]
            cut[key] = np.ascontiguousarray(arr.astype(np.float32) if arr.dtype.kind == "f" else arr)
        out = dest / SPECTRA_DIR / src.name
        paths.append(atomic_write_with(out, lambda p, cut=cut: save_file(cut, str(p))))
    for csv in dest.glob(
        "*.csv"
    ):  # the parquet copies are what readers use; CSVs of 10k rows are noise in git
        csv.unlink()
    return [p for p in paths if p.suffix != ".csv"]


def reproduce(cfg, data_dir: str | None = None, log=print) -> list[Path]:
    """Train + analyse the preset; returns the written tables. Every step is idempotent."""
    from lora_vs_full.cli.analyze import run as analyze

    work, tables = common.work_dir(name(cfg)), common.tables_dir(name(cfg))
    analysis = work / "analysis"
    ov = common.to_overrides(cfg.analyze_overrides) + [f"out={analysis}", "progress=false"]
    if cfg.manifest:  # analysis only
        if cfg.gpu:
            common.require_gpu(cfg.preset, "analysis (7B matrices, float64 SVD)")
        analyze(
            common.compose_command("analyze", [f"manifest={cfg.manifest}", "cleanup_downloads=true", *ov])
        )
        return [analysis, common.write_provenance(tables, preset=f"fig5_{cfg.preset}", manifest=cfg.manifest)]
    if cfg.gpu:
        common.require_gpu(cfg.preset, "training")
    run_dirs = common.train_runs(sweep(cfg, data_dir), log=log)
    analyze(common.compose_command("analyze", [f"runs={common.runs_dir(name(cfg))}/*/*/*/seed*", *ov]))
    # every complete run of the preset (with and without DATA_DIR), as the analysis glob sees them
    complete = sorted(p.parent for p in common.runs_dir(name(cfg)).glob("*/*/*/seed*/final.json"))
    paths = list(write_table(runs_table(complete), tables / "runs"))
    paths += write_extract(analysis, tables / "analysis")
    paths.append(
        common.write_provenance(tables, preset=f"fig5_{cfg.preset}", data_dir=data_dir, runs=len(run_dirs))
    )
    log(f"tables: {analysis}/intruders.parquet, {tables}/runs.csv")
    return paths
