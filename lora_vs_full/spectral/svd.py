"""Thin SVD of weight matrices, on the GPU when there is one, results always on the CPU.

Convention: W is ``nn.Linear.weight``, shape (d_out, d_in) = (m, n); the thin SVD (full_matrices=False) is
W = U diag(S) Vh with U (m, r), S (r,) descending, Vh (r, n), r = min(m, n). Left singular vectors are the
COLUMNS of U.

Precision: half-precision inputs (fp16/bf16) are always upcast before decomposing -- PAPER.md lists an fp16
base as a known mistake (its rounding is comparable to a full fine-tune's update). The default compute dtype
is float64: on CPU float32 halves the SVD time but, on the real MiniLM weights under LoRA- and full-FT-like
perturbations, moved max |cos| by up to 6e-4 and flipped 38 of 275,400 k x epsilon cells (BENCHMARKS.md,
"Choice of dtype"); with the base cached a float64 checkpoint still costs seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from lora_vs_full.errors import UserError

_COMPUTE_DTYPES = (torch.float32, torch.float64)


class SVD(NamedTuple):
    """Thin SVD: U (m, r), S (r,) descending, Vh (r, n); r = min(m, n). Vh is None when it was not kept
    (the base-SVD cache stores U and S only)."""

    U: Tensor
    S: Tensor
    Vh: Tensor | None


def default_device() -> torch.device:
    """``cuda`` when available, else ``cpu`` -- used whenever a ``device=None`` is passed."""
    from lora_vs_full.device import default_device as _default

    return _default()


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in _COMPUTE_DTYPES:
        raise UserError(f"SVD dtype {dtype} is not supported; use torch.float64 (default) or torch.float32")
    return dtype


def _prepare(W: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    if W.ndim != 2:
        raise UserError(f"expected a 2-D weight matrix (d_out, d_in), got shape {tuple(W.shape)}")
    if not W.is_floating_point():
        raise UserError(f"weight matrix has non-float dtype {W.dtype}; dequantise it before the analysis")
    # .to(dtype) upcasts fp16/bf16 exactly (every half value is representable in float32/64).
    return W.detach().to(device=device, dtype=dtype)


def _to_cpu(U: Tensor, S: Tensor, Vh: Tensor) -> SVD:
    return SVD(U.cpu(), S.cpu(), Vh.cpu())


def _svd_tall(A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """torch.linalg.svd(A, full_matrices=False) for (..., m, n), always decomposing a TALL matrix.

    LAPACK's gesdd through torch is ~4x slower on a wide (m < n) matrix than on its tall transpose
    (measured: 768x3072 4.3 s vs 3072x768 1.1 s, float64, one thread), so a wide A is decomposed as
    A^T = U' S Vh' and returned as U = Vh'^T, Vh = U'^T -- the same factorisation.
    """
    if A.shape[-2] >= A.shape[-1]:
        return torch.linalg.svd(A, full_matrices=False)
    U2, S, Vh2 = torch.linalg.svd(A.mT, full_matrices=False)
    return Vh2.mT, S, U2.mT


def svdvals(A: Tensor) -> Tensor:
    """Singular values only (descending), decomposing the tall orientation (see :func:`_svd_tall`)."""
    return torch.linalg.svdvals(A if A.shape[-2] >= A.shape[-1] else A.mT)


def gram_svdvals(A: Tensor) -> Tensor:
    """Singular values (r,) of a 2-D A, descending, from the eigenvalues of its smaller Gram matrix, in float64.

    Used for dW's effective rank and spectral norm, where it is ~2x cheaper than ``svdvals`` (one GEMM +
    ``eigvalsh`` of an r x r matrix; measured 25 ms vs 44 ms at 1536x384) and keeps a checkpoint's analysis
    near the cost of the tuned SVD alone. Precision: squaring puts rounding at eps64 * sigma_max^2 in the
    eigenvalues, so sigma_i below sigma_max * sqrt(max(m, n) * eps64) (~3e-7 sigma_max at 768) are rounding
    noise and are set to exactly 0 -- which keeps the effective rank of an exactly rank-r update at r.
    A genuine spectrum changes by far less than its own rounding would show in the entropy (a bias below
    ~1e-3 relative even if every sigma sat just under the cut-off).
    """
    A = A.to(torch.float64)
    G = A.mT @ A if A.shape[0] >= A.shape[1] else A @ A.mT
    lam = torch.linalg.eigvalsh(G).flip(0)  # descending
    if lam.numel() == 0:
        return lam
    tol = float(lam[0]) * max(A.shape) * torch.finfo(torch.float64).eps
    return torch.where(lam > tol, lam, torch.zeros_like(lam)).sqrt()


def thin_svd(W: Tensor, *, dtype: torch.dtype = torch.float64, device=None) -> SVD:
    """Thin SVD of one (m, n) matrix, computed in ``dtype`` on ``device`` (None: cuda if available),
    returned on the CPU in ``dtype``."""
    check_dtype(dtype)
    device = torch.device(device) if device is not None else default_device()
    U, S, Vh = _svd_tall(_prepare(W, dtype, device))
    return _to_cpu(U, S, Vh)


def batched_thin_svd(Ws: Sequence[Tensor], *, dtype: torch.dtype = torch.float64, device=None) -> list[SVD]:
    """Thin SVDs of many matrices, in input order; same results (to rounding) as :func:`thin_svd` each.

    On a GPU, same-shape matrices are stacked to (b, m, n) and decomposed in ONE batched
    ``torch.linalg.svd`` call (many small kernels become one launch sequence). On the CPU LAPACK loops over
    the batch anyway, and stacking would only double peak memory, so it loops.
    """
    check_dtype(dtype)
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cpu":
        return [thin_svd(W, dtype=dtype, device=device) for W in Ws]
    return _grouped_svd(Ws, dtype, device)


def _grouped_svd(Ws: Sequence[Tensor], dtype: torch.dtype, device: torch.device) -> list[SVD]:
    """Stack same-shape matrices and decompose each stack in one call; results in input order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, W in enumerate(Ws):
        groups.setdefault(tuple(W.shape), []).append(i)
    out: list[SVD | None] = [None] * len(Ws)
    for idx in groups.values():
        stack = torch.stack([_prepare(Ws[i], dtype, device) for i in idx])  # (b, m, n)
        U, S, Vh = _svd_tall(stack)
        for b, i in enumerate(idx):
            out[i] = _to_cpu(U[b], S[b], Vh[b])
    return out  # type: ignore[return-value]
