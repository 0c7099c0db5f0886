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

import math
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


# --- metrics that survive scale (PAPER.md §13: at 4096 dims counts saturate at k = 10, eps = 0.5) ---------


def nearest_pretrained(U_tuned: Tensor, U_base: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
    """``(max_cos, nearest)`` for the top-k tuned vectors: (k,) float and (k,) int64.

    ``nearest[j]`` is the index i (0 = the pretrained vector with the largest singular value) attaining
    ``max_cos[j] = max_i |<U_tuned[:, j], U_base[:, i]>|`` -- the same product as :func:`max_abs_cos`.
    """
    U_t, U_0 = _pair(U_tuned, U_base)
    k = U_t.shape[1] if k is None else min(int(k), U_t.shape[1])
    m, idx = (U_t[:, :k].T @ U_0).abs().max(dim=1)  # over dim 1 = the pretrained axis
    return m, idx


def _below(max_cos: Tensor, epsilons: Sequence[float]) -> Tensor:
    m = max_cos.detach().flatten().to("cpu", torch.float64)
    eps = torch.as_tensor(list(epsilons), dtype=torch.float64)
    return m[:, None] < eps[None, :]  # (k_max, E) bool


def _rows(ks: Sequence[int], n: int) -> Tensor:
    return torch.as_tensor(list(ks), dtype=torch.int64).clamp(min=1, max=max(n, 1)) - 1


def intruder_energy_share(
    max_cos: Tensor, sigma_tuned: Tensor, ks: Sequence[int], epsilons: Sequence[float]
) -> Tensor:
    """Share of the top-k spectral energy carried by intruders: (len(ks), len(eps)) float64 in [0, 1].

    share(k, eps) = sum over intruders j < k of sigma_j^2 / sum over j < k of sigma_j^2, with sigma the
    tuned matrix's singular values (descending, ``sigma_tuned[j]`` belongs to tuned vector j). Unlike the
    count it weights an intruder by how much of the matrix it carries, so a saturated count (every top-k
    vector below eps at 4096 dims) can still separate a weak intruder from a dominant one. 0 when the
    top-k energy is 0.
    """
    below = _below(max_cos, epsilons)
    k_max = below.shape[0]
    if k_max == 0:
        return torch.zeros(len(list(ks)), len(list(epsilons)), dtype=torch.float64)
    s2 = sigma_tuned.detach().flatten()[:k_max].to("cpu", torch.float64) ** 2
    num = (below * s2[:, None]).cumsum(dim=0)
    den = s2.cumsum(dim=0)[:, None]
    share = torch.where(den > 0, num / den.clamp(min=torch.finfo(torch.float64).tiny), torch.zeros_like(num))
    return share[_rows(ks, k_max)]


def nearest_rank_mean(
    max_cos: Tensor, nearest: Tensor, n_base: int, ks: Sequence[int], epsilons: Sequence[float]
) -> Tensor:
    """Mean normalised rank of the intruders' nearest pretrained vectors: (len(ks), len(eps)) float64.

    normalised rank = nearest index / (n_base - 1): 0 = the top pretrained direction, 1 = the last one.
    An intruder whose nearest pretrained vector sits deep in the spectrum points at directions the base
    barely used. NaN where (k, eps) has no intruder.
    """
    below = _below(max_cos, epsilons)
    k_max = below.shape[0]
    if k_max == 0:
        return torch.full((len(list(ks)), len(list(epsilons))), float("nan"), dtype=torch.float64)
    rank = nearest.detach().flatten()[:k_max].to("cpu", torch.float64) / max(int(n_base) - 1, 1)
    num = (below * rank[:, None]).cumsum(dim=0)
    cnt = below.to(torch.float64).cumsum(dim=0)
    out = torch.where(cnt > 0, num / cnt.clamp(min=1.0), torch.full_like(num, float("nan")))
    return out[_rows(ks, k_max)]


def cos_floor(d_out: int) -> float:
    """1 / sqrt(d_out): the smallest possible max |cos| of a unit vector against an orthonormal basis of
    R^d_out (PAPER.md §1: 0.036 at 768, 0.016 at 4096). An epsilon below it can flag nothing."""
    return 1.0 / math.sqrt(int(d_out))


def random_intruder_prob(d_out: int, n_base: int, epsilons: Sequence[float]) -> Tensor:
    """P(max_i |<u, u0_i>| < eps) for a uniformly random unit u in R^d_out against ``n_base`` orthonormal
    pretrained vectors: (len(eps),) float64.

    Each coordinate <u, u0_i> is close to N(0, 1/d_out) and nearly independent for d_out >> 1, so
    P = erf(eps * sqrt(d_out / 2)) ** n_base (checked against Monte Carlo in the tests). At 4096 dims and
    eps = 0.5 this is 1: a random direction is always an "intruder", so a count near k is no evidence.
    """
    eps = torch.as_tensor(list(epsilons), dtype=torch.float64)
    p = torch.special.erf(eps * math.sqrt(int(d_out) / 2.0))
    return p.clamp(min=0.0) ** int(n_base)


def random_intruder_counts(
    d_out: int, n_base: int, k_max: int, ks: Sequence[int], epsilons: Sequence[float]
) -> Tensor:
    """Expected intruder count among the top-k if those were random directions: (len(ks), len(eps)),
    k clipped to ``k_max`` as in :func:`intruder_counts`."""
    kk = torch.as_tensor(list(ks), dtype=torch.float64).clamp(max=max(int(k_max), 0))
    return kk[:, None] * random_intruder_prob(d_out, n_base, epsilons)[None, :]
