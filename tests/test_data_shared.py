"""Integration: the six tasks load from ../shared/data/raw with the counts recorded in its PROVENANCE.md."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lora_vs_full.data import load_task

pytestmark = pytest.mark.shared_data

# (task, split) -> (rows, {label id: count}); numbers from PROVENANCE.md, mapped through the paper's label ids.
EXPECTED = {
    ("sst2", "train"): (67349, {0: 29780, 1: 37569}),
    ("sst2", "eval"): (872, {0: 428, 1: 444}),
    ("mnli", "train"): (8999, {0: 3061, 1: 2980, 2: 2958}),  # glue_pretrain_subset/train.json
    ("mnli", "eval"): (9815, {0: 3479, 1: 3123, 2: 3213}),  # dev.jsonl = validation_matched
    ("qqp", "train"): (8999, {0: 5747, 1: 3252}),
    ("qqp", "eval"): (1000, {0: 623, 1: 377}),  # held-out TRAIN subset: the official dev is absent
    ("siqa", "train"): (33410, {0: 11274, 1: 11176, 2: 10960}),
    ("siqa", "eval"): (1954, {0: 643, 1: 654, 2: 657}),
    ("winogrande", "train"): (10234, {0: 5117, 1: 5117}),  # train_l: train_xl is absent
    ("winogrande", "eval"): (1267, {0: 628, 1: 639}),
    ("fever", "train"): (9999, {0: 3333, 1: 3333, 2: 3333}),  # paper_dev: train.jsonl is absent
    ("fever", "eval"): (9999, {0: 3333, 1: 3333, 2: 3333}),  # paper_test: 9,999 unique claim ids
}


@pytest.mark.parametrize("task", ["sst2", "mnli", "qqp", "siqa", "winogrande", "fever"])
def test_counts_match_provenance(shared_raw, task):
    for split in ("train", "eval"):
        ds = load_task(task, split, data_dir=shared_raw, allow_substitutes=True)
        rows, labels = EXPECTED[(task, split)]
        assert (len(ds), dict(Counter(ds["label"]))) == (rows, labels)
        assert all(isinstance(t, str) and t for t in ds["text"][:1000])


@pytest.mark.parametrize("task", ["siqa", "winogrande"])
def test_templates_equal_the_authors_files(shared_raw, task):
    """Every eval string and label equals the authors' LLM-Adapters test.json (an independent copy)."""
    folder = {"siqa": "SocialIQa", "winogrande": "WinoGrande"}[task]
    reference = json.loads((shared_raw / folder / "llm_adapters_format/test.json").read_text())
    ours = load_task(task, "eval", data_dir=shared_raw, allow_substitutes=True)
    assert ours["text"] == [r["instruction"] for r in reference]
    prefix = "answer" if task == "siqa" else "option"
    assert ours["label"] == [int(r["answer"].removeprefix(prefix)) - 1 for r in reference]


def test_train_and_eval_are_disjoint(shared_raw):
    """The fallback train files never leak eval items (MNLI: as pairs, premises do recur; FEVER: claims)."""
    for task in ("mnli", "fever"):
        train, evals = (
            load_task(task, s, data_dir=shared_raw, allow_substitutes=True) for s in ("train", "eval")
        )
        items = [
            set(zip(d["text"], d["text_pair"] if task == "mnli" else d["text"], strict=True))
            for d in (train, evals)
        ]
        assert not items[0] & items[1], task
