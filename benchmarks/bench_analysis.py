"""Analysis speed: the engine (base decomposed once, one SVD per tuned matrix for the whole k x eps grid)
against the naive approach of the authors' script (re-decompose base AND tuned matrix for every checkpoint
and every epsilon), side by side in one run. Synthetic weights of the real shapes; CPU or GPU.

    python benchmarks/bench_analysis.py --shapes minilm            # 6 layers x {q,k,v,o 384x384, fc1, fc2}
    python benchmarks/bench_analysis.py --shapes roberta --quick   # fewer layers
    python benchmarks/bench_analysis.py --dtype-study              # float64 vs float32 (real MiniLM weights)
    python benchmarks/bench_analysis.py --shapes llama-lite --dtype float32   # 7B shapes, one pass vs separate

``--shapes llama-lite`` writes synthetic LLaMA-7B-shaped checkpoints as sharded bf16 safetensors (one layer:
q_proj 4096x4096 and down_proj 4096x11008, the two shapes of LLaMA's seven matrices), a PEFT-format LoRA
adapter (r = 16) and full-like fine-tunes, then times the real ``lora_vs_full.analysis.analyze_many`` path in
fresh subprocesses: ONE pass over N fine-tunes against N separate pair analyses (each re-decomposing the
base), with each side's peak RSS and the disk of every fine-tune; writes
``results/benchmarks/analysis-scale.json`` and extrapolates to 32 layers x 7 matrices and the llama preset.

The naive side is timed on ``--naive-eps`` epsilon values of one checkpoint and extrapolated linearly to
(checkpoints x 51 epsilons): its cost per (checkpoint, epsilon) is the same every time. Printed clearly.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lora_vs_full.spectral import (
    DEFAULT_EPSILONS,
    DEFAULT_KS,
    SVDCache,
    analyze_matrix,
    default_device,
    fingerprint,
    thin_svd,
)

SHAPES = {  # name -> (layers, [(module, (d_out, d_in))])
    "minilm": (6, [("q", (384, 384)), ("k", (384, 384)), ("v", (384, 384)), ("o", (384, 384)),
                   ("fc1", (1536, 384)), ("fc2", (384, 1536))]),
    "roberta": (12, [("q", (768, 768)), ("k", (768, 768)), ("v", (768, 768)), ("o", (768, 768)),
                     ("fc1", (3072, 768)), ("fc2", (768, 3072))]),
}  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Clock:
    """Wall time, or this process's CPU time with ``--cpu-time`` (CPU runs only): on a shared machine
    other users' load inflates wall time but not the CPU seconds this process actually spent."""

    use_cpu_time = False

    @classmethod
    def now(cls) -> float:
        return time.process_time() if cls.use_cpu_time else time.perf_counter()


def make_weights(shapes: str, layers: int | None, n_ckpts: int, seed: int = 0):
    """base: {name: W0}; ckpts: list of {name: Wt}. Alternating LoRA-like (rank 8) and full-FT-like."""
    n_layers, mods = SHAPES[shapes]
    g = torch.Generator().manual_seed(seed)
    base = {
        f"layer{i}.{m}": torch.randn(*shp, generator=g) / shp[1] ** 0.5
        for i in range(layers or n_layers)
        for m, shp in mods
    }
    ckpts = []
    for c in range(n_ckpts):
        tuned = {}
        for name, W0 in base.items():
            if c % 2 == 0:
                B, A = torch.randn(W0.shape[0], 8, generator=g), torch.randn(8, W0.shape[1], generator=g)
                tuned[name] = W0 + 0.05 * B @ A / W0.shape[1] ** 0.5
            else:
                tuned[name] = W0 + 1e-3 * torch.randn(*W0.shape, generator=g)
        ckpts.append(tuned)
    return base, ckpts


def naive_count(W0, Wt, eps: float, ks, device) -> list[int]:
    """The authors' shape of computation, per (checkpoint, epsilon): decompose both, then count per k."""
    U0 = thin_svd(W0, device=device).U
    Ut = thin_svd(Wt, device=device).U
    counts = []
    for k in ks:
        sims = (Ut[:, :k].T @ U0).abs()
        counts.append(int((sims.amax(dim=1) < eps).sum()))
    return counts


def run(args) -> None:
    device = torch.device(args.device) if args.device else default_device()
    base, ckpts = make_weights(args.shapes, args.layers, args.ckpts)
    n_mat = len(base)
    print(f"{args.shapes}: {n_mat} matrices x {args.ckpts} checkpoints, grid {len(DEFAULT_KS)} k x "
          f"{len(DEFAULT_EPSILONS)} eps, device {device}, torch threads {torch.get_num_threads()}, "
          f"timer {'process CPU' if Clock.use_cpu_time else 'wall'}")  # fmt: skip

    # Ours: one SVDCache for the base, analyze_matrix per (checkpoint, matrix) over the whole grid.
    # Floor: the tuned matrices' decompositions alone (what any correct method must pay per checkpoint),
    # timed right before ours on the same checkpoint so both see the same machine load.
    cache = SVDCache(None)
    per_ckpt, floor, ours_counts = [], [], []
    for tuned in ckpts:
        t = Clock.now()
        for W in tuned.values():
            thin_svd(W, device=device)
        _sync(device)
        floor.append(Clock.now() - t)

        t = Clock.now()
        counts = {}
        for name, W0 in base.items():
            b = cache.get_or_compute("synthetic", name, W0, device=device)
            a = analyze_matrix(
                W0, tuned[name], ks=DEFAULT_KS, epsilons=DEFAULT_EPSILONS, base_svd=b, device=device
            )
            counts[name] = a.counts
        _sync(device)
        per_ckpt.append(Clock.now() - t)
        ours_counts.append(counts)
    ours_total = sum(per_ckpt)

    # Naive: a few epsilons of checkpoint 0, extrapolated.
    eps_subset = [0.5, 0.3, 0.7, 0.9, 0.1][: args.naive_eps]
    t = Clock.now()
    for eps in eps_subset:
        for name, W0 in base.items():
            got = naive_count(W0, ckpts[0][name], eps, DEFAULT_KS, device)
            ei = DEFAULT_EPSILONS.index(eps)
            assert got == ours_counts[0][name][:, ei].tolist(), (name, eps)  # same answers, or no comparison
    _sync(device)
    naive_unit = (Clock.now() - t) / len(eps_subset)
    naive_total = naive_unit * args.ckpts * len(DEFAULT_EPSILONS)

    later = slice(1, None) if len(per_ckpt) > 1 else slice(None)  # checkpoint 1 also pays for the base
    steady = statistics.mean(per_ckpt[later])
    floor_mean = statistics.mean(floor[later])
    print(f"ours   total {ours_total:8.2f} s  (checkpoint 1 incl. base SVDs {per_ckpt[0]:.2f} s; "
          f"later checkpoints {steady:.2f} s each)")  # fmt: skip
    print(f"naive  total {naive_total:8.2f} s  EXTRAPOLATED from {len(eps_subset)} eps x 1 checkpoint "
          f"({naive_unit:.2f} s per checkpoint x eps) to {args.ckpts} x {len(DEFAULT_EPSILONS)}")  # fmt: skip
    print(f"ratio  naive / ours = {naive_total / ours_total:.1f}x   (goal >= 50x)")
    print(f"floor  tuned SVDs alone {floor_mean:.2f} s per checkpoint; ours / floor = {steady / floor_mean:.2f}x "
          f"(goal <= 1.5x)")  # fmt: skip
    print(
        f"counts agree with the naive algorithm on eps {eps_subset} (checkpoint 1, all {n_mat} matrices, all k)"
    )


def dtype_study(args) -> None:
    """float64 vs float32: SVD time on the four shapes, and agreement of max_cos / counts on real MiniLM."""

    device = torch.device(args.device) if args.device else default_device()
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, timer {'CPU' if Clock.use_cpu_time else 'wall'}"
    )
    for shp in [(384, 384), (384, 1536), (768, 768), (768, 3072)]:
        W = torch.randn(*shp)
        row = []
        for dt in (torch.float64, torch.float32):
            thin_svd(W, dtype=dt, device=device)  # warm-up
            ts = []
            for _ in range(args.repeats):
                t = Clock.now()
                thin_svd(W, dtype=dt, device=device)
                _sync(device)
                ts.append(Clock.now() - t)
            row.append(min(ts))
        t = Clock.now()
        fingerprint(W)
        fp = Clock.now() - t
        print(f"svd {shp[0]:4d}x{shp[1]:<4d} float64 {row[0] * 1e3:7.1f} ms  float32 {row[1] * 1e3:7.1f} ms  "
              f"f64/f32 {row[0] / row[1]:.2f}   fingerprint {fp * 1e3:.2f} ms = {fp / row[0]:.1%} of the f64 SVD")  # fmt: skip

    g = torch.Generator().manual_seed(0)
    weights = _minilm_encoder_weights()
    ei = DEFAULT_EPSILONS.index(0.5)
    for kind in ("lora1", "lora8", "full"):
        diff, flips, cells, head64, head32 = 0.0, 0, 0, 0, 0
        for W0 in weights.values():
            Wt = _synthetic_tuned(W0, kind, g)
            a64 = analyze_matrix(
                W0, Wt, ks=DEFAULT_KS, epsilons=DEFAULT_EPSILONS, dtype=torch.float64, device=device
            )
            a32 = analyze_matrix(
                W0, Wt, ks=DEFAULT_KS, epsilons=DEFAULT_EPSILONS, dtype=torch.float32, device=device
            )
            diff = max(diff, float((a64.max_cos - a32.max_cos.double()).abs().max()))
            flips += int((a64.counts != a32.counts).sum())
            cells += a64.counts.numel()
            head64 += int(a64.counts[9, ei])
            head32 += int(a32.counts[9, ei])
        print(f"{kind:5s} on {len(weights)} MiniLM matrices: max |max_cos f64 - f32| = {diff:.2e}; grid cells that "
              f"differ {flips}/{cells}; headline (k=10, eps=0.5) f64 {head64} vs f32 {head32}")  # fmt: skip


def _minilm_encoder_weights() -> dict:
    """The 36 analysed all-MiniLM-L6-v2 encoder matrices (q, k, v, o, fc1, fc2 x 6 layers), by tensor name."""
    from safetensors import safe_open

    from lora_vs_full.models.tiny import minilm_path

    with safe_open(str(minilm_path() / "model.safetensors"), framework="pt") as fh:
        names = [
            n
            for n in fh.keys()
            if ".encoder.layer." in f".{n}" and n.endswith("weight") and "LayerNorm" not in n
        ]
        return {n: fh.get_tensor(n) for n in names}


def _synthetic_tuned(W0, kind: str, g):
    """A fine-tune-like W_t: ``full`` = small dense noise; ``lora<r>`` = a rank-r update of 0.3 x ||W0||_2."""
    m, n = W0.shape
    if kind == "full":
        return W0 + 0.02 * W0.std() * torch.randn(m, n, generator=g)
    r = int(kind[4:])
    BA = torch.randn(m, r, generator=g) @ torch.randn(r, n, generator=g)
    return W0 + 0.3 * torch.linalg.matrix_norm(W0, 2) * BA / torch.linalg.matrix_norm(BA)


def storage_study(args) -> None:
    """cache_storage=float32: the base's U and S stored in float32 (half the disk), the analysis in float64.
    Agreement with exact float64 storage on the real MiniLM matrices; writes results/benchmarks/cache-storage.json."""
    import json
    from pathlib import Path

    from lora_vs_full.spectral import SVD
    from lora_vs_full.storage import atomic_write_json

    g = torch.Generator().manual_seed(0)
    weights = _minilm_encoder_weights()
    ei = DEFAULT_EPSILONS.index(0.5)
    base = {name: thin_svd(W0, device="cpu")[:2] for name, W0 in weights.items()}  # once, not once per kind
    rows = {}
    for kind in ("lora1", "lora8", "full"):
        diff, flips, cells, head64, head32, share = 0.0, 0, 0, 0, 0, 0.0
        for name, W0 in weights.items():
            Wt = _synthetic_tuned(W0, kind, g)
            U, S = base[name]
            exact = SVD(U, S, None)
            stored = SVD(U.float().double(), S.float().double(), None)
            kw = dict(ks=DEFAULT_KS, epsilons=DEFAULT_EPSILONS, sim_n=10, device="cpu")
            a = analyze_matrix(W0, Wt, base_svd=exact, **kw)
            b = analyze_matrix(W0, Wt, base_svd=stored, **kw)
            diff = max(diff, float((a.max_cos - b.max_cos).abs().max()))
            share = max(share, float((a.energy_share - b.energy_share).abs().max()))
            flips += int((a.counts != b.counts).sum())
            cells += a.counts.numel()
            head64 += int(a.counts[9, ei])
            head32 += int(b.counts[9, ei])
        rows[kind] = {"max_abs_max_cos_diff": diff, "max_abs_energy_share_diff": share, "cells_differ": flips,
                      "cells": cells, "headline_f64": head64, "headline_f32_storage": head32}  # fmt: skip
        print(kind, json.dumps(rows[kind]))
    out = Path("results/benchmarks/cache-storage.json")
    atomic_write_json(out, {"command": "python benchmarks/bench_analysis.py --storage-study",
                            "matrices": f"{len(weights)} all-MiniLM-L6-v2 encoder matrices", "results": rows})  # fmt: skip
    print(f"wrote {out}")


# ----------------------------------------------------------------------------------------- scale (7B shapes)
LLAMA_LITE = {"q": ("self_attn.q_proj", (4096, 4096)), "down": ("mlp.down_proj", (4096, 11008))}
# LLaMA-7B: 32 layers x (q, k, v, o at 4096x4096; gate, up at 11008x4096; down at 4096x11008). gate/up are
# the transposes of down's shape: thin_svd decomposes the tall orientation, so they cost what down costs.
LLAMA7B_PER_LAYER = {"q": 4, "down": 3}
LLAMA7B_LAYERS = 32


def _write_model(d, tensors: dict, shards: int = 2) -> None:
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    keys = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k].contiguous() for k in keys[i::shards]}
        if part:
            save_file(part, str(d / name))
            weight_map.update({k: name for k in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def make_llama_lite(workdir, n_tunes: int, rank: int = 16, seed: int = 0, div: int = 1) -> dict:
    """base/, lora-r16/ (PEFT adapter), full-<i>/ under ``workdir``; returns {name: path}. bf16 like the Hub."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    root = Path(workdir)
    g = torch.Generator().manual_seed(seed)
    base = {}
    for name, (m0, n0) in LLAMA_LITE.values():
        m, n = m0 // div, n0 // div
        W = torch.randn(m, n, generator=g) / n**0.5
        # a decaying spectrum like a trained matrix (a flat one has no meaningful top-k)
        W = W * torch.linspace(3.0, 0.5, m)[:, None]
        base[f"model.layers.0.{name}.weight"] = W.to(torch.bfloat16)
    paths = {"base": root / "base"}
    if not (root / "base" / "config.json").is_file():
        _write_model(root / "base", base)
    for t in range(n_tunes):
        if t % 2 == 0:  # LoRA-like: PEFT adapter, s = alpha / r = 2
            d = root / f"lora-r{rank}-{t}"
            paths[d.name] = d
            if (d / "adapter_config.json").is_file():
                continue
            d.mkdir(parents=True, exist_ok=True)
            ad = {}
            for key, W0 in base.items():
                m, n = W0.shape
                module = key.removesuffix(".weight")
                ad[f"base_model.model.{module}.lora_A.weight"] = (
                    torch.randn(rank, n, generator=g) / n**0.5
                ).to(torch.bfloat16)
                ad[f"base_model.model.{module}.lora_B.weight"] = (
                    0.3 * torch.randn(m, rank, generator=g) / rank**0.5
                ).to(torch.bfloat16)
            save_file(ad, str(d / "adapter_model.safetensors"))
            cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj", "down_proj"],
                   "base_model_name_or_path": str(root / "base"), "task_type": "CAUSAL_LM"}  # fmt: skip
            (d / "adapter_config.json").write_text(json.dumps(cfg))
        else:  # full-like: every entry moves a little, plus a mild low-rank drift
            d = root / f"full-{t}"
            paths[d.name] = d
            if (d / "config.json").is_file():
                continue
            tuned = {}
            for key, W0 in base.items():
                m, n = W0.shape
                W = W0.float() + 2e-3 * torch.randn(m, n, generator=g)
                tuned[key] = W.to(torch.bfloat16)
            _write_model(d, tuned)
    return {k: str(v) for k, v in paths.items()}


def _dir_bytes(path) -> int:
    from pathlib import Path

    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def scale_child(args) -> None:
    """One measured side in a fresh process: prints one JSON line (times, counts, peak RSS)."""
    import json
    import resource

    from lora_vs_full.analysis import analyze_many
    from lora_vs_full.weights import open_model, open_tuned

    paths = json.loads(args.child_paths)
    grid = dict(
        ks=[1, 5, 10, 20, 50],
        epsilons=[0.1, 0.3, 0.5, 0.7, 0.9],
        sim_n=100,
        dtype=args.dtype,
        device=args.device,
    )
    base = open_model(paths["base"])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # interpreter + imports
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    tuned_names = [k for k in paths if k != "base"]
    if args.child == "one-pass":
        srcs = [open_tuned(base, paths[k]) for k in tuned_names]
        results = analyze_many(base, srcs, names=tuned_names, progress=False, **grid)
    else:  # separate: a fresh base (and its decomposition) per fine-tune, as N pair runs would do
        results = []
        for k in tuned_names:
            b = open_model(paths["base"])
            results += analyze_many(b, [open_tuned(b, paths[k])], names=[k], progress=False, **grid)
    out = {
        "side": args.child,
        "wall_s": round(time.perf_counter() - t_wall, 2),
        "cpu_s": round(time.process_time() - t_cpu, 2),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_before_bytes": rss_before,
        "matrix_cpu_seconds": {r.name: r.stats["matrix_cpu_seconds"] for r in results},
        "headline": {
            r.name: int(r.intruders.query("k == 10 and epsilon == 0.5")["n_intruders"].sum()) for r in results
        },
        "energy_share": {
            r.name: float(r.intruders.query("k == 10 and epsilon == 0.5")["energy_share"].mean())
            for r in results
        },
        "counts": {r.name: r.intruders["n_intruders"].tolist() for r in results},
    }
    print("RESULT " + json.dumps(out))


def write_scale_table(result: dict, csv_path) -> None:
    """The side-by-side rows BENCHMARKS.md embeds (``<!-- lvf:table ... -->``), from the JSON result."""
    from pathlib import Path

    import pandas as pd

    from lora_vs_full.storage import atomic_write_with

    largest = 8 * 4096 * 11008
    rows = []
    for side, key in (("one pass", "one_pass"), ("separate pair analyses", "separate")):
        r = result[key]
        rows.append({
            "side": side,
            "fine_tunes": len(result["fine_tunes"]),
            "cpu_s": r["cpu_s"],
            "wall_s": r["wall_s"],
            "peak_rss_gib": round(r["peak_rss_bytes"] / 2**30, 2),
            "analysis_rss_over_largest_f64": round((r["peak_rss_bytes"] - r["rss_before_bytes"]) / largest, 2),
            "headline_k10_eps05": " / ".join(f"{k} {v}" for k, v in r["headline"].items()),
            "energy_share_k10_eps05": " / ".join(f"{k} {v:.3f}" for k, v in r["energy_share"].items()),
        })  # fmt: skip
    df = pd.DataFrame(rows)
    atomic_write_with(csv_path, lambda p: df.to_csv(p, index=False))

    # 7B extrapolation: measured per-matrix CPU seconds x LLaMA-7B's 32 layers x 7 matrices (4 of q's shape,
    # 3 of down's), and the disk the budget module computes for the same shapes.
    from lora_vs_full.budget import cache_bytes_for, output_bytes_for

    ex = result["extrapolated"]
    shapes = ([(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]) * LLAMA7B_LAYERS
    grid = dict(n_cells=len(DEFAULT_KS) * len(DEFAULT_EPSILONS), sim_n=100, k_max=50)
    rss = result["one_pass"]["peak_rss_bytes"] - result["one_pass"]["rss_before_bytes"]
    lite = sum(m * n for m, n in result["matrices"].values())
    rows7b = [
        ("base decomposition, one 7B model", ex["per_model_base_s"] / 3600, "CPU h"),
        ("one LoRA r=16 fine-tune against it", ex["per_lora_s"] / 3600, "CPU h"),
        ("one full fine-tune against it", ex["per_full_s"] / 3600, "CPU h"),
        ("preset (2 bases, 11 fine-tunes), one pass per base", ex["preset_one_pass_cpu_h"], "CPU h"),
        ("preset, 11 separate pair analyses (no cache)", ex["preset_separate_cpu_h"], "CPU h"),
        (
            "base-SVD cache separate analyses would keep, float64",
            cache_bytes_for(shapes, 8) / 1e9,
            "GB per base",
        ),
        ("base-SVD cache, cache_storage=float32", cache_bytes_for(shapes, 4) / 1e9, "GB per base"),
        ("base-SVD cache, one pass (cache=auto)", 0.0, "GB"),
        ("outputs per fine-tune (full grid 50 k x 51 eps)", output_bytes_for(shapes, 1, **grid) / 1e9, "GB"),
        ("synthetic LoRA r=16 adapter on disk, scaled to 7B", _scaled(result, "lora", lite) / 1e9, "GB"),
        ("synthetic full fine-tune on disk (bf16), scaled to 7B", _scaled(result, "full", lite) / 1e9, "GB"),
        ("peak analysis RSS measured, one pass", rss / 2**30, "GiB"),
    ]
    df7 = pd.DataFrame(rows7b, columns=["quantity", "value", "unit"]).assign(
        value=lambda d: d["value"].round(2)
    )
    p7 = Path(csv_path).with_name(Path(csv_path).stem + "-7b.csv")
    atomic_write_with(p7, lambda p: df7.to_csv(p, index=False))


def _scaled(result: dict, kind: str, lite_params: int) -> float:
    """Bytes of the synthetic fine-tune of ``kind`` scaled by 7B's analysed parameters / the lite model's."""
    name = next(n for n in result["fine_tunes"] if n.startswith(kind))
    per_layer = 4 * 4096 * 4096 + 3 * 4096 * 11008
    return result["disk_bytes"][name] * LLAMA7B_LAYERS * per_layer / lite_params


def scale(args) -> None:
    import json
    import os
    import platform
    import subprocess
    import sys
    from pathlib import Path

    from lora_vs_full import provenance
    from lora_vs_full.budget import PEAK_MATRIX_COPIES
    from lora_vs_full.storage import atomic_write_json

    paths = make_llama_lite(args.workdir, args.tunes, div=args.div)
    names = [k for k in paths if k != "base"]
    disk = {k: _dir_bytes(v) for k, v in paths.items()}
    sides = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for side in ("one-pass", "separate"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            side,
            "--child-paths",
            json.dumps(paths),
            "--dtype",
            args.dtype,
            *(["--device", args.device] if args.device else []),
        ]
        print(f"running {side} over {len(names)} fine-tunes ...", flush=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
        sides[side] = json.loads(line[0][len("RESULT ") :])
        print(f"  {side}: wall {sides[side]['wall_s']} s, cpu {sides[side]['cpu_s']} s, "
              f"peak RSS {sides[side]['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)  # fmt: skip
    one, sep = sides["one-pass"], sides["separate"]
    same = one["counts"] == sep["counts"]
    # per-shape CPU seconds from the one-pass side: base decomposition, LoRA fine-tune, full fine-tune
    mc = one["matrix_cpu_seconds"]
    lora = next(n for n in names if n.startswith("lora"))
    full = next((n for n in names if n.startswith("full")), lora)
    per = {
        mod: {"base_s": mc[lora][f"layer0.{mod}"][0], "lora_s": mc[lora][f"layer0.{mod}"][1],
              "full_s": mc[full][f"layer0.{mod}"][1]}
        for mod in LLAMA_LITE
    }  # fmt: skip

    def model_seconds(kind: str) -> float:
        return LLAMA7B_LAYERS * sum(LLAMA7B_PER_LAYER[m] * per[m][kind] for m in LLAMA_LITE)

    # The preset (conf/manifests/fig5_llama.yaml): LLaMA-2-7B + 6 LoRA + 2 full; LLaMA-7B + 1 LoRA + 2 full.
    groups = [(6, 2), (1, 2)]
    one_pass_s = sum(
        model_seconds("base_s") + nl * model_seconds("lora_s") + nf * model_seconds("full_s")
        for nl, nf in groups
    )
    separate_s = sum((nl + nf) * model_seconds("base_s") + nl * model_seconds("lora_s") + nf * model_seconds("full_s") for nl, nf in groups)  # fmt: skip
    largest = 4096 * 11008
    result = {
        "command": " ".join(["python", "benchmarks/bench_analysis.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores visible, OMP_NUM_THREADS=1 (one thread), "
        "shared with other jobs; times are process CPU seconds",
        "dtype": args.dtype,
        "matrices": {m: list(shape) for m, (_n, shape) in LLAMA_LITE.items()},
        "fine_tunes": names,
        "disk_bytes": disk,
        "one_pass": {
            k: one[k]
            for k in ("wall_s", "cpu_s", "peak_rss_bytes", "rss_before_bytes", "headline", "energy_share")
        },
        "separate": {
            k: sep[k]
            for k in ("wall_s", "cpu_s", "peak_rss_bytes", "rss_before_bytes", "headline", "energy_share")
        },
        "speedup_cpu": round(sep["cpu_s"] / one["cpu_s"], 3),
        "counts_identical": same,
        "per_matrix_cpu_s": per,
        # analysis RSS (peak minus the interpreter and imports) in units of the largest matrix in float64
        "peak_rss_over_largest_f64": round(
            (one["peak_rss_bytes"] - one["rss_before_bytes"]) / (8 * largest), 2
        ),
        "budget_peak_matrix_copies": PEAK_MATRIX_COPIES,
        "extrapolated": {
            "per_model_base_s": round(model_seconds("base_s")),
            "per_lora_s": round(model_seconds("lora_s")),
            "per_full_s": round(model_seconds("full_s")),
            "preset_one_pass_cpu_h": round(one_pass_s / 3600, 1),
            "preset_separate_cpu_h": round(separate_s / 3600, 1),
            "preset": "LLaMA-2-7B + 6 LoRA + 2 full; LLaMA-7B + 1 LoRA + 2 full (32 layers x 7 matrices each)",
        },
        "provenance": provenance.collect(),
    }
    out = Path(args.result)
    atomic_write_json(out, result)
    write_scale_table(result, out.with_suffix(".csv"))
    flat = {k: v for k, v in result.items() if k != "provenance"}
    print(json.dumps(flat, indent=1))
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", choices=sorted(SHAPES) + ["llama-lite"], default="minilm")
    p.add_argument(
        "--tunes", type=int, default=2, help="llama-lite: fine-tunes (alternating LoRA r=16 / full)"
    )
    p.add_argument("--dtype", default="float32", help="llama-lite: SVD dtype (float32 keeps it to minutes)")
    p.add_argument("--workdir", default="/tmp/lvf-bench-llama-lite", help="llama-lite: synthetic checkpoints")
    p.add_argument(
        "--result", default="results/benchmarks/analysis-scale.json", help="llama-lite: result file"
    )
    p.add_argument("--storage-study", action="store_true", help="cache_storage=float32 vs float64: counts")
    p.add_argument("--table-only", action="store_true", help="llama-lite: rewrite the CSV from the JSON")
    p.add_argument("--div", type=int, default=1, help="llama-lite: divide the dimensions (smoke runs only)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-paths", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="2 layers instead of all (a smoke run)")
    p.add_argument("--ckpts", type=int, default=4)
    p.add_argument(
        "--naive-eps", type=int, default=2, help="epsilons the naive side is timed on (then extrapolated)"
    )
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--dtype-study", action="store_true", help="float64 vs float32: timing and agreement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--cpu-time", action="store_true", help="time with process CPU seconds (shared CPU machines)"
    )
    args = p.parse_args()
    args.layers = 2 if args.quick else None
    Clock.use_cpu_time = args.cpu_time
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return scale_child(args)
    if args.storage_study:
        return storage_study(args)
    if args.shapes == "llama-lite" and args.table_only:
        import json
        from pathlib import Path

        return write_scale_table(
            json.loads(Path(args.result).read_text()), Path(args.result).with_suffix(".csv")
        )
    if args.shapes == "llama-lite":
        return scale(args)
    dtype_study(args) if args.dtype_study else run(args)


if __name__ == "__main__":
    main()
