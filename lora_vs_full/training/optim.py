"""Optimiser and schedule of the paper's recipe (AdamW, weight decay 0, linear decay with warm-up), and the
GPU fast paths a run may use (precision, TF32, fused AdamW, attention kernel, ``torch.compile``).

Every fast path is a switch in ``optim``; the default ``auto`` means "on when training on CUDA, off
otherwise" (``compile`` is opt-in). :func:`resolve_fast_paths` turns the switches plus the device into the
concrete choices, which the loop logs as the first event of ``metrics.jsonl`` and returns in its summary, so a run states how it
was trained. On a CPU every ``auto`` resolves to off (fp32, no TF32, foreach AdamW, no compile), and an
explicit CUDA-only switch (``tf32=true``, ``fused_adamw=true``, ``precision=fp16``) is a one-line error.
"""

from __future__ import annotations

import contextlib
import math

import torch

from lora_vs_full.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
AUTO_SWITCHES = ("tf32", "fused_adamw")  # each: auto | true | false


def total_steps(n_train: int, optim_cfg) -> int:
    """Optimiser steps of a run: ``optim.max_steps`` when set, else ``epochs * ceil(n / batch_size)``."""
    if optim_cfg.get("max_steps"):
        return int(optim_cfg.max_steps)
    return int(optim_cfg.epochs) * math.ceil(n_train / int(optim_cfg.batch_size))


def make_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float = 0.0, *, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW over the parameters that require grad (frozen ones never enter the optimiser state).

    ``fused=True`` uses torch's fused CUDA kernel (one launch for all parameters; CUDA tensors only).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: apply a method before building the optimiser")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True if fused else None)


def make_scheduler(optimizer: torch.optim.Optimizer, steps: int, warmup_ratio: float):
    """Linear warm-up over ``ceil(warmup_ratio * steps)`` steps, then linear decay to 0 at ``steps``."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, math.ceil(warmup_ratio * steps), steps)


def _switch(optim_cfg, key: str, default="auto"):
    value = optim_cfg.get(key, default)
    if value in ("auto", None):
        return "auto"
    if isinstance(value, bool):
        return value
    raise UserError(f"optim.{key}={value!r} is invalid: use auto, true or false")


def check_fast_paths(optim_cfg) -> None:
    """One-line UserError for a switch value that exists on no device (called by ``config.validate``)."""
    precision = optim_cfg.get("precision", "auto")
    if precision not in PRECISIONS:
        raise UserError(f"unknown optim.precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    attn = optim_cfg.get("attn_implementation", "auto")
    if attn not in ATTN_IMPLEMENTATIONS:
        raise UserError(
            f"unknown optim.attn_implementation={attn!r}: choose one of {', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    for key in AUTO_SWITCHES:
        _switch(optim_cfg, key)


def resolve_fast_paths(optim_cfg, device) -> dict:
    """The concrete fast paths for ``device``: ``{"precision", "grad_scaler", "tf32", "fused_adamw",
    "attn_implementation", "compile"}``.

    ``precision``: ``auto`` = bf16 autocast on a CUDA device that supports it, fp16 autocast + GradScaler on
    one that does not, fp32 elsewhere. ``tf32`` / ``fused_adamw``: ``auto`` = on with CUDA. ``compile``:
    a plain bool, off by default (compiling costs minutes up front, and every new padded length is a new
    shape; it pays only on long runs, which should say so with ``optim.compile=true``).
    ``attn_implementation``: ``auto`` keeps the kernel transformers chose when loading (SDPA where the
    architecture supports it); the loop records the kernel actually used.
    CUDA-only choices on another device raise a one-line UserError (they would crash or silently no-op).
    """
    check_fast_paths(optim_cfg)
    device = torch.device(device)
    cuda = device.type == "cuda"
    precision = optim_cfg.get("precision", "auto")
    if precision == "auto":
        if cuda:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "fp16" and not cuda:
        raise UserError(f"optim.precision=fp16 needs a CUDA device (device is {device}): use bf16 or fp32")
    out = {"precision": precision, "grad_scaler": precision == "fp16"}
    for key in ("tf32", "fused_adamw"):
        value = _switch(optim_cfg, key)
        if value == "auto":
            value = cuda
        if value and not cuda:
            raise UserError(f"optim.{key}=true needs a CUDA device (device is {device}): use auto or false")
        out[key] = value
    out["attn_implementation"] = optim_cfg.get("attn_implementation", "auto")
    out["compile"] = bool(optim_cfg.get("compile", False))
    return out


def autocast(device, precision: str):
    """Autocast context for a resolved precision (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def tf32_matmuls(enabled: bool):
    """Allow TF32 in CUDA matmuls and cuDNN convolutions inside the block; restore the old flags after
    (process-wide torch flags, so they must not leak into later evaluation or analysis)."""
    if not enabled:
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
