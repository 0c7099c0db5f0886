"""Replay ONE stage of a finished continual run with config overrides, and say whether the body collapsed.

The calibration tool behind conf/experiment/continual_offline.yaml: a stage that collapsed in a full
``lvf-reproduce fig8`` run (results/tables/fig8-<preset>/collapse.csv) is retrained from the run's
stored previous stage -- same rows, same seed, same head init -- once as it was and once with a change
(e.g. ``optim.grad_clip=0.1``), so the change is judged on the very stage that failed, in ~1 minute
instead of a whole sequence. Each replay appends (or replaces) one row of ``--out``:

    python -m lora_vs_full.reproduce.replay results/runs/fig8-offline/full-seed2 4 optim.grad_clip=0.1
    python -m lora_vs_full.reproduce.replay results/runs/fig8-offline/full-seed2 4          # as it ran

Columns: the runs directory (``source``, e.g. fig8-offline), the run, stage and trained task, the
overrides, the fine-tune's own eval accuracy and loss on the task (the stage's trained head), and the
collapse measure of lora_vs_full/continual/diagnostics.py (mean pairwise cosine of what the classifier
receives on 128 SST-2 eval rows, as in collapse.csv; the pretrained MiniLM: ~0.7, a collapsed body > 0.99),
and the stage's learned-stage gate as the run judges it: the task's probe of the previous stage's body and
of the replayed stage's, both under the replay's config (so ``probe.*`` overrides act on both sides; with
none, ``probe_pre`` is the stored probe), the gain, the margin and ``learned``.
"""

from __future__ import annotations

import argparse
import fcntl
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from lora_vs_full import layout, provenance
from lora_vs_full.storage import atomic_write_json, atomic_write_text

KEY = ["source", "run", "stage", "overrides"]


def replay(run_dir: Path, stage: int, overrides: list[str], work: Path) -> dict:
    """Retrain ``stage`` of ``run_dir`` from the body its previous stage stored, with ``overrides``."""
    from omegaconf import OmegaConf

    from lora_vs_full.continual import config as ccfg
    from lora_vs_full.continual import sequence as seq
    from lora_vs_full.continual.diagnostics import COLLAPSE_COSINE, body_cosine, collapse_task
    from lora_vs_full.data import get_task
    from lora_vs_full.models.build import load_tokenizer
    from lora_vs_full.models.targets import family as model_family

    cfg = OmegaConf.load(run_dir / "config.yaml")
    for override in overrides:
        key, eq, _ = override.partition("=")
        if not eq or OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            raise SystemExit(
                f"error: override {override!r} must be key=value with a key of {run_dir}/config.yaml"
            )
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    tasks = list(cfg.sequence.tasks)
    if not 1 <= stage <= len(tasks):
        raise SystemExit(f"error: stage {stage} is not a training stage of {run_dir} (1..{len(tasks)})")
    task = tasks[stage - 1]
    tok, data = load_tokenizer(cfg.model), seq.TaskData(cfg)
    data.measure_lengths(tok, tasks)
    labels, head_seed = get_task(task).num_labels, seq.task_seed(cfg.seed, task)
    pretrained = seq.build_stage_model(cfg, labels, head_seed, {}, "cpu")
    original = seq.body_state(pretrained)
    head = {task: seq.probe_head(pretrained)}
    changed = seq.stored_body(run_dir / f"stage{stage - 1}") if stage > 1 else {}
    model = seq.build_stage_model(cfg, labels, head_seed, {**original, **changed}, "cpu")
    t0 = time.time()
    # the gate's "before": the previous body probed under THIS config (equal to the stored probe unless the
    # overrides change the probe or its rows), so a probe override is judged on both sides alike
    pre = seq.probe_all(model.eval(), [task], head, tok, data, cfg, device="cpu")[task]
    tag = "_".join(overrides).replace("/", "-") or "as-run"
    out = work / run_dir.resolve().parent.name / f"{run_dir.name}-stage{stage}-{tag}"
    shutil.rmtree(out, ignore_errors=True)  # a replay's training log starts afresh
    model, result = seq.train_stage(model, cfg, task, tok, data, stage=stage, family=model_family(model.config.model_type),
                                device="cpu", stage_dir=out, log=lambda _s: None, progress=False)  # fmt: skip
    post = seq.probe_all(model.eval(), [task], head, tok, data, cfg, device="cpu")[task]  # the gate's "after"
    gate, n = ccfg.gate(cfg), len(data.eval(task))
    probe_task = collapse_task(tasks)  # the collapse measure's rows, as in collapse.csv
    rows = data.eval(probe_task)
    cosine = body_cosine(
        model, tok, rows.select(range(min(128, len(rows)))), max_length=data.max_length(probe_task)
    )
    return {"source": run_dir.resolve().parent.name, "run": run_dir.name, "stage": stage, "trained_task": task,
            "overrides": " ".join(overrides) or "(as run)",
            "eval_accuracy": round(result["eval_accuracy"], 4), "eval_loss": round(result["eval_loss"], 4),
            "mean_pairwise_cosine": round(cosine, 4), "collapsed": cosine > COLLAPSE_COSINE,
            "probe_pre": round(pre, 4), "probe_post": round(post, 4), "gain": round(post - pre, 4),
            "margin": round(gate.margin(pre, n), 4), "learned": gate.learned(pre, post, n),
            "seconds": round(time.time() - t0, 1)}  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("stage", type=int)
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. optim.grad_clip=0.1")
    ap.add_argument("--out", type=Path, default=layout.tables_dir("fig8-calibration") / "replays.csv")
    ap.add_argument(
        "--work", type=Path, default=layout.runs_dir("fig8-replays"), help="the replays' stage dirs"
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not (args.run_dir / "config.yaml").is_file():
        raise SystemExit(f"error: {args.run_dir} is not a continual run directory (no config.yaml)")
    torch.set_num_threads(args.threads)
    row = replay(args.run_dir, args.stage, args.overrides, args.work)
    print(", ".join(f"{k}={v}" for k, v in row.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    with open(args.work / "table.lock", "w") as lock:  # replays run side by side: one writer at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = pd.read_csv(args.out) if args.out.is_file() else pd.DataFrame(columns=list(row))
        same = (old[KEY].astype(str) == pd.Series(row)[KEY].astype(str)).all(axis=1)
        table = pd.concat([old[~same], pd.DataFrame([row])], ignore_index=True).sort_values(
            KEY, kind="stable"
        )
        atomic_write_text(args.out, table.to_csv(index=False))
        atomic_write_json(args.out.with_suffix(".provenance.json"), provenance.collect())


if __name__ == "__main__":
    main()
