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

Held-out fitting (the probe MLM head, ``mlm_head.py``): :func:`load_fit_texts` draws the head's training
lines from a SECOND source (WikiText-2 *valid* when the scored lines are WikiText-2 *test*) and drops every
line whose :func:`text_hash` is among the scored lines' -- with one source for both it is the disjoint
remainder of that source. :func:`check_disjoint` is the guard the fit calls: any shared line is an error.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, replace
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


def text_hash(text: str) -> str:
    """Identity of one line for the disjointness check: sha256 of its whitespace-normalised text, 16 hex."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:16]


def check_disjoint(fit, scored) -> None:
    """UserError when any scored line is also a fit line. ``fit``/``scored``: texts or :func:`text_hash` values
    (a 16-hex string is taken as a hash) -- a probe head that saw a scored line would flatter the base."""

    def hashes(xs):
        return {x if re.fullmatch(r"[0-9a-f]{16}", x) else text_hash(x) for x in xs}

    shared = hashes(fit) & hashes(scored)
    if shared:
        raise UserError(
            f"{len(shared)} scored line(s) are also in the probe head's fit text; fit the head on disjoint "
            "text (fit_text_file=<another file>, e.g. wiki.valid.raw, or leave it null to use the rest of "
            "text_file)"
        )


def load_fit_texts(spec: CorpusSpec, scored: list[str]) -> list[str]:
    """The probe head's fit lines: ``spec``'s qualifying lines minus every scored line (by :func:`text_hash`),
    ``spec.n_texts`` of them drawn with ``spec.seed``; disjoint from ``scored`` by construction and checked."""
    held = {text_hash(t) for t in scored}
    pool = [t for t in load_texts(replace(spec, n_texts=10**9)) if text_hash(t) not in held]
    if not pool:
        raise UserError(
            "no probe-head fit text is left once the scored lines are removed; pass fit_text_file=<another "
            "file> (e.g. WikiText-2 wiki.valid.raw) or lower corpus.n_texts"
        )
    if len(pool) > spec.n_texts:
        idx = sorted(random.Random(spec.seed).sample(range(len(pool)), spec.n_texts))
        pool = [pool[i] for i in idx]
    check_disjoint(pool, scored)
    return pool


def corpus_digest(spec: CorpusSpec, texts: list[str]) -> str:
    """Short sha256 of the selection settings AND the selected text: the sample's identity in caches/parts."""
    settings = {k: v for k, v in asdict(spec).items() if k != "text_file"}  # content, not location, matters
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]
