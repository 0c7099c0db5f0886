"""Linear-probe evaluation: retrain only a task's classification head on a frozen body, then score it.

This is how the continual-learning experiment (PAPER.md §5, v1 Fig. 8) asks "how much of task T can the
body still do?" after each stage. The body never changes here, so it is run ONCE per task over the probe's
train and eval rows (under ``torch.no_grad``) and the head is then trained on those cached features — a
probe of ``steps`` steps costs ``steps`` head forwards, not ``steps`` body forwards.

What is cached is exactly what the model hands its ``classifier`` module (a forward pre-hook), so the
probe works for any ``*ForSequenceClassification`` without knowing the head's shape:
RoBERTa's head receives the sequence output (batch, length, hidden) and reads position 0 itself; BERT's
``classifier`` receives the pooled output (batch, hidden) — the pooler belongs to the frozen body.
Features are taken in eval mode (no dropout in the body); the head's own dropout (RoBERTa) stays active
while it trains, as in fine-tuning.

Determinism: the head starts from ``head_init`` (the task's fixed initial head state) and the batch order
comes from a ``torch.Generator`` seeded with ``seed``, so the same body + seed gives the same accuracy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from lora_vs_full.errors import UserError


@dataclass(frozen=True)
class ProbeConfig:
    """Probe budget. ``steps`` head updates of ``batch_size`` rows at learning rate ``lr`` (AdamW, wd 0,
    constant rate), on at most ``train_samples`` rows of the task's train split."""

    steps: int = 200
    lr: float = 1e-3
    batch_size: int = 32
    train_samples: int = 1000

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "train_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"probe.{name}={value!r} must be a positive integer")
        if not float(self.lr) > 0:
            raise UserError(f"probe.lr={self.lr!r} must be > 0 (e.g. probe.lr=1e-3)")


@dataclass
class Features:
    """Cached classifier inputs: a list of per-batch tensors (on CPU; lengths may differ between batches
    because padding is per batch) and the matching label tensors."""

    inputs: list[torch.Tensor]
    labels: list[torch.Tensor]

    def __len__(self) -> int:
        return sum(len(y) for y in self.labels)


def _batches(ds, batch_size: int):
    for start in range(0, len(ds), batch_size):
        yield ds[start : start + batch_size]


@torch.no_grad()
def extract_features(model, tokenizer, ds, *, batch_size: int, max_length: int, device) -> Features:
    """Run the frozen ``model`` over ``ds`` (columns text, label[, text_pair]) and keep what its
    ``classifier`` receives. Restores the model's previous train/eval mode."""
    captured: list[torch.Tensor] = []

    def hook(_module, args):
        captured.append(args[0].detach().to("cpu", torch.float32))
        # Skip the real head: its output is not needed and num_labels may not match this task.
        raise _Captured

    was_training = model.training
    model.eval()
    handle = model.classifier.register_forward_pre_hook(hook)
    inputs, labels = [], []
    try:
        for batch in _batches(_by_length(ds, tokenizer, max_length), batch_size):
            enc = tokenizer(
                batch["text"],
                batch.get("text_pair"),
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            try:
                model(**enc)
            except _Captured:
                pass
            inputs.append(captured.pop())
            labels.append(torch.as_tensor(batch["label"], dtype=torch.long))
    finally:
        handle.remove()
        model.train(was_training)
    return Features(inputs, labels)


def _by_length(ds, tokenizer, max_length: int):
    """``ds`` in order of tokenised length (stable), so each batch pads to nearly its own rows' length.

    The features of a row do not depend on its batch (padding is masked), so this only saves the
    padded positions (up to 2x on MNLI's or SIQA's spread of lengths); the cached rows come in this
    order, which is deterministic for the same rows."""
    pair = list(ds["text_pair"]) if "text_pair" in ds.column_names else None
    enc = tokenizer(list(ds["text"]), pair, truncation=True, max_length=max_length)
    order = sorted(range(len(ds)), key=lambda i: len(enc["input_ids"][i]))
    return ds.select(order)


class _Captured(Exception):
    """Raised by the feature hook to stop the forward pass once the classifier input is known."""


def train_head(head: nn.Module, feats: Features, cfg: ProbeConfig, *, seed: int, device) -> nn.Module:
    """Train ``head`` (in place) for ``cfg.steps`` steps on cached features; batches are re-cut from the
    cached ones in a seeded random order so every step sees ``cfg.batch_size`` rows."""
    head.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    # Flatten to per-row views so batches can mix rows from different cached batches; rows of
    # different padded lengths are re-padded (zeros) only when the head takes a sequence.
    rows = [(x[i], y[i]) for x, y in zip(feats.inputs, feats.labels, strict=True) for i in range(len(y))]
    opt = torch.optim.AdamW(head.parameters(), lr=float(cfg.lr), weight_decay=0.0)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.empty(0, dtype=torch.long)
    for _ in range(cfg.steps):
        if len(order) < cfg.batch_size:
            order = torch.cat([order, torch.randperm(len(rows), generator=gen)])
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        x, y = _stack([rows[i] for i in idx.tolist()])
        loss = loss_fn(head(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    head.eval()
    return head


def _stack(rows):
    xs, ys = zip(*rows, strict=True)
    if xs[0].ndim == 2:  # (length, hidden): pad to the longest row in this batch
        xs = nn.utils.rnn.pad_sequence(list(xs), batch_first=True)
    else:
        xs = torch.stack(xs)
    return xs, torch.stack(ys)


@torch.no_grad()
def head_accuracy(head: nn.Module, feats: Features, *, device) -> float:
    """Accuracy of ``head`` on cached eval features (head in eval mode: no dropout)."""
    head.eval()
    correct = 0
    for x, y in zip(feats.inputs, feats.labels, strict=True):
        correct += int((head(x.to(device)).argmax(-1).cpu() == y).sum())
    return correct / max(len(feats), 1)


def probe_accuracy(
    model,
    head_template: nn.Module,
    head_init: dict[str, torch.Tensor],
    tokenizer,
    train_ds,
    eval_ds,
    cfg: ProbeConfig,
    *,
    max_length: int,
    seed: int,
    device,
) -> float:
    """The probe in one call: features of the frozen ``model`` on ``train_ds``/``eval_ds``, a copy of
    ``head_template`` reset to ``head_init`` and trained on them, its accuracy on ``eval_ds``.

    ``head_template``: a classifier module of the right shape for this task's num_labels (only its
    structure is used). ``model`` is left untouched (its own classifier is neither used nor changed).
    """
    train_feats = extract_features(model, tokenizer, train_ds, batch_size=cfg.batch_size,
                                   max_length=max_length, device=device)  # fmt: skip
    eval_feats = extract_features(model, tokenizer, eval_ds, batch_size=max(cfg.batch_size, 64),
                                  max_length=max_length, device=device)  # fmt: skip
    head = copy.deepcopy(head_template).float()
    head.load_state_dict(head_init)
    train_head(head, train_feats, cfg, seed=seed, device=device)
    return head_accuracy(head, eval_feats, device=device)
