"""Known answers for the spectral engine: intruders, similarity, effective rank, grid, analyze_matrix."""

from __future__ import annotations

import math

import pytest
import torch

from lora_vs_full.errors import UserError
from lora_vs_full.spectral import (
    DEFAULT_EPSILONS,
    DEFAULT_KS,
    analyze_matrix,
    effective_rank,
    intruder_counts,
    intruder_mask,
    max_abs_cos,
    similarity_matrix,
    thin_svd,
    validate_grid,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # On the shared 2-core machine, torch's 2 OpenMP threads spin against other processes and an SVD
    # runs up to 40x slower than on one thread (measured); restore the setting afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _base(m=64, n=96, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(n)


def test_identity_update_has_no_intruders_below_one():
    W0 = _base()
    a = analyze_matrix(W0, W0.clone(), ks=DEFAULT_KS, epsilons=DEFAULT_EPSILONS)
    below_one = [i for i, e in enumerate(DEFAULT_EPSILONS) if e < 1.0]
    assert a.counts[:, below_one].sum() == 0
    assert torch.allclose(a.max_cos, torch.ones_like(a.max_cos), atol=1e-10)
    assert a.erank_delta == 0.0 and a.delta_fro == 0.0 and a.delta_spectral == 0.0
    assert torch.allclose(a.similarity.diagonal(), torch.ones(a.similarity.shape[0], dtype=torch.float64))


def test_planted_rank_one_spike_is_exactly_one_intruder_and_the_top_vector():
    W0 = _base(64, 96)
    U0 = thin_svd(W0).U
    # u spreads evenly over the bottom 54 pretrained directions: |<u, u0_i>| <= 1/sqrt(54) ~ 0.14,
    # and exactly 0 against the top 10.
    u = U0[:, 10:].sum(dim=1) / math.sqrt(54)
    v = torch.randn(96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    Wt = W0 + 20.0 * torch.outer(u, v / v.norm())  # 20 >> sigma_max(W0) ~ 2: the spike is the top vector
    a = analyze_matrix(W0, Wt, ks=[10], epsilons=[0.5])
    assert a.counts.tolist() == [[1]]
    mask = intruder_mask(a.max_cos, 10, 0.5)
    assert mask.tolist() == [True] + [False] * 9
    assert a.max_cos[0] < 0.2
    assert a.erank_delta == pytest.approx(1.0, abs=1e-6)
    assert a.delta_spectral == pytest.approx(20.0, rel=1e-9)


def test_small_dense_noise_gives_no_intruders():
    W0 = _base(64, 96)
    g = torch.Generator().manual_seed(2)
    Wt = W0 + 1e-4 * torch.randn(64, 96, generator=g, dtype=torch.float64)
    a = analyze_matrix(W0, Wt, ks=[10, 50], epsilons=[0.5, 0.9])
    assert a.counts.sum() == 0
    assert a.erank_delta > 40  # a dense update has a high effective rank


def test_sign_flips_change_nothing():
    W0 = _base()
    Wt = (
        W0 + 0.5 * torch.outer(torch.randn(64, dtype=torch.float64), torch.randn(96, dtype=torch.float64)) / 8
    )
    Ut, U0 = thin_svd(Wt).U, thin_svd(W0).U
    g = torch.Generator().manual_seed(3)
    st = torch.randint(0, 2, (Ut.shape[1],), generator=g).to(torch.float64) * 2 - 1
    s0 = torch.randint(0, 2, (U0.shape[1],), generator=g).to(torch.float64) * 2 - 1
    assert (st < 0).any() and (s0 < 0).any()
    ref = max_abs_cos(Ut, U0, 20)
    assert torch.equal(max_abs_cos(Ut * st, U0 * s0, 20), ref)
    assert torch.equal(similarity_matrix(Ut * st, U0 * s0, 30), similarity_matrix(Ut, U0, 30))


def test_counts_are_non_decreasing_in_epsilon_and_k():
    W0 = _base(64, 96)
    g = torch.Generator().manual_seed(4)
    B, A = (
        torch.randn(64, 4, generator=g, dtype=torch.float64),
        torch.randn(4, 96, generator=g, dtype=torch.float64),
    )
    a = analyze_matrix(W0, W0 + 0.1 * B @ A, ks=DEFAULT_KS, epsilons=DEFAULT_EPSILONS)
    c = a.counts
    assert c.shape == (50, 51) and c.dtype == torch.int64
    assert (c.diff(dim=0) >= 0).all() and (c.diff(dim=1) >= 0).all()
    assert c[:, -1].max() > 0 and c[:, 0].max() == 0  # not a vacuous check; nothing is below eps = 0


def test_intruder_counts_matches_direct_count():
    m = torch.tensor([0.1, 0.9, 0.45, 0.3, 0.8])
    got = intruder_counts(m, ks=[1, 2, 3, 5, 9], epsilons=[0.0, 0.3, 0.5, 1.0])
    want = [[int((m[:k] < e).sum()) for e in (0.0, 0.3, 0.5, 1.0)] for k in (1, 2, 3, 5, 5)]
    assert got.tolist() == want  # k = 9 is clipped to the 5 available vectors
    with pytest.raises(UserError):
        intruder_counts(m, ks=[0], epsilons=[0.5])


def test_floor_is_one_over_sqrt_n():
    n = 50
    g = torch.Generator().manual_seed(5)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    u = torch.randn(n, 200, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=0)
    assert (max_abs_cos(u, Q) >= 1 / math.sqrt(n) - 1e-12).all()
    # the floor is attained by the vector with equal weight on every basis vector
    flat = (Q.sum(dim=1) / math.sqrt(n))[:, None]
    assert max_abs_cos(flat, Q).item() == pytest.approx(1 / math.sqrt(n), abs=1e-12)


def _no_abs(Ut, U0, k):  # a known mistake: signed cosine
    return (Ut[:, :k].T @ U0).amax(dim=1)


def _wrong_axis(Ut, U0, k):  # a known mistake: max over tuned vectors, per top-k pretrained vector
    return (Ut.T @ U0[:, :k]).abs().amax(dim=0)


def test_known_mistakes_give_different_answers():
    n, k, eps = 9, 2, 0.75
    U0 = torch.eye(n, dtype=torch.float64)
    e = list(U0.T)
    # top tuned vector: a NEW direction mixing two bottom pretrained vectors (|cos| = 0.707 < 0.75);
    # second: the top pretrained vector with its sign flipped.
    cols = [(e[7] + e[8]) / math.sqrt(2), -e[0], *e[1:7], (e[7] - e[8]) / math.sqrt(2)]
    Ut = torch.stack(cols, dim=1)
    assert torch.allclose(Ut.T @ Ut, torch.eye(n, dtype=torch.float64))

    def count(m):
        return int(intruder_counts(m, [k], [eps]))

    assert count(max_abs_cos(Ut, U0, k)) == 1  # the truth: only the new direction intrudes
    assert count(_no_abs(Ut, U0, k)) == 2  # the flipped vector looks like an intruder
    assert count(_wrong_axis(Ut, U0, k)) == 0  # every pretrained top vector is still present


def test_similarity_matrix_orientation():
    U0 = torch.eye(4, dtype=torch.float64)
    Ut = U0[:, [3, 0, 1, 2]]  # tuned vector 0 = pretrained vector 3, outside the top 3 compared
    S = similarity_matrix(Ut, U0, 3)
    assert S.shape == (3, 3)
    assert S[0].tolist() == [0.0, 0.0, 0.0]  # row 0 = tuned vector 0: blank (an intruder's row)
    assert S[:, 2].tolist() == [0.0, 0.0, 0.0]  # pretrained vector 2 fell out of the tuned top 3
    assert S[1, 0] == 1.0 and S[2, 1] == 1.0  # the offset diagonal
    with pytest.raises(UserError):
        similarity_matrix(torch.eye(3), torch.eye(4), 2)


def test_effective_rank_known_answers():
    for r in (1, 3, 17):
        S = torch.cat([torch.full((r,), 2.5), torch.zeros(10)])
        assert effective_rank(S) == pytest.approx(r, rel=1e-12)
    p = torch.tensor([0.75, 0.25])
    assert effective_rank(torch.tensor([3.0, 1.0])) == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert effective_rank(torch.tensor([3.0, 1.0])) == pytest.approx(1.7547654, rel=1e-6)
    assert effective_rank(torch.zeros(5)) == 0.0
    # through a real matrix: rank 5, equal singular values
    Q, _ = torch.linalg.qr(torch.randn(30, 5, dtype=torch.float64))
    assert effective_rank(torch.linalg.svdvals(3 * Q @ Q.T)) == pytest.approx(5.0, rel=1e-6)


def test_grid_defaults_and_validation():
    assert len(DEFAULT_EPSILONS) == 51 and 0.5 in DEFAULT_EPSILONS and DEFAULT_EPSILONS[-1] == 1.0
    assert DEFAULT_KS == tuple(range(1, 51))
    assert validate_grid([10, 1, 10], [0.5, 0.1]) == ((1, 10), (0.1, 0.5))
    for ks, eps in [
        ([0], [0.5]),
        ([1.5], [0.5]),
        ([True], [0.5]),
        ([1], [1.2]),
        ([1], [-0.1]),
        ([1], [math.nan]),
        ([], [0.5]),
    ]:
        with pytest.raises(UserError):
            validate_grid(ks, eps)


def test_analyze_matrix_clips_k_and_uses_the_given_base_svd():
    W0 = _base(8, 20)
    Wt = W0 + 0.3 * torch.outer(torch.randn(8, dtype=torch.float64), torch.randn(20, dtype=torch.float64))
    a = analyze_matrix(W0, Wt, ks=[4, 8, 50], epsilons=[0.5, 1.0])
    assert a.max_cos.shape == (8,) and a.sigma_base.shape == (8,) and a.similarity.shape == (8, 8)
    assert torch.equal(a.counts[1], a.counts[2])  # k = 50 > r = 8 is clipped
    b = analyze_matrix(W0, Wt, ks=[4, 8, 50], epsilons=[0.5, 1.0], base_svd=thin_svd(W0))
    assert torch.equal(a.counts, b.counts) and torch.allclose(a.max_cos, b.max_cos)
    with pytest.raises(UserError):
        analyze_matrix(W0, Wt.T, ks=[1], epsilons=[0.5])
    with pytest.raises(UserError):
        analyze_matrix(W0, Wt, ks=[1], epsilons=[0.5], base_svd=thin_svd(_base(20, 8)))


def test_half_precision_is_upcast_before_decomposing():
    W = _base(16, 24).to(torch.float16)
    got = thin_svd(W)
    want = thin_svd(W.to(torch.float64))
    assert got.U.dtype == torch.float64
    assert torch.equal(got.S, want.S)
    a = analyze_matrix(W, W.clone(), ks=[10], epsilons=[0.5])
    assert a.counts.sum() == 0 and a.sigma_tuned.dtype == torch.float64


def test_gram_svdvals_matches_svdvals():
    from lora_vs_full.spectral.svd import gram_svdvals

    g = torch.Generator().manual_seed(6)
    for A in (
        1e-3 * torch.randn(40, 90, generator=g, dtype=torch.float64),  # dense, full-FT-like
        torch.randn(90, 8, generator=g, dtype=torch.float64)
        @ torch.randn(8, 40, generator=g, dtype=torch.float64),
        torch.zeros(5, 7, dtype=torch.float64),
    ):
        ref = torch.linalg.svdvals(A)
        got = gram_svdvals(A)
        assert got.shape == ref.shape
        assert torch.allclose(got, ref, atol=1e-12 * max(1.0, float(ref[0])))
        assert effective_rank(got) == pytest.approx(effective_rank(ref), rel=1e-9, abs=1e-12)
