"""Training throughput on real length distributions: our loop vs PEFT + HF Trainer, random vs length-grouped.

    DATA_DIR=/work/shared/data/raw .venv/bin/python benchmarks/bench_train.py --data mnli
    .venv/bin/python benchmarks/bench_train.py --data sst2 --steps 80          # DATA_DIR unset: the Hub
    .venv/bin/python benchmarks/bench_train.py --data random --seq 128 --method full   # fixed length, no padding

Four configurations side by side, each in a fresh subprocess (its own peak memory, no warm caches):
our loop (``lora_vs_full.training.train``) with random batches and with ``optim.group_by_length=true``,
and a plain PEFT + HF ``Trainer`` script with its default sampler and with
``train_sampling_strategy="group_by_length"``. All four get the same model (all-MiniLM-L6-v2 + a fresh
head, LoRA r = 8 on all linear layers via ``models.methods.apply_method``), the same real training rows
(a seeded subset of 200 x ``--batch`` rows of the task's train split, read through
``lora_vs_full.data.load_task``, tokenized to ``--max-length``: large enough that Trainer's mega-batches
are 50 batches, as in a full run), batch 16, AdamW + linear 6 % warm-up, grad clip 1.0, ``--steps``
optimiser steps (the default 50 = one mega-batch: a random sample of the split's lengths, longest first). Both sides pad each batch to its longest
member (``DataCollatorWithPadding``); the padded-token fraction is counted on the batches actually fed.

Examples/s = steps x batch / time of the whole train call (set-up included on both sides). Clock: on a
CPU this process's CPU seconds (``time.process_time``; the 2-core box is shared, and wall time there
measures other people's jobs), on CUDA wall time after a synchronise. On CUDA both sides use the fast
paths ``resolve_fast_paths`` picks (bf16 autocast, TF32, fused AdamW), so the comparison stays like for like.
Writes ``results/benchmarks/train-<data>.json`` (every row, the config, the data record, provenance) and
``train-<data>.csv`` (the table BENCHMARKS.md shows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = (("ours", "random"), ("ours", "grouped"), ("trainer", "random"), ("trainer", "grouped"))
TASKS = ("mnli", "qqp", "sst2", "siqa", "random")


def _n_rows(a) -> int:
    """Rows drawn: at least 4 x 50 batches, so Trainer's mega-batch multiplier (min(n // (4 * batch), 50))
    is the 50 of a full-size run, and ``--steps`` batches cover at most one mega-batch of each order."""
    return max(a.steps, 200) * a.batch


def _rows(a, tok):
    """Encoded training rows (``input_ids``, ``attention_mask``[, ``token_type_ids``], ``labels``) + record."""
    import datasets
    import torch

    n = _n_rows(a)
    if a.data == "random":  # every sequence exactly --seq tokens: no padding on either side
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(1000, tok.vocab_size, (n, a.seq), generator=g)
        ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
        rows = {
            "input_ids": ids.tolist(),
            "attention_mask": [[1] * a.seq] * n,
            "labels": (ids[:, 1] % 2).tolist(),
        }
        return datasets.Dataset.from_dict(rows), 2, {"source": "random", "seq": a.seq}
    from lora_vs_full.data import get_task, load_task_with_record
    from lora_vs_full.training.loop import encode

    raw, record = load_task_with_record(
        a.data, "train", data_dir=a.data_dir, max_samples=n, seed=0, allow_substitutes=True
    )
    return encode(raw, tok, a.max_length), get_task(a.data).num_labels, record


def _model(method: str, rank: int, num_labels: int):
    import torch
    from omegaconf import OmegaConf

    from lora_vs_full.models.build import load_classifier
    from lora_vs_full.models.methods import apply_method
    from lora_vs_full.models.tiny import minilm_path

    torch.manual_seed(0)
    model = load_classifier(str(minilm_path()), num_labels)
    mcfg = OmegaConf.create(
        {"name": "full", "trainable": "encoder_weights"} if method == "full" else
        {"name": "lora", "rank": rank, "alpha_policy": "2r", "targets": "all_linear", "init": "gaussian",
         "lr": None, "lr_rule": "alpha_product", "lr_alpha_product": 2.4e-3, "fixed_alpha": 8.0}
    )  # fmt: skip
    lr = 1e-5 if method == "full" else 2.4e-3 / (2 * rank)  # the paper's rates
    return apply_method(model, mcfg, family="bert"), lr


class _CountingCollator:
    """``DataCollatorWithPadding`` that also counts real and padded tokens of every batch it builds."""

    def __init__(self, tok):
        from transformers import DataCollatorWithPadding

        self.inner, self.real, self.padded = DataCollatorWithPadding(tok, return_tensors="pt"), 0, 0

    def __call__(self, features):
        batch = self.inner(features)
        self.real += int(batch["attention_mask"].sum())
        self.padded += batch["attention_mask"].numel()
        return batch


def one(a, impl: str, order: str) -> dict:
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from lora_vs_full.models.tiny import minilm_path
    from lora_vs_full.training import loop
    from lora_vs_full.training.optim import resolve_fast_paths

    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    ds, num_labels, _ = _rows(a, tok)
    model, lr = _model(a.method, a.rank, num_labels)
    optim = OmegaConf.create({
        "lr": lr, "batch_size": a.batch, "eval_batch_size": 64, "epochs": 1, "max_steps": a.steps,
        "weight_decay": 0.0, "warmup_ratio": 0.06, "max_length": a.max_length, "grad_clip": 1.0,
        "group_by_length": order == "grouped", "precision": "auto", "tf32": "auto", "fused_adamw": "auto",
        "attn_implementation": "auto", "compile": False, "log_every_steps": 10, "eval_every_steps": None,
        "checkpoint_every_steps": None,
    })  # fmt: skip
    fast = resolve_fast_paths(optim, device)
    collator = _CountingCollator(tok)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cpu_clock = a.clock == "cpu" or (a.clock == "auto" and device.type == "cpu")
    clock = time.process_time if cpu_clock else time.perf_counter
    t0 = clock()
    if impl == "ours":
        loop.make_collator = lambda _tok: collator  # count the loop's own padding (benchmark-only patch)
        loop.train(
            model, tok, ds, None, optim, lr=lr, seed=0, device=device, progress=False, log=lambda s: None
        )
    else:
        from transformers import Trainer, TrainingArguments

        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(
                output_dir=out, per_device_train_batch_size=a.batch, max_steps=a.steps, learning_rate=lr,
                # transformers 5: a float warmup_steps in [0, 1) is the warm-up ratio
                weight_decay=0.0, warmup_steps=0.06, lr_scheduler_type="linear", max_grad_norm=1.0,
                train_sampling_strategy="group_by_length" if order == "grouped" else "random",
                bf16=fast["precision"] == "bf16", fp16=fast["precision"] == "fp16", tf32=fast["tf32"] or None,
                optim="adamw_torch_fused" if fast["fused_adamw"] else "adamw_torch",
                logging_steps=10, save_strategy="no", report_to=[], dataloader_num_workers=0, seed=0,
                use_cpu=device.type == "cpu", disable_tqdm=True,
            )  # fmt: skip
            Trainer(model=model, args=args, train_dataset=ds, data_collator=collator).train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = clock() - t0
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {
        "impl": impl, "order": order, "method": a.method, "device": device.type, "precision": fast["precision"],
        "steps": a.steps, "seconds": round(seconds, 3), "clock": "cpu" if cpu_clock else "wall",
        "examples_per_s": round(a.steps * a.batch / seconds, 4),
        "real_tokens_per_s": round(collator.real / seconds, 1),
        "pad_fraction": round(1 - collator.real / collator.padded, 4) if collator.padded else None,
        "peak_mb": round(peak_mb, 1),
    }  # fmt: skip


def full_set_padding(a) -> dict:
    """Padding share of one epoch over (up to 20,000 rows of) the whole train split, random vs grouped:
    the bench's subset is small, so its mega-batches are smaller than a real run's."""
    from transformers import AutoTokenizer

    from lora_vs_full.data import load_task
    from lora_vs_full.models.tiny import minilm_path
    from lora_vs_full.training.batching import epoch_pad_fraction, token_lengths
    from lora_vs_full.training.loop import encode

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    raw = load_task(a.data, "train", data_dir=a.data_dir, max_samples=20000, seed=0, allow_substitutes=True)
    lengths = token_lengths(encode(raw, tok, a.max_length))
    out = {
        "rows": len(lengths),
        "mean_length": round(sum(lengths) / len(lengths), 2),
        "max_length": max(lengths),
    }
    for grouped in (False, True):
        key = "grouped" if grouped else "random"
        out[f"pad_fraction_{key}"] = round(
            epoch_pad_fraction(lengths, a.batch, seed=0, group_by_length=grouped), 4
        )
    return out


def _ratio(rows: list[dict], num: tuple, den: tuple) -> float | None:
    by = {(r["impl"], r["order"]): r["examples_per_s"] for r in rows}
    return round(by[num] / by[den], 3) if num in by and den in by else None


def _ratios(rows: list[dict]) -> dict:
    named = {
        "ours_grouped_vs_trainer_default": (("ours", "grouped"), ("trainer", "random")),
        "ours_grouped_vs_trainer_grouped": (("ours", "grouped"), ("trainer", "grouped")),
        "ours_random_vs_trainer_default": (("ours", "random"), ("trainer", "random")),
    }
    return {k: r for k, (num, den) in named.items() if (r := _ratio(rows, num, den)) is not None}


def _table(rows: list[dict]) -> list[dict]:
    """The BENCHMARKS.md table: one row per configuration (a pure function of the result file's rows)."""
    by = {(r["impl"], r["order"]): r for r in rows}
    names = {"ours": "our loop", "trainer": "PEFT + HF Trainer"}
    out = []
    for impl, order in CONFIGS:
        r = by.get((impl, order))
        if r is None:
            continue
        out.append({
            "configuration": f"{names[impl]}, {'length-grouped' if order == 'grouped' else 'random'}",
            "examples/s": r["examples_per_s"], "padded-token fraction": r["pad_fraction"],
            "x Trainer default": _ratio(rows, (impl, order), ("trainer", "random")),
            "peak MiB": r["peak_mb"],
        })  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", choices=TASKS, default="mnli", help="whose train lengths (random = fixed --seq)"
    )
    ap.add_argument(
        "--data-dir",
        default=os.environ.get("DATA_DIR"),
        help="original releases (default $DATA_DIR; unset = Hub)",
    )
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--method", choices=("lora", "full"), default="lora")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512, help="truncation (the paper preset's 512)")
    ap.add_argument("--seq", type=int, default=128, help="sequence length of --data random")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    ap.add_argument(
        "--clock",
        choices=("auto", "cpu", "wall"),
        default="auto",
        help="auto: CPU seconds on a CPU, wall on CUDA",
    )
    ap.add_argument(
        "--configs", nargs="+", default=[f"{i}:{o}" for i, o in CONFIGS], help="impl:order, e.g. ours:grouped"
    )
    ap.add_argument(
        "--out", default="results/benchmarks", help="directory of train-<data>.json/.csv ('' = none)"
    )
    ap.add_argument("--render", metavar="JSON", help="only rewrite the .csv beside an existing result .json")
    ap.add_argument("--one", nargs=2, metavar=("IMPL", "ORDER"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a, *a.one)))
        return
    if a.render:
        write_csv(Path(a.render))
        return
    from lora_vs_full.errors import UserError

    configs = [tuple(c.split(":")) for c in a.configs]
    bad = [":".join(c) for c in configs if c not in CONFIGS]
    if bad:
        raise SystemExit(
            f"error: unknown --configs {bad}: choose from {' '.join(f'{i}:{o}' for i, o in CONFIGS)}"
        )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    passthrough = ["--data", a.data, "--steps", str(a.steps), "--batch", str(a.batch), "--method", a.method,
                   "--rank", str(a.rank), "--max-length", str(a.max_length), "--seq", str(a.seq),
                   "--threads", str(a.threads), "--clock", a.clock] + (["--data-dir", a.data_dir] if a.data_dir else [])  # fmt: skip
    print(f"MiniLM + {a.method}{f' r={a.rank}' if a.method == 'lora' else ''}, {a.data} train lengths, "
          f"batch {a.batch}, {a.steps} steps, max length {a.max_length}", flush=True)  # fmt: skip
    rows = []
    for impl, order in configs:
        out = subprocess.run(
            [sys.executable, __file__, "--one", impl, order, *passthrough],
            capture_output=True,
            text=True,
            env=env,
        )
        if out.returncode != 0:
            sys.exit(f"{impl} {order} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"  {impl:7} {order:7} {r['examples_per_s']:8.2f} examples/s  padded {r['pad_fraction']:.3f}  "
              f"({r['seconds']:.1f} {r['clock']} s, peak {r['peak_mb']:.0f} MiB)", flush=True)  # fmt: skip
    ratios = _ratios(rows)
    for k, v in ratios.items():
        print(f"  {k}: {v:.2f}x")
    try:
        padding = full_set_padding(a) if a.data != "random" else None
    except UserError as exc:
        padding = {"error": str(exc)}
    if padding:
        print(f"  whole train split ({padding.get('rows')} rows): padded fraction random "
              f"{padding.get('pad_fraction_random')}, grouped {padding.get('pad_fraction_grouped')}")  # fmt: skip
    if a.out:
        from lora_vs_full.provenance import collect
        from lora_vs_full.storage import atomic_write_json

        record = None
        if a.data != "random":
            from lora_vs_full.data import load_task_with_record

            record = load_task_with_record(a.data, "train", data_dir=a.data_dir, max_samples=_n_rows(a),
                                           seed=0, allow_substitutes=True)[1]  # fmt: skip
        stem = Path(a.out) / f"train-{a.data}"
        result = {
            "command": "python benchmarks/bench_train.py " + " ".join(sys.argv[1:]),
            "config": {k: v for k, v in vars(a).items() if k not in ("one", "out")},
            "rows": rows, "ratios": ratios, "whole_split_padding": padding, "data": record,
            "provenance": collect(),
        }  # fmt: skip
        atomic_write_json(stem.with_suffix(".json"), result)
        write_csv(stem.with_suffix(".json"))
        print(f"wrote {stem}.json and .csv")


def write_csv(result_json: Path) -> Path:
    """``train-<data>.csv`` beside ``train-<data>.json``: the table BENCHMARKS.md embeds."""
    import pandas as pd

    from lora_vs_full.storage import atomic_write_text

    result = json.loads(result_json.read_text())
    table = pd.DataFrame(_table(result["rows"]))
    return atomic_write_text(result_json.with_suffix(".csv"), table.to_csv(index=False))


if __name__ == "__main__":
    main()
