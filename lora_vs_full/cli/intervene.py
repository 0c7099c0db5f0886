"""``lvf-intervene``: scale each matrix's intruder dimensions by lambda; accuracy and forgetting per lambda.

Paper v3 section 5 / Table 3 (definitions in ``lora_vs_full/forgetting/intervention.py``)::

    lvf-intervene run=<lvf-train run dir> text_file=<file> [fit_text_file=<file>] out=<dir>
    lvf-intervene run=<dir> 'lambdas=[0,0.5,1]' mode=all control_kind=neighbour out=<dir>

For every lambda (default the paper's grid 0.1, 0.3, 0.5, 0.7, 0.9 and 1 = the reference) and condition
(``intruder``; ``control`` = a size-matched non-intruder direction of W_t by default) it measures each eval
example's correctness and each text's pseudo-loss, so every row's change vs lambda = 1 is PAIRED (same
examples, same texts) and carries a 95 % bootstrap interval and a ``*_distinct`` flag (interval excludes 0).
LoRA runs get one more row, ``peft_reduce``: PEFT's ``reduce_intruder_dimension`` at its defaults (k = 10,
epsilon = 0.5, lambda = 0.75, all intruders).

Every measurement is a part file ``<out>/parts/<condition>__lam<lambda>.json`` holding the per-text and
per-example numbers and what they depend on (the run's final.json sha256, the scorer settings, the eval and
plan settings); a rerun only measures the parts that are missing or stale, then rebuilds
``<out>/intervention.{parquet,csv}``, ``intervention.md`` and ``provenance.json``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from lora_vs_full import provenance
from lora_vs_full.cli._common import CONFIG_DIR, user_errors_exit
from lora_vs_full.errors import UserError
from lora_vs_full.forgetting.config import register_configs, validate_intervene
from lora_vs_full.forgetting.intervention import WeightPatcher, check_lambdas, paired_row, plan_model
from lora_vs_full.forgetting.scorer import build_scorer
from lora_vs_full.lifecycle import cfg_out, json_part, locked_by
from lora_vs_full.records import RUN_COLUMNS
from lora_vs_full.storage import atomic_write_json, atomic_write_text, check_writable, write_table

log = logging.getLogger("lvf-intervene")
register_configs()

STAT_COLUMNS = (
    "accuracy", "accuracy_low", "accuracy_high", "n_examples", "pseudo_loss", "forgetting", "forgetting_low",
    "forgetting_high", "n_texts", "delta_accuracy", "delta_accuracy_low", "delta_accuracy_high",
    "accuracy_change_pct", "accuracy_change_pct_low", "accuracy_change_pct_high", "accuracy_distinct",
    "delta_forgetting", "delta_forgetting_low", "delta_forgetting_high", "forgetting_change_pct",
    "forgetting_change_pct_low", "forgetting_change_pct_high", "forgetting_distinct",
)  # fmt: skip
COLUMNS = (
    RUN_COLUMNS
    + ("condition", "control_kind", "mode", "k", "epsilon", "lambda", "n_matrices", "n_scaled")
    + ("sigma_scaled", "base_pseudo_loss")
    + STAT_COLUMNS
    + ("head",)
)


def _matrices(model, preset: str) -> dict[str, object]:
    """``{canonical matrix name: nn.Parameter}`` of a HF model (prefix-independent, see models/targets.py)."""
    from lora_vs_full.models.targets import family, select_matrices

    params = dict(model.named_parameters())
    found = select_matrices(params, family(model.config.model_type), preset)
    return {mid.name: params[key] for mid, key in found.items()}


def _eval_setup(cfg, run_dir: Path, final: dict):
    """The run's task eval set and evaluation settings (run config.yaml, overridable under ``eval``)."""
    from lora_vs_full.data import load_task

    run_cfg = (
        OmegaConf.load(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else OmegaConf.create()
    )
    data_dir = (
        cfg.eval.data_dir if cfg.eval.data_dir is not None else OmegaConf.select(run_cfg, "task.data_dir")
    )
    max_samples = cfg.eval.max_samples
    if max_samples is None:
        max_samples = OmegaConf.select(run_cfg, "task.max_eval_samples")
    max_length = cfg.eval.max_length or OmegaConf.select(run_cfg, "optim.max_length", default=128)
    seed = int(final.get("seed") or 42)
    from lora_vs_full.data import run_data_kwargs  # the run's own data source, commit and substitutes

    source = {**run_data_kwargs(run_cfg, final), "data_dir": data_dir}
    ds = load_task(final["task"], "eval", max_samples=max_samples, seed=seed, **source)
    settings = {
        "task": final["task"],
        "max_samples": max_samples,
        "max_length": int(max_length),
        "seed": seed,
    }
    return ds, int(max_length), settings


class _Parts:
    """``<out>/parts/<key>.json``: reused when the stored ``source`` equals the current one, else measured."""

    def __init__(self, out: Path, source: dict):
        self.dir, self.source = out / "parts", source

    def get(self, key: str, measure, extra: dict | None = None) -> dict:
        def compute() -> dict:
            log.info("measuring %s", key)
            return {"result": measure()}

        source = self.source | (extra or {})
        return json_part(self.dir / f"{key}.json", source, compute, log=log.info, name=key)["result"]


@locked_by(cfg_out, "intervention output")  # one writer per out directory (its parts and tables)
def intervene(cfg) -> pd.DataFrame:
    from lora_vs_full.forgetting.accuracy import correct_per_example
    from lora_vs_full.forgetting.scorer import load_encoder
    from lora_vs_full.runs import load_run_model, read_final

    if cfg.run is None or cfg.out is None:
        raise UserError("run=<lvf-train run dir> and out=<dir> are required")
    validate_intervene(cfg)
    lambdas = check_lambdas(list(cfg.lambdas))
    if 1.0 not in lambdas:
        lambdas.append(1.0)  # the reference every row is paired with
    ctl_lambdas = check_lambdas(list(cfg.control_lambdas)) if cfg.control_lambdas is not None else lambdas
    run_dir, out = Path(cfg.run), check_writable(Path(cfg.out))  # unwritable out: one line before any work
    final = read_final(run_dir)
    scorer, base_encoder = build_scorer(
        str(final["base_model"]),
        revision=final.get("base_revision"),
        corpus=cfg.corpus,
        fit_corpus=cfg.fit_corpus,
        scoring=cfg.scoring,
        probe=cfg.probe,
        cache_dir=Path(cfg.paths.cache_dir),
        device=cfg.device,
        progress=cfg.progress,
    )
    device = scorer.device
    base_parts = _Parts(out, {"base": scorer.base, **scorer.settings})
    base_pt = base_parts.get("base", lambda e=base_encoder: {"per_text": scorer(e)["per_text"]})["per_text"]
    base_pl = sum(base_pt) / len(base_pt)
    model, tokenizer, _ = load_run_model(run_dir, merged=True, device=device)
    ds, max_length, eval_settings = _eval_setup(cfg, run_dir, final)
    final_sha = hashlib.sha256((run_dir / "final.json").read_bytes()).hexdigest()
    parts = _Parts(out, {"final_sha256": final_sha, "eval": eval_settings, **scorer.settings})

    def measure(m=model) -> dict:
        correct = correct_per_example(
            m, tokenizer, ds, batch_size=int(cfg.eval.batch_size), max_length=max_length, device=device
        )
        return {"correct": correct.tolist(), "per_text": scorer(m)["per_text"]}

    base_W = {name: p.detach() for name, p in _matrices(load_encoder(scorer.base), cfg.preset).items()}
    del base_encoder
    tuned = _matrices(model, cfg.preset)
    plans = plan_model(
        base_W,
        {n: p.detach() for n, p in tuned.items()},
        k=int(cfg.k),
        epsilon=float(cfg.epsilon),
        mode=cfg.mode,
        control=cfg.control_kind,
        device=device,
    )
    log.info(
        "%d of %d matrices have an intruder at k=%s, epsilon=%s", len(plans), len(tuned), cfg.k, cfg.epsilon
    )
    plan_key = {"k": int(cfg.k), "epsilon": float(cfg.epsilon), "mode": cfg.mode, "preset": cfg.preset}
    patcher = WeightPatcher(tuned, plans)
    reference = parts.get("reference__lam1", measure)
    conditions = ("intruder", "control") if cfg.control else ("intruder",)
    measured: dict[tuple[str, float], dict] = {}
    try:
        for cond in conditions:
            extra = plan_key | ({"control_kind": cfg.control_kind} if cond == "control" else {})
            grid = lambdas if cond == "intruder" or cfg.control_lambdas is None else ctl_lambdas
            for lam in grid:
                if lam == 1.0 or not plans:  # nothing scaled: the reference itself
                    measured[cond, lam] = reference
                    continue

                def run(cond=cond, lam=lam):
                    patcher.apply(lam, cond)
                    try:
                        return measure()
                    finally:
                        patcher.restore()

                measured[cond, lam] = parts.get(f"{cond}__lam{lam:g}", run, extra | {"lambda": lam})
    finally:
        patcher.restore()
    common = {c: final.get(c) for c in RUN_COLUMNS} | {"run": final.get("run_id"), "step": final.get("steps")}
    scaled = {
        "intruder": (sum(len(p.intruders) for p in plans.values()), sum(sum(p.intruder_sigma) for p in plans.values())),
        "control": (sum(len(p.neighbours) for p in plans.values()), sum(sum(p.control_sigma) for p in plans.values())),
    }  # fmt: skip
    head = scorer.head_info["head"]
    rows = []
    for (cond, lam), res in measured.items():
        rows.append(
            common
            | {
                "condition": cond,
                "control_kind": cfg.control_kind if cond == "control" else None,
                "mode": cfg.mode,
                "k": int(cfg.k),
                "epsilon": float(cfg.epsilon),
                "lambda": lam,
                "n_matrices": len(plans),
                "n_scaled": scaled[cond][0],
                "sigma_scaled": scaled[cond][1],
                "base_pseudo_loss": base_pl,
                "head": head,
            }
            | paired_row(res, reference, base_pt)
        )
    if cfg.peft_compare and final.get("method") == "lora":
        peft = parts.get("peft_reduce", lambda: _peft_measure(run_dir, measure, device))
        rows.append(
            common
            | {"condition": "peft_reduce", "mode": "all", "k": 10, "epsilon": 0.5, "lambda": 0.75}
            | {"base_pseudo_loss": base_pl, "head": head}
            | paired_row(peft, reference, base_pt)
        )
    df = pd.DataFrame(rows, columns=list(COLUMNS)).sort_values(["condition", "lambda"], kind="stable")
    atomic_write_json(
        out / "provenance.json", provenance.collect(config=OmegaConf.to_container(cfg, resolve=True))
    )
    write_table(df, out / "intervention")
    atomic_write_text(out / "intervention.md", _markdown(df))
    return df


def _peft_measure(run_dir, measure, device) -> dict:
    """PEFT's own mitigation (defaults) on the unmerged adapter, then merged and measured like the sweep."""
    from lora_vs_full.forgetting.intervention import peft_reduce_keeping_heads
    from lora_vs_full.runs import load_run_model

    peft_model, _, _ = load_run_model(run_dir, merged=False, device=device)
    peft_reduce_keeping_heads(peft_model)
    return measure(peft_model.merge_and_unload())


def _ci(r, key: str, spec: str) -> str:
    return f"{r[key]:{spec}} [{r[key + '_low']:{spec}}, {r[key + '_high']:{spec}}]"


def _markdown(df: pd.DataFrame) -> str:
    """A Table-3-style Markdown table: one line per (condition, lambda), changes vs lambda = 1 with 95 % CIs."""
    head = "| condition | lambda | accuracy | Δ acc % [95 % CI] | forgetting [95 % CI] | Δ forgetting % [95 % CI] |"
    head += " distinguishable (acc / forgetting) |\n|---|---:|---:|---:|---:|---:|---|\n"
    lines = [
        f"| {r['condition']} | {r['lambda']:g} | {r['accuracy']:.4f} | {_ci(r, 'accuracy_change_pct', '+.1f')} | "
        f"{_ci(r, 'forgetting', '+.4f')} | {_ci(r, 'forgetting_change_pct', '+.1f')} | "
        f"{'yes' if r['accuracy_distinct'] else 'no'} / {'yes' if r['forgetting_distinct'] else 'no'} |"
        for r in df.to_dict("records")
    ]
    run = df["run"].iloc[0] if len(df) else ""
    return f"# Intruder scaling intervention: {run}\n\n" + head + "\n".join(lines) + "\n"


@hydra.main(config_path=CONFIG_DIR, config_name="intervene", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    df = intervene(cfg)
    print(_markdown(df))
    print(f"wrote {Path(cfg.out) / 'intervention.parquet'} (+ .csv, .md)")


if __name__ == "__main__":
    main()
