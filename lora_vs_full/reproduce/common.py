"""What every reproduction shares: how a preset is read, how a list of runs is trained, where results go.

The directory layout is lora_vs_full/layout.py (re-exported here).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lora_vs_full.errors import UserError
from lora_vs_full.layout import figures_dir, results_root, runs_dir, tables_dir, work_dir

__all__ = ["RESULTS", "figures_dir", "results_root", "runs_dir", "tables_dir", "work_dir"]
RESULTS = results_root()  # at import; the functions re-read $LVF_RESULTS


def preset_names() -> list[str]:
    """Every ``conf/reproduce/<figure>_<preset>.yaml`` (files starting with ``_`` are shared bases)."""
    from lora_vs_full.cli._common import CONFIG_DIR

    return sorted(
        p.stem for p in (Path(CONFIG_DIR) / "reproduce").glob("*.yaml") if not p.stem.startswith("_")
    )


def load_preset(name: str, overrides: list[str] | tuple[str, ...] = (), schema: Any = None) -> DictConfig:
    """Compose ``conf/reproduce/<name>.yaml`` (Hydra defaults = deltas on a shared base).

    Preset files start with ``# @package _global_`` so overrides read ``ranks=[1,8]``. With ``schema`` (a dataclass), the preset is merged onto it, so an unknown key or a wrong type is a
    UserError naming the key, as for ``lvf-train``'s typed configs.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lora_vs_full.cli._common import CONFIG_DIR

    if name not in preset_names():
        raise UserError(f"unknown reproduction preset {name!r}: use one of {', '.join(preset_names())}")
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name=f"reproduce/{name}", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(f"preset {name}: {str(exc).splitlines()[0]}") from None
    if schema is not None:
        try:
            cfg = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        except OmegaConfBaseException as exc:
            raise UserError(
                f"preset {name}: {str(exc).splitlines()[0]} (see conf/reproduce/{name}.yaml)"
            ) from None
    return cfg


def compose_command(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose a command's config (``analyze``, ``pseudoloss``, ...) as its CLI would, for in-process calls."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lora_vs_full.cli._common import CONFIG_DIR

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def require_gpu(preset: str, what: str) -> None:
    """Paper-scale presets refuse a CPU-only machine (days of compute) unless LVF_ALLOW_CPU=1."""
    import torch

    if not torch.cuda.is_available() and not os.environ.get("LVF_ALLOW_CPU"):
        raise UserError(
            f"PRESET={preset} {what} targets a GPU and none is visible; use PRESET=offline here "
            "(or set LVF_ALLOW_CPU=1 to run it on the CPU anyway)"
        )


def train_runs(sweep: list[list[str]], log=print) -> list[Path]:
    """Train each override list in-process (``lvf-train <overrides>``), idempotently.

    A failing run does not stop the others: every failure is collected, and a UserError listing them is
    raised at the end, after the runs that could finish have finished. Returns the completed run dirs.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lora_vs_full.config import compose_train
    from lora_vs_full.runs import execute, run_dir_for

    done, failed = [], []
    for overrides in sweep:
        shown = " ".join(overrides)
        try:
            cfg = compose_train(overrides)
            log(f"$ lvf-train {shown}")
            execute(cfg, log=log, progress=False)
            done.append(run_dir_for(cfg))
        except (UserError, HydraException, OmegaConfBaseException) as exc:
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            log(f"error: {msg}")
            failed.append(f"[{shown}]: {msg}")
    if failed:
        raise UserError(
            f"{len(failed)} of {len(sweep)} runs failed ({len(done)} completed): " + " | ".join(failed)
        )
    return done


def to_overrides(mapping: dict | DictConfig | None) -> list[str]:
    """``{"task.max_train_samples": 2000}`` -> ``["task.max_train_samples=2000"]`` (None -> [])."""
    if not mapping:
        return []
    items = OmegaConf.to_container(mapping, resolve=True) if isinstance(mapping, DictConfig) else mapping
    return [f"{k}={_fmt(v)}" for k, v in items.items()]


def _fmt(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)


def write_provenance(dest: Path, **extra) -> Path:
    """``provenance.json`` beside committed tables: git state, versions, device, and what made them."""
    from lora_vs_full import provenance
    from lora_vs_full.storage import atomic_write_json

    dest.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(dest / "provenance.json", provenance.collect(**extra))
