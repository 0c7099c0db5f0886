"""Task data: the registry, and one entry point that returns a ``datasets.Dataset`` for any task.

Every task comes out in the same shape: columns ``text`` (str), ``label`` (int in 0..num_labels-1) and,
for pair tasks only, ``text_pair`` (str). Sources:

- synthetic tasks (``synth_*``): generated in memory (:mod:`lora_vs_full.data.synthetic`);
- ``data_dir`` given: the original release files on disk (:mod:`lora_vs_full.data.local`);
- otherwise the Hugging Face Hub at the revision pinned in the registry (:mod:`lora_vs_full.data.hub`).
"""

from __future__ import annotations

import datasets

from lora_vs_full.data.registry import PAPER_TASK_ORDER, TASKS, TaskSpec, get_task
from lora_vs_full.errors import UserError

__all__ = ["PAPER_TASK_ORDER", "TASKS", "TaskSpec", "get_task", "load_task", "subsample"]

SPLITS = ("train", "eval")
#: Synthetic data do not depend on the run's seed: every run of a sweep sees the same task.
SYNTHETIC_DATA_SEED = 0


def subsample(ds: datasets.Dataset, max_samples: int | None, seed: int) -> datasets.Dataset:
    """A seeded random subset of ``max_samples`` rows (shuffle with ``seed``, take the first n).

    ``None`` returns ``ds`` unchanged. The head of a file is never used as a "sample": release files are
    often sorted (by label, by source genre), so the head would be biased.
    """
    if max_samples is None:
        return ds
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise UserError(f"max_samples={max_samples!r} must be a positive integer (or null for all rows)")
    n = min(max_samples, len(ds))
    return ds.shuffle(seed=seed).select(range(n))


def _check(ds: datasets.Dataset, spec: TaskSpec, origin: str) -> datasets.Dataset:
    """Enforce the output contract (a loader bug or a malformed source would otherwise surface in training)."""
    expected = {"text", "label"} | ({"text_pair"} if spec.is_pair else set())
    if set(ds.column_names) != expected:
        raise UserError(f"{origin}: expected columns {sorted(expected)}, found {sorted(ds.column_names)}")
    if len(ds) == 0:
        raise UserError(f"{origin}: no rows for task {spec.name!r}")
    return ds


def load_task(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    max_samples: int | None = None,
    seed: int = 42,
    winogrande_size: str | None = None,
) -> datasets.Dataset:
    """Rows of task ``name`` (see :data:`TASKS`) for ``split`` ("train" or "eval" = the paper's test set).

    ``data_dir``: a directory with the task's original release files (the task folder itself, e.g.
    ``.../SST-2``, or a root holding it); ``None`` loads from the Hub. Ignored for synthetic tasks.
    The returned dataset's ``info.description`` names its origin (the file read, or
    ``hub_id/config@revision:split``, or ``synthetic:<name>``).
    ``max_samples``: cap via a ``seed``-ed random subset (:func:`subsample`).
    ``winogrande_size``: WinoGrande training size (xs, s, m, l, xl); ``None`` = xl on the Hub, and locally
    xl if present, else the largest size present (logged).
    """
    spec = get_task(name)
    if split not in SPLITS:
        raise UserError(f"split={split!r} is not supported: use one of {', '.join(SPLITS)}")
    if spec.source == "synthetic":
        from lora_vs_full.data.synthetic import synthetic_rows

        ds = datasets.Dataset.from_list(synthetic_rows(spec.name, split, seed=SYNTHETIC_DATA_SEED))
        origin = f"synthetic:{spec.name}"
    elif data_dir is not None:
        from lora_vs_full.data.local import load_local

        ds, origin = load_local(spec, split, data_dir, winogrande_size=winogrande_size)
    else:
        from lora_vs_full.data.hub import load_hub

        ds, origin = load_hub(spec, split, winogrande_size=winogrande_size)
    ds = _check(ds, spec, origin)
    # Where the rows came from (file path, or hub id/config@revision:split), for run provenance.
    ds.info.description = origin
    return subsample(ds, max_samples, seed)
