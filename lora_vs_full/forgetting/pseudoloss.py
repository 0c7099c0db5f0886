"""Masked-LM pseudo-loss (Salazar et al. 2020): how well a fine-tuned encoder still models pre-training text.

For every text and every NON-special token position t of its tokenization (truncated to ``max_length``,
special tokens added): replace token t by the mask token, run the encoder, apply an MLM head to the hidden
state at t, and score ``-log p(true token at t)``. The reported ``mean`` is the TOKEN-WEIGHTED mean over the
whole corpus, ``sum of all token losses / number of scored tokens`` (long texts weigh more); ``per_text``
holds each text's own mean for other averages.

The head is the PRETRAINED MLM head put back on the (fine-tuned, LoRA-merged) encoder, or a probe head fitted
on the pretrained encoder (``mlm_head.py``) for bases that ship none. Higher pseudo-loss = more forgetting;
PAPER.md section 6 uses ``pseudo_loss(fine-tuned) - pseudo_loss(base)``.

Batching: a text's L masked copies are identical but for one position, so they go through the model together
as one (min(L, batch_size), T) batch (chunked when L > batch_size) -- no padding, so the result does not depend
on the batch size beyond float rounding. Runs under ``torch.no_grad`` in eval mode and restores the modules'
previous train/eval state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from lora_vs_full.device import resolve_device  # noqa: F401  (re-exported for scorer, mlm_head)
from lora_vs_full.errors import UserError


def encoder_of(model: nn.Module) -> nn.Module:
    """The encoder body of a HF model: ``model.roberta`` / ``model.bert`` / ... (``base_model_prefix``).

    A bare encoder (``BertModel``) is returned as is. For LoRA, pass the MERGED model (``merge_and_unload``).
    """
    prefix = getattr(model, "base_model_prefix", None)
    body = getattr(model, prefix, None) if prefix else None
    return body if isinstance(body, nn.Module) else model


@contextmanager
def eval_mode(*modules: nn.Module):
    """Put modules in eval mode for the block and restore each one's previous mode after."""
    previous = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, was_training in zip(modules, previous, strict=True):
            m.train(was_training)


def _masked_copies(ids: torch.Tensor, positions: torch.Tensor, mask_id: int) -> torch.Tensor:
    """(P, T) int: row p is ``ids`` (T,) with ``positions[p]`` replaced by ``mask_id``."""
    copies = ids.unsqueeze(0).repeat(len(positions), 1)
    copies[torch.arange(len(positions)), positions] = mask_id
    return copies


def text_token_losses(
    encoder: nn.Module,
    mlm_head: nn.Module,
    enc: dict[str, torch.Tensor],
    scored: torch.Tensor,
    *,
    mask_id: int,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """-log p(true token) at each scored position of ONE tokenized text: (len(scored),) float64 on the CPU.

    ``enc``: the tokenizer's 1-D tensors (input_ids (T,), attention_mask (T,), optional token_type_ids);
    ``scored``: (P,) positions to mask one at a time. Caller provides no_grad/eval mode.
    """
    ids = enc["input_ids"]
    losses = []
    for start in range(0, len(scored), batch_size):
        pos = scored[start : start + batch_size]
        batch = {"input_ids": _masked_copies(ids, pos, mask_id).to(device)}
        for key in ("attention_mask", "token_type_ids"):
            if key in enc:
                batch[key] = enc[key].unsqueeze(0).expand(len(pos), -1).to(device)
        hidden = encoder(**batch)[0]  # (b, T, H) last hidden state
        at_mask = hidden[torch.arange(len(pos), device=device), pos.to(device)]  # (b, H)
        logits = mlm_head(at_mask).float()  # (b, V); the head only needs the masked positions
        logp = torch.log_softmax(logits, dim=-1)
        true = ids[pos].to(device)
        losses.append(-logp.gather(1, true[:, None]).squeeze(1).double().cpu())
    return torch.cat(losses) if losses else torch.zeros(0, dtype=torch.float64)


def pseudo_loss(
    encoder: nn.Module,
    mlm_head: nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int = 128,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict:
    """Token-weighted mean pseudo-loss of ``texts`` (see module docstring).

    Returns ``{"mean": float, "n_tokens": int, "n_texts": int, "per_text": list[float]}`` where
    ``per_text[i]`` is text i's mean (NaN when it has no scorable token after truncation). ``encoder`` and
    ``mlm_head`` are moved to ``device`` (None/"auto": cuda if available).
    """
    if tokenizer.mask_token_id is None:
        raise UserError(
            f"tokenizer {type(tokenizer).__name__} has no mask token; pseudo-loss needs an MLM tokenizer"
        )
    if batch_size < 1 or max_length < 3:
        raise UserError(f"need batch_size >= 1 and max_length >= 3, got {batch_size} and {max_length}")
    device = resolve_device(device)
    encoder.to(device)
    mlm_head.to(device)
    total, n_tokens, per_text = 0.0, 0, []
    with torch.no_grad(), eval_mode(encoder, mlm_head):
        for text in tqdm(texts, desc="pseudo-loss", unit="text", disable=not progress):
            enc = tokenizer(
                text,
                truncation=True,
                max_length=max_length,
                return_special_tokens_mask=True,
                return_tensors="pt",
            )
            special = enc.pop("special_tokens_mask")[0].bool()
            enc = {k: v[0] for k, v in enc.items()}
            scored = torch.nonzero(~special & enc["attention_mask"].bool()).flatten()
            losses = text_token_losses(
                encoder,
                mlm_head,
                enc,
                scored,
                mask_id=tokenizer.mask_token_id,
                batch_size=batch_size,
                device=device,
            )
            total += float(losses.sum())
            n_tokens += len(losses)
            per_text.append(float(losses.mean()) if len(losses) else math.nan)
    if n_tokens == 0:
        raise UserError(
            f"none of the {len(texts)} texts has a scorable token; pass real text (see text_file=)"
        )
    return {"mean": total / n_tokens, "n_tokens": n_tokens, "n_texts": len(texts), "per_text": per_text}
