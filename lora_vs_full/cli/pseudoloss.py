"""``lvf-pseudoloss``: masked-LM pseudo-loss of fine-tunes and their bases (PAPER.md section 6, v1 Fig. 9).

Two modes (config: ``conf/pseudoloss.yaml`` + ``conf/forgetting/default.yaml``):

* runs: ``lvf-pseudoloss runs='<glob>' text_file=<file> out=<dir>`` -- every complete lvf-train run
  (LoRA merged), plus one reference row per base (the untouched pretrained encoder, ``method = "base"``);
* model: ``lvf-pseudoloss tuned=<dir|id> [base=<dir|id>] out=<dir>`` -- one model scored as it is (the key
  is ``tuned``, as in lvf-analyze: ``model=`` would select Hydra's model config group).

Every row is also a part file ``<out>/parts/<name>.json`` holding the row and what it depends on (final.json
sha256, corpus digest, max_length, head); a rerun recomputes only the parts that are missing or changed, then
rebuilds ``<out>/pseudoloss.{parquet,csv}``: RUN_COLUMNS + base, pseudo_loss, forgetting (= pseudo_loss -
base's pseudo_loss), n_tokens, n_texts, eval_accuracy, head ("pretrained" | "probe"), corpus_digest.
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
from lora_vs_full.forgetting.scorer import Scorer, build_scorer, load_encoder
from lora_vs_full.records import RUN_COLUMNS, file_safe
from lora_vs_full.storage import atomic_write_json, read_json, write_table

log = logging.getLogger("lvf-pseudoloss")

COLUMNS = RUN_COLUMNS + (
    "base",
    "pseudo_loss",
    "forgetting",
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


def _score_part(part: Path, source: dict, scorer: Scorer, load, row: dict) -> dict:
    """The part's row: reused when its stored source equals ``source``, else computed and written."""
    if part.is_file():
        stored = read_json(part)
        if stored.get("source") == source:
            log.info("up to date, skipping: %s", part.stem)
            return stored["row"]
    log.info("scoring %s", row["run"])
    result = scorer(load())
    row = row | {"pseudo_loss": result["mean"], "n_tokens": result["n_tokens"], "n_texts": result["n_texts"]}
    atomic_write_json(part, {"source": source, "row": row, "per_text": result["per_text"]})
    return row


def score(cfg) -> pd.DataFrame:
    if cfg.out is None:
        raise UserError("out=<dir> is required: where pseudoloss.parquet/.csv go")
    out = Path(cfg.out)
    targets = _targets(cfg)
    bases = {(t["base"], t["base_revision"]) for t in targets} or {(str(cfg.tuned), cfg.base_revision)}
    rows = []
    for base, revision in sorted(bases, key=str):
        scorer, base_encoder = build_scorer(
            base,
            revision=revision,
            corpus=cfg.corpus,
            scoring=cfg.scoring,
            probe=cfg.probe,
            cache_dir=Path(cfg.paths.cache_dir),
            device=cfg.device,
            progress=cfg.progress,
        )
        head = scorer.head_info["head"]
        common = {"base": base, "head": head, "corpus_digest": scorer.corpus_digest}
        ref_meta = {c: None for c in RUN_COLUMNS} | {"run": f"base:{base}", "model": base, "method": "base"}
        ref = _score_part(
            out / "parts" / f"base__{file_safe(base)}.json",
            {"base": base, "revision": revision, **scorer.settings},
            scorer,
            lambda e=base_encoder: e,
            ref_meta | common | {"eval_accuracy": None},
        )
        ref["forgetting"] = 0.0
        rows.append(ref)
        for t in (t for t in targets if (t["base"], t["base_revision"]) == (base, revision)):
            row = _score_part(
                out / "parts" / f"{t['name']}.json",
                {**t["source"], "base": base, **scorer.settings},
                scorer,
                t["load"],
                t["meta"] | common | {"eval_accuracy": t["eval_accuracy"]},
            )
            row["forgetting"] = row["pseudo_loss"] - ref["pseudo_loss"]
            rows.append(row)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    atomic_write_json(
        out / "provenance.json", provenance.collect(config=OmegaConf.to_container(cfg, resolve=True))
    )
    write_table(df, out / "pseudoloss")
    return df


@hydra.main(config_path=CONFIG_DIR, config_name="pseudoloss", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    df = score(cfg)
    cols = ["run", "method", "rank", "pseudo_loss", "forgetting", "eval_accuracy", "head"]
    print(df[cols].to_string(index=False))
    print(f"wrote {Path(cfg.out) / 'pseudoloss.parquet'} (+ .csv)")


if __name__ == "__main__":
    main()
