"""Everything the analysis reports about one (pretrained, fine-tuned) matrix pair, in one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lora_vs_full.errors import UserError
from lora_vs_full.spectral.grid import validate_grid
from lora_vs_full.spectral.intruders import (
    cos_floor,
    intruder_counts,
    intruder_energy_share,
    nearest_pretrained,
    nearest_rank_mean,
    random_intruder_counts,
    similarity_matrix,
)
from lora_vs_full.spectral.rank import effective_rank
from lora_vs_full.spectral.svd import SVD, _prepare, check_dtype, default_device, gram_svdvals, thin_svd


@dataclass
class MatrixAnalysis:
    """Results for one matrix; r = min(d_out, d_in). All tensors on the CPU.

    counts: (len(ks), len(eps)) int64, rows/columns in the order of the validated (sorted, unique) grid.
    max_cos: (k_max,) m_j of the top tuned vectors, k_max = min(max(ks), r).
    sigma_base, sigma_tuned: (r,) all singular values of W0 / W_t, descending.
    similarity: (n, n) |U_t^T U_0| over the top n = min(sim_n, r) vectors, rows = tuned.
    erank_*: Roy-Vetterli effective rank of dW = W_t - W0, of W_t and of W0 (0.0 for dW = 0).
    delta_fro, delta_spectral: ||dW||_F and ||dW||_2.
    Scale metrics (same grid as counts, PAPER.md §13): energy_share (share of the top-k tuned energy
    sum sigma^2 carried by intruders), nearest_rank (mean normalised rank of the intruders' nearest
    pretrained vectors, NaN without intruders), n_random (expected count if the top-k were random
    directions); nearest (k_max,) int64 index of each top tuned vector's nearest pretrained vector;
    cos_floor = 1/sqrt(d_out).
    """

    counts: Tensor
    max_cos: Tensor
    sigma_base: Tensor
    sigma_tuned: Tensor
    similarity: Tensor
    erank_delta: float
    erank_tuned: float
    erank_base: float
    delta_fro: float
    delta_spectral: float
    energy_share: Tensor | None = None
    nearest_rank: Tensor | None = None
    n_random: Tensor | None = None
    nearest: Tensor | None = None
    cos_floor: float = float("nan")


def analyze_matrix(
    W0: Tensor,
    Wt: Tensor,
    *,
    ks: Sequence[int],
    epsilons: Sequence[float],
    sim_n: int = 100,
    base_svd: SVD | None = None,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> MatrixAnalysis:
    """Intruder counts over the whole k x epsilon grid plus spectra, similarity, effective ranks, norms.

    W0, Wt: (d_out, d_in) ``nn.Linear.weight`` of the pretrained and the fine-tuned model (for LoRA the
    MERGED W0 + s B A). Both are upcast to ``dtype`` (half-precision inputs included) and decomposed on
    ``device`` (None: cuda if available). ``base_svd``: W0's decomposition from the cache (U and S are
    used; W0 is then never re-decomposed). ks larger than r are clipped to r (a matrix has only r vectors),
    so counts at k > r equal the count at k = r. ``ks``/``epsilons`` are validated (UserError if bad).
    Cost: one thin SVD of Wt plus dW's singular values from its Gram matrix (``gram_svdvals``) (plus W0's SVD when no ``base_svd``).
    """
    ks, epsilons = validate_grid(ks, epsilons)
    check_dtype(dtype)
    if W0.shape != Wt.shape or W0.ndim != 2:
        raise UserError(
            f"pretrained and fine-tuned matrices differ in shape: {tuple(W0.shape)} vs {tuple(Wt.shape)}; "
            "pair the same layer/module of the same architecture"
        )
    device = torch.device(device) if device is not None else default_device()
    r = min(W0.shape)
    if base_svd is None:
        base_svd = thin_svd(W0, dtype=dtype, device=device)
    elif base_svd.U.shape != (W0.shape[0], r) or base_svd.S.shape != (r,):
        raise UserError(
            f"base_svd has U {tuple(base_svd.U.shape)}, S {tuple(base_svd.S.shape)} but W0 is {tuple(W0.shape)}; "
            "the cached decomposition belongs to another matrix"
        )
    tuned = thin_svd(Wt, dtype=dtype, device=device)
    U0 = base_svd.U.to(dtype)
    k_max = min(max(ks), r)
    max_cos, nearest = nearest_pretrained(tuned.U, U0, k_max)
    counts = intruder_counts(max_cos, ks, epsilons)
    n_base = U0.shape[1]
    similarity = similarity_matrix(tuned.U, U0, sim_n)

    # dW in float64 whatever `dtype` is: its spectrum only feeds norms and the effective rank, and the
    # Gram route (gram_svdvals) needs float64 to keep small singular values meaningful.
    dW = _prepare(Wt, torch.float64, device) - _prepare(W0, torch.float64, device)
    sv_delta = gram_svdvals(dW).cpu()
    delta_fro = float(torch.linalg.matrix_norm(dW))  # directly, not from the squared spectrum
    return MatrixAnalysis(
        counts=counts,
        max_cos=max_cos,
        sigma_base=base_svd.S.to(dtype),
        sigma_tuned=tuned.S,
        similarity=similarity,
        erank_delta=effective_rank(sv_delta),
        erank_tuned=effective_rank(tuned.S),
        erank_base=effective_rank(base_svd.S),
        delta_fro=delta_fro,
        delta_spectral=float(sv_delta[0]) if sv_delta.numel() else 0.0,
        energy_share=intruder_energy_share(max_cos, tuned.S, ks, epsilons),
        nearest_rank=nearest_rank_mean(max_cos, nearest, n_base, ks, epsilons),
        n_random=random_intruder_counts(W0.shape[0], n_base, k_max, ks, epsilons),
        nearest=nearest.cpu(),
        cos_floor=cos_floor(W0.shape[0]),
    )
