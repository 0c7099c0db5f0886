"""Typed schemas for ``lvf-pseudoloss`` and ``lvf-intervene`` (Hydra structured configs) and their range checks.

As ``lora_vs_full/config.py`` does for ``lvf-train``: the dataclasses fix which keys exist and their types and
are registered in Hydra's ConfigStore (``pseudoloss_schema`` / ``intervene_schema``, first in the yaml files'
defaults), so ``k=ten`` or ``corpus.n_txts=5`` fails at compose time naming the key. Well-typed but impossible
values (epsilon outside (0, 1], k < 1, a negative lambda, fewer than one text) are :func:`validate`'d into a
one-line UserError before any model is loaded. The numbers live in the yaml files, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from lora_vs_full.errors import UserError

MODES = ("top1", "all")
CONTROLS = ("size_matched", "neighbour")


@dataclass
class CorpusConfig:
    text_file: str | None = None
    hub_id: str = "Salesforce/wikitext"
    hub_config: str | None = "wikitext-2-raw-v1"
    split: str = "test"
    n_texts: int = 200
    min_words: int = 8
    max_words: int = 200
    seed: int = 0
    detokenize: bool = True


@dataclass
class ScoringConfig:
    max_length: int = 128
    batch_size: int = 64


@dataclass
class ProbeConfig:
    enabled: bool = True
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    mask_prob: float = 0.15
    max_length: int = 128
    seed: int = 0


@dataclass
class _Forgetting:
    paths: Any = MISSING  # untyped: conf/paths/default.yaml is shared with the other tools
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    fit_corpus: CorpusConfig = field(default_factory=CorpusConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    text_file: str | None = None
    fit_text_file: str | None = None
    out: str | None = None
    device: str = "auto"
    progress: bool = True


@dataclass
class PseudolossConfig(_Forgetting):
    runs: str | None = None
    tuned: str | None = None
    base: str | None = None
    base_revision: str | None = None


@dataclass
class EvalConfig:
    max_samples: int | None = None
    batch_size: int = 64
    max_length: int | None = None
    data_dir: str | None = None


@dataclass
class IntervenConfig(_Forgetting):
    run: str | None = None
    lambdas: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    mode: str = "top1"
    k: int = 10
    epsilon: float = 0.5
    preset: str = "all_linear"
    control: bool = True
    control_kind: str = "size_matched"
    control_lambdas: list[float] | None = None  # None = the same grid as the intruder rows
    peft_compare: bool = True
    eval: EvalConfig = field(default_factory=EvalConfig)


def register_configs() -> None:
    """Register both schemas in Hydra's ConfigStore (idempotent; called at import of the entry points)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="pseudoloss_schema", node=PseudolossConfig)
    cs.store(name="intervene_schema", node=IntervenConfig)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def validate_common(cfg) -> None:
    for node in ("corpus", "fit_corpus"):
        c = cfg[node]
        _check(c.n_texts >= 1, f"{node}.n_texts={c.n_texts} must be >= 1")
        _check(
            1 <= c.min_words <= c.max_words,
            f"need 1 <= {node}.min_words <= {node}.max_words, got {c.min_words} and {c.max_words}",
        )
    s, p = cfg.scoring, cfg.probe
    _check(s.max_length >= 3, f"scoring.max_length={s.max_length} must be >= 3")
    _check(s.batch_size >= 1, f"scoring.batch_size={s.batch_size} must be >= 1")
    _check(p.steps >= 1 and p.batch_size >= 1, f"probe.steps={p.steps} and probe.batch_size must be >= 1")
    _check(p.lr > 0, f"probe.lr={p.lr} must be > 0")
    _check(0 < p.mask_prob < 1, f"probe.mask_prob={p.mask_prob} must be in (0, 1)")


def validate_intervene(cfg) -> None:
    """One-line UserError for the first impossible value of a composed lvf-intervene config."""
    validate_common(cfg)
    _check(cfg.mode in MODES, f"mode={cfg.mode!r} is not supported; use mode=top1 or mode=all")
    _check(cfg.k >= 1, f"k={cfg.k} must be >= 1 (intruders are searched among the top-k vectors)")
    _check(0 < cfg.epsilon <= 1, f"epsilon={cfg.epsilon} must be in (0, 1] (a |cos| threshold)")
    _check(
        cfg.control_kind in CONTROLS,
        f"control_kind={cfg.control_kind!r} unknown: use one of {', '.join(CONTROLS)}",
    )
    lams = list(cfg.lambdas)
    _check(len(lams) > 0, "lambdas is empty; pass e.g. 'lambdas=[0.1,0.3,0.5,0.7,0.9,1]'")
    lams += list(cfg.control_lambdas or [])
    bad = [x for x in lams if not math.isfinite(x) or x < 0]
    _check(not bad, f"lambda must be >= 0 (0 removes the intruder, 1 leaves it), got {bad}")
    _check(
        cfg.eval.max_samples is None or cfg.eval.max_samples >= 1,
        f"eval.max_samples={cfg.eval.max_samples} must be >= 1 or null",
    )
