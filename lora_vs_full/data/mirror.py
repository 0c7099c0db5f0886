"""Tiny local mirrors of the six task repos, laid out EXACTLY like each Hub repo at its registry revision.

``write_hub_mirror(root)`` writes ``<root>/<repo id>/<revision>/...`` for every paper task: the same folder
and file names, README ``configs:`` / ``dataset_info`` blocks and column types as the real repo (PAPER.md
§13), with a few rows per split. ``load_task(..., hub_root=root, check_rows=False)`` then runs the training
code path (datasets' config and split inference included) without a network: the offline pipeline test,
``tests/test_hub_layouts.py`` and ``lvf-preflight``'s offline self-check use it.

Layouts (what each repo has at the revision the registry reads):

- ``nyu-mll/glue@main``: ``<config>/<split>-00000-of-00001.parquet``, README declaring configs mnli / qqp /
  sst2 and ClassLabel names (labels stored as ints, mapped by name);
- ``allenai/social_i_qa@refs/convert/parquet``: ``default/{train,validation}/0000.parquet``, no README;
  ``label`` the strings "1"/"2"/"3" (one with a trailing newline, as in an old release);
- ``allenai/winogrande@main``: ``winogrande_<size>/{train,validation,test}-00000-of-00001.parquet``, README
  declaring the configs; ``answer`` "1"/"2" ("" in test);
- ``EleutherAI/fever@main``: ``v1.0/{train,paper_dev,paper_test}-00000-of-00001.parquet``, README declaring
  config v1.0; the fever script's schema (one row per evidence sentence, ``label`` a string). The exact
  file names of this mirror are not verified offline: ``lvf-preflight`` checks them online.
"""

from __future__ import annotations

from pathlib import Path

from lora_vs_full.data.registry import TASKS

_GLUE_LABELS = {
    "mnli": ["entailment", "neutral", "contradiction"],
    "qqp": ["not_duplicate", "duplicate"],
    "sst2": ["negative", "positive"],
}
_WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november".split()


def _sent(i: int, n: int = 6) -> str:
    return " ".join(_WORDS[(i * 7 + k * 3) % len(_WORDS)] for k in range(n)) + "."


def _parquet(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)


def _readme(path: Path, configs: list[tuple[str, list[str]]], infos: list[dict] | None = None) -> None:
    import yaml

    card = {"configs": [
        {"config_name": c, "data_files": [{"split": s, "path": f"{c}/{s}-*"} for s in splits]}
        for c, splits in configs
    ]}  # fmt: skip
    if infos:
        card["dataset_info"] = infos
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n", encoding="utf-8")


def _glue(root: Path, n: int) -> None:
    repo = root / "nyu-mll/glue/main"
    splits = {"mnli": ["train", "validation_matched", "validation_mismatched"], "qqp": ["train", "validation"],
              "sst2": ["train", "validation", "test"]}  # fmt: skip
    infos = []
    for config, names in _GLUE_LABELS.items():
        a, b = {
            "mnli": ("premise", "hypothesis"),
            "qqp": ("question1", "question2"),
            "sst2": ("sentence", None),
        }[config]
        feats = [{"name": a, "dtype": "string"}] + ([{"name": b, "dtype": "string"}] if b else [])
        feats += [{"name": "label", "dtype": {"class_label": {"names": {str(i): x for i, x in enumerate(names)}}}},
                  {"name": "idx", "dtype": "int32"}]  # fmt: skip
        infos.append({"config_name": config, "features": feats})
        for split in splits[config]:
            rows = []
            for i in range(n):
                row = {a: _sent(i) + (" " if config == "sst2" else "")}
                if b:
                    row[b] = _sent(i + 3)
                row["label"] = -1 if split == "test" else i % len(names)
                row["idx"] = i
                rows.append(row)
            _parquet(repo / config / f"{split}-00000-of-00001.parquet", rows)
    _readme(repo / "README.md", [(c, splits[c]) for c in _GLUE_LABELS], infos)


def _siqa(root: Path, n: int) -> None:
    repo = root / "allenai/social_i_qa/refs/convert/parquet"
    for split in ("train", "validation"):
        rows = [
            {"context": _sent(i), "question": "What will happen next?", "answerA": _sent(i + 1, 3),
             "answerB": _sent(i + 2, 3), "answerC": _sent(i + 3, 3),
             "label": str(i % 3 + 1) + ("\n" if i == 0 else "")}
            for i in range(n)
        ]  # fmt: skip
        _parquet(repo / "default" / split / "0000.parquet", rows)


def _winogrande(root: Path, n: int) -> None:
    repo = root / "allenai/winogrande/main"
    configs = [f"winogrande_{s}" for s in ("xs", "s", "m", "l", "xl")] + ["winogrande_debiased"]
    for config in configs:
        for split in ("train", "validation", "test"):
            rows = [
                {"sentence": f"{_sent(i, 4)} _ {_sent(i + 1, 3)}", "option1": _WORDS[i % 14],
                 "option2": _WORDS[(i + 5) % 14], "answer": "" if split == "test" else str(i % 2 + 1)}
                for i in range(n)
            ]  # fmt: skip
            _parquet(repo / config / f"{split}-00000-of-00001.parquet", rows)
    _readme(repo / "README.md", [(c, ["train", "validation", "test"]) for c in configs])


def _fever(root: Path, n: int) -> None:
    repo = root / "EleutherAI/fever/main"
    labels = ["SUPPORTS", "REFUTES", "NOT ENOUGH INFO"]
    splits = ["train", "paper_dev", "paper_test"]
    for k, split in enumerate(splits):
        rows = []
        for i in range(n):
            for j in range(1 + i % 2):  # one row per evidence sentence: claims repeat
                rows.append({"id": 1000 * k + i, "label": labels[i % 3], "claim": _sent(i + k),
                             "evidence_annotation_id": i * 10 + j, "evidence_id": i, "evidence_wiki_url": "X",
                             "evidence_sentence_id": j})  # fmt: skip
        _parquet(repo / "v1.0" / f"{split}-00000-of-00001.parquet", rows)
    _readme(repo / "README.md", [("v1.0", splits)])


def write_hub_mirror(root: str | Path, *, rows: int = 12) -> Path:
    """Write tiny Hub-layout mirrors of the six paper tasks under ``root``; returns ``root``."""
    root = Path(root)
    _glue(root, rows)
    _siqa(root, rows)
    _winogrande(root, rows)
    _fever(root, rows)
    return root


def mirror_tasks() -> list[str]:
    """The tasks a mirror written by :func:`write_hub_mirror` serves."""
    return [t.name for t in TASKS.values() if t.source == "paper"]
