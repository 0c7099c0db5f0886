"""analyze_pair / write_analysis: known answers, PEFT's intruder detector as a reference, the cache,
and streaming memory on a sharded checkpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_weights import make_lora, save_adapter

from lora_vs_full.analysis import analyze_pair, read_tables, write_analysis
from lora_vs_full.errors import UserError
from lora_vs_full.models.targets import parse_weight_name
from lora_vs_full.records import (
    INTRUDER_COLUMNS,
    INTRUDER_SCALE_COLUMNS,
    MATRIX_COLUMNS,
    MATRIX_SCALE_COLUMNS,
)
from lora_vs_full.spectral import SVDCache
from lora_vs_full.weights import HFWeights, open_pair

GRID = dict(ks=[1, 5, 10], epsilons=[0.1, 0.5, 0.9])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on this 2-core machine shared by several processes, OpenMP's spinning threads
    made 12 tiny SVDs take ~10 s instead of 0.2 s (measured). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _spiked_copy(base_dir: Path, dest: Path, key: str, seed: int = 0) -> Path:
    """A "full fine-tune" identical to the base except for a strong rank-one spike u v^T in one matrix."""
    sd = load_file(str(base_dir / "model.safetensors"))
    W = sd[key]
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(W.shape[0], generator=g)
    v = torch.randn(W.shape[1], generator=g)
    sigma_max = torch.linalg.matrix_norm(W, ord=2)
    sd[key] = W + 10 * sigma_max * torch.outer(u / u.norm(), v / v.norm())
    dest.mkdir()
    save_file(sd, str(dest / "model.safetensors"))
    (dest / "config.json").write_text((base_dir / "config.json").read_text())
    return dest


def test_identical_pair_has_no_intruders_and_exact_columns(tiny_model_dir):
    base, tuned = open_pair(tiny_model_dir, tiny_model_dir)
    res = analyze_pair(base, tuned, **GRID, run_meta={"run": "same", "method": "full"}, progress=False)
    assert tuple(res.intruders.columns) == INTRUDER_COLUMNS + INTRUDER_SCALE_COLUMNS
    assert tuple(res.matrices.columns) == MATRIX_COLUMNS + MATRIX_SCALE_COLUMNS
    assert len(res.intruders) == 12 * 3 * 3 and len(res.matrices) == 12
    assert res.intruders["n_intruders"].sum() == 0
    assert (res.matrices["delta_fro"] == 0).all() and res.matrices["rank"].isna().all()
    assert (res.intruders["method"] == "full").all()


def test_planted_spike_is_exactly_one_intruder(tiny_model_dir, tmp_path):
    key = "roberta.encoder.layer.1.intermediate.dense.weight"
    tuned_dir = _spiked_copy(tiny_model_dir, tmp_path / "spiked", key)
    base, tuned = open_pair(tiny_model_dir, tuned_dir)
    res = analyze_pair(base, tuned, **GRID, progress=False)
    head = res.intruders.query("k == 10 and epsilon == 0.5").set_index("matrix")["n_intruders"]
    assert head["layer1.fc1"] == 1 and head.drop("layer1.fc1").sum() == 0
    row = res.matrices.set_index("matrix").loc["layer1.fc1"]
    # rank one, up to the float32 rounding of the stored W_t (~1e-8 per entry) that ΔW also contains
    assert row["erank_delta"] == pytest.approx(1.0, abs=1e-4)
    assert (row["d_out"], row["d_in"]) == (128, 64)


def _peft_intruder_counts(peft_model) -> dict[str, int]:
    """Per-matrix counts printed by PEFT's reduce_intruder_dimension (k=10, eps=0.5), via logging_sink."""
    from peft.tuners.lora.intruders import reduce_intruder_dimension

    lines: list[str] = []
    reduce_intruder_dimension(peft_model, logging_sink=lines.append)
    counts = {}
    for line in lines:
        m = re.match(r"^(\S+): (?:No intruders|Intruders: (\d+))$", line)
        if m:
            mid = parse_weight_name(m[1] + ".weight", "bert")
            counts[mid.name] = int(m[2] or 0)
    return counts


def test_agrees_with_peft_reduce_intruder_dimension(tiny_model_dir, tmp_path):
    pm = make_lora(tiny_model_dir, seed=3, b_std=0.3, r=2)
    adapter = save_adapter(pm, tmp_path / "adapter")
    peft_counts = _peft_intruder_counts(pm)
    base, tuned = open_pair(tiny_model_dir, adapter)
    res = analyze_pair(base, tuned, ks=[10], epsilons=[0.5], progress=False)
    ours = res.intruders.set_index("matrix")["n_intruders"].to_dict()
    assert len(peft_counts) == 12
    assert ours == peft_counts
    assert 0 < sum(ours.values()) < 12 * 10  # a non-trivial comparison


def test_cache_hit_gives_identical_tables(tiny_model_dir, tmp_path):
    key = "roberta.encoder.layer.0.attention.self.query.weight"
    base, tuned = open_pair(tiny_model_dir, _spiked_copy(tiny_model_dir, tmp_path / "t", key))
    first = SVDCache(tmp_path / "cache")
    a = analyze_pair(base, tuned, **GRID, cache=first, progress=False)
    assert first.misses == 12 and first.hits == 0
    second = SVDCache(tmp_path / "cache")  # a fresh process would see only the disk
    b = analyze_pair(base, tuned, **GRID, cache=second, progress=False)
    assert second.hits == 12 and second.misses == 0 and b.stats["cache_hits"] == 12
    assert a.intruders.equals(b.intruders) and a.matrices.equals(b.matrices)


def test_write_analysis_layout(tiny_model_dir, tmp_path):
    base, tuned = open_pair(tiny_model_dir, tiny_model_dir)
    res = analyze_pair(base, tuned, **GRID, sim_n=8, run_meta={"run": "a/b c"}, progress=False)
    out = write_analysis(res, tmp_path / "out")
    intr, mats = read_tables(out)
    assert (
        len(intr) == len(res.intruders)
        and (out / "intruders.csv").is_file()
        and (out / "matrices.csv").is_file()
    )
    with safe_open(str(out / "spectra" / "a_b_c.safetensors"), "pt") as fh:
        assert fh.get_tensor("layer0.q.similarity").shape == (8, 8)
        assert fh.get_tensor("layer0.fc1.sigma_tuned").shape == (64,)
        assert fh.get_tensor("layer0.fc1.max_cos").shape == (10,)
        torch.testing.assert_close(
            fh.get_tensor("layer0.q.similarity").diagonal(), torch.ones(8, dtype=torch.float64)
        )
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["analysis"]["ks"] == [1, 5, 10] and prov["inputs"]["base"]["identity"].startswith("sha256:")


def test_mismatches_are_user_errors(tiny_model_dir, minilm_dir, tmp_path):
    base = HFWeights(tiny_model_dir)
    with pytest.raises(UserError, match="different architectures"):
        analyze_pair(base, HFWeights(minilm_dir), **GRID, progress=False)
    with pytest.raises(UserError, match="no mlp_only matrices|no .* matrices"):
        sd = {"roberta.embeddings.word_embeddings.weight": torch.zeros(4, 4)}
        (tmp_path / "emb").mkdir()
        save_file(sd, str(tmp_path / "emb" / "model.safetensors"))
        (tmp_path / "emb" / "config.json").write_text(json.dumps({"model_type": "roberta"}))
        analyze_pair(base, HFWeights(tmp_path / "emb"), **GRID, preset="mlp_only", progress=False)
    with pytest.raises(UserError, match="outside"):
        analyze_pair(base, base, ks=[10], epsilons=[1.5], progress=False)


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    import psutil, torch
    from safetensors.torch import load_file
    from lora_vs_full.analysis import analyze_pair
    from lora_vs_full.weights import open_pair

    torch.set_num_threads(1)
    proc = psutil.Process()

    def peak_growth(fn):
        # current RSS sampled every 2 ms while fn runs; ru_maxrss would include earlier peaks (imports)
        start, peak, done = proc.memory_info().rss, [0], threading.Event()
        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.002)
        t = threading.Thread(target=sample)
        t.start()
        out = fn()
        done.set()
        t.join()
        return out, (max(peak[0], proc.memory_info().rss) - start) / 2**20

    # warm-up on a 1-layer pair: lazy imports and first-call buffers are a one-off, not per-matrix memory
    analyze_pair(*open_pair(sys.argv[3], sys.argv[4]), ks=[10], epsilons=[0.5], device="cpu", progress=False)
    base, tuned = open_pair(sys.argv[1], sys.argv[2])
    res, streamed = peak_growth(lambda: analyze_pair(
        base, tuned, ks=[10], epsilons=[0.5], sim_n=10, device="cpu", progress=False))
    # control: the same measurement sees a whole model being read and upcast
    def whole():
        sd = {}
        for f in sorted(__import__("pathlib").Path(sys.argv[1]).glob("*.safetensors")):
            sd.update({k: v.double() for k, v in load_file(str(f)).items()})
        return len(sd)
    _, whole_mib = peak_growth(whole)
    print(json.dumps({"streamed_mib": streamed, "whole_mib": whole_mib, "n": len(res.matrices),
                      "intruders": int(res.intruders.n_intruders.sum())}))
    """
)


def test_streaming_memory_on_a_sharded_checkpoint(tmp_path):
    """128 matrices of 256x256 float32 (32 MiB per model, 0.25 MiB per matrix) in 4 shards per model.

    Reading one whole model and upcasting it needs ~64 MiB; streaming needs the working set of ONE matrix
    (W0, Wt, their float64 copies, U, Vh, dW, LAPACK workspace): a constant, whatever the model size.
    """
    from test_weights import _write_sharded

    g = torch.Generator().manual_seed(0)
    n, layers = 256, 32
    base_sd, tuned_sd = {}, {}
    for i in range(layers):
        for mod in ("self.query", "self.key", "self.value", "output.dense"):
            key = f"roberta.encoder.layer.{i}.attention.{mod}.weight"
            base_sd[key] = torch.randn(n, n, generator=g) / n**0.5
            tuned_sd[key] = base_sd[key] + 1e-3 * torch.randn(n, n, generator=g) / n**0.5
    dirs = [_write_sharded(tmp_path / name, sd, 4) for name, sd in (("base", base_sd), ("tuned", tuned_sd))]
    layer0 = [{k: v for k, v in sd.items() if ".layer.0." in k} for sd in (base_sd, tuned_sd)]
    dirs += [_write_sharded(tmp_path / f"warm{i}", sd, 1) for i, sd in enumerate(layer0)]
    del base_sd, tuned_sd, layer0
    # glibc raises its mmap threshold (up to 32 MiB) after freeing a large buffer, after which freed
    # sub-32 MiB matrices fragment the heap; real LLM matrices (>= 64 MiB in float64) are always mmapped.
    # A fixed threshold puts these 0.5 MiB test matrices in that same regime.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, *map(str, dirs)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["n"] == 4 * layers and stats["intruders"] == 0
    print(
        f"peak RSS growth: streamed analysis {stats['streamed_mib']:.1f} MiB, one whole model {stats['whole_mib']:.1f} MiB"
    )
    one_matrix_mib = n * n * 8 / 2**20  # 0.5 MiB in float64
    assert stats["whole_mib"] > 48  # the probe does see memory (64 MiB of float64 + read buffers)
    assert stats["streamed_mib"] < 40 * one_matrix_mib  # a small multiple of one matrix ...
    assert stats["streamed_mib"] < stats["whole_mib"] / 3  # ... well below one model, let alone two


def test_prefixes_differ_between_base_and_tuned(tiny_model_dir, tmp_path):
    """A bare RobertaModel-style base ('encoder.layer...') against a ...ForSequenceClassification-style
    fine-tune ('roberta.encoder.layer...'): matrices line up by MatrixId, not by key."""
    sd = load_file(str(tiny_model_dir / "model.safetensors"))
    bare = {k.removeprefix("roberta."): v for k, v in sd.items() if k.startswith("roberta.")}
    (tmp_path / "bare").mkdir()
    save_file(bare, str(tmp_path / "bare" / "model.safetensors"))
    (tmp_path / "bare" / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    base, tuned = open_pair(tmp_path / "bare", tiny_model_dir)
    res = analyze_pair(base, tuned, **GRID, progress=False)
    assert len(res.matrices) == 12 and res.intruders["n_intruders"].sum() == 0
    assert (res.matrices["delta_fro"] == 0).all()
