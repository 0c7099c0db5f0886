"""Known answers for the metrics that survive scale: intruder energy share, nearest-pretrained rank, the
random floor and random-direction expectation; and the float32-stored base-SVD cache."""

from __future__ import annotations

import math

import pytest
import torch

from lora_vs_full.spectral import (
    SVDCache,
    analyze_matrix,
    cos_floor,
    intruder_energy_share,
    nearest_rank_mean,
    random_intruder_counts,
    random_intruder_prob,
)


def test_energy_share_by_hand():
    max_cos = torch.tensor([0.1, 0.9, 0.2])
    sigma = torch.tensor([3.0, 2.0, 1.0, 0.5])
    share = intruder_energy_share(max_cos, sigma, ks=[1, 2, 3, 10], epsilons=[0.05, 0.5, 1.0])
    assert share[:, 0].tolist() == [0, 0, 0, 0]  # nothing below 0.05
    assert share[:, 1].tolist() == pytest.approx([1.0, 9 / 13, 10 / 14, 10 / 14])  # k = 10 clipped to 3
    assert share[:, 2].tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0])


def test_nearest_rank_by_hand():
    max_cos = torch.tensor([0.1, 0.9, 0.2])
    nearest = torch.tensor([9, 0, 3])
    out = nearest_rank_mean(max_cos, nearest, n_base=10, ks=[1, 2, 3], epsilons=[0.05, 0.5])
    assert math.isnan(out[0, 0]) and math.isnan(out[2, 0])  # no intruder: NaN, not 0
    assert out[:, 1].tolist() == pytest.approx([1.0, 1.0, (1.0 + 3 / 9) / 2])


def test_planted_spike_energy_and_nearest_rank():
    """W0 = diag(8..1): the pretrained left vectors are e_0..e_7. A spike 100 u e_0^T with u = 0.6 e_6 + 0.8 e_7
    makes the top tuned vector ~ (8 e_0 + 100 u) / |.|: max |cos| ~ 0.80 with e_7, the LAST pretrained vector."""
    W0 = torch.diag(torch.arange(8, 0, -1, dtype=torch.float64))
    u = torch.zeros(8, dtype=torch.float64)
    u[6], u[7] = 0.6, 0.8
    Wt = W0 + 100 * torch.outer(u, torch.eye(8, dtype=torch.float64)[0])
    res = analyze_matrix(W0, Wt, ks=[1], epsilons=[0.5, 0.85], sim_n=4, device="cpu")
    assert 0.75 < float(res.max_cos[0]) < 0.85 and int(res.nearest[0]) == 7
    assert res.counts[0].tolist() == [0, 1]
    assert res.energy_share[0].tolist() == pytest.approx([0.0, 1.0])
    assert math.isnan(res.nearest_rank[0, 0]) and res.nearest_rank[0, 1] == pytest.approx(1.0)
    assert res.cos_floor == pytest.approx(1 / math.sqrt(8))


def test_cos_floor_matches_paper():
    assert cos_floor(768) == pytest.approx(0.036, abs=5e-4)  # PAPER.md §1
    assert cos_floor(4096) == pytest.approx(0.0156, abs=1e-4)  # PAPER.md §13: ~0.016


@pytest.mark.parametrize("m,r0", [(256, 256), (256, 64)], ids=["square", "tall-base"])
def test_random_intruder_prob_matches_monte_carlo(m, r0):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(4000, m, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    max_cos = u[:, :r0].abs().amax(dim=1)  # the base basis = the first r0 coordinate axes
    eps = [0.12, 0.16, 0.2, 0.25]
    mc = [(max_cos < e).double().mean().item() for e in eps]
    assert random_intruder_prob(m, r0, eps).tolist() == pytest.approx(mc, abs=0.03)


def test_random_counts_saturate_at_4096():
    """At 4096 dims and eps = 0.5 every random direction is an 'intruder': the expected count is k."""
    n = random_intruder_counts(4096, 4096, k_max=50, ks=[10, 100], epsilons=[0.01, 0.5])
    assert n[:, 0].tolist() == pytest.approx([0.0, 0.0]) and n[:, 1].tolist() == pytest.approx([10.0, 50.0])


def test_float32_storage_cache_hit_equals_miss(tmp_path):
    W = torch.randn(48, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cache = SVDCache(tmp_path, storage_dtype=torch.float32)
    miss = cache.get_or_compute("m", "layer0.q", W, dtype=torch.float64, device="cpu")
    (path,) = list(tmp_path.rglob("*.safetensors"))
    assert path.name.endswith(".float64-f32.safetensors")
    hit = SVDCache(tmp_path, storage_dtype=torch.float32).get_or_compute("m", "layer0.q", W, device="cpu")
    assert miss.U.dtype == torch.float64 and torch.equal(miss.U, hit.U) and torch.equal(miss.S, hit.S)
    exact = SVDCache(tmp_path).get_or_compute("m", "layer0.q", W, device="cpu")  # never served the f32 file
    assert 0 < float((exact.U.abs() - hit.U.abs()).abs().max()) < 1e-5
