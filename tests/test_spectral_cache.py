"""The base-SVD cache and the batched SVD path."""

from __future__ import annotations

import pytest
import torch

from lora_vs_full.spectral import SVDCache, batched_thin_svd, fingerprint, thin_svd
from lora_vs_full.spectral import cache as cache_mod
from lora_vs_full.spectral.svd import _grouped_svd


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # On the shared 2-core machine, torch's 2 OpenMP threads spin against other processes and an SVD
    # runs up to 40x slower than on one thread (measured); restore the setting afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _w(m=12, n=20, seed=0, dtype=torch.float32):
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_memory_cache_hits_and_misses():
    c = SVDCache(None)
    W = _w()
    a = c.get_or_compute("base@main", "layer0.q", W)
    b = c.get_or_compute("base@main", "layer0.q", W.clone())  # same values, different tensor object
    assert (c.misses, c.hits) == (1, 1)
    assert torch.equal(a.U, b.U) and torch.equal(a.S, b.S) and a.Vh is None
    ref = thin_svd(W)
    assert torch.equal(a.S, ref.S) and torch.equal(a.U, ref.U)


def test_disk_cache_persists_and_is_identical(tmp_path):
    W = _w()
    first = SVDCache(tmp_path).get_or_compute("org/model@rev", "layer1.fc1", W)
    fresh = SVDCache(tmp_path)  # a new process: only the disk is shared
    again = fresh.get_or_compute("org/model@rev", "layer1.fc1", W)
    assert (fresh.misses, fresh.hits) == (0, 1)
    assert torch.equal(first.U, again.U) and torch.equal(first.S, again.S)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["org_model@rev/layer1.fc1.float64.safetensors"]  # no temp files left behind


def test_changed_weights_invalidate(tmp_path):
    W = _w()
    c = SVDCache(tmp_path)
    c.get_or_compute("m", "layer0.v", W)
    W2 = W.clone()
    W2[3, 4] += 1e-3  # one element: a strided sample could miss this, the full hash cannot
    assert fingerprint(W2) != fingerprint(W)
    new = SVDCache(tmp_path).get_or_compute("m", "layer0.v", W2)
    assert torch.equal(new.S, thin_svd(W2).S)
    c2 = SVDCache(tmp_path)
    c2.get_or_compute("m", "layer0.v", W2)  # the file was overwritten with the new base
    assert (c2.hits, c2.misses) == (1, 0)


def test_dtype_is_part_of_the_key(tmp_path):
    W = _w()
    c = SVDCache(tmp_path)
    a = c.get_or_compute("m", "t", W, dtype=torch.float64)
    b = c.get_or_compute("m", "t", W, dtype=torch.float32)
    assert c.misses == 2 and a.U.dtype == torch.float64 and b.U.dtype == torch.float32
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2
    # the storage dtype of W is part of the fingerprint too (an fp16 copy is a different base)
    assert fingerprint(W) != fingerprint(W.to(torch.float16).to(torch.float32)) or torch.equal(
        W, W.to(torch.float16).to(torch.float32)
    )
    assert fingerprint(W.to(torch.bfloat16)) != fingerprint(W)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod, "save_file", boom)
    c = SVDCache(tmp_path)
    try:
        c.get_or_compute("m", "t", _w())
    except OSError:
        pass
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_corrupt_file_is_recomputed(tmp_path):
    W = _w()
    c = SVDCache(tmp_path)
    c.get_or_compute("m", "t", W)
    path = c.path_for("m", "t", torch.float64)
    path.write_bytes(b"not a safetensors file")
    c2 = SVDCache(tmp_path)
    got = c2.get_or_compute("m", "t", W)
    assert c2.misses == 1 and torch.equal(got.S, thin_svd(W).S)


def test_memory_bound_evicts_oldest():
    W1, W2 = _w(seed=1), _w(seed=2)
    one = 12 * 12 * 8 + 12 * 8  # U (12, 12) + S (12,) in float64
    c = SVDCache(None, max_memory_bytes=one)
    c.get_or_compute("m", "a", W1)
    c.get_or_compute("m", "b", W2)  # evicts "a"
    c.get_or_compute("m", "a", W1)
    assert c.misses == 3 and c.hits == 0


def _same_svd(a, b, tol=1e-10):
    # singular vectors are defined up to sign: compare |<a_i, b_i>| = 1 and the reconstruction
    assert torch.allclose(a.S, b.S, atol=tol)
    assert torch.allclose((a.U * b.U).sum(0).abs(), torch.ones_like(a.S), atol=tol)
    assert torch.allclose(a.U * a.S @ a.Vh, b.U * b.S @ b.Vh, atol=tol)


def test_batched_equals_single():
    Ws = [_w(12, 20, 0), _w(20, 12, 1), _w(12, 20, 2), _w(7, 7, 3).to(torch.float16)]
    singles = [thin_svd(W) for W in Ws]
    for batched in (
        batched_thin_svd(Ws, dtype=torch.float64),
        _grouped_svd(Ws, torch.float64, torch.device("cpu")),
    ):
        assert len(batched) == len(Ws)
        for a, b in zip(batched, singles, strict=True):
            _same_svd(a, b)


def test_thin_svd_shapes_and_factorisation_wide_and_tall():
    for m, n in ((12, 30), (30, 12), (9, 9)):
        W = _w(m, n, seed=m, dtype=torch.float64)
        U, S, Vh = thin_svd(W)
        r = min(m, n)
        assert U.shape == (m, r) and S.shape == (r,) and Vh.shape == (r, n)
        assert torch.allclose(U * S @ Vh, W, atol=1e-12)
        assert torch.allclose(U.T @ U, torch.eye(r, dtype=torch.float64), atol=1e-12)
        assert (S.diff() <= 0).all()
        assert torch.allclose(S, torch.linalg.svdvals(W), atol=1e-12)
