"""Continual learning (PAPER.md §5, v1 Fig. 8): one model fine-tuned on a task sequence, probed after
every stage, with intruder counts against the original pretrained weights. See docs/continual.md."""

from lora_vs_full.continual.config import compose_continual, validate_tasks
from lora_vs_full.continual.probe import ProbeConfig, probe_accuracy
from lora_vs_full.continual.sequence import run_continual
from lora_vs_full.continual.tables import collect_tables

__all__ = [
    "ProbeConfig",
    "collect_tables",
    "compose_continual",
    "probe_accuracy",
    "run_continual",
    "validate_tasks",
]
