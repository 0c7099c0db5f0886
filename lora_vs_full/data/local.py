"""Readers for the ORIGINAL release formats of the six paper tasks (as in ``../shared/data/raw``).

``data_dir`` is either the task's own folder (``.../SST-2``) or a root holding it (``.../raw``).
Which file serves which split (the first is the release file; the others are SUBSTITUTES, used only with
``allow_substitutes=True`` -- ``task.allow_substitutes=true``, on in the offline presets -- and then named
in the run's ``final.json`` ``substitutions`` list, which tables and headlines carry):

| task | train | eval |
|---|---|---|
| sst2 | ``train.tsv`` | ``dev.tsv`` (GLUE dev = HF validation) |
| mnli | ``train.tsv``; substitute ``glue_pretrain_subset/train.json`` (8,999-pair train subset) | ``dev_matched.tsv``, or ``dev.jsonl`` (the same validation_matched as jsonl, not a substitute) |
| qqp | ``train.tsv``; substitute ``glue_pretrain_subset/train.json`` | ``dev.tsv``; substitute ``glue_pretrain_subset/dev.json`` (a held-out TRAIN subset, NOT the official dev) |
| siqa | ``[socialiqa-train-dev/]train.jsonl`` + ``train-labels.lst`` | ``dev.jsonl`` + ``dev-labels.lst`` |
| winogrande | ``[winogrande_1.1/]train_<size>.jsonl`` + labels, size xl; substitute: the largest size present | ``dev.jsonl`` + ``dev-labels.lst`` |
| fever | ``train.jsonl``; substitute ``paper_dev.jsonl`` (disjoint from paper_test) | ``paper_test.jsonl`` |

Every file read is recorded with its sha256 (:func:`load_local`'s record).
GLUE TSVs are read with ``quoting=QUOTE_NONE``: they contain unbalanced quotes that the default
dialect would swallow across lines (silently merging rows). FEVER claims are deduplicated by ``id``.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
from pathlib import Path

import datasets

from lora_vs_full.data.formatting import map_label, siqa_text, winogrande_text
from lora_vs_full.data.hub import file_record
from lora_vs_full.data.registry import WINOGRANDE_SIZES, TaskSpec
from lora_vs_full.errors import UserError

log = logging.getLogger(__name__)


class _Reading:
    """What one load read: the files, and the substitution made (if any, and only when allowed)."""

    def __init__(self, allow_substitutes: bool):
        self.allow = allow_substitutes
        self.files: list[Path] = []
        self.substitution: str | None = None

    def substitute(self, what: str, wanted: str, used: Path, note: str) -> None:
        if not self.allow:
            raise UserError(
                f"{what}: {wanted} is absent in {used.parent}; {used.name} is there but is a substitute ({note}): "
                f"add {wanted}, or pass task.allow_substitutes=true to use it (the run then records the substitution)"
            )
        self.substitution = f"{what}: {used} instead of {wanted} ({note})"
        log.warning("SUBSTITUTE %s", self.substitution)


def task_dir(spec: TaskSpec, data_dir: str | Path) -> Path:
    """``data_dir/<local_dirname>`` when it exists, else ``data_dir`` itself (the task folder given directly)."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise UserError(
            f"data_dir={str(data_dir)!r} is not a directory: pass the folder with the {spec.name} files"
        )
    sub = root / spec.local_dirname
    return sub if sub.is_dir() else root


def _find(folder: Path, candidates: tuple, what: str, reading: _Reading | None = None) -> Path:
    """The first existing candidate; a candidate ``(name, note)`` is a substitute (needs allow_substitutes)."""
    names = [c[0] if isinstance(c, tuple) else c for c in candidates]
    for cand, name in zip(candidates, names, strict=True):
        if (folder / name).is_file():
            if isinstance(cand, tuple):
                (reading or _Reading(False)).substitute(what, names[0], folder / name, cand[1])
            return folder / name
    raise UserError(
        f"no {what} file in {folder}: expected {names[0]}"
        + (f" (substitutes: {', '.join(names[1:])})" if len(names) > 1 else "")
    )


def _missing(path: Path, row: dict, keys: tuple[str, ...], where: str) -> None:
    absent = [k for k in keys if k not in row]
    if absent:
        raise UserError(
            f"{path}{where}: expected fields {list(keys)}, found {sorted(row)} (missing {absent})"
        )


def read_tsv(path: Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of a headed TSV as dicts (QUOTE_NONE); UserError on missing columns or ragged rows."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: empty file, expected a header with columns {list(required)}")
        _missing(path, dict.fromkeys(header), required, " header")
        rows = []
        for lineno, fields in enumerate(reader, start=2):
            if len(fields) != len(header):
                raise UserError(
                    f"{path}:{lineno}: expected {len(header)} tab-separated fields, found {len(fields)}"
                )
            rows.append(dict(zip(header, fields, strict=True)))
    return rows


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{path}:{lineno}: not JSON ({exc.msg}); expected one JSON object per line"
                ) from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object with fields {list(required)}")
            _missing(path, row, required, f":{lineno}")
            rows.append(row)
    return rows


def read_keyed_json(path: Path, required: tuple[str, ...]) -> list[dict]:
    """PowerfulPromptFT ``glue_pretrain`` files: one JSON object keyed "0".."N" (or a list), in key order."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not JSON ({exc.msg})") from None
    if isinstance(obj, dict):
        try:
            rows = [obj[k] for k in sorted(obj, key=int)]
        except ValueError:
            raise UserError(
                f"{path}: expected an object keyed by row numbers, found keys like {list(obj)[:3]}"
            ) from None
    elif isinstance(obj, list):
        rows = obj
    else:
        raise UserError(f"{path}: expected an object or list of rows with fields {list(required)}")
    for i, row in enumerate(rows):
        _missing(path, row if isinstance(row, dict) else {}, required, f" row {i}")
    return rows


def read_labels(path: Path, n_rows: int, data: Path) -> list[str]:
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(labels) != n_rows:
        raise UserError(
            f"{path}: {len(labels)} labels for {n_rows} rows in {data}; expected one label per row"
        )
    return labels


# Pair tasks: which files serve a split (first existing wins) and, per file format, the source columns
# (text, text_pair, label).
_SUBSET = "an 8,999-pair subset of the GLUE train set"
_PAIR_FILES = {
    ("mnli", "train"): ("train.tsv", ("glue_pretrain_subset/train.json", _SUBSET)),
    ("mnli", "eval"): ("dev_matched.tsv", "dev.jsonl"),  # the same validation_matched rows as jsonl
    ("qqp", "train"): ("train.tsv", ("glue_pretrain_subset/train.json", _SUBSET)),
    ("qqp", "eval"): (
        "dev.tsv",
        ("glue_pretrain_subset/dev.json", "a held-out subset of QQP TRAIN, not the official dev"),
    ),
}
_PAIR_COLUMNS = {
    ("mnli", ".tsv"): ("sentence1", "sentence2", "gold_label"),
    ("mnli", ".jsonl"): ("premise", "hypothesis", "label"),
    ("mnli", ".json"): ("text_a", "text_b", "label"),
    ("qqp", ".tsv"): ("question1", "question2", "is_duplicate"),
    ("qqp", ".json"): ("text_a", "text_b", "label"),
}
_READ = {".tsv": read_tsv, ".jsonl": read_jsonl, ".json": read_keyed_json}


def _pair_task(task: str, folder: Path, split: str, reading: _Reading) -> tuple[dict, Path]:
    path = _find(folder, _PAIR_FILES[(task, split)], f"{task.upper()} {split}", reading)
    if task == "qqp" and split == "eval" and path.suffix == ".json":
        log.warning("QQP eval: the official GLUE dev is absent; %s is a held-out subset of QQP TRAIN", path)
    a, b, y = cols = _PAIR_COLUMNS[(task, path.suffix)]
    rows = _READ[path.suffix](path, cols)
    columns = {
        "text": [r[a] for r in rows],
        "text_pair": [r[b] for r in rows],
        "label": [map_label(task, r[y], str(path)) for r in rows],
    }
    return columns, path


def _sst2(folder: Path, split: str, reading: _Reading) -> tuple[dict, Path]:
    path = _find(folder, ("train.tsv",) if split == "train" else ("dev.tsv",), f"SST-2 {split}")
    rows = read_tsv(path, ("sentence", "label"))
    # GLUE sentences end in a space before the tab; stripped (here and in hub.py) so sources agree.
    return {
        "text": [r["sentence"].strip() for r in rows],
        "label": [map_label("sst2", r["label"], str(path)) for r in rows],
    }, path


def _labelled_jsonl(
    folder: Path, subdir: str, stem: str, what: str, fields: tuple[str, ...], reading: _Reading
) -> tuple[list, list, Path]:
    """AI2 release layout: ``<stem>.jsonl`` + ``<stem>-labels.lst`` in ``folder`` or ``folder/subdir``."""
    for base in (folder / subdir, folder):
        if (base / f"{stem}.jsonl").is_file():
            data, labels = base / f"{stem}.jsonl", base / f"{stem}-labels.lst"
            rows = read_jsonl(data, fields)
            if not labels.is_file():
                raise UserError(f"{what}: {data} has no label file; expected {labels}")
            reading.files.append(labels)
            return rows, read_labels(labels, len(rows), data), data
    raise UserError(
        f"no {what} file in {folder} or {folder / subdir}: expected {stem}.jsonl and {stem}-labels.lst"
    )


def _siqa(folder: Path, split: str, reading: _Reading) -> tuple[dict, Path]:
    fields = ("context", "question", "answerA", "answerB", "answerC")
    stem = "train" if split == "train" else "dev"
    rows, labels, path = _labelled_jsonl(
        folder, "socialiqa-train-dev", stem, f"SocialIQa {split}", fields, reading
    )
    text = [siqa_text(r["context"], r["question"], r["answerA"], r["answerB"], r["answerC"]) for r in rows]
    return {"text": text, "label": [map_label("siqa", y, str(path)) for y in labels]}, path


def _winogrande_stem(folder: Path, size: str | None, reading: _Reading) -> str:
    present = [
        s
        for s in WINOGRANDE_SIZES
        if any((b / f"train_{s}.jsonl").is_file() for b in (folder, folder / "winogrande_1.1"))
    ]
    if size is not None:
        if size not in WINOGRANDE_SIZES:
            raise UserError(f"winogrande size={size!r} is not one of {', '.join(WINOGRANDE_SIZES)}")
        if size not in present:
            raise UserError(
                f"WinoGrande train_{size}.jsonl not found in {folder}; sizes present: {present or 'none'}"
            )
        return f"train_{size}"
    if not present:
        raise UserError(
            f"no WinoGrande train file in {folder}: expected winogrande_1.1/train_<size>.jsonl, size in {WINOGRANDE_SIZES}"
        )
    if present[-1] != "xl":
        reading.substitute(
            "WinoGrande train",
            "train_xl.jsonl",
            folder / f"train_{present[-1]}.jsonl",
            f"the largest size present ({present[-1]}), not xl",
        )
    return f"train_{present[-1]}"


def _winogrande(folder: Path, split: str, reading: _Reading, size: str | None = None) -> tuple[dict, Path]:
    stem = _winogrande_stem(folder, size, reading) if split == "train" else "dev"
    fields = ("sentence", "option1", "option2")
    rows, labels, path = _labelled_jsonl(
        folder, "winogrande_1.1", stem, f"WinoGrande {split}", fields, reading
    )
    text = [winogrande_text(r["sentence"], r["option1"], r["option2"]) for r in rows]
    return {"text": text, "label": [map_label("winogrande", y, str(path)) for y in labels]}, path


def _fever(folder: Path, split: str, reading: _Reading) -> tuple[dict, Path]:
    names = (
        ("train.jsonl", ("paper_dev.jsonl", "FEVER 1.0 paper_dev, 9,999 claims, disjoint from paper_test"))
        if split == "train"
        else ("paper_test.jsonl",)
    )
    path = _find(folder, names, f"FEVER {split}", reading)
    text, label, seen = [], [], set()
    for row in read_jsonl(path, ("id", "claim", "label")):
        if row["id"] in seen:  # shared-task files may repeat a claim; one row per claim id
            continue
        seen.add(row["id"])
        text.append(row["claim"])
        label.append(map_label("fever", row["label"], str(path)))
    return {"text": text, "label": label}, path


_READERS = {
    "sst2": _sst2,
    "mnli": functools.partial(_pair_task, "mnli"),
    "qqp": functools.partial(_pair_task, "qqp"),
    "siqa": _siqa,
    "fever": _fever,
}


def load_local(
    spec: TaskSpec,
    split: str,
    data_dir: str | Path,
    *,
    winogrande_size: str | None = None,
    allow_substitutes: bool = False,
) -> tuple[datasets.Dataset, str, dict]:
    """``(dataset, origin, record)`` for a paper task from its release files; ``origin`` is the file read.

    ``record``: ``{"source": "local", "files": [{"path", "bytes", "sha256"}], "substitution": str | None}``.
    A substitute file (table above) is a UserError unless ``allow_substitutes``.
    """
    folder = task_dir(spec, data_dir)
    reading = _Reading(allow_substitutes)
    if spec.name == "winogrande":
        columns, path = _winogrande(folder, split, reading, winogrande_size)
    else:
        columns, path = _READERS[spec.name](folder, split, reading)
    log.info("%s %s: %d rows from %s", spec.name, split, len(columns["label"]), path)
    record = {
        "source": "local",
        "data_dir": str(Path(data_dir).resolve()),
        "files": [file_record(f) for f in [path, *reading.files]],
        "rows": len(columns["label"]),
        "substitution": reading.substitution,
    }
    return datasets.Dataset.from_dict(columns), str(path), record
