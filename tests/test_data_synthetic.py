"""Synthetic tasks: deterministic, exactly balanced, disjoint splits, right columns, rule-consistent labels."""

from __future__ import annotations

import re
from collections import Counter

from lora_vs_full.data import TASKS, load_task
from lora_vs_full.data.synthetic import SIZES, synthetic_rows


def test_columns_sizes_and_balance():
    for name, pair in (("synth_sentiment", False), ("synth_nli", True)):
        spec = TASKS[name]
        assert spec.is_pair is pair and spec.source == "synthetic"
        for split in ("train", "eval"):
            ds = load_task(name, split)
            expected = {"text", "label"} | ({"text_pair"} if pair else set())
            assert set(ds.column_names) == expected
            assert len(ds) == SIZES[split]
            counts = Counter(ds["label"])
            assert sorted(counts) == list(range(spec.num_labels))
            assert max(counts.values()) - min(counts.values()) <= 1  # exactly balanced


def test_deterministic_and_seed_dependent():
    assert synthetic_rows("synth_nli", "train", seed=3) == synthetic_rows("synth_nli", "train", seed=3)
    assert synthetic_rows("synth_nli", "train", seed=3) != synthetic_rows("synth_nli", "train", seed=4)
    assert load_task("synth_sentiment", "eval")[:] == load_task("synth_sentiment", "eval")[:]


def test_splits_disjoint_and_no_duplicates():
    for name in ("synth_sentiment", "synth_nli"):
        train = {(r["text"], r.get("text_pair")) for r in synthetic_rows(name, "train")}
        evals = [(r["text"], r.get("text_pair")) for r in synthetic_rows(name, "eval")]
        assert len(train) == SIZES["train"] and len(set(evals)) == SIZES["eval"]
        assert not train & set(evals)


_POS = {"good", "great", "wonderful", "brilliant", "charming", "delightful", "moving", "superb"}
_POS |= {"clever", "enjoyable", "gripping", "beautiful"}


def _polarity(clause: str) -> int:
    """Independent re-derivation of the sentiment rule from the surface text."""
    adjective = clause.strip(" .").split()[-1]
    negated = bool(re.search(r"\b(not|never|hardly)\b", clause))
    return int((adjective in _POS) != negated)


def _main_clause(text: str) -> str:
    """The clause that decides: after "but"; otherwise the one not introduced by "although"."""
    if ", but " in text:
        return text.split(", but ")[-1]
    if text.startswith("although "):
        return text.split(", ", 1)[1]
    return text.split(", although ")[0]


def test_sentiment_labels_follow_the_rule():
    rows = synthetic_rows("synth_sentiment", "train")
    for row in rows:
        assert _polarity(_main_clause(row["text"])) == row["label"], row
    forms = Counter(
        "but" if ", but " in r["text"] else "although" if "although" in r["text"] else "plain" for r in rows
    )
    assert min(forms.values()) > 0.2 * len(rows)
    # compositional: the last adjective alone is at chance (negation and clause order are needed)
    adjective_only = sum(int(r["text"].strip(".").split()[-1] in _POS) == r["label"] for r in rows) / len(
        rows
    )
    assert abs(adjective_only - 0.5) < 0.05


def test_nli_labels_follow_the_rule():
    for row in synthetic_rows("synth_nli", "train")[:500]:
        actor, hyp = row["text"].split()[0], row["text_pair"]
        negated = bool(re.search(r"\b(not|never|nobody)\b", hyp))
        same_actor = hyp.split()[0] in (actor, "someone", "nobody") and " also " not in hyp
        expected = (2 if negated else 0) if same_actor else 1
        assert expected == row["label"], row
