"""Disk and memory budget of an analysis, computed from tensor shapes alone and checked before any work.

A 7B base has 224 analysed matrices; its float64 base-SVD cache (U and S) is ~44.6 GB, next to ~13-27 GB
per full fine-tune checkpoint, on a 64 GiB disk. So ``lvf-analyze`` prints a plan first and refuses a run
that would not fit, naming the number:

* **cache policy** ``auto``: a one-pass run over several fine-tunes needs no cache at all (each W0 is
  decomposed once while its matrix is analysed); a single pair or a ``runs=`` glob keeps the base
  decompositions on disk only when they fit the disk budget, else in memory; ``disk`` insists (and is
  refused when it does not fit), ``memory`` keeps them in RAM only, ``off`` keeps nothing.
* **peak RAM** is a small multiple of the largest matrix (W0, its float64 copies, one fine-tune's merged
  matrix, dW and the SVD factors) plus the in-memory cache and the accumulated spectra; the multiple,
  ``PEAK_MATRIX_COPIES``, is an upper bound checked by ``benchmarks/bench_analysis.py`` (measured peak
  RSS in BENCHMARKS.md).

Sizes are bytes; messages print GB (10^9 bytes).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lora_vs_full.errors import UserError

CACHE_POLICIES = ("auto", "disk", "memory", "off")
# float64 copies of the largest matrix alive at once: W0 (upcast), merged W_t, its SVD input, dW, the U/Vh
# factors and LAPACK workspace. An upper bound: the scale benchmark measured 3.1 (float32 SVD, 4096 x 11008;
# results/benchmarks/analysis-scale.json, BENCHMARKS.md "Scale").
PEAK_MATRIX_COPIES = 7
INTERPRETER_BYTES = 1 << 30  # python + torch + pandas + transformers' imports: 1.0 GB measured (same file)
MEMORY_CACHE_BYTES = 2 << 30  # SVDCache's in-memory LRU bound
_TABLE_ROW_BYTES = 160  # one intruders row in parquet + csv (measured ~150)


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e9:.3f} GB"


@dataclass
class Plan:
    """What a run will hold and write; ``check`` raises when it does not fit."""

    n_matrices: int
    n_tuned: int
    largest: tuple[int, int]
    cache_policy: str  # the resolved policy: disk | memory | off
    cache_bytes: int  # the whole base decomposition at the storage dtype
    cache_new_bytes: int  # what the disk cache still has to write (0 unless policy disk)
    output_bytes: int  # tables + spectra of all fine-tunes
    download_bytes: int | None  # Hub files not yet local (None: unknown)
    peak_ram_bytes: int
    disk_budget: int
    ram_budget: int
    where: str
    notes: list[str] = field(default_factory=list)

    @property
    def disk_bytes(self) -> int:
        return self.cache_new_bytes + self.output_bytes + (self.download_bytes or 0)

    def describe(self) -> str:
        m, n = self.largest
        dl = "unknown" if self.download_bytes is None else gb(self.download_bytes)
        lines = [
            f"plan: {self.n_matrices} matrices (largest {m}x{n}) x {self.n_tuned} fine-tune(s) in one pass",
            f"  RAM  peak ~{gb(self.peak_ram_bytes)} (budget {gb(self.ram_budget)})",
            f"  disk {gb(self.disk_bytes)} = outputs {gb(self.output_bytes)} + base-SVD cache "
            f"{gb(self.cache_new_bytes)} (cache={self.cache_policy}; whole cache {gb(self.cache_bytes)}) "
            f"+ downloads {dl} (budget {gb(self.disk_budget)}, {self.where})",
        ]
        return "\n".join(lines + [f"  note: {x}" for x in self.notes])

    def check(self) -> None:
        if self.peak_ram_bytes > self.ram_budget:
            m, n = self.largest
            raise UserError(
                f"the analysis needs ~{gb(self.peak_ram_bytes)} of RAM (largest matrix {m}x{n}, cache "
                f"{self.cache_policy}) but budget.ram_gb allows {gb(self.ram_budget)}; use cache=off or "
                "cache=memory with fewer fine-tunes per pass, or raise budget.ram_gb"
            )
        if self.disk_bytes > self.disk_budget:
            raise UserError(
                f"the analysis needs {gb(self.disk_bytes)} of disk (outputs {gb(self.output_bytes)}, cache "
                f"{gb(self.cache_new_bytes)}, downloads {gb(self.download_bytes or 0)}) but budget.disk_gb "
                f"allows {gb(self.disk_budget)} ({self.where}); use cache=memory or cache_storage=float32, "
                "fewer fine-tunes per pass, or raise budget.disk_gb"
            )


def check_downloads(
    nbytes: int | None, *, disk_gb: float | None, where: str | os.PathLike, what: str
) -> None:
    """Refuse before fetching when the Hub files of ``what`` alone exceed the disk budget / free space."""
    if not nbytes:
        return
    free = free_disk(where)
    limit = min(free, int(disk_gb * 1e9)) if disk_gb is not None else free
    if nbytes > limit:
        raise UserError(
            f"{what} would download {gb(nbytes)} but only {gb(limit)} is allowed (budget.disk_gb={disk_gb}, "
            f"{gb(free)} free at {Path(where)}); analyse fewer fine-tunes per pass (one manifest group at a "
            "time with cleanup_downloads=true) or free disk"
        )


def free_disk(path: str | os.PathLike) -> int:
    """Free bytes on the filesystem that holds ``path`` (its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def available_ram() -> int:
    """MemAvailable from /proc/meminfo (Linux), else total physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cache_bytes_for(shapes: list[tuple[int, int]], storage_bytes: int) -> int:
    """U (m x r) and S (r) of every base matrix, r = min(m, n)."""
    return sum((m * min(m, n) + min(m, n)) * storage_bytes for m, n in shapes)


def output_bytes_for(
    shapes: list[tuple[int, int]], n_tuned: int, *, n_cells: int, sim_n: int, k_max: int
) -> int:
    """Tables (one intruders row per matrix x k x eps) and spectra (similarity, sigmas, max_cos, nearest)."""
    per = 0
    for m, n in shapes:
        r = min(m, n)
        per += n_cells * _TABLE_ROW_BYTES + 8 * (min(sim_n, r) ** 2 + 2 * r + 2 * min(k_max, r)) + 400
    return per * n_tuned


def plan(
    shapes: list[tuple[int, int]],
    *,
    n_tuned: int,
    one_pass: bool,
    cache: str,
    cache_storage_bytes: int,
    cache_present_bytes: int,
    n_cells: int,
    sim_n: int,
    k_max: int,
    download_bytes: int | None,
    where: str | os.PathLike,
    disk_gb: float | None,
    ram_gb: float | None,
) -> Plan:
    """Resolve the cache policy and size everything; nothing is checked yet (``Plan.check``)."""
    if cache not in CACHE_POLICIES:
        raise UserError(f"cache={cache!r} is not a cache policy; use one of {', '.join(CACHE_POLICIES)}")
    for name, v in (("budget.disk_gb", disk_gb), ("budget.ram_gb", ram_gb)):
        if v is not None and not v > 0:
            raise UserError(f"{name}={v} must be > 0 (GB) or null (what the machine has)")
    free = free_disk(where)
    disk_budget = int(disk_gb * 1e9) if disk_gb is not None else free
    ram_budget = int(ram_gb * 1e9) if ram_gb is not None else available_ram()
    m, n = max(shapes, key=lambda s: s[0] * s[1])
    whole = cache_bytes_for(shapes, cache_storage_bytes)
    out = output_bytes_for(shapes, n_tuned, n_cells=n_cells, sim_n=sim_n, k_max=k_max)
    notes = []
    policy = cache
    if cache == "auto":
        if one_pass and n_tuned > 1:
            policy = "off"
            notes.append("cache=auto: one pass decomposes each base matrix once, no cache needed")
        elif out + (download_bytes or 0) + max(whole - cache_present_bytes, 0) <= min(disk_budget, free):
            policy = "disk"
        else:
            policy = "memory"
            notes.append(
                f"cache=auto: the base-SVD cache ({gb(whole)}) does not fit the disk budget; kept in memory"
            )
    new = max(whole - cache_present_bytes, 0) if policy == "disk" else 0
    mem_cache = min(whole, MEMORY_CACHE_BYTES) if policy in ("disk", "memory") else 0
    spectra = out // max(n_tuned, 1) * n_tuned  # accumulated in RAM until the fine-tune's rows are written
    peak = INTERPRETER_BYTES + PEAK_MATRIX_COPIES * 8 * m * n + mem_cache + spectra
    if download_bytes is None:
        notes.append("download sizes unknown (offline or local paths); only outputs and cache are counted")
    return Plan(
        n_matrices=len(shapes),
        n_tuned=n_tuned,
        largest=(m, n),
        cache_policy=policy,
        cache_bytes=whole,
        cache_new_bytes=new,
        output_bytes=out,
        download_bytes=download_bytes,
        peak_ram_bytes=peak,
        disk_budget=disk_budget,
        ram_budget=ram_budget,
        where=f"{gb(free)} free at {Path(where)}",
        notes=notes,
    )
