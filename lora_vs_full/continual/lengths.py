"""Max length from MEASURED token lengths, and the truncation it causes (issue 11).

A fixed ``max_length=64`` cut part of the third answer from 10.8 % of SIQA inputs: the model was asked
to choose among answers it could not read. Here each task's max length is the longest tokenised input
of the rows a run actually uses (fine-tuning, probe and eval rows), capped by ``optim.max_length``
(the model's ceiling), and the truncation that remains is measured and printed:

- ``truncated``: share of inputs longer than the max length (anything cut, e.g. the end of a premise);
- ``answers_cut``: SIQA / WinoGrande only -- share of inputs whose LAST answer / option ends beyond the
  max length (the instruction string is "question, answers, format line", PAPER.md §4; the format line
  alone may be cut without hiding a choice). Must be 0 for the choices to be readable.

Token counts include the special tokens ([CLS] ... [SEP]) the model sees.
"""

from __future__ import annotations

import math

import numpy as np

# Where the answer list ends in the instruction strings of lora_vs_full.data.formatting: the text
# before this marker holds every answer / option (the marker starts the format line).
CHOICES_END = {
    "siqa": "\n\nAnswer format:",
    "winogrande": " Answer format:",
}


def token_lengths(tokenizer, texts, pairs=None) -> np.ndarray:
    """Token count (with special tokens, no truncation) of every input ``text`` [+ ``pair``]."""
    texts = list(texts)
    if not texts:
        return np.zeros(0, dtype=np.int64)
    enc = tokenizer(texts, list(pairs) if pairs is not None else None, truncation=False)
    return np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64)


def choice_end_lengths(tokenizer, task: str, texts) -> np.ndarray | None:
    """Tokens needed to include every answer / option of ``task``'s instruction strings (None for tasks
    without answer choices). Measured by tokenising the prefix up to the format line (it ends at a
    space or newline, so the prefix tokenises as in the full string)."""
    marker = CHOICES_END.get(task)
    if marker is None:
        return None
    prefixes = []
    for text in texts:
        cut = text.rfind(marker)
        prefixes.append(text if cut < 0 else text[:cut])
    return token_lengths(tokenizer, prefixes)


def choose_max_length(measured_max: int, ceiling: int, multiple: int = 8) -> int:
    """The longest measured input rounded up to a multiple of ``multiple``, never above ``ceiling``."""
    return int(min(int(ceiling), multiple * math.ceil(int(measured_max) / multiple)))


def measure(tokenizer, task: str, datasets_, *, ceiling: int, auto: bool = True) -> dict:
    """Measure ``task``'s inputs over the given datasets (columns text[, text_pair]) and pick its max
    length: the measured maximum (``auto``) or ``ceiling`` itself. Returns a JSON-able record."""
    texts, pairs = [], []
    for ds in datasets_:
        texts += list(ds["text"])
        if "text_pair" in ds.column_names:
            pairs += list(ds["text_pair"])
    lengths = token_lengths(tokenizer, texts, pairs if pairs else None)
    max_length = choose_max_length(int(lengths.max()), ceiling) if auto else int(ceiling)
    choices = choice_end_lengths(tokenizer, task, texts)
    rec = {
        "task": task,
        "n_inputs": int(len(lengths)),
        "max_tokens": int(lengths.max()),
        "p99_tokens": float(np.percentile(lengths, 99)),
        "max_length": max_length,
        "truncated": float((lengths > max_length).mean()),
        "answers_cut": None if choices is None else float((choices > max_length).mean()),
    }
    return rec


def describe(rec: dict) -> str:
    """One printable line for a :func:`measure` record."""
    line = (f"{rec['task']}: max length {rec['max_length']} (longest input {rec['max_tokens']} tokens over "
            f"{rec['n_inputs']} inputs); truncated {100 * rec['truncated']:.1f} %")  # fmt: skip
    if _given(rec.get("answers_cut")):
        line += f", answers/options cut {100 * rec['answers_cut']:.1f} %"
    if rec.get("reference_length") is not None:  # the same rows at a fixed reference length, for comparison
        line += f" (at {int(rec['reference_length'])}: truncated {100 * rec['truncated_at_ref']:.1f} %"
        if _given(rec.get("answers_cut_at_ref")):
            line += f", answers/options cut {100 * rec['answers_cut_at_ref']:.1f} %"
        line += ")"
    return line


def _given(v) -> bool:
    """Not None and not NaN (a table column holds NaN where a task has no answer choices)."""
    return v is not None and v == v
