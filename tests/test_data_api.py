"""The data API: registry, max_samples subsets, Hub conversion by label NAME, the offline message."""

from __future__ import annotations

import datasets
import pytest

from lora_vs_full.data import TASKS, get_task, load_task, subsample
from lora_vs_full.data.hub import convert
from lora_vs_full.errors import UserError


def test_registry_label_maps_follow_the_paper():
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("qqp").label_names == ("not_duplicate", "duplicate")
    assert get_task("sst2").label_names == ("negative", "positive")
    assert get_task("fever").label_names == ("REFUTES", "NOT ENOUGH INFO", "SUPPORTS")
    assert {n: t.is_pair for n, t in TASKS.items() if t.source == "paper"} == {
        "mnli": True, "qqp": True, "sst2": False, "siqa": False, "winogrande": False, "fever": False,
    }  # fmt: skip
    assert get_task("siqa").hub_revision == "refs/convert/parquet"
    assert get_task("winogrande").hub_config == "winogrande_xl"


def test_unknown_task_and_split():
    with pytest.raises(UserError, match=r"unknown task 'mnlii'.*mnli, qqp, sst2, siqa, winogrande, fever"):
        get_task("mnlii")
    with pytest.raises(UserError, match=r"split='test'.*train, eval"):
        load_task("synth_nli", "test")


def test_max_samples_is_a_seeded_random_subset():
    full = load_task("synth_sentiment", "train")
    a = load_task("synth_sentiment", "train", max_samples=50, seed=1)
    b = load_task("synth_sentiment", "train", max_samples=50, seed=1)
    c = load_task("synth_sentiment", "train", max_samples=50, seed=2)
    assert len(a) == 50 and a["text"] == b["text"]
    assert a["text"] != full["text"][:50]  # not the head
    assert a["text"] != c["text"]
    assert set(a["text"]) <= set(full["text"])
    assert len(load_task("synth_nli", "eval", max_samples=10**6)) == 800  # the cap only caps
    for bad in (0, -3, 2.5, True):
        with pytest.raises(UserError, match="max_samples"):
            subsample(full, bad, seed=0)


def _fake(columns: dict, features: dict | None = None) -> datasets.Dataset:
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features) if features else None)


def test_hub_conversion_maps_labels_by_name():
    # A mirror whose ClassLabel order differs from ours: ids must be remapped through the names.
    mirror = _fake(
        {"premise": ["p", "q"], "hypothesis": ["h", "i"], "label": [0, 2], "idx": [0, 1]},
        {"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
         "label": datasets.ClassLabel(names=["contradiction", "entailment", "neutral"]), "idx": datasets.Value("int32")},
    )  # fmt: skip
    assert convert(get_task("mnli"), mirror, "m")[:] == {
        "text": ["p", "q"],
        "text_pair": ["h", "i"],
        "label": [2, 1],
    }
    fever = _fake({"id": [7, 7, 8], "label": ["SUPPORTS", "SUPPORTS", "REFUTES"], "claim": ["x", "x", "y"]})
    assert convert(get_task("fever"), fever, "f")[:] == {"text": ["x", "y"], "label": [2, 0]}
    fever_by_position = _fake({"id": [1], "label": [0], "claim": ["x"]})  # bare ints: refuse to guess
    with pytest.raises(UserError, match="unexpected fever label '0'"):
        convert(get_task("fever"), fever_by_position, "f")
    siqa = _fake(
        {
            "context": ["C."],
            "question": ["Q?"],
            "answerA": ["a"],
            "answerB": ["b"],
            "answerC": ["c"],
            "label": ["2"],
        }
    )
    out = convert(get_task("siqa"), siqa, "s")
    assert out["label"] == [1] and out["text"][0].startswith(
        "Please choose the correct answer to the question: C. Q?"
    )
    wino = _fake({"sentence": ["s _"], "option1": ["x"], "option2": ["y"], "answer": ["1"]})
    assert convert(get_task("winogrande"), wino, "w")["label"] == [0]
    with pytest.raises(UserError, match=r"w: expected columns .*missing \['answer'\]"):
        convert(get_task("winogrande"), wino.remove_columns("answer"), "w")


def test_hub_offline_message(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    with pytest.raises(UserError) as err:
        load_task("sst2", "eval")
    msg = str(err.value)
    # the real cause and the library's own message, never a guess
    assert msg.startswith("could not load nyu-mll/glue/sst2@main:validation: the Hub cannot be reached")
    assert "task.hub_root=" in msg and "task.data_dir=" in msg and "OfflineModeIsEnabled" in msg
    assert "\n" not in msg
