"""Offline synthetic tasks: English sentences from templates + word lists, labels from a compositional rule.

No files, no network: a task is a pure function of (split, seed). They exist so the offline demo and the
tests can fine-tune a small pretrained encoder and actually move its weights.

- ``synth_sentiment`` (single sentence, negative 0 / positive 1): a polar adjective, flipped by a
  negation ("the movie was not good" -> 0); with a contrast ("X, but Y") the clause after "but" decides,
  with a concession ("although X, Y" / "Y, although X") the clause NOT introduced by "although" decides.
- ``synth_nli`` (pair, entailment 0 / neutral 1 / contradiction 2): the premise says who did what where;
  the hypothesis restates it (entailment), negates it (contradiction) or talks about someone/something the
  premise says nothing about (neutral). The label depends on comparing the two sentences, not on one word.
- ``synth_order`` (pair, consistent 0 / inconsistent 1): the premise orders two people by a relation
  ("anna arrived before ben"), the hypothesis restates the order with the same or the inverse relation
  and the same or swapped people ("ben arrived after anna" -> consistent). Both labels use exactly the
  same words, so a bag-of-words (or mean-pooled) representation cannot tell them apart: the label lives
  in word ORDER, which the pretrained probe does not read and fine-tuning has to learn.

Sizes are fixed (train 4,000 / eval 800), labels exactly balanced, and eval texts never occur in train.
"""

from __future__ import annotations

import random

SIZES = {"train": 4000, "eval": 800}

_SUBJECTS = (
    "movie", "film", "plot", "acting", "soundtrack", "ending", "script", "cast", "story", "dialogue",
    "direction", "camera work", "pacing", "humor", "sequel", "performance",
)  # fmt: skip
_POSITIVE = (
    "good", "great", "wonderful", "brilliant", "charming", "delightful", "moving", "superb", "clever",
    "enjoyable", "gripping", "beautiful",
)  # fmt: skip
_NEGATIVE = (
    "bad", "awful", "terrible", "boring", "dull", "clumsy", "tedious", "weak", "painful", "bland",
    "forgettable", "messy",
)  # fmt: skip
_INTENSIFIERS = ("", "", "really ", "very ", "quite ", "truly ", "rather ")
_NEGATIONS = ("not", "never", "not at all", "hardly")
_VERBS = ("was", "is", "felt", "seemed")

_NAMES = (
    "anna", "ben", "carla", "david", "emma", "frank", "grace", "henry", "iris", "jack", "kate", "leo",
    "maria", "nick", "olga", "paul",
)  # fmt: skip
_OBJECTS = ("ball", "book", "cup", "lamp", "key", "hat", "box", "coat", "phone", "bag", "chair", "map")
_COLOURS = ("red", "blue", "green", "black", "white", "yellow", "old", "new", "small", "large")
_PLACES = ("kitchen", "garden", "office", "hallway", "library", "garage", "classroom", "station")
# (past tense, base form) so a negated hypothesis reads naturally: "saw" / "did not see".
_ACTIONS = (
    ("saw", "see"), ("found", "find"), ("bought", "buy"), ("moved", "move"), ("painted", "paint"),
    ("lost", "lose"), ("cleaned", "clean"), ("dropped", "drop"),
)  # fmt: skip


def _clause(rng: random.Random, positive: bool) -> str:
    """'the <subject> <verb> [not] <adj>' whose polarity is ``positive``; negation is decided first."""
    negated = rng.random() < 0.5
    adj = rng.choice(_POSITIVE if positive != negated else _NEGATIVE)
    if negated:  # negation reads naturally after "was"/"is" only, and without an intensifier
        verb, neg, intens = rng.choice(("was", "is")), rng.choice(_NEGATIONS), ""
    else:
        verb, neg, intens = rng.choice(_VERBS), "", rng.choice(_INTENSIFIERS).strip()
    return " ".join(w for w in ("the", rng.choice(_SUBJECTS), verb, neg, intens, adj) if w)


def _sentiment(rng: random.Random, label: int) -> dict:
    positive, other = label == 1, rng.random() < 0.5  # ``other``: the distractor clause's polarity
    form = rng.random()
    if form < 0.25:  # contrast: the clause after "but" carries the label
        text = f"{_clause(rng, other)}, but {_clause(rng, positive)}."
    elif form < 0.4:  # concession first: the main (second) clause carries the label
        text = f"although {_clause(rng, other)}, {_clause(rng, positive)}."
    elif form < 0.55:  # concession last: now the FIRST clause carries it (word order matters)
        text = f"{_clause(rng, positive)}, although {_clause(rng, other)}."
    else:
        text = _clause(rng, positive) + "."
    return {"text": text, "label": label}


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _nli(rng: random.Random, label: int) -> dict:
    name, other = rng.sample(_NAMES, 2)
    (past, base), obj = rng.choice(_ACTIONS), rng.choice(_OBJECTS)
    colour, colour2 = rng.sample(_COLOURS, 2)
    place = rng.choice(_PLACES)
    premise = f"{name} {past} the {colour} {obj} in the {place}."
    if label == 0:  # restates part of the premise
        hyp = rng.choice(
            (
                f"{name} {past} the {obj}.",
                f"{name} {past} {_a(colour)} {colour} {obj}.",
                f"{name} was in the {place}.",
                f"someone {past} the {colour} {obj}.",
            )
        )
    elif label == 2:  # denies the premise
        hyp = rng.choice(
            (
                f"{name} did not {base} the {obj}.",
                f"{name} never {past} the {colour} {obj}.",
                f"nobody {past} the {obj}.",
                f"{name} was never in the {place}.",
            )
        )
    else:  # about someone / something the premise is silent on
        hyp = rng.choice(
            (
                f"{other} {past} the {obj}.",
                f"{other} was in the {place}.",
                f"{name} also {past} {_a(colour2)} {colour2} {obj}.",
                f"{other} did not {base} the {obj}.",
            )
        )
    return {"text": premise, "text_pair": hyp, "label": label}


# (relation, inverse relation): "x <rel> y" says the same as "y <inverse> x".
_RELATIONS = (
    ("arrived before", "arrived after"), ("is taller than", "is shorter than"),
    ("is older than", "is younger than"), ("sat left of", "sat right of"),
    ("finished ahead of", "finished behind"), ("is heavier than", "is lighter than"),
)  # fmt: skip


def _order(rng: random.Random, label: int) -> dict:
    a, b = rng.sample(_NAMES, 2)
    rel, inv = rng.choice(_RELATIONS)
    if rng.random() < 0.5:
        rel, inv = inv, rel
    swapped = rng.random() < 0.5
    # consistent iff swapping the people comes with the inverse relation; inconsistent: exactly one of them
    inverse = swapped if label == 0 else not swapped
    x, y = (b, a) if swapped else (a, b)
    return {"text": f"{a} {rel} {b}.", "text_pair": f"{x} {inv if inverse else rel} {y}.", "label": label}


_GENERATORS = {"synth_sentiment": (_sentiment, 2), "synth_nli": (_nli, 3), "synth_order": (_order, 2)}


def _generate(name: str, n: int, rng: random.Random, exclude: set) -> list[dict]:
    make, num_labels = _GENERATORS[name]
    rows, seen = [], set(exclude)
    # Labels cycle 0,1,2,... so the split is exactly balanced; duplicates are redrawn.
    while len(rows) < n:
        row = make(rng, len(rows) % num_labels)
        key = (row["text"], row.get("text_pair"))
        if key not in seen:
            seen.add(key)
            rows.append(row)
    rng.shuffle(rows)
    return rows


def synthetic_rows(name: str, split: str, seed: int = 0) -> list[dict]:
    """Rows ``{"text", "label"[, "text_pair"]}`` of synthetic task ``name``; deterministic in ``seed``.

    ``eval`` is generated after ``train`` from the same stream and excludes every train text, so the
    two splits are disjoint.
    """
    if name not in _GENERATORS:
        raise KeyError(name)
    rng = random.Random(f"{name}:{seed}")
    train = _generate(name, SIZES["train"], rng, exclude=set())
    if split == "train":
        return train
    return _generate(name, SIZES["eval"], rng, exclude={(r["text"], r.get("text_pair")) for r in train})
