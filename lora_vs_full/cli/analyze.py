"""``lvf-analyze``: compare fine-tuned weights with their base (intruder dimensions, spectra, ranks).

Two modes (config: ``conf/analyze.yaml``):

* pair: ``lvf-analyze base=<dir|id> tuned=<dir|id|adapter|run dir> out=<dir>``
* runs: ``lvf-analyze runs='<glob>' out=<dir> [steps=true]`` -- every complete lvf-train run dir; results
  of all runs go into ONE table at ``<out>/``, per-checkpoint parts live in ``<out>/parts/<name>/`` with a
  ``source.json`` (final.json sha256 + analysis config), so a rerun analyses only new or changed runs and
  then rebuilds the combined table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf

from lora_vs_full import provenance
from lora_vs_full.analysis import AnalysisResult, analyze_pair, write_analysis
from lora_vs_full.cli._common import CONFIG_DIR, user_errors_exit
from lora_vs_full.errors import UserError
from lora_vs_full.records import HEADLINE_EPSILON, HEADLINE_K, SPECTRA_DIR
from lora_vs_full.spectral import DEFAULT_EPSILONS, DEFAULT_KS, SVDCache, validate_grid
from lora_vs_full.storage import atomic_write_json, read_json, write_table
from lora_vs_full.weights import find_runs, open_pair

log = logging.getLogger("lvf-analyze")


def _as_list(value, default) -> list:
    if value is None:
        return list(default)
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    return [value]  # `ks=10` on the command line means [10]


def _remove_tables(out: Path) -> None:
    for stem in ("intruders", "matrices"):
        for ext in (".parquet", ".csv"):
            (out / f"{stem}{ext}").unlink(missing_ok=True)


def analyze_runs(pattern: str, out: Path, *, steps: bool, cache: SVDCache | None, **kw) -> list[Path]:
    """Runs mode (see module docstring); returns the part directories that make up the combined table."""
    checkpoints = find_runs(pattern, steps=steps)
    if not checkpoints:
        raise UserError(f"runs={pattern!r} matches no complete run (none has final.json); nothing to analyse")
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items() if k != "progress"}
    # The combined table goes first, so a failure part-way never leaves one that looks current.
    _remove_tables(out)
    parts = []
    for rc in checkpoints:
        part = out / "parts" / rc.part_name
        source = {"final_sha256": rc.final_sha256, "checkpoint": rc.checkpoint.name, "analysis": config}
        if (part / "intruders.parquet").is_file() and (part / "source.json").is_file():
            if read_json(part / "source.json") == source:
                log.info("up to date, skipping: %s", rc.part_name)
                parts.append(part)
                continue
        log.info("analysing %s (%s)", rc.part_name, rc.checkpoint)
        (part / "source.json").unlink(missing_ok=True)
        base_src, tuned_src = open_pair(rc.base, rc.checkpoint, base_revision=rc.base_revision)
        result = analyze_pair(base_src, tuned_src, cache=cache, run_meta=rc.meta, name=rc.part_name, **kw)
        write_analysis(result, part, spectra_dir=out / SPECTRA_DIR)
        atomic_write_json(part / "source.json", source)
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


def run(cfg: DictConfig) -> AnalysisResult | list[Path]:
    """The command body, callable without Hydra (tests compose the config and call this)."""
    ks, epsilons = validate_grid(_as_list(cfg.ks, DEFAULT_KS), _as_list(cfg.epsilons, DEFAULT_EPSILONS))
    if not cfg.out:
        raise UserError("out is required: lvf-analyze ... out=<directory for the tables>")
    out = Path(str(cfg.out))
    cache = SVDCache(Path(cfg.paths.cache_dir) / "svd") if cfg.cache else None
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
        if cfg.base or cfg.tuned:
            raise UserError("give either runs=<glob> or base=... tuned=..., not both")
        parts = analyze_runs(str(cfg.runs), out, steps=bool(cfg.steps), cache=cache, **kw)
        print(summary(pd.read_parquet(out / "intruders.parquet")))
        print(f"wrote {out}/intruders.parquet ({len(parts)} checkpoints)")
        return parts
    if not cfg.base or not cfg.tuned:
        raise UserError(
            "pass base=<model dir or Hub id> and tuned=<fine-tune or adapter dir>, or runs='<glob>'"
        )
    base_src, tuned_src = open_pair(
        str(cfg.base), str(cfg.tuned), base_revision=cfg.base_revision, tuned_revision=cfg.tuned_revision
    )
    meta = {"run": str(cfg.label or cfg.tuned)}
    result = analyze_pair(base_src, tuned_src, cache=cache, run_meta=meta, **kw)
    result.config["cli"] = OmegaConf.to_container(cfg, resolve=True)
    write_analysis(result, out)
    print(summary(result.intruders))
    print(f"wrote {out}/intruders.parquet")
    return result


@hydra.main(config_path=CONFIG_DIR, config_name="analyze", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
