"""The text sample the pseudo-loss is measured on: pre-training-like English, one unit per line.

Sources (PAPER.md section 6; WikiText is the usual public proxy for RoBERTa's pre-training mix):

* ``text_file``: any local UTF-8 text file, one text per line (works offline). The WikiText raw release
  files (``wiki.test.raw`` in ``../shared/data/raw/WikiText/wikitext-2-raw``) are read the same way.
* otherwise the Hub: ``datasets.load_dataset(hub_id, hub_config, split=split)["text"]``
  (default ``Salesforce/wikitext``, ``wikitext-2-raw-v1``, ``test`` -- the same lines as wiki.test.raw).

Selection, deterministic in ``seed``: blank lines and WikiText headings (`` = Title = ``) are dropped, lines
are optionally detokenized (WikiText's `` @-@ `` / `` , `` spacing undone so the text looks like what the
tokenizer saw in pre-training), lines with fewer than ``min_words`` or more than ``max_words``
whitespace-separated words are dropped, then ``n_texts`` lines are drawn without replacement and kept in
corpus order. Truncation to the model's sequence length happens later, at tokenization.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from lora_vs_full.errors import UserError

# WikiText's tokenisation artefacts -> plain text (the common detokenizer used for WikiText perplexity,
# reduced to the rules that fire on the raw release).
_DETOK_RULES = (
    (re.compile(r" @(.)@ "), r"\1"),  # 1 @,@ 000 -> 1,000 ; well @-@ known -> well-known
    (re.compile(r" ([.,;:!?)\]}])"), r"\1"),  # space before closing punctuation
    (re.compile(r"([(\[{]) "), r"\1"),  # space after opening brackets
    (re.compile(r" (n't|'s|'re|'ve|'m|'ll|'d)\b"), r"\1"),  # clitics
    (re.compile(r'" ([^"]*?) "'), r'"\1"'),  # " quoted " -> "quoted"
    (re.compile(r"\s+"), " "),
)
_HEADING = re.compile(r"^\s*=+ .* =+\s*$")


@dataclass(frozen=True)
class CorpusSpec:
    """Which lines to score. Every field is part of the sample's identity (see :func:`corpus_digest`)."""

    text_file: str | None = None
    hub_id: str = "Salesforce/wikitext"
    hub_config: str | None = "wikitext-2-raw-v1"
    split: str = "test"
    n_texts: int = 200
    min_words: int = 8
    max_words: int = 200
    seed: int = 0
    detokenize: bool = True

    @classmethod
    def from_config(cls, cfg) -> CorpusSpec:
        """Build from a mapping (e.g. a Hydra node); unknown keys are a UserError."""
        data = dict(cfg)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(
                f"unknown corpus option(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**data)


def detokenize_wikitext(line: str) -> str:
    """Undo WikiText's tokenisation spacing: ``"well @-@ known , he"`` -> ``"well-known, he"``."""
    for pattern, repl in _DETOK_RULES:
        line = pattern.sub(repl, line)
    return line.strip()


def _read_lines(spec: CorpusSpec) -> tuple[list[str], str]:
    if spec.text_file is not None:
        path = Path(spec.text_file).expanduser()
        if not path.is_file():
            raise UserError(
                f"text_file={spec.text_file!r} does not exist; pass a UTF-8 text file, one text per line"
            )
        return path.read_text(encoding="utf-8", errors="replace").splitlines(), str(path)
    try:
        import datasets

        ds = datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.split)
    except Exception as exc:  # offline, unknown id, no network: all user-fixable by pointing at a file
        raise UserError(
            f"could not load {spec.hub_id!r} ({spec.hub_config}, {spec.split}) from the Hub "
            f"({type(exc).__name__}); offline, pass text_file=<a text file, one text per line>, e.g. "
            "../shared/data/raw/WikiText/wikitext-2-raw/wiki.test.raw"
        ) from None
    return list(ds["text"]), f"hub:{spec.hub_id}/{spec.hub_config}/{spec.split}"


def load_texts(spec: CorpusSpec) -> list[str]:
    """The selected lines (see module docstring); UserError when fewer than one line qualifies."""
    if spec.n_texts < 1:
        raise UserError(f"n_texts={spec.n_texts} must be >= 1")
    if spec.min_words < 1 or spec.max_words < spec.min_words:
        raise UserError(
            f"need 1 <= min_words <= max_words, got min_words={spec.min_words}, max_words={spec.max_words}"
        )
    lines, where = _read_lines(spec)
    kept = []
    for line in lines:
        if not line.strip() or _HEADING.match(line):
            continue
        text = detokenize_wikitext(line) if spec.detokenize else line.strip()
        if spec.min_words <= len(text.split()) <= spec.max_words:
            kept.append(text)
    if not kept:
        raise UserError(
            f"{where} has no usable text: 0 of {len(lines)} lines have {spec.min_words}..{spec.max_words} words "
            "(pass a text file with real sentences, or lower min_words)"
        )
    if len(kept) > spec.n_texts:
        idx = sorted(random.Random(spec.seed).sample(range(len(kept)), spec.n_texts))
        kept = [kept[i] for i in idx]
    return kept


def corpus_digest(spec: CorpusSpec, texts: list[str]) -> str:
    """Short sha256 of the selection settings AND the selected text: the sample's identity in caches/parts."""
    settings = {k: v for k, v in asdict(spec).items() if k != "text_file"}  # content, not location, matters
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]
