"""Weight sources: stream one matrix at a time from HF dirs / Hub ids, full fine-tunes and PEFT adapters.

``open_pair(base, tuned)`` is the entry point; see :mod:`.source` for the interface and on-disk formats,
:mod:`.adapter` for the LoRA merge, :mod:`.resolve` for how specs are interpreted and :mod:`.rundir` for
lvf-train run directories.
"""

from lora_vs_full.weights.adapter import AdapterWeights, is_adapter_dir
from lora_vs_full.weights.resolve import open_model, open_pair, open_tuned
from lora_vs_full.weights.rundir import RunCheckpoint, find_runs
from lora_vs_full.weights.source import HFWeights, WeightSource

__all__ = [
    "AdapterWeights",
    "HFWeights",
    "RunCheckpoint",
    "WeightSource",
    "find_runs",
    "is_adapter_dir",
    "open_model",
    "open_pair",
    "open_tuned",
]
