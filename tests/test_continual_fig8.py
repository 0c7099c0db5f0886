"""Fig. 8 chain on hand-made run tables: reproduce.continual.write_tables -> CSVs -> experiments/fig8.py.

Checks the committed-table contract (CSV only, the learned flag per run and stage, intervals) and that
the figure's CSV holds the numbers computed here independently."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

import fig8  # noqa: E402

from lora_vs_full.continual.summary import Gate  # noqa: E402
from lora_vs_full.errors import UserError  # noqa: E402
from lora_vs_full.reproduce.continual import write_tables  # noqa: E402
from lora_vs_full.storage import write_table  # noqa: E402

TASKS = ["mnli", "qqp", "sst2"]
EPS = np.round(np.arange(0, 1.0001, 0.02), 2)


def _runs(out: Path) -> pd.DataFrame:
    """Three methods x two seeds; every stage learns (+0.3) except r=8 seed 2 on qqp (stage 2)."""
    rng = np.random.default_rng(0)
    all_acc = []
    for method, rank in (("full", pd.NA), ("lora", 1), ("lora", 8)):
        for seed in (1, 2):
            run = f"{method}{'' if pd.isna(rank) else rank}-s{seed}"
            acc, intr = [], []
            for stage in range(len(TASKS) + 1):
                trained = TASKS[stage - 1] if stage else None
                base = dict(run=run, model="m", method=method, rank=rank, seed=seed, stage=stage,
                            trained_task=trained)  # fmt: skip
                for i, task in enumerate(TASKS):
                    learned = stage > i and not (
                        method == "lora" and rank == 8 and seed == 2 and task == "qqp"
                    )
                    a = 0.5 + (0.3 if learned else 0.0) - 0.02 * max(stage - i - 1, 0) + rng.uniform(0, 0.01)
                    acc.append({**base, "eval_task": task, "accuracy": float(a), "n_eval": 200})
                for e in EPS:
                    n = 0 if method == "full" else int(stage * (10 - int(rank) // 2) * e)
                    intr.append({**base, "k": 10, "epsilon": float(e), "n_intruders": n + seed})
            a, i = pd.DataFrame(acc), pd.DataFrame(intr)
            for df in (a, i):
                df["rank"] = df["rank"].astype("Int64")
                df["trained_task"] = df["trained_task"].astype("string")
            a["n_eval"] = a["n_eval"].astype("Int64")
            write_table(a, out / run / "continual")
            write_table(i, out / run / "continual_intruders")
            all_acc.append(a)
    return pd.concat(all_acc, ignore_index=True)


def test_tables_and_figure_from_hand_made_runs(tmp_path):
    acc = _runs(tmp_path / "runs")
    # an interrupted run (stages 0-2 of 3) is listed, not summarised: it has no end of sequence
    part = pd.read_parquet(tmp_path / "runs" / "lora1-s1" / "continual.parquet")
    part_i = pd.read_parquet(tmp_path / "runs" / "lora1-s1" / "continual_intruders.parquet")
    write_table(
        part[part.stage < 3].assign(run="lora1-s9", seed=9), tmp_path / "runs" / "lora1-s9" / "continual"
    )
    write_table(
        part_i[part_i.stage < 3].assign(run="lora1-s9", seed=9),
        tmp_path / "runs" / "lora1-s9" / "continual_intruders",
    )
    dest = tmp_path / "tables"
    paths, summary = write_tables(tmp_path / "runs", dest, Gate(), k=10, epsilon=0.5, log=lambda _m: None)
    assert summary["incomplete_runs"] == ["lora1-s9"] and "Incomplete runs" in summary["headline"]
    assert "lora1-s9" not in set(pd.read_csv(dest / "accuracy_runs.csv")["run"])
    assert all(Path(p).suffix in (".csv", ".json") for p in paths) and not list(dest.glob("*.parquet"))
    stages = pd.read_csv(dest / "stages.csv")
    assert len(stages) == 6 * 3 and stages["learned"].sum() == 17
    assert not stages[(stages["run"] == "lora8-s2") & (stages["stage"] == 2)]["learned"].item()
    assert json.loads((dest / "summary.json").read_text())["methods"]["r8"]["eligible_runs"] == 1
    assert "no forgetting conclusion from LoRA r=8 seed 2" in summary["headline"]

    paths = fig8.make_fig8(dest, tmp_path / "fig")
    assert [p.suffix for p in paths] == [".pdf", ".png", ".csv"] and all(p.stat().st_size > 0 for p in paths)
    got = pd.read_csv(paths[-1])
    g = got[got.metric == "accuracy"]
    assert len(g) == 3 * 4 * 3 and (g.n_seeds == 2).all()
    row = g[(g.method == "lora") & (g["rank"] == 8) & (g.stage == 2) & (g.eval_task == "mnli")]
    ref = acc[(acc.method == "lora") & (acc["rank"] == 8) & (acc.stage == 2) & (acc.eval_task == "mnli")]
    assert row.value.item() == pytest.approx(ref.accuracy.mean())
    assert row.low.item() < row.value.item() < row.high.item()  # a t interval over the two seeds
    # the unlearned stage is marked on its own panel only
    bad = g[(g["rank"] == 8) & (g.stage == 2) & (g.eval_task == "qqp")]
    assert bad.unlearned.item() == 1 and bad.n_runs.item() == 2
    assert g.drop(bad.index).unlearned.sum() == 0
    # intruders at k=10, eps=0.5: stage 3, r=1 -> 3 * 10 * 0.5 = 15 (+ seeds 1, 2 -> mean 16.5)
    n = got[(got.metric == "n_intruders") & (got["rank"] == 1) & (got.stage == 3)]
    assert n.value.item() == pytest.approx(16.5)
    assert (got[(got.metric == "n_intruders") & (got.method == "full")].value == 1.5).all()


def test_fig8_missing_tables_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="accuracy.csv is missing.*reproduce-fig8"):
        fig8.make_fig8(tmp_path, tmp_path / "fig")
    with pytest.raises(SystemExit) as exc:  # a one-line error, exit status 2
        fig8.main([])
    assert exc.value.code == 2


def test_timing_summary_known_answer():
    """Elapsed = first start to last end; the seed prefixes give what a seeds=[...] override took."""
    from lora_vs_full.reproduce.continual import timing_summary

    times = pd.DataFrame({
        "run": ["full-seed0", "lora-seed0", "full-seed1"], "seed": [0, 0, 1], "stages": [7, 7, 7],
        "start_utc": ["2026-01-01T10:00:00+00:00", "2026-01-01T10:00:30+00:00", "2026-01-01T10:07:00+00:00"],
        "end_utc": ["2026-01-01T10:07:00+00:00", "2026-01-01T10:06:00+00:00", "2026-01-01T10:15:00+00:00"],
        "stage_seconds": [400.0, 320.0, 470.0],
    })  # fmt: skip
    t = timing_summary(times)
    assert t["elapsed_minutes"] == 15.0 and t["elapsed_minutes_through_seed"] == {"0": 7.0, "1": 15.0}
    assert t["compute_minutes"] == round(1190 / 60, 1) and t["runs"] == 3
    # seed 2 added by a later invocation, an hour after: its 10 minutes count, the idle hour does not
    later = pd.concat([times, pd.DataFrame({"run": ["full-seed2"], "seed": [2], "stages": [7],
                                            "start_utc": ["2026-01-01T11:15:00+00:00"],
                                            "end_utc": ["2026-01-01T11:25:00+00:00"], "stage_seconds": [590.0]})])  # fmt: skip
    t = timing_summary(later)
    assert t["batches"] == 2 and t["elapsed_minutes"] == 25.0
    assert t["elapsed_minutes_through_seed"] == {"0": 7.0, "1": 15.0, "2": 25.0}
