"""Loading the six paper tasks from script-free Hub repos (PAPER.md §11), at the revisions in the registry.

Labels are mapped by NAME, never by integer position: a ``ClassLabel`` column is turned into its names
first, then every name goes through :data:`formatting.LABEL_ALIASES` (mirrors disagree on label order).
FEVER mirrors have one row per evidence sentence, so rows are deduplicated by claim ``id``.
"""

from __future__ import annotations

import logging

import datasets

from lora_vs_full.data.formatting import map_label, siqa_text, winogrande_text
from lora_vs_full.data.registry import WINOGRANDE_SIZES, TaskSpec
from lora_vs_full.errors import UserError

log = logging.getLogger(__name__)

# Source columns per task: (text, text_pair or None, label).
_COLUMNS = {
    "mnli": ("premise", "hypothesis", "label"),
    "qqp": ("question1", "question2", "label"),
    "sst2": ("sentence", None, "label"),
    "siqa": (("context", "question", "answerA", "answerB", "answerC"), None, "label"),
    "winogrande": (("sentence", "option1", "option2"), None, "answer"),
    "fever": ("claim", None, "label"),
}
#: Claims in the official FEVER 1.0 files; a mirror with a different count is reported, not trusted silently.
FEVER_CLAIMS = {"paper_dev": 9999, "paper_test": 9999, "train": 145449}


def hub_source(spec: TaskSpec, split: str, winogrande_size: str | None = None) -> dict:
    """``{"id", "config", "revision", "split"}`` that :func:`load_hub` reads; stored in run provenance."""
    config = spec.hub_config
    if spec.name == "winogrande" and winogrande_size is not None:
        if winogrande_size not in WINOGRANDE_SIZES:
            raise UserError(
                f"winogrande size={winogrande_size!r} is not one of {', '.join(WINOGRANDE_SIZES)}"
            )
        config = f"winogrande_{winogrande_size}"
    hub_split = spec.train_split if split == "train" else spec.eval_split
    return {"id": spec.hub_id, "config": config, "revision": spec.hub_revision, "split": hub_split}


def _download(spec: TaskSpec, src: dict) -> datasets.Dataset:
    try:
        return datasets.load_dataset(src["id"], src["config"], revision=src["revision"], split=src["split"])
    except Exception as exc:  # offline, unreachable, renamed: all need the same advice
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(
            f"could not load {spec.name} from the Hub ({src['id']}): offline? pass "
            f"task.data_dir=<dir with the original files> [{type(exc).__name__}: {detail}]"
        ) from exc


def _label_names(ds: datasets.Dataset, column: str) -> list[str]:
    """The label column as strings: ClassLabel ids -> their names, anything else -> str()."""
    feature = ds.features[column]
    values = ds[column]
    if isinstance(feature, datasets.ClassLabel):
        return [feature.int2str(v) if v >= 0 else str(v) for v in values]  # -1 = unlabelled test rows
    return [str(v) for v in values]


def _dedupe_by_id(ds: datasets.Dataset, where: str) -> datasets.Dataset:
    seen, keep = set(), []
    for i, claim_id in enumerate(ds["id"]):
        if claim_id not in seen:
            seen.add(claim_id)
            keep.append(i)
    log.info("%s: %d rows -> %d unique claim ids", where, len(ds), len(keep))
    return ds.select(keep)


def convert(spec: TaskSpec, ds: datasets.Dataset, where: str) -> datasets.Dataset:
    """Hub rows -> ``text`` / ``text_pair`` / ``label``; UserError naming ``where`` on unexpected columns."""
    text_cols, pair_col, label_col = _COLUMNS[spec.name]
    needed = (text_cols if isinstance(text_cols, tuple) else (text_cols,)) + ((pair_col,) if pair_col else ())
    needed += (label_col,) + (("id",) if spec.name == "fever" else ())
    absent = [c for c in needed if c not in ds.column_names]
    if absent:
        raise UserError(
            f"{where}: expected columns {list(needed)}, found {ds.column_names} (missing {absent})"
        )
    if spec.name == "fever":
        ds = _dedupe_by_id(ds, where)
    if spec.name == "siqa":
        text = [siqa_text(*row) for row in zip(*(ds[c] for c in text_cols), strict=True)]
    elif spec.name == "winogrande":
        text = [winogrande_text(*row) for row in zip(*(ds[c] for c in text_cols), strict=True)]
    else:  # SST-2 sentences end in a space in GLUE; stripped as in local.py so both sources agree
        text = [t.strip() for t in ds[text_cols]] if spec.name == "sst2" else ds[text_cols]
    columns = {"text": text}
    if pair_col:
        columns["text_pair"] = ds[pair_col]
    columns["label"] = [map_label(spec.name, name, where) for name in _label_names(ds, label_col)]
    return datasets.Dataset.from_dict(columns)


def load_hub(
    spec: TaskSpec, split: str, *, winogrande_size: str | None = None
) -> tuple[datasets.Dataset, str]:
    """``(dataset, origin)`` for a paper task from the Hub; ``origin`` = ``id[/config]@revision:split``."""
    src = hub_source(spec, split, winogrande_size)
    where = f"{src['id']}/{src['config']}@{src['revision']}:{src['split']}"
    ds = convert(spec, _download(spec, src), where)
    expected = FEVER_CLAIMS.get(src["split"]) if spec.name == "fever" else None
    if expected is not None and len(ds) != expected:
        log.warning("%s: %d unique claims, the official FEVER 1.0 file has %d", where, len(ds), expected)
    return ds, where
