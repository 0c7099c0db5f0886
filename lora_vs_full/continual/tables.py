"""The continual run's tidy tables: one row per (run, stage, eval task) and per (run, stage, k, epsilon).

Built from the complete stages' ``stage.json`` records, so they can always be rebuilt from a run
directory; the combined tables under ``<out>`` concatenate every run's.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from lora_vs_full.errors import UserError
from lora_vs_full.storage import read_json, write_table

DONE_FILE = "stage.json"
ACCURACY_COLUMNS = (
    "run",
    "model",
    "method",
    "rank",
    "seed",
    "stage",
    "trained_task",
    "eval_task",
    "accuracy",
    "n_eval",
)
INTRUDER_COLUMNS = ("run", "model", "method", "rank", "seed", "stage", "trained_task", "k", "epsilon",
                    "n_intruders")  # fmt: skip


def _run_columns(cfg: DictConfig, run_dir: Path) -> dict:
    rank = int(cfg.method.rank) if cfg.method.name == "lora" else pd.NA
    return {"run": run_dir.name, "model": cfg.model.name, "method": cfg.method.name, "rank": rank,
            "seed": int(cfg.seed)}  # fmt: skip


def write_run_tables(run_dir: Path, cfg: DictConfig) -> None:
    """``<run>/continual.*`` and ``<run>/continual_intruders.*`` from the complete stages' records."""
    meta = _run_columns(cfg, run_dir)
    acc_rows, intr_rows = [], []
    for done in sorted(run_dir.glob(f"stage*/{DONE_FILE}"), key=lambda p: int(p.parent.name[5:])):
        rec = read_json(done)
        base = {**meta, "stage": rec["stage"], "trained_task": rec["trained_task"]}
        n_eval = rec.get("n_eval") or {}
        acc_rows += [{**base, "eval_task": t, "accuracy": a, "n_eval": n_eval.get(t, pd.NA)}
                     for t, a in rec["probe_accuracy"].items()]  # fmt: skip
        intr_rows += [{**base, **row} for row in rec["intruders"]]
    write_table(_typed(pd.DataFrame(acc_rows, columns=ACCURACY_COLUMNS)), run_dir / "continual")
    write_table(_typed(pd.DataFrame(intr_rows, columns=INTRUDER_COLUMNS)), run_dir / "continual_intruders")


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df["rank"] = df["rank"].astype("Int64")  # NA for full fine-tuning
    df["trained_task"] = df["trained_task"].astype("string")  # NA at stage 0 (the pretrained baseline)
    if "n_eval" in df.columns:
        df["n_eval"] = df["n_eval"].astype("Int64")  # eval rows behind each accuracy (binomial interval)
    return df


def collect_tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate every run's tables under ``out`` into ``<out>/continual.*`` and ``<out>/continual_intruders.*``."""
    frames = {}
    for stem in ("continual", "continual_intruders"):
        parts = [pd.read_parquet(p) for p in sorted(out.glob(f"*/{stem}.parquet"))]
        if not parts:
            raise UserError(f"no continual runs under {out}: run `lvf-continual out={out}` first")
        frames[stem] = _typed(pd.concat(parts, ignore_index=True))
        write_table(frames[stem], out / stem)
    return frames["continual"], frames["continual_intruders"]
