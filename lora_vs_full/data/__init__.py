"""Task data: the registry, and one entry point that returns a ``datasets.Dataset`` for any task.

Every task comes out in the same shape: columns ``text`` (str), ``label`` (int in 0..num_labels-1) and,
for pair tasks only, ``text_pair`` (str). Sources:

- synthetic tasks (``synth_*``): generated in memory (:mod:`lora_vs_full.data.synthetic`);
- ``data_dir`` given: the original release files on disk (:mod:`lora_vs_full.data.local`); a substitute
  file (a subset, another split) only with ``allow_substitutes=True``;
- otherwise the Hugging Face Hub at the registry's revision (or ``revision``), or with ``hub_root`` a local
  mirror of the Hub repo at that revision, read by the same code (:mod:`lora_vs_full.data.hub`).

:func:`load_task_with_record` also returns what was read (files with sha256, the resolved commit, any
substitution), which ``lvf-train`` stores in the run's provenance and ``final.json``.
"""

from __future__ import annotations

import datasets

from lora_vs_full.data.registry import PAPER_TASK_ORDER, TASKS, TaskSpec, get_task
from lora_vs_full.errors import UserError

__all__ = [
    "PAPER_TASK_ORDER",
    "TASKS",
    "TaskSpec",
    "get_task",
    "load_task",
    "load_task_with_record",
    "subsample",
]

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


def load_task(name: str, split: str, **kwargs) -> datasets.Dataset:
    """Rows of task ``name`` (see :data:`TASKS`) for ``split``; :func:`load_task_with_record` without the record."""
    return load_task_with_record(name, split, **kwargs)[0]


def load_task_with_record(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    max_samples: int | None = None,
    seed: int = 42,
    winogrande_size: str | None = None,
    hub_root: str | None = None,
    revision: str | None = None,
    allow_substitutes: bool = False,
    check_rows: bool = True,
) -> tuple[datasets.Dataset, dict]:
    """``(rows, record)`` of task ``name`` for ``split`` ("train" or "eval" = the paper's test set).

    ``data_dir``: a directory with the task's original release files (the task folder itself, e.g.
    ``.../SST-2``, or a root holding it). Otherwise the Hub, or ``hub_root``: a local mirror laid out as
    ``<hub_root>/<repo id>/<revision>/`` (see :mod:`lora_vs_full.data.hub`). Ignored for synthetic tasks.
    ``revision``: the Hub revision (a commit sha pins it); None = the registry's.
    ``allow_substitutes``: let the local loader use a documented substitute file (recorded).
    ``check_rows``: a Hub split must have the registry's row count.
    The returned dataset's ``info.description`` names its origin (the file read, or
    ``hub_id/config@revision:split``, or ``synthetic:<name>``).
    ``max_samples``: cap via a ``seed``-ed random subset (:func:`subsample`).
    ``winogrande_size``: WinoGrande training size (xs, s, m, l, xl); ``None`` = xl (locally, another size
    only as an allowed substitute).
    ``record``: ``{"task", "split", "source", "origin", "files": [{"path", "bytes", "sha256"}],
    "substitution", "rows", "rows_used", ...}`` (Hub: also ``hub_id``, ``config``, ``revision``, ``commit``).
    """
    spec = get_task(name)
    if split not in SPLITS:
        raise UserError(f"split={split!r} is not supported: use one of {', '.join(SPLITS)}")
    if spec.source == "synthetic":
        from lora_vs_full.data.synthetic import synthetic_rows

        ds = datasets.Dataset.from_list(synthetic_rows(spec.name, split, seed=SYNTHETIC_DATA_SEED))
        origin = f"synthetic:{spec.name}"
        record = {"source": "synthetic", "files": [], "substitution": None}
    elif data_dir is not None:
        from lora_vs_full.data.local import load_local

        ds, origin, record = load_local(
            spec, split, data_dir, winogrande_size=winogrande_size, allow_substitutes=allow_substitutes
        )
    else:
        from lora_vs_full.data.hub import load_hub

        ds, origin, record = load_hub(
            spec, split, winogrande_size=winogrande_size, revision=revision, hub_root=hub_root,
            check_rows=check_rows,
        )  # fmt: skip
        record.setdefault("substitution", None)
    ds = _check(ds, spec, origin)
    # Where the rows came from (file path, or hub id/config@revision:split), for run provenance.
    ds.info.description = origin
    out = subsample(ds, max_samples, seed)
    record = {"task": spec.name, "split": split, "origin": origin, **record, "rows": len(ds)}
    record["rows_used"] = len(out)
    return out, record


#: task-config keys that say where the data are or how strictly they are checked, not which rows a run
#: trains on (a substitute is recorded in the run, and without it the run would have failed).
TASK_LOCATION_KEYS = ("data_dir", "hub_root", "allow_substitutes", "check_rows")


def load_run_data(task_cfg, *, seed: int) -> tuple[datasets.Dataset, datasets.Dataset, dict]:
    """``(train, eval, record)`` for an ``lvf-train`` ``task`` config node (the training code path).

    ``record`` (stored in provenance.json and final.json): ``{"train": ..., "eval": ...}`` per-split
    records of :func:`load_task_with_record` plus ``substitutions`` (every substitute used, as text, so
    tables and headlines can carry it) and ``revisions`` (Hub: requested revision -> resolved commit).
    """
    t = task_cfg
    common = dict(
        data_dir=t.get("data_dir"),
        seed=seed,
        hub_root=t.get("hub_root"),
        revision=t.get("revision"),
        allow_substitutes=bool(t.get("allow_substitutes", False)),
        check_rows=bool(t.get("check_rows", True)),
    )
    train, rec_train = load_task_with_record(
        t.name, "train", max_samples=t.get("max_train_samples"), **common
    )
    evals, rec_eval = load_task_with_record(t.name, "eval", max_samples=t.get("max_eval_samples"), **common)
    record = {"train": rec_train, "eval": rec_eval}
    record["substitutions"] = [r["substitution"] for r in (rec_train, rec_eval) if r.get("substitution")]
    record["revisions"] = {
        r["hub_id"]: {"requested": r.get("revision"), "commit": r.get("commit")}
        for r in (rec_train, rec_eval)
        if r.get("hub_id")
    }
    return train, evals, record


def run_data_kwargs(run_cfg, final: dict | None = None) -> dict:
    """The data-source keywords of :func:`load_task` that reproduce a finished run's data: its task
    config's ``data_dir`` / ``hub_root`` / ``allow_substitutes`` / ``check_rows`` and, from ``final.json``,
    the Hub commit its data resolved to (so a later evaluation reads the same files)."""
    from omegaconf import OmegaConf

    def get(key, default=None):
        return OmegaConf.select(run_cfg, f"task.{key}", default=default) if run_cfg is not None else default

    revision = get("revision")
    for rec in ((final or {}).get("data_revisions") or {}).values():
        revision = rec.get("commit") or revision
    return {
        "data_dir": get("data_dir"),
        "hub_root": get("hub_root"),
        "revision": revision,
        "allow_substitutes": bool(get("allow_substitutes", False)),
        "check_rows": bool(get("check_rows", True)),
    }
