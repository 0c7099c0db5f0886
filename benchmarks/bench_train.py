"""Training throughput: our loop (lora_vs_full.training) vs a plain PEFT + HF Trainer script, side by side.

    .venv/bin/python benchmarks/bench_train.py                 # MiniLM, bs 16, seq 128, fp32 + bf16
    .venv/bin/python benchmarks/bench_train.py --steps 30 --methods lora --dtypes bf16

Both sides get the same model (all-MiniLM-L6-v2 + a fresh 2-way head), the same trainable set
(``models.methods.apply_method``: PEFT ``get_peft_model`` for LoRA r=8 all_linear, the authors' set for
full FT), the same pre-tokenized data (random token ids, every sequence exactly ``--seq`` long, so no
padding differences), AdamW + linear warm-up, batch 16, ``--steps`` optimiser steps. Each measurement
runs in a fresh subprocess so peak memory is its own (CPU: peak RSS; GPU: torch.cuda.max_memory_allocated).
Samples/s = steps * batch / time of the whole train call (set-up included for both sides): wall time, or
with ``--cpu-time`` this process's CPU seconds (on a shared CPU box wall time measures other users' jobs).
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


def _data(n: int, seq: int, vocab: int, seed: int = 0):
    import datasets
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (n, seq), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return datasets.Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": [[1] * seq] * n, "labels": (ids[:, 1] % 2).tolist()}
    )


def one(
    impl: str, method: str, dtype: str, steps: int, seq: int, batch: int, threads: int, cpu_time: bool
) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from omegaconf import OmegaConf

    from lora_vs_full.models.build import load_classifier
    from lora_vs_full.models.methods import apply_method
    from lora_vs_full.models.tiny import minilm_path

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    src = str(minilm_path())
    torch.manual_seed(0)
    model = load_classifier(src, 2)
    mcfg = OmegaConf.create(
        {"name": "full", "trainable": "encoder_weights"}
        if method == "full"
        else {
            "name": "lora",
            "rank": 8,
            "alpha_policy": "2r",
            "targets": "all_linear",
            "init": "gaussian",
            "lr": None,
            "lr_rule": "alpha_product",
            "lr_alpha_product": 2.4e-3,
            "fixed_alpha": 8.0,
        }  # fmt: skip
    )
    model = apply_method(model, mcfg, family="bert")
    lr = 1e-5 if method == "full" else 1.5e-4
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    ds = _data(steps * batch, seq, tok.vocab_size)
    bf16 = dtype == "bf16"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    clock = time.process_time if cpu_time else time.perf_counter  # CPU seconds ignore other users' load
    t0 = clock()
    if impl == "ours":
        from lora_vs_full.training.loop import train

        optim = OmegaConf.create(
            {
                "batch_size": batch,
                "eval_batch_size": 64,
                "epochs": 1,
                "max_steps": steps,
                "weight_decay": 0.0,
                "warmup_ratio": 0.06,
                "max_length": seq,
                "grad_clip": 1.0,
                "bf16": bf16,
                "log_every_steps": 10,
                "eval_every_steps": None,
                "checkpoint_every_steps": None,
                "lr": lr,
            }  # fmt: skip
        )
        train(model, tok, ds, None, optim, lr=lr, seed=0, device=device, progress=False, log=lambda s: None)
    else:
        from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(
                output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=lr,
                # transformers 5: a float warmup_steps in [0, 1) is the warm-up ratio
                weight_decay=0.0, warmup_steps=0.06, lr_scheduler_type="linear", max_grad_norm=1.0, bf16=bf16,
                logging_steps=10, save_strategy="no", report_to=[], dataloader_num_workers=0, seed=0,
                use_cpu=device.type == "cpu", disable_tqdm=True,
            )  # fmt: skip
            Trainer(
                model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok)
            ).train()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    seconds = clock() - t0
    return {"impl": impl, "method": method, "dtype": dtype, "device": device.type, "steps": steps,
            "samples_per_s": steps * batch / seconds, "peak_mb": peak_mb}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--methods", nargs="+", default=["full", "lora"])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument(
        "--cpu-time", action="store_true", help="time with this process's CPU seconds (shared box)"
    )
    ap.add_argument("--one", nargs=3, metavar=("IMPL", "METHOD", "DTYPE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(*a.one, a.steps, a.seq, a.batch, a.threads, a.cpu_time)))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    print(f"MiniLM (all-MiniLM-L6-v2), batch {a.batch}, seq {a.seq}, {a.steps} steps; samples/s (peak MiB)")
    print(f"{'method':6} {'dtype':5} {'ours':>18} {'PEFT+Trainer':>18} {'speed ratio':>12} {'mem ratio':>10}")
    for method in a.methods:
        for dtype in a.dtypes:
            res = {}
            for impl in ("ours", "trainer"):
                cmd = [sys.executable, __file__, "--one", impl, method, dtype,
                       "--steps", str(a.steps), "--seq", str(a.seq), "--batch", str(a.batch),
                       "--threads", str(a.threads)] + (["--cpu-time"] if a.cpu_time else [])  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    sys.exit(f"{impl} {method} {dtype} failed:\n{out.stderr[-3000:]}")
                res[impl] = json.loads(out.stdout.strip().splitlines()[-1])
            o, t = res["ours"], res["trainer"]
            print(
                f"{method:6} {dtype:5} {o['samples_per_s']:9.2f} ({o['peak_mb']:6.0f}) "
                f"{t['samples_per_s']:9.2f} ({t['peak_mb']:6.0f}) "
                f"{o['samples_per_s'] / t['samples_per_s']:11.2f}x {o['peak_mb'] / t['peak_mb']:9.2f}x",
                flush=True,
            )
    print(f"device: {o['device']}; speed ratio > 1 = our loop faster; mem ratio < 1 = our loop leaner")


if __name__ == "__main__":
    main()
