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

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lora_vs_full.errors import UserError
from lora_vs_full.training import resume
from lora_vs_full.training.batching import epoch_pad_fraction, make_sampler, token_lengths
from lora_vs_full.training.optim import (
    autocast,
    make_optimizer,
    make_scheduler,
    resolve_fast_paths,
    tf32_matmuls,
    total_steps,
)

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


def make_loader(ds, tokenizer, batch_size: int, *, shuffle: bool, seed: int = 0, group_by_length=False):
    """DataLoader over an encoded dataset. ``shuffle``: a seeded random order per epoch, or with
    ``group_by_length`` HF Trainer's length-grouped order (``batching.make_sampler``); else in order."""
    sampler = None
    if shuffle:
        lengths = token_lengths(ds) if group_by_length else [0] * len(ds)
        sampler = make_sampler(lengths, batch_size, seed=seed, group_by_length=group_by_length)
    return torch.utils.data.DataLoader(
        ds.with_format(None), batch_size=batch_size, sampler=sampler, collate_fn=make_collator(tokenizer)
    )


def evaluate(
    model, tokenizer, ds, *, batch_size: int, max_length: int, device, bf16=False, precision=None
) -> dict:
    """``{"accuracy", "loss", "n"}`` on ``ds`` (raw or encoded), under no_grad; restores the train/eval mode.

    ``precision`` (fp32 | bf16 | fp16, resolved) is the autocast dtype; ``bf16=True`` is the older spelling."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    try:
        with torch.no_grad():
            for batch in make_loader(encode(ds, tokenizer, max_length), tokenizer, batch_size, shuffle=False):
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast(device, precision or ("bf16" if bf16 else "fp32")):
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
    state_every: int | None = None,
    keep_states: int = 2,
    make_optim: Callable | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train ``model`` in place with the recipe in ``optim_cfg``; returns a summary dict.

    ``lr``: the method's learning rate (``models.methods.method_lr``; LoRA's comes from its rule, so pass
    it) -- ``None`` means ``optim_cfg.lr``. ``max_length`` defaults to
    ``optim_cfg.max_length``. Evaluates after every epoch, every ``optim_cfg.eval_every_steps`` if set,
    and at the end. With ``run_dir``: appends events to ``run_dir/metrics.jsonl`` and, every
    ``optim_cfg.checkpoint_every_steps``, calls ``save_fn(run_dir/checkpoints/step-<n>)``.
    Deterministic given ``seed`` (dropout RNG and shuffling order).

    Resume (``training.resume``): with ``run_dir`` and ``state_every``, a resumable state is saved every
    ``state_every`` steps (newest ``keep_states`` kept); when ``run_dir/state/`` holds one, training
    continues from it (the caller has checked that the config is the same: ``runs.execute``).
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    max_length = int(max_length or optim_cfg.max_length)
    fast = resolve_fast_paths(optim_cfg, device)  # UserError for a CUDA-only switch on another device
    precision, grouped = fast["precision"], bool(optim_cfg.get("group_by_length", False))
    torch.manual_seed(seed)  # dropout
    train_enc = encode(train_ds, tokenizer, max_length)
    eval_enc = encode(eval_ds, tokenizer, max_length) if eval_ds is not None else None
    bs = int(optim_cfg.batch_size)
    loader = make_loader(train_enc, tokenizer, bs, shuffle=True, seed=seed, group_by_length=grouped)
    steps = total_steps(len(train_enc), optim_cfg)
    model.to(device).train()
    if fast["attn_implementation"] != "auto":
        model.set_attn_implementation(fast["attn_implementation"])  # PEFT forwards to the base model
    fast["attn_implementation"] = getattr(model.config, "_attn_implementation", None)  # the kernel in use
    # epoch 1's padding share (a fresh sampler with the same seed gives the same order as the loader's)
    pad = round(epoch_pad_fraction(token_lengths(train_enc), bs, seed=seed, group_by_length=grouped), 4)
    forward = torch.compile(model) if fast["compile"] else model  # shares the parameters; eval stays eager
    scaler = torch.amp.GradScaler(device.type, enabled=fast["grad_scaler"])  # fp16 only; else a no-op
    lr = float(optim_cfg.lr if lr is None else lr)
    # make_optim: a method's own optimiser (LoRA+); on_step(step): after the step, grads alive (AdaLoRA)
    optimizer = (make_optim or make_optimizer)(
        model, lr, float(optim_cfg.weight_decay), fused=fast["fused_adamw"]
    )
    scheduler = make_scheduler(optimizer, steps, float(optim_cfg.warmup_ratio))
    params = [p for p in model.parameters() if p.requires_grad]
    t0, step, epoch, last_eval_step, window = time.perf_counter(), 0, 0, -1, []
    result = {"eval_accuracy": None, "eval_loss": None, "diverged": False}
    gen, skip, resumed = resume.sampler_generator(loader), 0, None
    if state_every and on_step is not None:  # AdaLoRA's importance scores live outside the saved state
        log("this method keeps per-step state (AdaLoRA's rank allocator) that a resumable state does not "
            "capture: no mid-run states; a killed run restarts from step 0")  # fmt: skip
        state_every = None
    if run_dir and state_every:
        resumed = resume.load_latest(run_dir, log=log)
    if resumed is not None:  # continue a killed attempt exactly where its last state was saved
        resume.load_trainables(model, resumed["trainables"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        scaler.load_state_dict(resumed["scaler"])
        step, epoch, skip = resumed["step"], resumed["epoch"], resumed["batch_in_epoch"]
        last_eval_step, window = resumed["last_eval_step"], list(resumed["window"])
        result = dict(resumed["result"])
        t0 -= resumed["seconds"]
        resume.truncate_metrics(Path(run_dir) / "metrics.jsonl", resumed["metrics_bytes"])
        log(f"resuming at step {step}/{steps} from {resumed['path']}")
    metrics_fh = open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8") if run_dir else None
    batch_in_epoch, epoch_gen_state = 0, None

    def save_state() -> None:
        resume.save_state(run_dir, step, {
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "last_eval_step": last_eval_step,
            "window": list(window), "result": dict(result), "seconds": time.perf_counter() - t0,
            "metrics_bytes": metrics_fh.tell(), "trainables": resume.trainable_state(model),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": resume.capture_rng(device), "epoch_generator": epoch_gen_state,
        }, keep=keep_states, log=log)  # fmt: skip

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
                      max_length=max_length, device=device, precision=precision)  # fmt: skip
        last_eval_step = step
        result.update(eval_accuracy=ev["accuracy"], eval_loss=ev["loss"])
        emit({"event": "eval", "step": step, "epoch": round(step / len(loader), 4), **ev})
        log(f"step {step}/{steps}: eval accuracy {ev['accuracy']:.4f}, loss {ev['loss']:.4f} (n={ev['n']})")

    if resumed is not None:
        emit({"event": "resume", "step": step, "state": Path(resumed["path"]).name})
    else:
        emit({"event": "setup", "step": 0, **fast, "group_by_length": grouped, "pad_fraction_epoch1": pad})
    bar = tqdm(total=steps, initial=step, desc="train", disable=not progress, dynamic_ncols=True, leave=False)
    tf32 = tf32_matmuls(fast["tf32"])
    tf32.__enter__()  # restored in the finally below
    try:
        while step < steps:
            if resumed is not None:  # replay the interrupted epoch's order up to the saved position
                if gen is not None and resumed["epoch_generator"] is not None:
                    gen.set_state(resumed["epoch_generator"])
                epoch_gen_state, batches = resumed["epoch_generator"], iter(loader)
                for _ in range(skip):
                    next(batches)
                resume.restore_rng(resumed["rng"])  # after iter(): creating it draws from the global RNG
                batch_in_epoch, resumed = skip, None
            else:
                epoch += 1
                epoch_gen_state = gen.get_state() if gen is not None else None
                batches, batch_in_epoch = iter(loader), 0
            for batch in batches:
                batch_in_epoch += 1
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast(device, precision):
                    loss = forward(**batch).loss
                if not torch.isfinite(loss):
                    log(f"step {step}: loss is {loss.item()} (diverged); stopping early")
                    steps, result["diverged"] = step, True
                    break
                scaler.scale(loss).backward()
                if optim_cfg.get("grad_clip"):
                    scaler.unscale_(optimizer)  # clip the true gradients (no-op without fp16)
                    torch.nn.utils.clip_grad_norm_(params, float(optim_cfg.grad_clip))
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if on_step is not None:
                    on_step(step)
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
                if state_every and run_dir and step % int(state_every) == 0 and step < steps:
                    save_state()
                if step >= steps:
                    break
            run_eval()  # end of every epoch (and of training)
    finally:
        tf32.__exit__(None, None, None)
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
        "fast_paths": fast,
        "pad_fraction_epoch1": pad,
    }
