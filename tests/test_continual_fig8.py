"""experiments/fig8.py on synthetic tidy tables: files written, CSV = the numbers computed here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

import fig8  # noqa: E402

from lora_vs_full.errors import UserError  # noqa: E402
from lora_vs_full.storage import write_table  # noqa: E402

TASKS = ["mnli", "qqp", "sst2"]
EPS = np.round(np.arange(0, 1.0001, 0.02), 2)


def _tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    acc, intr = [], []
    for method, rank in (("full", pd.NA), ("lora", 1), ("lora", 8)):
        for seed in (1, 2):
            for stage in range(len(TASKS) + 1):
                trained = TASKS[stage - 1] if stage else None
                base = dict(run=f"{method}{rank}-s{seed}", model="m", method=method, rank=rank, seed=seed,
                            stage=stage, trained_task=trained)  # fmt: skip
                for task in TASKS:
                    acc.append({**base, "eval_task": task, "accuracy": float(rng.uniform(0.3, 0.9))})
                for e in EPS:  # monotone in epsilon, grows with stage for LoRA
                    n = 0 if method == "full" else int(stage * (10 - int(rank) // 2) * e)
                    intr.append({**base, "k": 10, "epsilon": float(e), "n_intruders": n + seed})
    a, i = pd.DataFrame(acc), pd.DataFrame(intr)
    for df in (a, i):
        df["rank"] = df["rank"].astype("Int64")
        df["trained_task"] = df["trained_task"].astype("string")
    write_table(a, out / "continual")
    write_table(i, out / "continual_intruders")
    return a, i


def test_fig8_writes_files_and_csv_matches_independent_means(tmp_path):
    acc, intr = _tables(tmp_path / "cont")
    paths = fig8.make_fig8(tmp_path / "cont", tmp_path / "fig")
    assert [p.suffix for p in paths] == [".pdf", ".png", ".csv"] and all(p.stat().st_size > 0 for p in paths)
    got = pd.read_csv(paths[-1])
    # accuracy: mean over the two seeds, per method/rank/stage/eval task
    g = got[got.metric == "accuracy"]
    assert len(g) == 3 * 4 * 3 and (g.n_seeds == 2).all()
    row = g[(g.method == "lora") & (g["rank"] == 8) & (g.stage == 2) & (g.eval_task == "mnli")]
    ref = acc[(acc.method == "lora") & (acc["rank"] == 8) & (acc.stage == 2) & (acc.eval_task == "mnli")]
    assert row.value.item() == pytest.approx(ref.accuracy.mean())
    # intruders at k=10, eps=0.5: stage 3, r=1 -> 3 * 10 * 0.5 = 15 (+ seeds 1, 2 -> mean 16.5)
    n = got[(got.metric == "n_intruders") & (got["rank"] == 1) & (got.stage == 3)]
    assert n.value.item() == pytest.approx(16.5)
    assert (got[(got.metric == "n_intruders") & (got.method == "full")].value == 1.5).all()


def test_fig8_missing_tables_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="continual.parquet is missing.*lvf-continual"):
        fig8.make_fig8(tmp_path, tmp_path / "fig")
    _tables(tmp_path)
    with pytest.raises(UserError, match="epsilon=0.33"):
        fig8.make_fig8(tmp_path, tmp_path / "fig", epsilon=0.33)


def test_reproduce_fig8_rejects_unknown_preset():
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        fig8.reproduce_fig8("huge")
