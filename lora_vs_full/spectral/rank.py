"""Effective rank (Roy & Vetterli 2007) from singular values."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def effective_rank(S: Tensor) -> float:
    """exp of the Shannon entropy of the normalised singular values.

    ``S``: (r,) singular values (non-negative, any order). p_i = S_i / sum(S); erank = exp(-sum p_i log p_i)
    with 0 log 0 = 0. A rank-r matrix with r equal singular values has erank exactly r; erank lies in
    [1, number of non-zero S_i]. Computed in float64. The all-zero spectrum (e.g. dW of an untouched
    matrix) has no distribution to take the entropy of: returns 0.0 by convention.
    """
    s = S.detach().to(device="cpu", dtype=torch.float64).flatten()
    if s.numel() and float(s.min()) < 0:
        raise ValueError(f"singular values must be non-negative, got min {float(s.min())}")
    total = float(s.sum())
    if total == 0.0 or not math.isfinite(total):
        return 0.0 if total == 0.0 else float("nan")
    p = s[s > 0] / total
    return math.exp(float(-(p * p.log()).sum()))
