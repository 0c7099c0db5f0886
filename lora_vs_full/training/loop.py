"""The training loop: seeded shuffling, dynamic padding, AdamW + linear warm-up, evaluation, logging.

Deliberately a plain PyTorch loop (readable in one sitting) rather than HF Trainer: it fixes the
authors' bugs (PAPER.md §9: no shuffling, evaluation never returning to train mode) and
``benchmarks/bench_train.py`` checks that it is as fast as a PEFT + Trainer script.

Data: ``datasets.Dataset`` with ``text``, ``label`` and, for pair tasks, ``text_pair``
(``lora_vs_full.data.load_task``). Batches are padded to the longest sequence in the batch.
``metrics.jsonl`` is an append-only event log (one JSON object per line, flushed as written); a run is
complete only when ``runs.py`` writes ``final.json``, so a killed run's partial log is never trusted.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lora_vs_full.errors import UserError
from lora_vs_full.training.optim import make_optimizer, make_scheduler, total_steps

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def encode(ds, tokenizer, max_length: int):
    """Tokenize ``text`` (+ ``text_pair``) truncated to ``max_length``; keep only model inputs + ``labels``."""
    if "input_ids" in ds.column_names:
        return ds
    pair = "text_pair" in ds.column_names

    def fn(batch):
        args = (batch["text"], batch["text_pair"]) if pair else (batch["text"],)
        out = tokenizer(*args, truncation=True, max_length=max_length)
        out["labels"] = batch["label"]
        return out

    ds = ds.map(fn, batched=True, remove_columns=ds.column_names, desc=None)
    return ds.remove_columns([c for c in ds.column_names if c not in _MODEL_INPUTS])


def make_collator(tokenizer):
    """Dynamic padding: each batch is padded to its own longest sequence."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, return_tensors="pt")


def make_loader(ds, tokenizer, batch_size: int, *, shuffle: bool, seed: int = 0):
    """DataLoader over an encoded dataset; shuffling draws from its own generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return torch.utils.data.DataLoader(
        ds.with_format(None),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=make_collator(tokenizer),
    )


def _autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def evaluate(model, tokenizer, ds, *, batch_size: int, max_length: int, device, bf16: bool = False) -> dict:
    """``{"accuracy", "loss", "n"}`` on ``ds`` (raw or encoded), under no_grad; restores the train/eval mode."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    try:
        with torch.no_grad():
            for batch in make_loader(encode(ds, tokenizer, max_length), tokenizer, batch_size, shuffle=False):
                batch = {k: v.to(device) for k, v in batch.items()}
                with _autocast(device, bf16):
                    out = model(**batch)
                k = batch["labels"].shape[0]
                loss_sum += out.loss.float().item() * k
                correct += (out.logits.argmax(-1) == batch["labels"]).sum().item()
                n += k
    finally:
        model.train(was_training)
    return {"accuracy": correct / max(n, 1), "loss": loss_sum / max(n, 1), "n": n}


class _Tracker:
    """Optional experiment tracker (off by default); ``log(metrics, step)`` and ``close()``."""

    def __init__(self, name: str, run_dir: Path | None, config: dict | None):
        self.name, self._log, self._close = name, None, lambda: None
        try:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(log_dir=str(Path(run_dir or ".") / "tensorboard"))
                self._log = lambda m, s: [writer.add_scalar(k, v, s) for k, v in m.items()]
                self._close = writer.close
            elif name == "wandb":
                import wandb

                wrun = wandb.init(dir=str(run_dir) if run_dir else None, config=config)
                self._log = lambda m, s: wrun.log(m, step=s)
                self._close = wrun.finish
            elif name == "mlflow":
                import mlflow

                mlflow.start_run()
                self._log = lambda m, s: mlflow.log_metrics(m, step=s)
                self._close = mlflow.end_run
        except ImportError:
            hint = " (pip install -e '.[track]')" if name == "tensorboard" else ""
            raise UserError(
                f"tracker={name} needs the {name} package{hint}: install it or use tracker=none"
            ) from None

    def log(self, metrics: dict, step: int) -> None:
        if self._log is not None:
            self._log({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}, step)

    def close(self) -> None:
        self._close()


def make_tracker(name: str, run_dir=None, config: dict | None = None) -> _Tracker | None:
    return None if name in (None, "none") else _Tracker(name, run_dir, config)


def train(
    model,
    tokenizer,
    train_ds,
    eval_ds,
    optim_cfg,
    *,
    seed: int,
    lr: float | None = None,
    device,
    max_length: int | None = None,
    run_dir=None,
    log: Callable[[str], None] = print,
    tracker: _Tracker | None = None,
    save_fn: Callable[[Path], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train ``model`` in place with the recipe in ``optim_cfg``; returns a summary dict.

    ``lr``: the method's learning rate (``models.methods.method_lr``; LoRA's comes from its rule, so pass
    it) -- ``None`` means ``optim_cfg.lr``. ``max_length`` defaults to
    ``optim_cfg.max_length``. Evaluates after every epoch, every ``optim_cfg.eval_every_steps`` if set,
    and at the end. With ``run_dir``: appends events to ``run_dir/metrics.jsonl`` and, every
    ``optim_cfg.checkpoint_every_steps``, calls ``save_fn(run_dir/checkpoints/step-<n>)``.
    Deterministic given ``seed`` (dropout RNG and shuffling order).
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    max_length = int(max_length or optim_cfg.max_length)
    bf16 = bool(optim_cfg.get("bf16", False))
    torch.manual_seed(seed)  # dropout
    train_enc = encode(train_ds, tokenizer, max_length)
    eval_enc = encode(eval_ds, tokenizer, max_length) if eval_ds is not None else None
    loader = make_loader(train_enc, tokenizer, int(optim_cfg.batch_size), shuffle=True, seed=seed)
    steps = total_steps(len(train_enc), optim_cfg)
    model.to(device).train()
    lr = float(optim_cfg.lr if lr is None else lr)
    optimizer = make_optimizer(model, lr, float(optim_cfg.weight_decay))
    scheduler = make_scheduler(optimizer, steps, float(optim_cfg.warmup_ratio))
    params = [p for p in model.parameters() if p.requires_grad]
    metrics_fh = open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8") if run_dir else None
    t0, step, epoch, last_eval_step, window = time.perf_counter(), 0, 0, -1, []
    result = {"eval_accuracy": None, "eval_loss": None, "diverged": False}

    def emit(event: dict) -> None:
        event = {"time": round(time.perf_counter() - t0, 3), **event}
        if metrics_fh is not None:
            metrics_fh.write(json.dumps(event) + "\n")
            metrics_fh.flush()
        if tracker is not None:
            tracker.log({f"{event['event']}/{k}": v for k, v in event.items() if k != "event"}, step)

    def run_eval() -> None:
        nonlocal last_eval_step
        if eval_enc is None or last_eval_step == step:
            return
        ev = evaluate(model, tokenizer, eval_enc, batch_size=int(optim_cfg.eval_batch_size),
                      max_length=max_length, device=device, bf16=bf16)  # fmt: skip
        last_eval_step = step
        result.update(eval_accuracy=ev["accuracy"], eval_loss=ev["loss"])
        emit({"event": "eval", "step": step, "epoch": round(step / len(loader), 4), **ev})
        log(f"step {step}/{steps}: eval accuracy {ev['accuracy']:.4f}, loss {ev['loss']:.4f} (n={ev['n']})")

    bar = tqdm(total=steps, desc="train", disable=not progress, dynamic_ncols=True, leave=False)
    try:
        while step < steps:
            epoch += 1
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                with _autocast(device, bf16):
                    loss = model(**batch).loss
                if not torch.isfinite(loss):
                    log(f"step {step}: loss is {loss.item()} (diverged); stopping early")
                    steps, result["diverged"] = step, True
                    break
                loss.backward()
                if optim_cfg.get("grad_clip"):
                    torch.nn.utils.clip_grad_norm_(params, float(optim_cfg.grad_clip))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                window.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if step % int(optim_cfg.log_every_steps) == 0 or step == steps:
                    emit({"event": "train", "step": step, "epoch": epoch, "loss": sum(window) / len(window),
                          "lr": scheduler.get_last_lr()[0]})  # fmt: skip
                    result["train_loss"] = sum(window) / len(window)
                    window = []
                every = optim_cfg.get("eval_every_steps")
                if every and step % int(every) == 0:
                    run_eval()
                ckpt_every = optim_cfg.get("checkpoint_every_steps")
                if ckpt_every and save_fn is not None and run_dir and step % int(ckpt_every) == 0:
                    save_fn(Path(run_dir) / "checkpoints" / f"step-{step}")
                if step >= steps:
                    break
            run_eval()  # end of every epoch (and of training)
    finally:
        bar.close()
        if metrics_fh is not None:
            metrics_fh.close()
    seconds = time.perf_counter() - t0
    n_seen = step * int(optim_cfg.batch_size)
    return {
        **result,
        "train_loss": result.get("train_loss", sum(window) / len(window) if window else math.nan),
        "steps": step,
        "epochs": round(step / max(len(loader), 1), 4),
        "train_seconds": round(seconds, 3),
        "train_samples_per_s": round(n_seen / seconds, 3) if seconds > 0 else None,
    }
