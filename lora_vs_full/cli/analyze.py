"""``lvf-analyze``: compare fine-tuned weights with their base (intruder dimensions, spectra, ranks).

Three modes (config: ``conf/analyze.yaml``, typed by :class:`AnalyzeConfig`):

* pair: ``lvf-analyze base=<dir|id> tuned=<dir|id|adapter|run dir> out=<dir>``
* many fine-tunes of one base in ONE pass: ``lvf-analyze base=<id> 'tuned=[a,b,c]' out=<dir>`` or
  ``lvf-analyze manifest=<yaml|json> out=<dir>`` (several bases: one pass each, see
  :mod:`lora_vs_full.weights.manifest`). Each W0 is read and decomposed once for all fine-tunes (no cache
  on disk); each fine-tune's rows go to ``<out>/parts/<label>/`` (skipped on a rerun when its
  ``source.json`` matches) and the combined table to ``<out>/``. method / rank / alpha come from each
  adapter's config (a model directory is method=full).
* runs: ``lvf-analyze runs='<glob>' out=<dir> [steps=true]`` -- every complete lvf-train run dir; results
  of all runs go into ONE table at ``<out>/``, per-checkpoint parts live in ``<out>/parts/<name>/`` with a
  ``source.json`` (final.json sha256 + analysis config), so a rerun analyses only new or changed runs and
  then rebuilds the combined table.

Every mode prints a disk + RAM plan (:mod:`lora_vs_full.budget`) on stderr before work and refuses a run
that does not fit ``budget.disk_gb`` / ``budget.ram_gb`` (default: what the machine has).
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from lora_vs_full import budget, provenance
from lora_vs_full.analysis import (
    AnalysisResult,
    analyze_many,
    analyze_pair,
    pair_matrices,
    parse_dtype,
    write_analysis,
)
from lora_vs_full.cli._common import CONFIG_DIR, user_errors_exit
from lora_vs_full.errors import UserError
from lora_vs_full.lifecycle import begin_part, cfg_out, finish_part, locked_by, part_is_current
from lora_vs_full.records import HEADLINE_EPSILON, HEADLINE_K, SPECTRA_DIR, file_safe
from lora_vs_full.spectral import DEFAULT_EPSILONS, DEFAULT_KS, SVDCache, validate_grid
from lora_vs_full.storage import atomic_write_json, check_writable, write_table
from lora_vs_full.weights import find_runs, open_model, open_pair, open_tuned
from lora_vs_full.weights.manifest import FineTune, Group, groups_from, read_manifest
from lora_vs_full.weights.resolve import hub_download_bytes, remove_downloads

log = logging.getLogger("lvf-analyze")

SCHEMA_VERSION = 2  # of the part tables: 2 added records.INTRUDER_SCALE_COLUMNS (older parts are redone)


# ------------------------------------------------------------------------------------------ typed config
@dataclass
class BudgetConfig:
    disk_gb: float | None = None  # null = the free space where out/ (and the cache) live
    ram_gb: float | None = None  # null = MemAvailable


@dataclass
class MetaConfig:
    model: str | None = None  # the `model` column (pair mode, tuned list; a manifest group's model wins)
    task: str | None = None  # the `task` column (pair mode, tuned list; a manifest entry's task wins)


@dataclass
class AnalyzeConfig:
    """Keys and types of ``conf/analyze.yaml`` (registered as ``analyze_schema``): a typo or a wrong type
    (``ks=[ten]``, ``sim_n=many``) fails at compose time naming the key; ranges are checked by :func:`validate`."""

    paths: Any = MISSING  # untyped: conf/paths/default.yaml is shared with other tools
    base: str | None = None
    base_revision: str | None = None
    tuned: Any = None  # one spec, or a list of specs analysed in one pass
    tuned_revision: str | None = None
    label: str | None = None
    meta: MetaConfig = field(default_factory=MetaConfig)  # `model=`/`task=` would select conf/ groups
    manifest: str | None = None
    runs: str | None = None
    steps: bool = False
    out: str | None = None
    preset: str = "all_linear"
    ks: list[int] | None = None
    epsilons: list[float] | None = None
    sim_n: int = 100
    dtype: str = "float64"
    device: str = "auto"
    cache: str = "auto"
    cache_storage: str = "float64"
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    cleanup_downloads: bool = False  # manifest / tuned list: delete a group's Hub downloads after its pass
    progress: bool = True


def register_configs() -> None:
    """Register :class:`AnalyzeConfig` in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="analyze_schema", node=AnalyzeConfig)


register_configs()  # at import: the lvf-analyze entry point and in-process composers both import this module

_CACHE_ALIASES = {"true": "auto", "false": "off"}  # the old boolean `cache=true|false`


def listify_scalar_grid(overrides: list[str]) -> list[str]:
    """``ks=10`` -> ``ks=[10]`` (and epsilons): the typed schema wants a list, the command line kept the scalar."""
    out = []
    for o in overrides:
        m = re.fullmatch(r"(\+{0,2})(ks|epsilons)=([^\[\],]+)", o)
        out.append(f"{m[1]}{m[2]}=[{m[3]}]" if m and m[3] not in ("null", "None") else o)
    return out


def compose_analyze(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``analyze.yaml`` with command-line style overrides outside a Hydra app (tests, reproduce)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="analyze", overrides=listify_scalar_grid(list(overrides)))


def _as_list(value, default) -> list:
    if value is None:
        return list(default)
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]  # `ks=10` on the command line means [10]


def cache_policy(value) -> str:
    policy = _CACHE_ALIASES.get(str(value).lower(), str(value))
    if policy not in budget.CACHE_POLICIES:
        raise UserError(
            f"cache={value!r} is not a cache policy; use one of {', '.join(budget.CACHE_POLICIES)}"
        )
    return policy


def validate(cfg: DictConfig) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Range checks the types cannot express; returns the validated (ks, epsilons)."""
    ks, epsilons = validate_grid(_as_list(cfg.ks, DEFAULT_KS), _as_list(cfg.epsilons, DEFAULT_EPSILONS))
    if cfg.sim_n < 1:
        raise UserError(f"sim_n={cfg.sim_n} must be >= 1 (top-N vectors in the similarity matrices)")
    parse_dtype(cfg.dtype)
    if cfg.cache_storage not in ("float64", "float32"):
        raise UserError(
            f"cache_storage={cfg.cache_storage!r}: use float64 (exact) or float32 (half the disk)"
        )
    cache_policy(cfg.cache)
    for key in ("disk_gb", "ram_gb"):
        v = cfg.budget[key]
        if v is not None and not v > 0:
            raise UserError(f"budget.{key}={v} must be > 0 (GB) or null (what the machine has)")
    if not cfg.out:
        raise UserError("out is required: lvf-analyze ... out=<directory for the tables>")
    return ks, epsilons


def make_plan(cfg, base_src, n_tuned: int, *, one_pass: bool, ks, epsilons, where: Path) -> budget.Plan:
    """The run's disk/RAM plan from the base's shapes (metadata only); printed, then checked."""
    shapes = [tuple(base_src.shape(k)) for k in base_src.matrices(cfg.preset).values()]
    if not shapes:
        raise UserError(f"no {cfg.preset} matrices in {base_src.location}; check the model and preset")
    storage = (
        4
        if cfg.cache_storage == "float32" and parse_dtype(cfg.dtype).itemsize == 8
        else parse_dtype(cfg.dtype).itemsize
    )
    root = Path(cfg.paths.cache_dir) / "svd"
    present = sum(f.stat().st_size for f in root.rglob("*.safetensors")) if root.is_dir() else 0
    plan = budget.plan(
        shapes,
        n_tuned=n_tuned,
        one_pass=one_pass,
        cache=cache_policy(cfg.cache),
        cache_storage_bytes=storage,
        cache_present_bytes=min(present, budget.cache_bytes_for(shapes, storage)),
        n_cells=len(ks) * len(epsilons),
        sim_n=cfg.sim_n,
        k_max=max(ks),
        download_bytes=0,
        where=where,
        disk_gb=cfg.budget.disk_gb,
        ram_gb=cfg.budget.ram_gb,
    )
    log.info("%s", plan.describe())
    plan.check()
    return plan


def make_cache(cfg, policy: str) -> SVDCache | None:
    import torch

    storage = torch.float32 if cfg.cache_storage == "float32" else None
    if policy == "disk":
        return SVDCache(Path(cfg.paths.cache_dir) / "svd", storage_dtype=storage)
    if policy == "memory":
        return SVDCache(None, storage_dtype=storage)
    return None


def _remove_tables(out: Path) -> None:
    for stem in ("intruders", "matrices"):
        for ext in (".parquet", ".csv"):
            (out / f"{stem}{ext}").unlink(missing_ok=True)


def analyze_runs(
    pattern: str, out: Path, *, steps: bool, cache: SVDCache | None, plan_cfg=None, **kw
) -> list[Path]:
    """Runs mode (see module docstring); returns the part directories that make up the combined table.

    ``plan_cfg`` (the command's config) sizes the run from the first checkpoint's base and resolves
    ``cache=auto`` (its ``cache`` argument is then ignored)."""
    checkpoints = find_runs(pattern, steps=steps)
    if not checkpoints:
        raise UserError(f"runs={pattern!r} matches no complete run (none has final.json); nothing to analyse")
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items() if k != "progress"}
    config["schema"] = SCHEMA_VERSION
    if plan_cfg is not None:
        first = open_model(checkpoints[0].base, checkpoints[0].base_revision)
        plan = make_plan(
            plan_cfg, first, len(checkpoints), one_pass=False, ks=kw["ks"], epsilons=kw["epsilons"], where=out
        )
        cache = make_cache(plan_cfg, plan.cache_policy)
    # The combined table goes first, so a failure part-way never leaves one that looks current.
    _remove_tables(out)
    parts = []
    for rc in checkpoints:
        part = out / "parts" / rc.part_name
        source = {"final_sha256": rc.final_sha256, "checkpoint": rc.checkpoint.name, "analysis": config}
        if part_is_current(part, source, outputs=("intruders.parquet",)):
            log.info("up to date, skipping: %s", rc.part_name)
            parts.append(part)
            continue
        log.info("analysing %s (%s)", rc.part_name, rc.checkpoint)
        begin_part(part)  # its old source.json goes first: a kill mid-way leaves it stale, not current
        base_src, tuned_src = open_pair(rc.base, rc.checkpoint, base_revision=rc.base_revision)
        result = analyze_pair(
            base_src, tuned_src, cache=cache, run_meta=rc.meta, name=rc.part_name, **_engine_kw(kw)
        )
        write_analysis(result, part, spectra_dir=out / SPECTRA_DIR)
        finish_part(part, source)  # LAST: marks the part complete
        parts.append(part)
    # Combined table: rebuilt from the parts every time (cheap), tables last.
    intruders = pd.concat([pd.read_parquet(p / "intruders.parquet") for p in parts], ignore_index=True)
    matrices = pd.concat([pd.read_parquet(p / "matrices.parquet") for p in parts], ignore_index=True)
    atomic_write_json(
        out / "provenance.json",
        provenance.collect(runs=pattern, steps=steps, analysis=config, parts=[p.name for p in parts]),
    )
    write_table(matrices, out / "matrices")
    write_table(intruders, out / "intruders")
    return parts


def _engine_kw(kw: dict) -> dict:
    return {k: v for k, v in kw.items() if k != "schema"}


def _combine(out: Path, parts: list[Path], **prov) -> None:
    """The combined table from the parts (cheap), provenance first, tables last."""
    intruders = pd.concat([pd.read_parquet(p / "intruders.parquet") for p in parts], ignore_index=True)
    matrices = pd.concat([pd.read_parquet(p / "matrices.parquet") for p in parts], ignore_index=True)
    atomic_write_json(out / "provenance.json", provenance.collect(parts=[p.name for p in parts], **prov))
    write_table(matrices, out / "matrices")
    write_table(intruders, out / "intruders")


def analyze_groups(groups: list[Group], out: Path, *, cfg, **kw) -> list[Path]:
    """Many fine-tunes per base, one pass per base (module docstring); returns the part directories.

    A fine-tune whose part holds tables and a ``source.json`` equal to the new one is skipped; the others
    of its group are analysed together in one pass. Every group is sized and checked (budget) before its
    pass; nothing of a refused group is written.
    """
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items() if k != "progress"}
    config["schema"] = SCHEMA_VERSION
    _remove_tables(out)
    parts: list[Path] = []
    for group in groups:
        todo: list[tuple[FineTune, Path, dict]] = []
        for ft in group.fine_tunes:
            part = out / "parts" / file_safe(ft.name)
            source = {
                "base": group.base,
                "base_revision": group.base_revision,
                "tuned": ft.spec,
                "revision": ft.revision,
                "meta": ft.meta,
                "analysis": config,
            }
            parts.append(part)
            if part_is_current(part, source, outputs=("intruders.parquet",)):
                log.info("up to date, skipping: %s", ft.name)
                continue
            todo.append((ft, part, source))
        if not todo:
            continue
        specs = [(group.base, group.base_revision)] + [(ft.spec, ft.revision) for ft, _, _ in todo]
        budget.check_downloads(
            hub_download_bytes(specs),
            disk_gb=cfg.budget.disk_gb,
            where=out,
            what=f"the group of {group.base}",
        )
        base_src = open_model(group.base, group.base_revision)
        srcs = [open_tuned(base_src, ft.spec, ft.revision) for ft, _, _ in todo]
        for src in srcs:
            pair_matrices(base_src, src, cfg.preset)  # mismatches refused before the plan
        plan = make_plan(
            cfg, base_src, len(srcs), one_pass=True, ks=kw["ks"], epsilons=kw["epsilons"], where=out
        )
        log.info("one pass over %d fine-tune(s) of %s", len(srcs), group.base)
        results = analyze_many(
            base_src,
            srcs,
            run_metas=[{"run": ft.name, **ft.meta} for ft, _, _ in todo],
            names=[ft.name for ft, _, _ in todo],
            cache=make_cache(cfg, plan.cache_policy),
            **_engine_kw(kw),
        )
        for result, (_ft, part, source) in zip(results, todo, strict=True):
            begin_part(part)
            write_analysis(result, part, spectra_dir=out / SPECTRA_DIR)
            finish_part(part, source)
        del base_src, srcs, results
        if cfg.cleanup_downloads:
            freed = remove_downloads([s for s, _ in specs])
            log.info(
                "cleanup_downloads: removed %.1f GB of Hub downloads of %s's group", freed / 1e9, group.base
            )
    _combine(
        out,
        parts,
        groups=[{"base": g.base, "fine_tunes": [f.spec for f in g.fine_tunes]} for g in groups],
        analysis=config,
    )
    return parts


def summary(intruders: pd.DataFrame) -> str:
    """Total intruders at the headline (k=10, eps=0.5) per run x module type, with a total column."""
    sel = intruders[(intruders["k"] == HEADLINE_K) & (intruders["epsilon"] == HEADLINE_EPSILON)]
    if sel.empty:
        return f"(headline k={HEADLINE_K}, epsilon={HEADLINE_EPSILON} is not in the analysed grid)"
    sel = sel.assign(
        run=sel["run"].astype(str) + sel["step"].map(lambda s: "" if pd.isna(s) else f" @{int(s)}")
    )
    table = sel.pivot_table(index="run", columns="module", values="n_intruders", aggfunc="sum", fill_value=0)
    table["total"] = table.sum(axis=1)
    return f"intruders at k={HEADLINE_K}, epsilon={HEADLINE_EPSILON}:\n{table.to_string()}"


@locked_by(cfg_out, "analysis output")  # one writer per out directory (its parts and tables)
def run(cfg: DictConfig) -> AnalysisResult | list[Path]:
    """The command body, callable without Hydra (tests compose the config and call this)."""
    ks, epsilons = validate(cfg)
    out = Path(str(cfg.out))
    check_writable(out)  # an unwritable out is one line before any analysis, not a traceback after it
    kw = dict(
        preset=cfg.preset,
        ks=ks,
        epsilons=epsilons,
        sim_n=cfg.sim_n,
        dtype=cfg.dtype,
        device=cfg.device,
        progress=cfg.progress,
    )
    if cfg.runs:
        if cfg.base or cfg.tuned or cfg.manifest:
            raise UserError("give either runs=<glob>, manifest=<file> or base=... tuned=..., not two of them")
        parts = analyze_runs(str(cfg.runs), out, steps=bool(cfg.steps), cache=None, plan_cfg=cfg, **kw)
        print(summary(pd.read_parquet(out / "intruders.parquet")))
        print(f"wrote {out}/intruders.parquet ({len(parts)} checkpoints)")
        return parts
    if cfg.manifest or isinstance(cfg.tuned, (list, ListConfig)):
        if cfg.manifest and (cfg.base or cfg.tuned):
            raise UserError("give either manifest=<file> or base=... tuned=[...], not both")
        if cfg.manifest:
            groups = read_manifest(manifest_path(str(cfg.manifest)))
            if cfg.meta.model or cfg.meta.task:
                groups = [_with_columns(g, cfg.meta.model, cfg.meta.task) for g in groups]
        else:
            if not cfg.base:
                raise UserError("tuned=[...] needs base=<model dir or Hub id>")
            if cfg.label:
                raise UserError("label= names one fine-tune; with tuned=[...] use a manifest to label each")
            data = {
                "base": str(cfg.base),
                "base_revision": cfg.base_revision,
                "fine_tunes": [str(t) for t in cfg.tuned],
            }
            groups = groups_from(data, "tuned=[...]", model=cfg.meta.model, task=cfg.meta.task)
        parts = analyze_groups(groups, out, cfg=cfg, **kw)
        print(summary(pd.read_parquet(out / "intruders.parquet")))
        print(f"wrote {out}/intruders.parquet ({len(parts)} fine-tunes)")
        return parts
    if not cfg.base or not cfg.tuned:
        raise UserError(
            "pass base=<model dir or Hub id> and tuned=<fine-tune or adapter dir> (or tuned=[a,b,...]), "
            "manifest=<file>, or runs='<glob>'"
        )
    base_src, tuned_src = open_pair(
        str(cfg.base), str(cfg.tuned), base_revision=cfg.base_revision, tuned_revision=cfg.tuned_revision
    )
    pair_matrices(base_src, tuned_src, cfg.preset)  # a mismatch is refused before the plan is printed
    plan = make_plan(cfg, base_src, 1, one_pass=False, ks=ks, epsilons=epsilons, where=out)
    meta = {"run": str(cfg.label or cfg.tuned), "model": cfg.meta.model, "task": cfg.meta.task}
    result = analyze_pair(base_src, tuned_src, cache=make_cache(cfg, plan.cache_policy), run_meta=meta, **kw)
    result.config["cli"] = OmegaConf.to_container(cfg, resolve=True)
    write_analysis(result, out)
    print(summary(result.intruders))
    print(f"wrote {out}/intruders.parquet")
    return result


def manifest_path(spec: str) -> Path:
    """A manifest file: an existing path, else ``<conf>/manifests/<spec>[.yaml]`` (shipped presets, e.g.
    ``manifest=fig5_llama``)."""
    p = Path(spec).expanduser()
    if p.exists():
        return p
    for cand in (Path(CONFIG_DIR) / "manifests" / spec, Path(CONFIG_DIR) / "manifests" / f"{spec}.yaml"):
        if cand.is_file():
            return cand
    shipped = sorted(q.stem for q in (Path(CONFIG_DIR) / "manifests").glob("*.yaml"))
    raise UserError(
        f"manifest={spec} is neither a file nor a shipped manifest ({', '.join(shipped) or 'none'})"
    )


def _with_columns(group: Group, model: str | None, task: str | None) -> Group:
    fts = []
    for ft in group.fine_tunes:
        meta = dict(ft.meta)
        if model is not None:
            meta.setdefault("model", model)
        if task is not None:
            meta.setdefault("task", task)
        fts.append(FineTune(ft.spec, ft.revision, ft.label, meta))
    return Group(group.base, group.base_revision, tuple(fts))


@user_errors_exit
def _main_body(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    """Console entry: ``ks=10`` is rewritten to ``ks=[10]`` before Hydra parses the command line."""
    sys.argv[1:] = listify_scalar_grid(sys.argv[1:])
    hydra.main(config_path=CONFIG_DIR, config_name="analyze", version_base="1.3")(_main_body)()


if __name__ == "__main__":
    main()
