"""v1 Fig. 8 (continual learning): run the preset's sequence for full FT and every LoRA rank x seed, then
write the tables, the learned-stage gate, forgetting with intervals, intruders per stage and the verdict.

    preset (conf/reproduce/fig8_<preset>.yaml)
      -> results/runs/fig8-<preset>[-synthetic]/<method_tag>-seed<k>/   (lvf-continual, in-process, resumable)
      -> results/tables/fig8-<preset>[-synthetic]/                       (small CSVs + summary.json)
    experiments/fig8.py then draws from those tables.

With ``data_dir`` the sequence is the paper's six real tasks (``data_tasks``); without, the synthetic
``tasks``. Runs go seed-major (every method of seed 0, then seed 1, ...), so an interrupted reproduction
leaves balanced seeds; rerunning resumes each run after its last complete stage (no stage is repeated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lora_vs_full.errors import UserError
from lora_vs_full.reproduce import common
from lora_vs_full.storage import atomic_write_json, read_json, write_table


@dataclass
class Fig8Preset:
    """conf/reproduce/fig8_*.yaml."""

    figure: str = "fig8"
    preset: str = "offline"
    paper: str = "v1 Fig. 8 (continual learning)"
    experiment: str | None = "continual_offline"  # conf/experiment preset for lvf-continual
    tasks: list[str] = field(default_factory=list)  # without DATA_DIR (synthetic)
    data_tasks: list[str] = field(default_factory=list)  # with DATA_DIR: the paper's six, in order
    ranks: list[int] = field(default_factory=list)
    full: bool = True
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    gpu: bool = False
    overrides: dict = field(default_factory=dict)  # extra lvf-continual overrides, key -> value
    data_overrides: dict = field(default_factory=dict)  # ... only with DATA_DIR
    synthetic_overrides: dict = field(default_factory=dict)  # ... only without
    jobs: int = 1  # sequences run side by side, each in its own process with cpu_count // jobs threads
    k: int = 10  # intruders reported per stage at (k, epsilon)
    epsilon: float = 0.5


def name(cfg, data_dir: str | None) -> str:
    """``fig8-<preset>``; ``-synthetic`` when the sequence is the synthetic one (so a machine without the
    data never overwrites the real-task tables)."""
    synthetic = not data_dir and list(cfg.tasks) != list(cfg.data_tasks)
    return f"fig8-{cfg.preset}" + ("-synthetic" if synthetic else "")


def sweep(cfg, data_dir: str | None) -> list[list[str]]:
    """The lvf-continual override lists of every run, seed-major."""
    tasks = list(cfg.data_tasks if data_dir else cfg.tasks)
    if len(tasks) < 2:
        raise UserError(f"preset fig8_{cfg.preset} lists {len(tasks)} task(s){' for DATA_DIR' if data_dir else ''}: "
                        "continual learning needs at least two")  # fmt: skip
    if not cfg.seeds:
        raise UserError(f"preset fig8_{cfg.preset}: seeds=[] -- give at least one seed (three for intervals)")
    base = [f"out={common.runs_dir(name(cfg, data_dir))}", "sequence.tasks=[" + ",".join(tasks) + "]"]
    if cfg.experiment:
        base.insert(0, f"experiment={cfg.experiment}")
    if data_dir:
        base.append(f"sequence.data_dir={Path(data_dir).resolve()}")
    base += common.to_overrides(cfg.overrides)
    base += common.to_overrides(cfg.data_overrides if data_dir else cfg.synthetic_overrides)
    methods = ([["method=full"]] if cfg.full else []) + [
        ["method=lora", f"method.rank={int(r)}"] for r in cfg.ranks
    ]
    if not methods:
        raise UserError(f"preset fig8_{cfg.preset}: no method (full=false and ranks=[])")
    return [[*base, *m, f"seed={int(s)}"] for s in cfg.seeds for m in methods]


def _shown(overrides: list[str]) -> str:
    return " ".join(
        o for o in overrides if not o.startswith(("out=", "sequence.tasks=", "sequence.data_dir="))
    )


def run_one(overrides: list[str], threads: int | None = None, log=print,
            progress: bool = True) -> tuple[Path | None, str | None]:  # fmt: skip
    """One sequence (composed, run or resumed): (run dir, None) or (None, the one-line error)."""
    from lora_vs_full.continual import compose_continual, run_continual

    if threads:
        import torch

        torch.set_num_threads(threads)
    shown = _shown(overrides)
    try:
        cfg = compose_continual(overrides)
        log(f"$ lvf-continual {shown}")
        return run_continual(cfg, log=log, progress=progress), None
    except UserError as exc:
        log(f"error: {exc}")
        return None, f"[{shown}]: {exc}"


def _run_in_worker(overrides: list[str], threads: int) -> tuple[Path | None, str | None]:
    tag = _shown(overrides).replace("experiment=", "").replace("method=", "")
    # side-by-side progress bars would interleave: each worker logs prefixed lines only
    return run_one(overrides, threads, log=lambda msg: print(f"[{tag}] {msg}", flush=True), progress=False)


def run_all(sweep_: list[list[str]], jobs: int = 1, log=print) -> list[Path]:
    """Run (or resume) every sequence, ``jobs`` at a time (each in its own process, the CPU's threads
    shared out); a failing one does not stop the others (listed at the end)."""
    if jobs < 1:
        raise UserError(f"jobs={jobs} must be >= 1 (e.g. jobs=2 on a 2-core machine)")
    if jobs == 1:
        results = [run_one(o, log=log) for o in sweep_]
    else:
        import multiprocessing as mp
        import os
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // jobs)
        log(f"{jobs} sequences at a time, {threads} thread(s) each")
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(_run_in_worker, sweep_, [threads] * len(sweep_)))
    done = [d for d, _ in results if d is not None]
    failed = [e for _, e in results if e is not None]
    if failed:
        raise UserError(f"{len(failed)} of {len(sweep_)} continual runs failed ({len(done)} completed): "
                        + " | ".join(failed))  # fmt: skip
    return done


def lengths_table(run_dirs: list[Path]) -> pd.DataFrame:
    """Per task: the chosen max length and the measured truncation (from the first run's data.json; every
    run of a seed uses the same rows, other seeds' subsets are listed too)."""
    rows = []
    for d in run_dirs:
        p = Path(d) / "data.json"
        if not p.is_file():
            continue
        seed = read_json(Path(d) / "identity.json")["seed"]
        for rec in read_json(p)["lengths"].values():
            rows.append({"seed": seed, **rec})
    df = pd.DataFrame(rows)
    return df.drop_duplicates(subset=["seed", "task"]).reset_index(drop=True) if len(df) else df


def reference_truncation(cfg, reference: int = 64) -> pd.DataFrame:
    """Truncation the same rows would suffer at a fixed ``reference`` max length (the former offline 64),
    for comparison with the measured per-task lengths: task, truncated_at_ref, answers_cut_at_ref."""
    from lora_vs_full.continual.lengths import measure
    from lora_vs_full.continual.sequence import TaskData
    from lora_vs_full.models.build import load_tokenizer

    data, tok = TaskData(cfg), load_tokenizer(cfg.model)
    rows = []
    for task in cfg.sequence.tasks:
        rec = measure(tok, task, [data.train(task), data.probe_train(task), data.eval(task)], ceiling=reference,
                      auto=False)  # fmt: skip
        rows.append({"task": task, "reference_length": reference, "truncated_at_ref": rec["truncated"],
                     "answers_cut_at_ref": rec["answers_cut"]})  # fmt: skip
    return pd.DataFrame(rows)


def write_tables(
    out: Path, dest: Path, gate, *, k: int, epsilon: float, log=print
) -> tuple[list[Path], dict]:
    """Every committed table from the combined run tables under ``out``; returns (paths, summary)."""
    from lora_vs_full import stats
    from lora_vs_full.continual import summary as S
    from lora_vs_full.continual.tables import collect_tables

    acc, intr = collect_tables(out)
    # A run interrupted mid-sequence has no "end": it is listed, not summarised (rerun to complete it).
    n_stages = acc.groupby("run")["stage"].max()
    incomplete = sorted(n_stages[n_stages < acc["eval_task"].nunique()].index)  # stage T trains task T
    if incomplete:
        log(f"incomplete runs left out of the tables (rerun to finish them): {', '.join(incomplete)}")
        acc, intr = acc[~acc["run"].isin(incomplete)], intr[~intr["run"].isin(incomplete)]
    if acc["n_eval"].isna().any():
        raise UserError(
            f"{out} holds runs without n_eval (made before issue 11): rerun them with overwrite=true"
        )
    gates = S.stage_gate(acc, gate)
    summary = S.summarize(acc, intr, gate, k=k, epsilon=epsilon)
    elig = S.eligibility(gates)
    per_run = acc.merge(gates[["run", "stage", "learned"]], on=["run", "stage"], how="left")
    wilson = [
        stats.binomial(round(a * n), int(n))
        for a, n in zip(per_run["accuracy"], per_run["n_eval"], strict=True)
    ]
    per_run["binom_low"], per_run["binom_high"] = [w.low for w in wilson], [w.high for w in wilson]
    paths = []
    paths += write_table(per_run, dest / "accuracy_runs")
    paths += write_table(S.accuracy_intervals(acc), dest / "accuracy")
    paths += write_table(gates.merge(elig[["run", "eligible"]], on="run").round(4), dest / "stages")
    paths += write_table(S.gate_summary(gates), dest / "gate_summary")
    paths += write_table(S.forgetting_table(acc), dest / "forgetting")
    sf = S.stage_forgetting(acc, gates)
    paths += write_table(S.end_forgetting(acc, gates, sf), dest / "end_forgetting")
    paths += write_table(sf, dest / "stage_forgetting")
    paths += write_table(S.intruders_per_stage(intr, k=k, epsilon=epsilon), dest / "intruders")
    paths += write_table(S.headline_table(summary).round(4), dest / "headline")
    paths += write_table(S.stage_comparisons_table(summary), dest / "stage_comparisons")
    summary["incomplete_runs"] = incomplete
    summary["headline"] = S.headline(summary) + (
        f"\nIncomplete runs, not summarised: {', '.join(incomplete)}." if incomplete else ""
    )
    paths.append(atomic_write_json(dest / "summary.json", summary))
    for p in list(dest.glob("*.parquet")):  # committed tables are CSV only (exact, small, diffable)
        p.unlink()
    paths = [p for p in paths if Path(p).suffix != ".parquet"]
    return paths, summary


def reproduce(cfg, data_dir: str | None = None, log=print) -> list[Path]:
    """Run the preset's sequences (idempotent, resumable), write the tables, print the headline."""
    if cfg.gpu:
        common.require_gpu(cfg.preset, "continual learning (six fine-tuning stages per run)")
    plan = sweep(cfg, data_dir)
    log(f"fig8 [{cfg.preset}{'' if data_dir else ', synthetic'}]: {len(plan)} runs "
        f"({'full FT + ' if cfg.full else ''}LoRA r={list(cfg.ranks)} x seeds {list(cfg.seeds)})")  # fmt: skip
    run_all(plan, jobs=int(cfg.jobs), log=log)
    return write_all(cfg, data_dir, log=log)


def write_all(cfg, data_dir: str | None = None, log=print) -> list[Path]:
    """Tables, lengths, provenance and the printed headline from every run under the preset's runs
    directory (complete runs are summarised, interrupted ones listed); trains nothing."""
    from omegaconf import OmegaConf

    from lora_vs_full.continual import compose_continual
    from lora_vs_full.continual.config import gate as gate_of
    from lora_vs_full.continual.diagnostics import COLLAPSE_COSINE, weight_change_table
    from lora_vs_full.continual.lengths import describe

    plan = sweep(cfg, data_dir)
    first = compose_continual(plan[0])
    run_dirs = sorted(p.parent for p in Path(first.out).glob("*/identity.json"))
    dest = common.tables_dir(name(cfg, data_dir))
    dest.mkdir(parents=True, exist_ok=True)
    paths, summary = write_tables(Path(first.out), dest, gate_of(first), k=int(cfg.k), epsilon=float(cfg.epsilon),
                                  log=log)  # fmt: skip
    lens = lengths_table(run_dirs)
    if len(lens):
        ref = pd.concat([reference_truncation(OmegaConf.merge(first, {"seed": int(seed)})).assign(seed=seed)
                         for seed in lens["seed"].unique()])  # fmt: skip  # each seed's own rows
        lens = lens.merge(ref, on=["seed", "task"], how="left").round(4)
        paths += _write_csv(lens, dest / "lengths")
        log("measured token lengths (rows of the first seed):")
        for rec in lens[lens["seed"] == lens["seed"].iloc[0]].to_dict("records"):
            log("  " + describe(rec))
    collapse = collapse_of(run_dirs, list(cfg.data_tasks if data_dir else cfg.tasks))
    if len(collapse):
        paths += _write_csv(collapse, dest / "collapse")
        summary["collapsed_runs"] = collapsed_runs(collapse)
        for run, stage in summary["collapsed_runs"].items():
            log(f"collapsed body: {run} from stage {stage} (mean pairwise cosine of the classifier inputs "
                f"> {COLLAPSE_COSINE}; collapse.csv)")  # fmt: skip
    change = weight_change_table(run_dirs)
    if len(change):
        paths += _write_csv(change, dest / "weight_change")
        summary["weight_change_end"] = weight_change_end(change)
    times = timing_table(run_dirs)
    if len(times):
        paths += _write_csv(times, dest / "timing")
        summary["timing"] = timing_summary(times)
        log(f"time: {summary['timing']['elapsed_minutes']:.1f} min from the first run's start to the last stage's "
            f"end ({summary['timing']['compute_minutes']:.1f} min of stage time over {len(times)} runs)")  # fmt: skip
    if len(collapse) or len(change) or len(times):
        atomic_write_json(dest / "summary.json", summary)  # with the collapse and timing entries
    paths.append(common.write_provenance(dest, preset=f"fig8_{cfg.preset}", data_dir=data_dir, runs=len(run_dirs),
                                         sequence=list(cfg.data_tasks if data_dir else cfg.tasks),
                                         substitutions=substitutions(run_dirs)))  # fmt: skip
    log("\n" + summary["headline"])
    for note in substitutions(run_dirs):  # substitute data files (each run's data.json), named visibly
        log(f"NOTE: substitute data: {note}")
    log(f"tables: {dest}")
    return paths


def _write_csv(df: pd.DataFrame, stem: Path) -> list[Path]:
    """A committed table: ``<stem>.csv`` only (write_table's parquet twin is not kept)."""
    paths = write_table(df, stem)
    stem.with_suffix(".parquet").unlink(missing_ok=True)
    return [p for p in paths if Path(p).suffix == ".csv"]


def collapse_of(run_dirs: list[Path], tasks: list[str]) -> pd.DataFrame:
    """Representation collapse per (run, stage) on SST-2's eval rows (or the sequence's first task's)."""
    from lora_vs_full.continual.diagnostics import collapse_table, collapse_task

    return collapse_table(run_dirs, collapse_task(tasks))


def weight_change_end(change: pd.DataFrame) -> dict:
    """Per method: relative distance from the pretrained matrices after the last stage, mean over seeds
    with its 95 % t interval."""
    from lora_vs_full import stats
    from lora_vs_full.continual.summary import method_key

    end = change[change["stage"] == change.groupby("run")["stage"].transform("max")]
    out = {}
    for (method, rank), g in end.groupby(["method", "rank"], dropna=False):
        e = stats.t_interval(g["from_pretrained"])
        out[method_key(method, rank)] = {"mean": round(e.mean, 4), "low": round(e.low, 4) if e.n > 1 else None,
                                         "high": round(e.high, 4) if e.n > 1 else None, "n": int(e.n)}  # fmt: skip
    return out


def collapsed_runs(collapse: pd.DataFrame) -> dict[str, int]:
    """run -> the first stage whose body is collapsed (runs that never collapse are absent)."""
    hit = collapse[collapse["collapsed"]]
    return {str(r): int(g["stage"].min()) for r, g in hit.groupby("run")}


def timing_table(run_dirs: list[Path]) -> pd.DataFrame:
    """Per run: when it started (its identity.json, written before the data are loaded), when its last
    complete stage ended (that stage.json's provenance time), and the summed stage seconds.

    A resumed run's span includes the interruption; ``stage_seconds`` does not."""
    from datetime import datetime, timezone

    rows = []
    for d in run_dirs:
        d = Path(d)
        stages = sorted(d.glob("stage*/stage.json"), key=lambda p: int(p.parent.name[5:]))
        if not stages:
            continue
        recs = [read_json(p) for p in stages]
        ident = read_json(d / "identity.json")
        start = datetime.fromtimestamp((d / "identity.json").stat().st_mtime, timezone.utc)
        end = datetime.fromisoformat(recs[-1]["provenance"]["time_utc"])
        rows.append({"run": d.name, "seed": ident["seed"], "stages": len(recs),
                     "start_utc": start.isoformat(timespec="seconds"), "end_utc": end.isoformat(timespec="seconds"),
                     "stage_seconds": round(sum(float(r.get("seconds") or 0) for r in recs), 1)})  # fmt: skip
    return (
        pd.DataFrame(rows).sort_values(["start_utc", "run"]).reset_index(drop=True)
        if rows
        else pd.DataFrame()
    )


IDLE_GAP_MINUTES = 5  # a run that starts this long after every earlier run ended began a new invocation


def timing_summary(times: pd.DataFrame) -> dict:
    """Elapsed minutes of the whole reproduction and of each prefix of its seeds (seed-major order: the
    time a ``seeds=[...]`` override of the first seeds took), and the summed stage time.

    Runs made by separate invocations (e.g. ``seeds=[3,4]`` added later: a start more than
    IDLE_GAP_MINUTES after every earlier run ended) are separate batches; elapsed time is summed over
    batches, so the idle time between invocations is not counted."""
    t = times.assign(_start=pd.to_datetime(times["start_utc"]), _end=pd.to_datetime(times["end_utc"]))
    t = t.sort_values("_start").reset_index(drop=True)
    batch, ends_so_far = [], None
    for start, end in zip(t["_start"], t["_end"], strict=True):
        new = ends_so_far is None or (start - ends_so_far).total_seconds() > 60 * IDLE_GAP_MINUTES
        batch.append((batch[-1] + 1 if batch else 0) if new else batch[-1])
        ends_so_far = end if ends_so_far is None else max(ends_so_far, end)
    t["_batch"] = batch

    def minutes(mask) -> float:
        total = 0.0
        for _, g in t.groupby("_batch"):
            sel = g[mask[g.index]]
            if len(sel):  # seed-major order: this batch's first start to its last selected run's end
                total += (sel["_end"].max() - g["_start"].min()).total_seconds()
        return round(total / 60, 1)

    seeds = sorted(t["seed"].unique())
    return {
        "elapsed_minutes": minutes(t["_end"].notna()),
        "elapsed_minutes_through_seed": {str(s): minutes(t["seed"] <= s) for s in seeds},
        "compute_minutes": round(float(t["stage_seconds"].sum()) / 60, 1),
        "runs": int(len(t)),
        "batches": int(t["_batch"].nunique()),
        "clock": (
            "first run's identity.json (written at its start) to the last stage.json's provenance time, summed "
            f"over batches of runs (a gap over {IDLE_GAP_MINUTES} min between them is not counted)"
        ),
    }


def substitutions(run_dirs: list[Path]) -> list[str]:
    """Every substitute data file the runs read (``data.json`` records), e.g. QQP eval from a train subset."""
    from lora_vs_full.storage import read_json

    notes = set()
    for d in run_dirs:
        f = Path(d) / "data.json"
        if f.is_file():
            notes |= {
                r["substitution"] for r in read_json(f).get("records", {}).values() if r.get("substitution")
            }
    return sorted(notes)
