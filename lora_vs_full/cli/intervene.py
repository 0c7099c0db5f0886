"""``lvf-intervene``: scale each matrix's intruder dimensions by lambda; accuracy and forgetting per lambda.

Paper v3 section 5 / Table 3 (definitions in ``lora_vs_full/forgetting/intervention.py``)::

    lvf-intervene run=<lvf-train run dir> 'lambdas=[0,0.25,0.5,0.7,0.9,1,1.5,2]' [mode=top1|all] out=<dir>

For every lambda and condition (``intruder``; ``control`` = the intruder's pretrained neighbour) it measures
the run's task accuracy on its eval set and the pseudo-loss, with forgetting = pseudo_loss - pseudo_loss(base)
and % changes relative to lambda = 1. LoRA runs get one more row, ``peft_reduce``: PEFT's
``reduce_intruder_dimension`` at its defaults (k = 10, epsilon = 0.5, lambda = 0.75, all intruders).
Writes ``<out>/intervention.{parquet,csv}``, ``<out>/intervention.md`` and ``<out>/provenance.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from lora_vs_full import provenance
from lora_vs_full.cli._common import CONFIG_DIR, user_errors_exit
from lora_vs_full.errors import UserError
from lora_vs_full.forgetting.intervention import WeightPatcher, check_lambdas, pct_change, plan_model, sweep
from lora_vs_full.forgetting.scorer import build_scorer
from lora_vs_full.records import RUN_COLUMNS
from lora_vs_full.storage import atomic_write_json, atomic_write_text, write_table

log = logging.getLogger("lvf-intervene")

COLUMNS = RUN_COLUMNS + (
    "condition",
    "mode",
    "k",
    "epsilon",
    "lambda",
    "n_matrices",
    "n_scaled",
    "accuracy",
    "pseudo_loss",
    "base_pseudo_loss",
    "forgetting",
    "accuracy_change_pct",
    "forgetting_change_pct",
    "head",
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
    ds = load_task(final["task"], "eval", data_dir=data_dir, max_samples=max_samples, seed=seed)
    return ds, int(max_length)


def intervene(cfg) -> pd.DataFrame:
    from lora_vs_full.runs import load_run_model, read_final
    from lora_vs_full.training.loop import evaluate

    if cfg.run is None or cfg.out is None:
        raise UserError("run=<lvf-train run dir> and out=<dir> are required")
    if cfg.mode not in ("top1", "all"):
        raise UserError(f"mode={cfg.mode!r} is not supported; use mode=top1 or mode=all")
    lambdas = check_lambdas(list(cfg.lambdas))
    run_dir, out = Path(cfg.run), Path(cfg.out)
    final = read_final(run_dir)
    scorer, base_encoder = build_scorer(
        str(final["base_model"]),
        revision=final.get("base_revision"),
        corpus=cfg.corpus,
        scoring=cfg.scoring,
        probe=cfg.probe,
        cache_dir=Path(cfg.paths.cache_dir),
        device=cfg.device,
        progress=cfg.progress,
    )
    device = scorer.device
    base_pl = scorer(base_encoder)["mean"]
    del base_encoder
    model, tokenizer, _ = load_run_model(run_dir, merged=True, device=device)
    ds, max_length = _eval_setup(cfg, run_dir, final)

    def measure(m=model) -> dict:
        acc = evaluate(
            m, tokenizer, ds, batch_size=int(cfg.eval.batch_size), max_length=max_length, device=device
        )
        return {"accuracy": acc["accuracy"], "pseudo_loss": scorer(m)["mean"]}

    from lora_vs_full.forgetting.scorer import load_encoder

    base_W = {name: p.detach() for name, p in _matrices(load_encoder(scorer.base), cfg.preset).items()}
    tuned = _matrices(model, cfg.preset)
    plans = plan_model(
        base_W,
        {n: p.detach() for n, p in tuned.items()},
        k=int(cfg.k),
        epsilon=float(cfg.epsilon),
        mode=cfg.mode,
        device=device,
    )
    log.info(
        "%d of %d matrices have an intruder at k=%s, epsilon=%s", len(plans), len(tuned), cfg.k, cfg.epsilon
    )
    conditions = ("intruder", "control") if cfg.control else ("intruder",)
    rows = sweep(
        WeightPatcher(tuned, plans), lambdas, measure, base_pseudo_loss=base_pl, conditions=conditions
    )
    common = {c: final.get(c) for c in RUN_COLUMNS} | {"run": final.get("run_id"), "step": final.get("steps")}
    n_scaled = {
        "intruder": sum(len(p.intruders) for p in plans.values()),
        "control": sum(len(p.neighbours) for p in plans.values()),
    }
    for r in rows:
        r.update(
            common,
            mode=cfg.mode,
            k=int(cfg.k),
            epsilon=float(cfg.epsilon),
            n_matrices=len(plans),
            n_scaled=n_scaled[r["condition"]],
            base_pseudo_loss=base_pl,
            head=scorer.head_info["head"],
        )
    if cfg.peft_compare and final.get("method") == "lora":
        rows.append(_peft_row(run_dir, measure, rows, common, base_pl, scorer.head_info["head"], device))
    df = pd.DataFrame(rows, columns=list(COLUMNS)).sort_values(["condition", "lambda"], kind="stable")
    atomic_write_json(
        out / "provenance.json", provenance.collect(config=OmegaConf.to_container(cfg, resolve=True))
    )
    write_table(df, out / "intervention")
    atomic_write_text(out / "intervention.md", _markdown(df))
    return df


def _peft_row(run_dir, measure, rows, common, base_pl, head, device) -> dict:
    """PEFT's own mitigation (defaults) on the unmerged adapter, then merged and measured like the sweep."""
    from lora_vs_full.forgetting.intervention import peft_reduce_keeping_heads
    from lora_vs_full.runs import load_run_model

    peft_model, _, _ = load_run_model(run_dir, merged=False, device=device)
    peft_reduce_keeping_heads(peft_model)
    merged = peft_model.merge_and_unload()
    r = measure(merged)
    ref = next(x for x in rows if x["lambda"] == 1.0)
    forgetting = r["pseudo_loss"] - base_pl
    return common | {
        "condition": "peft_reduce",
        "mode": "all",
        "k": 10,
        "epsilon": 0.5,
        "lambda": 0.75,
        "n_matrices": None,
        "n_scaled": None,
        "accuracy": r["accuracy"],
        "pseudo_loss": r["pseudo_loss"],
        "base_pseudo_loss": base_pl,
        "forgetting": forgetting,
        "accuracy_change_pct": pct_change(r["accuracy"], ref["accuracy"]),
        "forgetting_change_pct": pct_change(forgetting, ref["forgetting"]),
        "head": head,
    }


def _markdown(df: pd.DataFrame) -> str:
    """A Table-3-style Markdown table: one line per (condition, lambda)."""
    head = "| condition | lambda | accuracy | Δ acc % | pseudo-loss | forgetting | Δ forgetting % |\n"
    head += "|---|---:|---:|---:|---:|---:|---:|\n"
    lines = [
        f"| {r['condition']} | {r['lambda']:g} | {r['accuracy']:.4f} | {r['accuracy_change_pct']:+.1f} | "
        f"{r['pseudo_loss']:.4f} | {r['forgetting']:+.4f} | {r['forgetting_change_pct']:+.1f} |"
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
