"""Optimiser and schedule of the paper's recipe: AdamW (weight decay 0) + linear decay with warm-up."""

from __future__ import annotations

import math

import torch


def total_steps(n_train: int, optim_cfg) -> int:
    """Optimiser steps of a run: ``optim.max_steps`` when set, else ``epochs * ceil(n / batch_size)``."""
    if optim_cfg.get("max_steps"):
        return int(optim_cfg.max_steps)
    return int(optim_cfg.epochs) * math.ceil(n_train / int(optim_cfg.batch_size))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW over the parameters that require grad (frozen ones never enter the optimiser state)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: apply a method before building the optimiser")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, steps: int, warmup_ratio: float):
    """Linear warm-up over ``ceil(warmup_ratio * steps)`` steps, then linear decay to 0 at ``steps``."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * steps), steps)
