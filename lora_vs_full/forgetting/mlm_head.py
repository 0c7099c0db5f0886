"""The MLM head the pseudo-loss scores with: the base's own pretrained head, or a probe head fitted once.

* ``pretrained``: ``AutoModelForMaskedLM.from_pretrained(base)`` and keep everything that is not the encoder
  body (RoBERTa's ``lm_head``, BERT's ``cls``, DistilBERT's vocab_* layers, in registration order). A base
  whose checkpoint has no head weights (transformers would silently initialise them at random) has none.
  A base whose pre-training was masked-LM and whose release ships the head (RoBERTa family, or a config
  naming a ``*ForMaskedLM`` / ``*ForPreTraining`` architecture) MUST score with it: if the head does not
  load, :func:`mlm_head_for` raises instead of falling back to a probe (a probe would be another yardstick).
* ``probe`` (bases without a head, e.g. the offline MiniLM, a bare ``BertModel``): a BERT-style head
  ``dense(H, H) -> GELU -> LayerNorm -> decoder`` fitted on the FROZEN PRETRAINED encoder with the masked-LM
  objective on HELD-OUT text: lines disjoint from the scored ones (``corpus.load_fit_texts``), checked by
  ``corpus.check_disjoint`` before fitting and again on every cache hit (the fit lines' hashes are stored in
  the cached file), so a head that saw a scored line can never be used. Decision: the decoder is TIED to the pretrained input word embeddings
  (frozen, as in BERT's own head) with a trained bias -- H^2 + 2H + V trainable numbers instead of H*V, so a
  few hundred steps on a small sample fit it without memorising the sample. Masked positions are always
  replaced by the mask token (no 80/10/10), matching how the pseudo-loss queries the head.
  The fitted tensors go to ``<cache_dir>/mlm_probe/<base name>-<settings hash>.safetensors`` (atomic write;
  the hash covers the base id, the probe settings and the corpus digest) and are reused for every fine-tune
  of that base, so all runs of one base are scored by the same head.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from lora_vs_full.errors import UserError
from lora_vs_full.forgetting.corpus import check_disjoint, text_hash
from lora_vs_full.forgetting.pseudoloss import eval_mode, resolve_device
from lora_vs_full.records import file_safe
from lora_vs_full.storage import atomic_write_with


@dataclass(frozen=True)
class ProbeSettings:
    enabled: bool = True
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    mask_prob: float = 0.15
    max_length: int = 128
    seed: int = 0


class ProbeMLMHead(nn.Module):
    """hidden (..., H) -> logits (..., V) with the decoder tied to a frozen copy of the word embeddings (V, H)."""

    def __init__(self, word_embeddings: torch.Tensor, eps: float = 1e-12):
        super().__init__()
        V, H = word_embeddings.shape
        self.dense = nn.Linear(H, H)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(H, eps=eps)
        self.register_buffer("decoder_weight", word_embeddings.detach().clone(), persistent=False)
        self.bias = nn.Parameter(torch.zeros(V))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.norm(self.act(self.dense(hidden))), self.decoder_weight, self.bias)


def pretrained_head(base: str, *, revision: str | None = None) -> nn.Module | None:
    """The base's pretrained MLM head as one module (float32, eval), or None when its checkpoint has none."""
    from transformers import AutoModelForMaskedLM

    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(
            base, revision=revision, output_loading_info=True, dtype=torch.float32
        )
    except ValueError:  # the architecture has no masked-LM class at all
        return None
    except OSError as exc:
        raise UserError(
            f"cannot load base model {base!r} ({exc.__class__.__name__}); check the path or Hub id"
        ) from None
    prefix = mlm.base_model_prefix
    heads = [(name, m) for name, m in mlm.named_children() if name != prefix]
    head_missing = any(not k.startswith(prefix + ".") for k in info.get("missing_keys", []))
    if not heads or head_missing:
        return None
    return (heads[0][1] if len(heads) == 1 else nn.Sequential(*(m for _, m in heads))).eval()


# Families pre-trained with masked-LM whose public checkpoints ship the MLM head (PAPER.md: RoBERTa).
MLM_HEAD_FAMILIES = ("roberta", "xlm-roberta", "camembert")


def head_required(base: str, *, revision: str | None = None) -> bool:
    """True when ``base`` should come with a pretrained MLM head (module docstring)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(base, revision=revision)
    except OSError as exc:
        raise UserError(
            f"cannot load base model {base!r} ({exc.__class__.__name__}); check the path or Hub id"
        ) from None
    archs = getattr(config, "architectures", None) or []
    return config.model_type in MLM_HEAD_FAMILIES or any(
        a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs
    )


def probe_path(cache_dir: str | Path, base: str, settings: ProbeSettings, corpus_digest: str) -> Path:
    """``<cache_dir>/mlm_probe/<base name>-<hash>.safetensors``; the hash covers base, settings, corpus."""
    key = json.dumps(
        {"base": str(base), "settings": asdict(settings), "corpus": corpus_digest}, sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = file_safe(Path(str(base).rstrip("/")).name or str(base))
    return Path(cache_dir) / "mlm_probe" / f"{name}-{digest}.safetensors"


def _mlm_batches(tokenizer, texts, settings: ProbeSettings, generator: torch.Generator):
    """Endless deterministic stream of (batch dict, labels (B, T) with -100 where not masked)."""
    order = torch.randperm(len(texts), generator=generator).tolist()
    i = 0
    while True:
        chunk = [texts[order[(i + j) % len(order)]] for j in range(settings.batch_size)]
        i += settings.batch_size
        enc = tokenizer(
            chunk,
            truncation=True,
            max_length=settings.max_length,
            padding=True,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        special = enc.pop("special_tokens_mask").bool() | ~enc["attention_mask"].bool()
        pick = (torch.rand(special.shape, generator=generator) < settings.mask_prob) & ~special
        labels = torch.where(pick, enc["input_ids"], torch.full_like(enc["input_ids"], -100))
        enc["input_ids"] = torch.where(
            pick, torch.full_like(labels, tokenizer.mask_token_id), enc["input_ids"]
        )
        yield dict(enc), labels


def fit_probe_head(
    encoder: nn.Module, tokenizer, texts, settings: ProbeSettings, *, scored, device=None
) -> ProbeMLMHead:
    """Fit a :class:`ProbeMLMHead` on the frozen ``encoder`` (PRETRAINED weights) with masked-LM on ``texts``.

    ``scored``: the lines the head will score; UserError if any of them is in ``texts`` (held-out rule)."""
    check_disjoint(texts, scored)
    device = resolve_device(device)
    torch.manual_seed(settings.seed)  # the head's initialisation
    head = ProbeMLMHead(encoder.get_input_embeddings().weight).to(device)
    encoder.to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(settings.seed)
    batches = _mlm_batches(tokenizer, list(texts), settings, gen)
    with eval_mode(encoder):
        head.train()
        for _ in range(settings.steps):
            batch, labels = next(batches)
            if not (labels != -100).any():
                continue
            with torch.no_grad():  # the encoder is frozen: no activations kept for backward
                hidden = encoder(**{k: v.to(device) for k, v in batch.items()})[0]
            sel = labels != -100
            logits = head(hidden[sel.to(device)])  # only masked positions: (n_masked, V)
            loss = nn.functional.cross_entropy(logits, labels[sel].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return head.eval()


def probe_head(
    encoder: nn.Module,
    tokenizer,
    texts,
    settings: ProbeSettings,
    *,
    scored,
    base: str,
    corpus_digest: str,
    cache_dir: str | Path,
    device=None,
) -> tuple[ProbeMLMHead, dict]:
    """Load the cached probe for (base, settings, fit corpus) or fit and cache it. ``encoder`` = PRETRAINED body.

    ``texts``: the fit lines; ``scored``: the lines it will score (disjoint from ``texts``, checked on a fit
    AND on a cache hit against the fit-line hashes stored in the file); ``corpus_digest``: the fit sample's.
    Returns ``(head, {"head": "probe", "path": str, "fitted": bool, "n_fit_texts": int})``.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = probe_path(cache_dir, base, settings, corpus_digest)
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            fit_hashes = json.loads((f.metadata() or {}).get("fit_hashes", "null") or "null")
        if fit_hashes is None:
            raise UserError(f"cached probe head {path} records no fit lines; delete it so it is refitted")
        check_disjoint(fit_hashes, scored)
        head = ProbeMLMHead(encoder.get_input_embeddings().weight)
        head.load_state_dict(load_file(path))
        info = {"head": "probe", "path": str(path), "fitted": False, "n_fit_texts": len(fit_hashes)}
        return head.eval(), info
    texts = list(texts)
    head = fit_probe_head(encoder, tokenizer, texts, settings, scored=scored, device=device)
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    meta = {
        "base": str(base),
        "settings": json.dumps(asdict(settings)),
        "corpus": corpus_digest,
        "fit_hashes": json.dumps([text_hash(t) for t in texts]),
    }
    atomic_write_with(path, lambda p: save_file(tensors, str(p), metadata=meta))
    return head, {"head": "probe", "path": str(path), "fitted": True, "n_fit_texts": len(texts)}


def mlm_head_for(
    base: str,
    encoder: nn.Module,
    tokenizer,
    texts,
    settings: ProbeSettings,
    *,
    scored,
    corpus_digest: str,
    cache_dir: str | Path,
    revision: str | None = None,
    device=None,
) -> tuple[nn.Module, dict]:
    """The head to score ``base``'s fine-tunes with: pretrained if the base has one, else the probe.

    ``encoder``: the PRETRAINED encoder body of ``base``; ``texts``: the probe's fit lines (disjoint from
    ``scored``); ``corpus_digest``: the fit sample's digest. Returns ``(head, info)`` with ``info["head"]`` =
    ``"pretrained"`` | ``"probe"``. UserError when a base that ships an MLM head (:func:`head_required`) has
    none that loads, or when the base has no head and ``settings.enabled`` is False.
    """
    head = pretrained_head(base, revision=revision)
    if head is not None:
        return head, {"head": "pretrained", "path": None, "fitted": False, "n_fit_texts": 0}
    if head_required(base, revision=revision):
        raise UserError(
            f"base model {base!r} is masked-LM pre-trained but its MLM head did not load (no lm_head weights "
            "in the checkpoint); point base at the full pretrained checkpoint (e.g. FacebookAI/roberta-base), "
            "not an encoder-only export -- a probe head is not substituted for a pretrained one"
        )
    if not settings.enabled:
        raise UserError(
            f"base model {base!r} has no pretrained MLM head and probe.enabled=false: set probe.enabled=true "
            "to fit a probe head on the pretrained encoder, or use a base that ships an MLM head"
        )
    return probe_head(
        encoder,
        tokenizer,
        texts,
        settings,
        scored=scored,
        base=base,
        corpus_digest=corpus_digest,
        cache_dir=cache_dir,
        device=device,
    )
