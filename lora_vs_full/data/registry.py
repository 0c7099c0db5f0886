"""The task registry: one :class:`TaskSpec` per task, the single place for Hub ids, revisions and label maps.

Label ids follow the paper (PAPER.md §4): MNLI entailment 0 / neutral 1 / contradiction 2 (GLUE order),
QQP not_duplicate 0 / duplicate 1, SST-2 negative 0 / positive 1, SIQA answer1..3 -> 0..2,
WinoGrande option1/2 -> 0/1, FEVER REFUTES 0 / NOT ENOUGH INFO 1 / SUPPORTS 2.

``eval`` is the paper's "test" set: MNLI validation_matched, QQP validation, SST-2 validation,
SIQA dev, WinoGrande dev, FEVER paper_test.
"""

from __future__ import annotations

from dataclasses import dataclass

from lora_vs_full.errors import UserError


@dataclass(frozen=True)
class TaskSpec:
    """Everything the loaders need to know about one task.

    ``hub_*`` describe the script-free Hub source (``datasets.load_dataset(hub_id, hub_config,
    revision=hub_revision, split=train_split|eval_split)``); ``local_dirname`` is the task's folder in a
    release-format data root such as ``../shared/data/raw``. ``source`` is ``"paper"`` for the six
    paper tasks and ``"synthetic"`` for the generated offline tasks (no Hub, no files).
    """

    name: str
    num_labels: int
    label_names: tuple[str, ...]
    is_pair: bool
    hub_id: str | None
    hub_config: str | None
    hub_revision: str | None
    train_split: str
    eval_split: str
    local_dirname: str | None
    source: str = "paper"
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.label_names) != self.num_labels:  # a registry bug, not user input
            raise ValueError(f"{self.name}: {len(self.label_names)} label names for {self.num_labels} labels")


# Revisions: nyu-mll/glue is parquet-native on main; the AI2 repos keep a loading script on main, which
# datasets >= 4 refuses, so we read the Hub's automatic parquet conversion branch (PAPER.md §11).
_PAPER_TASKS = (
    TaskSpec(
        name="mnli",
        num_labels=3,
        label_names=("entailment", "neutral", "contradiction"),
        is_pair=True,
        hub_id="nyu-mll/glue",
        hub_config="mnli",
        hub_revision="main",
        train_split="train",
        eval_split="validation_matched",
        local_dirname="MNLI",
        description="MultiNLI: (premise, hypothesis) -> 3-way entailment",
    ),
    TaskSpec(
        name="qqp",
        num_labels=2,
        label_names=("not_duplicate", "duplicate"),
        is_pair=True,
        hub_id="nyu-mll/glue",
        hub_config="qqp",
        hub_revision="main",
        train_split="train",
        eval_split="validation",
        local_dirname="QQP",
        description="Quora Question Pairs: (question1, question2) -> duplicate?",
    ),
    TaskSpec(
        name="sst2",
        num_labels=2,
        label_names=("negative", "positive"),
        is_pair=False,
        hub_id="nyu-mll/glue",
        hub_config="sst2",
        hub_revision="main",
        train_split="train",
        eval_split="validation",
        local_dirname="SST-2",
        description="Stanford Sentiment Treebank (binary): sentence -> sentiment",
    ),
    TaskSpec(
        name="siqa",
        num_labels=3,
        label_names=("answer1", "answer2", "answer3"),
        is_pair=False,
        hub_id="allenai/social_i_qa",
        hub_config="default",
        hub_revision="refs/convert/parquet",
        train_split="train",
        eval_split="validation",
        local_dirname="SocialIQa",
        description="Social IQa as one instruction string (context, question, three answers) -> 3-way",
    ),
    TaskSpec(
        name="winogrande",
        num_labels=2,
        label_names=("option1", "option2"),
        is_pair=False,
        hub_id="allenai/winogrande",
        hub_config="winogrande_xl",
        hub_revision="refs/convert/parquet",
        train_split="train",
        eval_split="validation",
        local_dirname="WinoGrande",
        description="WinoGrande (xl) as one instruction string (sentence, two options) -> 2-way",
    ),
    TaskSpec(
        name="fever",
        num_labels=3,
        label_names=("REFUTES", "NOT ENOUGH INFO", "SUPPORTS"),
        is_pair=False,
        # fever/fever is script-based; EleutherAI/fever is a parquet mirror with one row per evidence
        # sentence, so claims repeat and are deduplicated by id (hub.py); labels are mapped by NAME.
        hub_id="EleutherAI/fever",
        hub_config="v1.0",
        hub_revision="main",
        train_split="train",
        eval_split="paper_test",
        local_dirname="FEVER",
        description="FEVER 1.0: the claim alone (no evidence) -> REFUTES / NOT ENOUGH INFO / SUPPORTS",
    ),
)

_SYNTHETIC_TASKS = (
    TaskSpec(
        name="synth_sentiment",
        num_labels=2,
        label_names=("negative", "positive"),
        is_pair=False,
        hub_id=None,
        hub_config=None,
        hub_revision=None,
        train_split="train",
        eval_split="eval",
        local_dirname=None,
        source="synthetic",
        description="generated sentiment: polarity word, flipped by negation, 'but' clause decides",
    ),
    TaskSpec(
        name="synth_nli",
        num_labels=3,
        label_names=("entailment", "neutral", "contradiction"),
        is_pair=True,
        hub_id=None,
        hub_config=None,
        hub_revision=None,
        train_split="train",
        eval_split="eval",
        local_dirname=None,
        source="synthetic",
        description="generated NLI: same actor -> entailment, negated -> contradiction, other actor -> neutral",
    ),
)

TASKS: dict[str, TaskSpec] = {t.name: t for t in _PAPER_TASKS + _SYNTHETIC_TASKS}

#: WinoGrande 1.1 training sizes (train_<size>.jsonl; Hub configs winogrande_<size>).
WINOGRANDE_SIZES: tuple[str, ...] = ("xs", "s", "m", "l", "xl")

#: The paper's continual-learning order (PAPER.md §5).
PAPER_TASK_ORDER: tuple[str, ...] = ("mnli", "qqp", "sst2", "siqa", "winogrande", "fever")


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` called ``name``; :class:`UserError` listing the known tasks otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}") from None
