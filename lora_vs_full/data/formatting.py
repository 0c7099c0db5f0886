"""Turning raw task records into model inputs: the instruction strings and the label maps by name.

SIQA and WinoGrande are classified as ONE instruction string each (PAPER.md §4). The templates are the
ones of the authors' LLM-Adapters-style files (reeceshuttle/intruder-dimensions ``dataset/*/test.json``,
copied in ``../shared/data/raw/*/llm_adapters_format``), reproduced character for character, including
their spacing: SIQA puts the answer list and the format line in separate paragraphs, WinoGrande puts
the format line on the options' line.
"""

from __future__ import annotations

from lora_vs_full.errors import UserError

SIQA_TEMPLATE = (
    "Please choose the correct answer to the question: {context} {question}\n\n"
    "Answer1: {answer1} Answer2: {answer2} Answer3: {answer3}\n\n"
    "Answer format: answer1/answer2/answer3"
)
WINOGRANDE_TEMPLATE = (
    "Please choose the correct answer to fill in the blank to complete the given sentence: {sentence}\n\n"
    "Option1: {option1} Option2: {option2} Answer format: option1/option2"
)


def siqa_text(context: str, question: str, answer_a: str, answer_b: str, answer_c: str) -> str:
    """The SIQA instruction string: question (after its context), the three answers, the format line."""
    return SIQA_TEMPLATE.format(
        context=context, question=question, answer1=answer_a, answer2=answer_b, answer3=answer_c
    )


def winogrande_text(sentence: str, option1: str, option2: str) -> str:
    """The WinoGrande instruction string: the sentence with its blank ``_``, both options, the format line."""
    return WINOGRANDE_TEMPLATE.format(sentence=sentence, option1=option1, option2=option2)


# Every spelling of a label found in the release files and Hub mirrors -> the paper's label id.
# Lookup is by NAME (mirrors disagree on integer order), after str() and strip().
LABEL_ALIASES: dict[str, dict[str, int]] = {
    "mnli": {"entailment": 0, "neutral": 1, "contradiction": 2},
    "qqp": {"0": 0, "1": 1, "not_duplicate": 0, "duplicate": 1},
    "sst2": {"0": 0, "1": 1, "negative": 0, "positive": 1},
    "siqa": {"1": 0, "2": 1, "3": 2},  # 1-based in the release (answerA/B/C)
    "winogrande": {"1": 0, "2": 1},  # the `answer` field is "1"/"2"
    "fever": {"REFUTES": 0, "NOT ENOUGH INFO": 1, "SUPPORTS": 2},
}


def map_label(task: str, raw, where: str) -> int:
    """The label id of ``raw`` for ``task``; :class:`UserError` naming ``where`` (a file) if unknown."""
    aliases = LABEL_ALIASES[task]
    key = str(raw).strip()
    if key not in aliases:
        raise UserError(f"{where}: unexpected {task} label {raw!r}; expected one of {sorted(aliases)}")
    return aliases[key]
