"""Per-example correctness on a task's eval set, so accuracy differences can be PAIRED over examples.

``training.loop.evaluate`` returns the accuracy only; a Table 3 row compares the same 872 SST-2 dev sentences
before and after scaling, and the paired bootstrap (``lora_vs_full.stats.paired_bootstrap``) needs the 0/1
outcome of each example, in eval-set order.
"""

from __future__ import annotations

import numpy as np
import torch


def correct_per_example(model, tokenizer, ds, *, batch_size: int, max_length: int, device) -> np.ndarray:
    """(n_examples,) int8: 1 where argmax(logits) equals the label, in ``ds`` order; no_grad, mode restored."""
    from lora_vs_full.training.loop import encode, make_loader

    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for batch in make_loader(encode(ds, tokenizer, max_length), tokenizer, batch_size, shuffle=False):
                batch = {k: v.to(device) for k, v in batch.items()}
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
                out.append((logits.argmax(-1) == batch["labels"]).to(torch.int8).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int8)
