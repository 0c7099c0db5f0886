"""A (pretrained, fine-tuned) pair of weight sources -> tidy intruder / matrix tables + spectra for plots.

:func:`analyze_many` streams the analysed matrices ONE at a time (peak memory = a small multiple of the
largest matrix, whatever the model size): per matrix it reads W0 once, decomposes it once (through the
base-SVD cache when one is given, else in memory only) and compares every fine-tune's matrix with it via
:func:`lora_vs_full.spectral.analyze_matrix` -- so N fine-tunes of one 7B base cost one base decomposition
and no disk cache. :func:`analyze_pair` is the same with one fine-tune. Conventions
are the spectral package's: W is ``nn.Linear.weight`` (d_out, d_in), LEFT singular vectors, |cos|, max
over all pretrained vectors, top-k tuned vectors; for LoRA W_t is the merged W0 + s B A.

:func:`write_analysis` lays a result out as (``records.py`` holds the column contract)::

    <out>/intruders.{parquet,csv}   one row per matrix x k x epsilon    (written LAST), counts + scale metrics
    <out>/matrices.{parquet,csv}    one row per matrix
    <out>/spectra/<file_safe(name)>.safetensors   "{matrix}.similarity|max_cos|sigma_base|sigma_tuned"
    <out>/provenance.json           inputs, analysis config, cache counters, versions, git state

``name`` is the run id, or ``<run>@step-<n>`` for an intermediate checkpoint (so steps do not collide).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lora_vs_full import provenance
from lora_vs_full.errors import UserError
from lora_vs_full.records import (
    INTRUDER_COLUMNS,
    INTRUDER_SCALE_COLUMNS,
    MATRIX_COLUMNS,
    MATRIX_SCALE_COLUMNS,
    RUN_COLUMNS,
    SPECTRA_DIR,
    file_safe,
)
from lora_vs_full.spectral import (
    DEFAULT_EPSILONS,
    DEFAULT_KS,
    SVD,
    SVDCache,
    analyze_matrix,
    thin_svd,
    validate_grid,
)
from lora_vs_full.storage import atomic_write_json, atomic_write_with, write_table
from lora_vs_full.weights.source import WeightSource

log = logging.getLogger(__name__)

_DTYPES = {"float64": torch.float64, "float32": torch.float32}
_TOP_SIGMAS = 10  # sigma_*_top columns: the leading singular values, as a JSON list


@dataclass
class AnalysisResult:
    """Tables with exactly records.INTRUDER_COLUMNS / MATRIX_COLUMNS, and per-matrix tensors for plots."""

    name: str
    intruders: pd.DataFrame
    matrices: pd.DataFrame
    spectra: dict[str, Tensor]
    config: dict
    inputs: dict
    stats: dict = field(default_factory=dict)


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise UserError(
            f"dtype={dtype!r} is not supported; use float64 (default, the paper's) or float32"
        ) from None


def parse_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> cuda when available, else cpu; an explicit cuda without a GPU is a UserError."""
    from lora_vs_full.device import resolve_device

    return resolve_device(device)


def pair_matrices(base_src: WeightSource, tuned_src: WeightSource, preset: str) -> list[tuple]:
    """``[(MatrixId, base key, tuned key, (d_out, d_in))]``; refuses mismatches before any heavy work."""
    if base_src.model_type != tuned_src.model_type:
        raise UserError(
            f"different architectures: {base_src.location} is {base_src.model_type!r}, {tuned_src.location} "
            f"is {tuned_src.model_type!r}; pass the base model the fine-tune started from"
        )
    base_m, tuned_m = base_src.matrices(preset), tuned_src.matrices(preset)
    if not base_m or not tuned_m:
        empty = base_src if not base_m else tuned_src
        raise UserError(
            f"no {preset} matrices found in {empty.location} ({empty.model_type}); "
            "check the model directory and the preset (all_linear, attn_only, qv_only, mlp_only)"
        )
    if base_m.keys() != tuned_m.keys():
        only = sorted(m.name for m in base_m.keys() ^ tuned_m.keys())
        raise UserError(
            f"base {base_src.location} and tuned {tuned_src.location} have different layers "
            f"({len(base_m)} vs {len(tuned_m)} matrices; unmatched: {', '.join(only[:4])}); different architecture"
        )
    out = []
    for mid, bkey in base_m.items():
        tkey = tuned_m[mid]
        bshape, tshape = tuple(base_src.shape(bkey)), tuple(tuned_src.shape(tkey))
        if bshape != tshape or len(bshape) != 2:
            raise UserError(
                f"{mid.name}: base {bkey} is {bshape} but tuned {tkey} is {tshape}; "
                "pair a fine-tune with the base model it started from"
            )
        out.append((mid, bkey, tkey, bshape))
    return out


def analyze_pair(
    base_src: WeightSource,
    tuned_src: WeightSource,
    *,
    run_meta: dict | None = None,
    name: str | None = None,
    **kw,
) -> AnalysisResult:
    """Analyse every ``preset`` matrix of one pair: :func:`analyze_many` with one fine-tune (same keywords)."""
    return analyze_many(base_src, [tuned_src], run_metas=[run_meta], names=[name], **kw)[0]


def analyze_many(
    base_src: WeightSource,
    tuned_srcs: Sequence[WeightSource],
    *,
    preset: str = "all_linear",
    ks: Sequence[int] = DEFAULT_KS,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    sim_n: int = 100,
    dtype: str | torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    cache: SVDCache | None = None,
    run_metas: Sequence[dict | None] | None = None,
    names: Sequence[str | None] | None = None,
    progress: bool = True,
) -> list[AnalysisResult]:
    """Many fine-tunes of ONE base in one pass: per matrix, W0 is read and decomposed once, then every
    fine-tune's matrix is compared with it. Returns one result per fine-tune, in input order; each equals
    what a separate pair analysis gives (the tests check it).

    Run columns: ``run_metas[i]`` (missing keys -> None) over what the source knows about itself
    (``WeightSource.run_meta``: method/rank/alpha from an adapter's config, method=full for a model
    directory); an explicit value wins. ``names[i]`` names the result (default: the run column, else the
    source's location). Without a ``cache`` the base decomposition lives only while its matrix is analysed
    (no disk). Raises UserError for a bad grid, a different architecture, mismatched shapes or zero
    matching matrices -- all before any decomposition, so nothing partial is ever produced.
    """
    from tqdm.auto import tqdm

    ks, epsilons = validate_grid(ks, epsilons)
    if isinstance(sim_n, bool) or not isinstance(sim_n, int) or sim_n < 1:
        raise UserError(f"sim_n={sim_n!r} must be a positive integer (top-N vectors in similarity matrices)")
    if not tuned_srcs:
        raise UserError("no fine-tune to analyse: give tuned=<spec> or tuned=[a,b,...]")
    dtype, device = parse_dtype(dtype), parse_device(device)
    n = len(tuned_srcs)
    run_metas = list(run_metas) if run_metas is not None else [None] * n
    names = list(names) if names is not None else [None] * n
    if len(run_metas) != n or len(names) != n:
        raise ValueError("run_metas and names must have one entry per fine-tune")
    metas, labels = [], []
    for src, given, nm in zip(tuned_srcs, run_metas, names, strict=True):
        given = {k: v for k, v in (given or {}).items() if v is not None}
        meta = {c: {**src.run_meta(), **given}.get(c) for c in RUN_COLUMNS}
        if meta["run"] is None:
            meta["run"] = src.location
        metas.append(meta)
        labels.append(str(nm or meta["run"]))
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UserError(f"two fine-tunes share the name {dup[0]!r}; give each a distinct label")
    # Validate every pair before any decomposition.
    pairs = [pair_matrices(base_src, t, preset) for t in tuned_srcs]
    base_rows = [(mid, bkey, shp) for mid, bkey, _t, shp in pairs[0]]

    k_grid, e_grid = np.meshgrid(np.asarray(ks), np.asarray(epsilons), indexing="ij")  # (len(ks), len(eps))
    intruder_parts = [[] for _ in range(n)]
    matrix_rows = [[] for _ in range(n)]
    spectra: list[dict[str, Tensor]] = [{} for _ in range(n)]
    seconds = [0.0] * n
    # per matrix: CPU seconds of the base decomposition and of each fine-tune (benchmarks extrapolate these)
    matrix_cpu: list[dict[str, list[float]]] = [{} for _ in range(n)]
    t0, hits0 = time.perf_counter(), (cache.hits if cache else 0)
    desc = f"analyse {labels[0]}" if n == 1 else f"analyse {n} fine-tunes"
    for i, (mid, bkey, (d_out, d_in)) in enumerate(
        tqdm(base_rows, desc=desc, unit="matrix", disable=not progress)
    ):
        c0 = time.process_time()
        W0 = base_src.get(bkey)
        if cache is not None:
            base_svd = cache.get_or_compute(base_src.identity, bkey, W0, dtype=dtype, device=device)
        else:
            U, S, _ = thin_svd(W0, dtype=dtype, device=device)
            base_svd = SVD(U, S, None)  # drop Vh: nothing needs the base's right vectors
        base_cpu = time.process_time() - c0
        ids = {"matrix": mid.name, "layer": mid.layer, "module": mid.module}
        for j, src in enumerate(tuned_srcs):
            tj, cj = time.perf_counter(), time.process_time()
            Wt = src.merge(pairs[j][i][2], W0)
            res = analyze_matrix(
                W0, Wt, ks=ks, epsilons=epsilons, sim_n=sim_n, base_svd=base_svd, dtype=dtype, device=device
            )
            del Wt  # at most W0, its decomposition and one fine-tune's matrix alive
            intruder_parts[j].append(_intruder_part(res, metas[j], ids, k_grid, e_grid))
            matrix_rows[j].append(_matrix_row(res, metas[j], ids, d_out, d_in))
            for key in ("similarity", "max_cos", "sigma_base", "sigma_tuned", "nearest"):
                spectra[j][f"{mid.name}.{key}"] = getattr(res, key).contiguous()
            seconds[j] += time.perf_counter() - tj
            matrix_cpu[j][mid.name] = [round(base_cpu, 4), round(time.process_time() - cj, 4)]
        del W0, base_svd
    config = {
        "preset": preset,
        "ks": list(ks),
        "epsilons": list(epsilons),
        "sim_n": sim_n,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
    }
    total = round(time.perf_counter() - t0, 3)
    results = []
    for j, src in enumerate(tuned_srcs):
        intruders = pd.concat(intruder_parts[j], ignore_index=True)[
            list(INTRUDER_COLUMNS + INTRUDER_SCALE_COLUMNS)
        ]
        matrices = pd.DataFrame(matrix_rows[j], columns=list(MATRIX_COLUMNS + MATRIX_SCALE_COLUMNS))
        stats = {
            "seconds": total if n == 1 else round(seconds[j], 3),
            "pass_seconds": total,
            "fine_tunes_in_pass": n,
            "n_matrices": len(base_rows),
            "cache_hits": (cache.hits - hits0) if cache else 0,
            "matrix_cpu_seconds": matrix_cpu[j],  # {matrix: [base decomposition, this fine-tune]}
        }
        inputs = {"base": base_src.describe(), "tuned": src.describe()}
        results.append(
            AnalysisResult(labels[j], intruders, matrices, spectra[j], dict(config), inputs, stats)
        )
    return results


def _intruder_part(res, meta: dict, ids: dict, k_grid, e_grid) -> pd.DataFrame:
    part = pd.DataFrame(
        {
            "k": k_grid.ravel(),
            "epsilon": e_grid.ravel(),
            "n_intruders": res.counts.numpy().astype(np.int64).ravel(),
            "energy_share": res.energy_share.numpy().ravel(),
            "n_random": res.n_random.numpy().ravel(),
            "nearest_rank": res.nearest_rank.numpy().ravel(),
        }
    )
    for col, val in {**meta, **ids}.items():
        part[col] = val
    return part


def _matrix_row(res, meta: dict, ids: dict, d_out: int, d_in: int) -> dict:
    return {
        **meta,
        **ids,
        "d_out": d_out,
        "d_in": d_in,
        "erank_delta": res.erank_delta,
        "erank_tuned": res.erank_tuned,
        "erank_base": res.erank_base,
        "delta_fro": res.delta_fro,
        "delta_spectral": res.delta_spectral,
        "sigma_base_top": json.dumps(res.sigma_base[:_TOP_SIGMAS].tolist()),
        "sigma_tuned_top": json.dumps(res.sigma_tuned[:_TOP_SIGMAS].tolist()),
        "cos_floor": res.cos_floor,
    }


def write_analysis(
    result: AnalysisResult, out_dir: str | Path, *, spectra_dir: str | Path | None = None
) -> Path:
    """Write ``result`` under ``out_dir`` (layout in the module docstring); returns ``out_dir``.

    Old tables are removed first and new ones written last, so a crash part-way leaves no table at all
    rather than old tables beside new spectra. ``spectra_dir`` defaults to ``<out>/spectra``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    for stem in ("intruders", "matrices"):
        for ext in (".parquet", ".csv"):
            (out / f"{stem}{ext}").unlink(missing_ok=True)
    sdir = Path(spectra_dir) if spectra_dir is not None else out / SPECTRA_DIR
    meta = {"run": result.name, "config": json.dumps(result.config)}
    atomic_write_with(
        sdir / f"{file_safe(result.name)}.safetensors",
        lambda p: save_file(result.spectra, str(p), metadata=meta),
    )
    atomic_write_json(
        out / "provenance.json",
        provenance.collect(inputs=result.inputs, analysis=result.config, run=result.name, stats=result.stats),
    )
    write_table(result.matrices, out / "matrices")
    write_table(result.intruders, out / "intruders")
    return out


def read_tables(out_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(intruders, matrices)`` written by :func:`write_analysis` (parquet)."""
    out = Path(out_dir)
    return pd.read_parquet(out / "intruders.parquet"), pd.read_parquet(out / "matrices.parquet")
