"""Intruder dimensions (paper Algorithm 1) as pure tensor functions.

Conventions (the paper's, see PAPER.md section 1):

* U_tuned, U_base are LEFT singular vectors as columns, ordered by decreasing singular value:
  U_tuned (m, r_t), U_base (m, r_0), from the thin SVD of W = nn.Linear.weight (d_out = m, d_in).
* m_j = max over ALL pretrained vectors i of |<U_tuned[:, j], U_base[:, i]>|. The absolute value because
  singular vectors are only defined up to sign; the max over the PRETRAINED axis because the question is
  "does any pretrained direction resemble this fine-tuned one".
* U_tuned[:, j] is an intruder iff m_j < epsilon; a count at k looks at the top-k tuned vectors only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lora_vs_full.errors import UserError


def _pair(U_tuned: Tensor, U_base: Tensor) -> tuple[Tensor, Tensor]:
    if U_tuned.ndim != 2 or U_base.ndim != 2 or U_tuned.shape[0] != U_base.shape[0]:
        raise UserError(
            f"cannot compare left singular vectors of shapes {tuple(U_tuned.shape)} and {tuple(U_base.shape)}: "
            "the tuned and pretrained matrices must have the same d_out (pair the same layer/module)"
        )
    dtype = torch.promote_types(U_tuned.dtype, U_base.dtype)
    return U_tuned.to(dtype), U_base.to(device=U_tuned.device, dtype=dtype)


def max_abs_cos(U_tuned: Tensor, U_base: Tensor, k: int | None = None) -> Tensor:
    """m_j for the top-k tuned vectors: (k,) = max_i |U_tuned[:, j] . U_base[:, i]|, j < k.

    ``k=None`` means all r_t tuned vectors; k > r_t is clipped to r_t. One (k, m) x (m, r_0) product.
    """
    U_t, U_0 = _pair(U_tuned, U_base)
    k = U_t.shape[1] if k is None else min(int(k), U_t.shape[1])
    return (U_t[:, :k].T @ U_0).abs().amax(dim=1)  # amax over dim 1 = the pretrained axis


def intruder_counts(max_cos: Tensor, ks: Sequence[int], epsilons: Sequence[float]) -> Tensor:
    """Number of intruders among the top-k tuned vectors, for every (k, epsilon): (len(ks), len(eps)) int64.

    ``max_cos``: (k_max,) from :func:`max_abs_cos`. A k beyond len(max_cos) is clipped to it (the matrix
    has no more vectors). Vectorised: indicator (k_max, E) of m_j < eps, cumulative sum down j, then pick
    the rows k - 1 -- so the whole grid costs one comparison and one cumsum.
    """
    m = max_cos.detach().flatten().to("cpu", torch.float64)
    eps = torch.as_tensor(list(epsilons), dtype=torch.float64)
    k_idx = torch.as_tensor(list(ks), dtype=torch.int64)
    if (k_idx < 1).any():
        raise UserError(f"ks={list(ks)} contains a k < 1; use k >= 1")
    if m.numel() == 0:
        return torch.zeros(len(k_idx), len(eps), dtype=torch.int64)
    k_idx = k_idx.clamp(max=m.numel()) - 1
    below = (m[:, None] < eps[None, :]).to(torch.int64)  # (k_max, E)
    return below.cumsum(dim=0)[k_idx]


def intruder_mask(max_cos: Tensor, k: int, epsilon: float) -> Tensor:
    """(min(k, len(max_cos)),) bool: which of the top-k tuned vectors are intruders at ``epsilon``."""
    return max_cos.detach().flatten()[: int(k)] < epsilon


def similarity_matrix(U_tuned: Tensor, U_base: Tensor, n: int) -> Tensor:
    """|U_tuned[:, :n]^T U_base[:, :n]|: (n, n), row j = tuned vector j, column i = pretrained vector i.

    n is clipped to the smaller rank. Full FT gives a near-diagonal matrix; LoRA blank rows (intruders)
    and an offset diagonal (paper Fig. 3/4).
    """
    U_t, U_0 = _pair(U_tuned, U_base)
    n = min(int(n), U_t.shape[1], U_0.shape[1])
    return (U_t[:, :n].T @ U_0[:, :n]).abs()
