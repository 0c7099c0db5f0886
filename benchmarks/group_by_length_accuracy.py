"""Does length-grouped batching change accuracy? Random vs grouped order on the offline preset, several seeds.

    flock /tmp/lvf-heavy.lock .venv/bin/python benchmarks/group_by_length_accuracy.py \
        --data-dir /work/shared/data/raw --seeds 1 2 3

Trains ``experiment=offline_sst2`` (all-MiniLM-L6-v2, 2,000 real SST-2 sentences, 250 steps, max length 64)
with LoRA r = 8 (or ``--method full``) once per seed with ``optim.group_by_length=false`` and once with
``true`` -- the same seed gives both orders the same subset, head and adapter initialisation, so the
difference per seed is paired. Runs go to ``results/work/group-by-length-offline/<order>/`` (idempotent:
a rerun skips complete runs). Writes ``results/tables/group-by-length-offline/``:
``runs.csv`` (one row per run), ``summary.csv`` (mean and Student-t interval per order, and of the paired
difference grouped - random), ``summary.json`` (the same, plus whether the difference is within seed noise)
and ``provenance.json``. Each run takes ~2 minutes on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

NAME = "group-by-length-offline"


def _setup_event(run_dir: Path) -> dict:
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "setup":
            return event
    return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or os.environ.get("LVF_DATA_DIR"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--method", choices=("lora", "full"), default="lora")
    ap.add_argument("--rank", type=int, default=8)
    a = ap.parse_args()

    import pandas as pd

    from lora_vs_full.reproduce.common import tables_dir, train_runs, work_dir, write_provenance
    from lora_vs_full.runs import read_final
    from lora_vs_full.stats import distinguishable, t_interval
    from lora_vs_full.storage import atomic_write_json, atomic_write_text

    method = ["method=lora", f"method.rank={a.rank}"] if a.method == "lora" else ["method=full"]
    data = [f"task.data_dir={a.data_dir}"] if a.data_dir else []
    rows = []
    for order in ("random", "grouped"):
        sweep = [
            ["experiment=offline_sst2", *method, *data, f"seed={s}", f"optim.group_by_length={str(order == 'grouped').lower()}",
             f"paths.runs_dir={work_dir(NAME) / order}", "save_checkpoint=false"]
            for s in a.seeds
        ]  # fmt: skip
        for run_dir in train_runs(sweep):
            final, setup = read_final(run_dir), _setup_event(run_dir)
            rows.append({
                "order": order, "seed": final["seed"], "method": final["method_tag"], "eval_accuracy": final["eval_accuracy"], "train_seconds": final["train_seconds"],
                "pad_fraction_epoch1": setup.get("pad_fraction_epoch1"),
            })  # fmt: skip
    runs = pd.DataFrame(rows).sort_values(["order", "seed"])
    summary, out = [], {}
    for order in ("random", "grouped"):
        part = runs[runs.order == order]
        est = t_interval(part.eval_accuracy)
        out[order] = {"mean": est.mean, "low": est.low, "high": est.high, "n": est.n,
                      "sd": float(part.eval_accuracy.std(ddof=1)),
                      "train_seconds_mean": float(part.train_seconds.mean()),
                      "pad_fraction_epoch1_mean": float(part.pad_fraction_epoch1.mean())}  # fmt: skip
        summary.append(
            {"quantity": f"accuracy, {order}", **{k: out[order][k] for k in ("mean", "low", "high", "n")}}
        )
    paired = runs.pivot(index="seed", columns="order", values="eval_accuracy").dropna()
    diff = t_interval(paired.grouped - paired.random)
    out["difference"] = {"mean": diff.mean, "low": diff.low, "high": diff.high, "n": diff.n,
                         "per_seed": {int(s): float(v) for s, v in (paired.grouped - paired.random).items()}}  # fmt: skip
    summary.append({"quantity": "accuracy, grouped - random (paired by seed)", "mean": diff.mean,
                    "low": diff.low, "high": diff.high, "n": diff.n})  # fmt: skip
    # within seed noise: the paired interval contains 0, and the mean shift is under the seed-to-seed sd
    out["within_seed_noise"] = bool(
        not distinguishable(diff.low, diff.high) and abs(diff.mean) <= out["random"]["sd"]
    )
    out["config"] = {"experiment": "offline_sst2", "method": a.method, "rank": a.rank, "seeds": a.seeds}
    dest = tables_dir(NAME)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest / "runs.csv", runs.to_csv(index=False))
    atomic_write_text(dest / "summary.csv", pd.DataFrame(summary).to_csv(index=False, float_format="%.4f"))
    atomic_write_json(dest / "summary.json", out)
    write_provenance(dest, what="benchmarks/group_by_length_accuracy.py", args=vars(a))
    print(pd.DataFrame(summary).to_string(index=False))
    print(f"within seed noise: {out['within_seed_noise']}; wrote {dest}")


if __name__ == "__main__":
    main()
