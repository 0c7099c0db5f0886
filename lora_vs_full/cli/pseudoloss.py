"""``lvf-pseudoloss``: masked-LM pseudo-loss of fine-tunes and their bases (PAPER.md section 6, v1 Fig. 9).

Two modes (config: ``conf/pseudoloss.yaml`` + ``conf/forgetting/default.yaml``):

* runs: ``lvf-pseudoloss runs='<glob>' text_file=<file> out=<dir>`` -- every complete lvf-train run
  (LoRA merged), plus one reference row per base (the untouched pretrained encoder, ``method = "base"``);
* model: ``lvf-pseudoloss tuned=<dir|id> [base=<dir|id>] out=<dir>`` -- one model scored as it is (the key
  is ``tuned``, as in lvf-analyze: ``model=`` would select Hydra's model config group).

Every row is also a part file ``<out>/parts/<name>.json`` holding the row, each text's pseudo-loss and what
it depends on (final.json sha256, corpus digest, max_length, head); a rerun recomputes only the parts that are
missing or changed, then rebuilds ``<out>/pseudoloss.{parquet,csv}``: RUN_COLUMNS + base, pseudo_loss (mean
over texts of each text's mean), pseudo_loss_tokens (token-weighted mean), forgetting (= mean over texts of
pseudo-loss - base's on the SAME text: a paired difference) with forgetting_low/high (95 % bootstrap interval
over texts, ``lora_vs_full.stats``), n_tokens, n_texts, eval_accuracy, head ("pretrained" | "probe"),
corpus_digest; and ``<out>/pseudoloss_texts.{parquet,csv}``: run, text, pseudo_loss (one row per run x text).
A probe head (bases without an MLM head) is fitted on ``fit_corpus`` lines, never on a scored line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from lora_vs_full import provenance, stats
from lora_vs_full.cli._common import CONFIG_DIR, user_errors_exit
from lora_vs_full.errors import UserError
from lora_vs_full.forgetting.config import register_configs, validate_common
from lora_vs_full.forgetting.scorer import Scorer, build_scorer, load_encoder
from lora_vs_full.lifecycle import cfg_out, json_part, locked_by
from lora_vs_full.records import RUN_COLUMNS, file_safe
from lora_vs_full.storage import atomic_write_json, check_writable, read_json, write_table

log = logging.getLogger("lvf-pseudoloss")
register_configs()

COLUMNS = RUN_COLUMNS + (
    "base",
    "pseudo_loss",
    "pseudo_loss_tokens",
    "forgetting",
    "forgetting_low",
    "forgetting_high",
    "n_tokens",
    "n_texts",
    "eval_accuracy",
    "head",
    "corpus_digest",
)


def _targets(cfg) -> list[dict]:
    """What to score: ``{"name", "base", "base_revision", "meta", "source", "load"}`` per model."""
    if (cfg.runs is None) == (cfg.tuned is None):
        raise UserError("pass exactly one of runs='<glob of run dirs>' or tuned=<model dir or Hub id>")
    if cfg.tuned is not None:
        base = cfg.base or cfg.tuned
        meta = {c: None for c in RUN_COLUMNS} | {
            "run": str(cfg.tuned),
            "model": str(cfg.tuned),
            "method": "model",
        }
        if base == cfg.tuned:
            return []  # the model is its own base: its reference row is the only row
        return [
            dict(
                name=file_safe(str(cfg.tuned)),
                base=str(base),
                base_revision=cfg.base_revision,
                meta=meta,
                source={"model": str(cfg.tuned)},
                eval_accuracy=None,
                load=lambda: load_encoder(str(cfg.tuned)),
            )
        ]
    from lora_vs_full.runs import load_run_model
    from lora_vs_full.weights import find_runs

    found = find_runs(str(cfg.runs))
    if not found:
        raise UserError(f"runs={cfg.runs!r} matches no complete run (none has final.json); nothing to score")
    out = []
    for rc in found:
        final = read_json(rc.run_dir / "final.json")
        if cfg.base_revision is not None:  # a run's base is loaded at the commit it recorded, never another
            from lora_vs_full.provenance import check_recorded_revision

            check_recorded_revision(rc.base_revision, cfg.base_revision, f"run {rc.run_dir}")
        out.append(
            dict(
                name=rc.part_name,
                base=rc.base,
                base_revision=rc.base_revision,
                meta=rc.meta,
                source={"final_sha256": rc.final_sha256},
                eval_accuracy=final.get("eval_accuracy"),
                load=lambda d=rc.run_dir: load_run_model(d, merged=True)[0],
            )
        )
    return out


def _score_part(part: Path, source: dict, scorer: Scorer, load, row: dict) -> tuple[dict, list[float]]:
    """``(row, per-text pseudo-losses)``: reused when the part's stored source equals ``source``, else computed."""

    def compute() -> dict:
        log.info("scoring %s", row["run"])
        result = scorer(load())
        per_text = result["per_text"]
        scored = row | {
            "pseudo_loss": float(np.nanmean(per_text)),
            "pseudo_loss_tokens": result["mean"],
            "n_tokens": result["n_tokens"],
            "n_texts": result["n_texts"],
        }
        return {"row": scored, "per_text": per_text}

    stored = json_part(part, source, compute, log=log.info, name=part.stem)  # the shared part lifecycle
    return stored["row"], stored["per_text"]


def paired_forgetting(per_text: list[float], base_per_text: list[float]) -> stats.Estimate:
    """Mean over texts of (fine-tune - base) pseudo-loss on the same text, with its bootstrap interval."""
    a, b = np.asarray(per_text, dtype=np.float64), np.asarray(base_per_text, dtype=np.float64)
    if a.shape != b.shape:
        raise UserError(
            f"{a.size} vs {b.size} texts: the run and its base were not scored on the same sample"
        )
    ok = np.isfinite(a) & np.isfinite(b)
    return stats.paired_bootstrap(a[ok], b[ok])


@locked_by(cfg_out, "pseudo-loss output")  # one writer per out directory (its parts and tables)
def score(cfg) -> pd.DataFrame:
    if cfg.out is None:
        raise UserError("out=<dir> is required: where pseudoloss.parquet/.csv go")
    validate_common(cfg)
    out = check_writable(Path(cfg.out))  # an unwritable out is one line before any scoring
    targets = _targets(cfg)
    bases = {(t["base"], t["base_revision"]) for t in targets} or {(str(cfg.tuned), cfg.base_revision)}
    rows, texts = [], []
    for base, revision in sorted(bases, key=str):
        scorer, base_encoder = build_scorer(
            base,
            revision=revision,
            corpus=cfg.corpus,
            fit_corpus=cfg.fit_corpus,
            scoring=cfg.scoring,
            probe=cfg.probe,
            cache_dir=Path(cfg.paths.cache_dir),
            device=cfg.device,
            progress=cfg.progress,
        )
        head = scorer.head_info["head"]
        common = {"base": base, "head": head, "corpus_digest": scorer.corpus_digest}
        ref_meta = {c: None for c in RUN_COLUMNS} | {"run": f"base:{base}", "model": base, "method": "base"}
        ref, ref_pt = _score_part(
            out / "parts" / f"base__{file_safe(base)}.json",
            {"base": base, "revision": revision, **scorer.settings},
            scorer,
            lambda e=base_encoder: e,
            ref_meta | common | {"eval_accuracy": None},
        )
        ref |= {"forgetting": 0.0, "forgetting_low": 0.0, "forgetting_high": 0.0}
        rows.append(ref)
        texts += [{"run": ref["run"], "text": i, "pseudo_loss": v} for i, v in enumerate(ref_pt)]
        for t in (t for t in targets if (t["base"], t["base_revision"]) == (base, revision)):
            row, pt = _score_part(
                out / "parts" / f"{t['name']}.json",
                {**t["source"], "base": base, **scorer.settings},
                scorer,
                t["load"],
                t["meta"] | common | {"eval_accuracy": t["eval_accuracy"]},
            )
            est = paired_forgetting(pt, ref_pt)
            row |= {"forgetting": est.mean, "forgetting_low": est.low, "forgetting_high": est.high}
            rows.append(row)
            texts += [{"run": row["run"], "text": i, "pseudo_loss": v} for i, v in enumerate(pt)]
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    atomic_write_json(
        out / "provenance.json", provenance.collect(config=OmegaConf.to_container(cfg, resolve=True))
    )
    write_table(pd.DataFrame(texts, columns=["run", "text", "pseudo_loss"]), out / "pseudoloss_texts")
    write_table(df, out / "pseudoloss")
    return df


@hydra.main(config_path=CONFIG_DIR, config_name="pseudoloss", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    df = score(cfg)
    cols = ["run", "method", "rank", "pseudo_loss", "forgetting", "forgetting_low", "forgetting_high",
            "eval_accuracy", "head"]  # fmt: skip
    print(df[cols].to_string(index=False))
    print(f"wrote {Path(cfg.out) / 'pseudoloss.parquet'} (+ .csv)")


if __name__ == "__main__":
    main()
