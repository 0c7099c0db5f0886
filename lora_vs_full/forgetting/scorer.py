"""One base model's pseudo-loss scorer: its tokenizer, text sample and MLM head, set up once.

``lvf-pseudoloss`` and ``lvf-intervene`` score many fine-tunes of one base with the SAME texts and the SAME
head (the base's pretrained head or its cached probe), so differences between rows are the encoders' alone.
A probe head is fitted on the ``fit_corpus`` lines, which never include a scored line (``corpus.py``): with
``fit_corpus.text_file`` null and ``corpus.text_file`` set, the fit lines are the rest of that same file.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace

from torch import nn

from lora_vs_full.errors import UserError
from lora_vs_full.forgetting.corpus import CorpusSpec, corpus_digest, load_fit_texts, load_texts
from lora_vs_full.forgetting.mlm_head import ProbeSettings, mlm_head_for, pretrained_head
from lora_vs_full.forgetting.pseudoloss import encoder_of, pseudo_loss, resolve_device

log = logging.getLogger(__name__)


@dataclass
class Scorer:
    base: str
    tokenizer: object
    head: nn.Module
    head_info: dict
    texts: list[str]
    corpus_digest: str
    max_length: int
    batch_size: int
    device: object
    progress: bool = True
    settings: dict = field(default_factory=dict)  # what a result depends on (for parts / idempotency)

    def __call__(self, model: nn.Module) -> dict:
        """Pseudo-loss of ``model``'s encoder body (a merged classifier, a bare encoder, an MLM model)."""
        return pseudo_loss(
            encoder_of(model),
            self.head,
            self.tokenizer,
            self.texts,
            max_length=self.max_length,
            batch_size=self.batch_size,
            device=self.device,
            progress=self.progress,
        )


def load_encoder(src: str, *, revision: str | None = None) -> nn.Module:
    """The float32 encoder body of a HF model dir / Hub id (a classifier or MLM checkpoint works too)."""
    import torch
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(src, revision=revision, dtype=torch.float32).eval()
    except OSError as exc:
        raise UserError(
            f"cannot load model {src!r} ({exc.__class__.__name__}); check the path or Hub id"
        ) from None


def build_scorer(
    base: str,
    *,
    revision: str | None,
    corpus,
    scoring,
    probe,
    cache_dir,
    fit_corpus=None,
    device="auto",
    progress: bool = True,
) -> tuple[Scorer, nn.Module]:
    """``(scorer, pretrained encoder of base)`` from the ``corpus`` / ``fit_corpus`` / ``scoring`` / ``probe``
    config nodes (``fit_corpus`` None: the default node, i.e. the rest of the scored source)."""
    from transformers import AutoTokenizer

    spec = CorpusSpec.from_config(corpus)
    texts = load_texts(spec)
    digest = corpus_digest(spec, texts)
    fit_spec = CorpusSpec.from_config(fit_corpus) if fit_corpus is not None else CorpusSpec()
    if fit_spec.text_file is None and spec.text_file is not None:
        fit_spec = replace(fit_spec, text_file=spec.text_file)  # one file: its non-scored lines
    settings = ProbeSettings(**dict(probe))
    device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(base, revision=revision)
    base_encoder = load_encoder(base, revision=revision)
    pretrained = pretrained_head(base, revision=revision)
    if pretrained is not None:
        head, info = pretrained, {"head": "pretrained", "path": None, "fitted": False, "n_fit_texts": 0}
    else:  # only now read the fit text (a headed base needs none)
        fit_texts = load_fit_texts(fit_spec, texts) if settings.enabled else []
        head, info = mlm_head_for(
            base,
            base_encoder,
            tokenizer,
            fit_texts,
            settings,
            scored=texts,
            corpus_digest=corpus_digest(fit_spec, fit_texts),
            cache_dir=cache_dir,
            revision=revision,
            device=device,
        )
    if info["head"] == "probe":
        what = "fitted and cached" if info["fitted"] else "cached"
        log.warning(
            "%s has no pretrained MLM head: scoring with a probe head (%s: %s)", base, what, info["path"]
        )
    scorer = Scorer(
        base=base,
        tokenizer=tokenizer,
        head=head,
        head_info=info,
        texts=texts,
        corpus_digest=digest,
        max_length=int(scoring.max_length),
        batch_size=int(scoring.batch_size),
        device=device,
        progress=progress,
        settings={  # the digest covers the selection settings and the text itself, not the file's location
            "corpus_digest": digest,
            "max_length": int(scoring.max_length),
            "head": info["head"],
            "probe": asdict(settings) if info["head"] == "probe" else None,
            "probe_fit": info.get("path"),
        },
    )
    return scorer, base_encoder
