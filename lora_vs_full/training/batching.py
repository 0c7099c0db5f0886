"""Batch order for training: random (the default) or length-grouped, both seeded; padding accounting.

Batches are padded to their longest member (``loop.make_collator``), so a random batch of GLUE inputs
wastes much of its compute on padding. ``group_by_length`` orders each epoch as HF Trainer's
``train_sampling_strategy="group_by_length"`` does, by wrapping the same transformers code
(``trainer_pt_utils.LengthGroupedSampler``): a seeded random permutation, cut into mega-batches of
``min(50, n // (4 * batch_size)) * batch_size`` examples, each sorted by length (longest first), and the
mega-batch holding the longest example moved to the front (an out-of-memory error comes in the first
step, not hours in). Every epoch is a permutation of the data; successive epochs draw fresh orders from
one generator seeded with the run's seed, so a run's order is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def token_lengths(ds, column: str = "input_ids") -> list[int]:
    """Length of every tokenized example of an encoded ``datasets.Dataset`` (or a list of dicts)."""
    if hasattr(ds, "column_names"):
        return [len(ids) for ids in ds[column]]
    return [len(row[column]) for row in ds]


def make_sampler(lengths: Sequence[int], batch_size: int, *, seed: int, group_by_length: bool):
    """A seeded training sampler over ``len(lengths)`` examples.

    ``group_by_length=False``: torch's ``RandomSampler`` (a uniform permutation per epoch).
    ``group_by_length=True``: transformers' ``LengthGroupedSampler`` (see the module docstring).
    Both draw from one ``torch.Generator`` seeded with ``seed``: iterating again gives the next epoch.
    """
    generator = torch.Generator().manual_seed(int(seed))
    if not group_by_length:
        return torch.utils.data.RandomSampler(range(len(lengths)), generator=generator)
    from transformers.trainer_pt_utils import LengthGroupedSampler

    return LengthGroupedSampler(int(batch_size), lengths=[int(n) for n in lengths], generator=generator)


def batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """Cut an epoch's index order into consecutive batches (the last one may be short), as DataLoader does."""
    order = list(order)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padding_stats(lengths: Sequence[int], batch_list: Sequence[Sequence[int]]) -> dict:
    """Token accounting of dynamic padding: each batch padded to its longest member.

    ``{"real_tokens", "padded_tokens" (= sum over batches of size * max length), "pad_fraction"}``;
    ``pad_fraction`` is the share of the padded tensor that is padding (0 = none wasted).
    """
    real = sum(int(lengths[i]) for b in batch_list for i in b)
    padded = sum(len(b) * max(int(lengths[i]) for i in b) for b in batch_list if len(b))
    return {
        "real_tokens": real,
        "padded_tokens": padded,
        "pad_fraction": 1.0 - real / padded if padded else 0.0,
    }


def epoch_pad_fraction(lengths: Sequence[int], batch_size: int, *, seed: int, group_by_length: bool) -> float:
    """Padding share of one epoch ordered by :func:`make_sampler` (the first epoch of a run with ``seed``)."""
    sampler = make_sampler(lengths, batch_size, seed=seed, group_by_length=group_by_length)
    return padding_stats(lengths, batches(iter(sampler), batch_size))["pad_fraction"]
