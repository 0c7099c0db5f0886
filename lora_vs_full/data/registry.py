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
    #: Rows each Hub split must have after conversion (FEVER: unique claims), keyed by the Hub split name;
    #: a different count is an error (``task.check_rows=false`` accepts it, e.g. for a sampled mirror).
    expected_rows: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if len(self.label_names) != self.num_labels:  # a registry bug, not user input
            raise ValueError(f"{self.name}: {len(self.label_names)} label names for {self.num_labels} labels")

    def rows_expected(self, hub_split: str, config: str | None = None) -> int | None:
        """The row count the Hub split must have (WinoGrande train: per size config), None if unknown."""
        if self.name == "winogrande" and hub_split == "train" and config is not None:
            return WINOGRANDE_TRAIN_ROWS.get(config.removeprefix("winogrande_"))
        return dict(self.expected_rows).get(hub_split)


# Revisions (PAPER.md §11, §13). datasets >= 4 refuses a repo whose revision holds a loading script, and on a
# revision other than main it knows only the configs a README there declares (else one config, "default"):
# - nyu-mll/glue: parquet on main, configs declared in its README (mnli/qqp/sst2 folders).
# - allenai/social_i_qa: main still has social_i_qa.py -> the parquet branch refs/convert/parquet, which has
#   default/{train,validation}/0000.parquet and no README: config "default".
# - allenai/winogrande: the script was deleted and main has winogrande_<size>/{split}-*.parquet declared as
#   configs in its README -> config winogrande_<size> on main. NOT refs/convert/parquet: that branch has no
#   README, so config winogrande_xl is unknown there ("Available: ['default']").
# - FEVER: fever/fever is script-based -> EleutherAI/fever, config v1.0 (parquet; one row per evidence
#   sentence as in the fever script: train 311,431 rows / paper_test 18,567), deduplicated to one row per
#   claim id (145,449 / 9,999 claims = the official files), labels mapped by NAME. The authors trained on
#   the flattened rows; we train on claims (one vote per claim; documented in docs/training.md).
# Every run records the commit each revision resolved to; task.revision=<sha> pins one (presets can).
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
        expected_rows=(("train", 392702), ("validation_matched", 9815), ("validation_mismatched", 9832)),
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
        expected_rows=(("train", 363846), ("validation", 40430)),
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
        expected_rows=(("train", 67349), ("validation", 872)),
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
        expected_rows=(("train", 33410), ("validation", 1954)),
    ),
    TaskSpec(
        name="winogrande",
        num_labels=2,
        label_names=("option1", "option2"),
        is_pair=False,
        hub_id="allenai/winogrande",
        hub_config="winogrande_xl",
        hub_revision="main",
        train_split="train",
        eval_split="validation",
        local_dirname="WinoGrande",
        description="WinoGrande (xl) as one instruction string (sentence, two options) -> 2-way",
        expected_rows=(("validation", 1267), ("test", 1767)),
    ),
    TaskSpec(
        name="fever",
        num_labels=3,
        label_names=("REFUTES", "NOT ENOUGH INFO", "SUPPORTS"),
        is_pair=False,
        # fever/fever is script-based; EleutherAI/fever is a parquet mirror with one row per evidence
        # sentence, so claims repeat and are deduplicated by id (hub.py); labels are mapped by NAME.
        # Expected counts are CLAIMS after deduplication (the official FEVER 1.0 files).
        hub_id="EleutherAI/fever",
        hub_config="v1.0",
        hub_revision="main",
        train_split="train",
        eval_split="paper_test",
        local_dirname="FEVER",
        description="FEVER 1.0: the claim alone (no evidence) -> REFUTES / NOT ENOUGH INFO / SUPPORTS",
        expected_rows=(("train", 145449), ("paper_dev", 9999), ("paper_test", 9999)),
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
    TaskSpec(
        name="synth_order",
        num_labels=2,
        label_names=("consistent", "inconsistent"),
        is_pair=True,
        hub_id=None,
        hub_config=None,
        hub_revision=None,
        train_split="train",
        eval_split="eval",
        local_dirname=None,
        source="synthetic",
        description="generated order relations: same order + relation, or swapped + inverse -> consistent",
    ),
)

TASKS: dict[str, TaskSpec] = {t.name: t for t in _PAPER_TASKS + _SYNTHETIC_TASKS}

#: WinoGrande 1.1 training sizes (train_<size>.jsonl; Hub configs winogrande_<size>).
WINOGRANDE_SIZES: tuple[str, ...] = ("xs", "s", "m", "l", "xl")
#: Training rows per WinoGrande size (train_<size>-labels.lst; the Hub card's split sizes).
WINOGRANDE_TRAIN_ROWS: dict[str, int] = {"xs": 160, "s": 640, "m": 2558, "l": 10234, "xl": 40398}

#: The paper's continual-learning order (PAPER.md §5).
PAPER_TASK_ORDER: tuple[str, ...] = ("mnli", "qqp", "sst2", "siqa", "winogrande", "fever")


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` called ``name``; :class:`UserError` listing the known tasks otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}") from None
