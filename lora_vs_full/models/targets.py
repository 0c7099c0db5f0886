"""Which weight matrices a method adapts and the analysis compares — one table for both.

Matrices are named canonically as ``layer{i}.{module}`` with short module names, whatever the
architecture's own spelling:

================  ===========================================  ==========================
module            BERT / RoBERTa family                        LLaMA family
================  ===========================================  ==========================
``q`` ``k`` ``v`` ``attention.self.{query,key,value}``          ``self_attn.{q,k,v}_proj``
``o``             ``attention.output.dense``                   ``self_attn.o_proj``
``fc1``           ``intermediate.dense``                       ``mlp.gate_proj`` = ``gate``,
``fc2``           ``output.dense`` (the layer's, not attention's)  ``mlp.up_proj`` = ``up``,
                                                               ``mlp.down_proj`` = ``down``
================  ===========================================  ==========================

Embeddings, poolers (BERT's ``pooler.dense`` also ends in ``dense``!) and classifier heads never match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lora_vs_full.errors import UserError

BERT_FAMILY = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")

# (module short name, regex on the part of the name after the layer index)
_BERT_MODULES = {
    "q": r"attention\.self\.query",
    "k": r"attention\.self\.key",
    "v": r"attention\.self\.value",
    "o": r"attention\.output\.dense",
    "fc1": r"intermediate\.dense",
    "fc2": r"output\.dense",
}
_LLAMA_MODULES = {
    "q": r"self_attn\.q_proj",
    "k": r"self_attn\.k_proj",
    "v": r"self_attn\.v_proj",
    "o": r"self_attn\.o_proj",
    "gate": r"mlp\.gate_proj",
    "up": r"mlp\.up_proj",
    "down": r"mlp\.down_proj",
}
_LAYER_RE = {"bert": r"encoder\.layer\.(\d+)\.", "llama": r"layers\.(\d+)\."}

PRESETS = {
    "bert": {
        "all_linear": ("q", "k", "v", "o", "fc1", "fc2"),
        "attn_only": ("q", "k", "v", "o"),
        "qv_only": ("q", "v"),
        "mlp_only": ("fc1", "fc2"),
    },
    "llama": {
        "all_linear": ("q", "k", "v", "o", "gate", "up", "down"),
        "attn_only": ("q", "k", "v", "o"),
        "qv_only": ("q", "v"),
        "mlp_only": ("gate", "up", "down"),
    },
}


@dataclass(frozen=True, order=True)
class MatrixId:
    layer: int
    module: str

    @property
    def name(self) -> str:
        return f"layer{self.layer}.{self.module}"


def family(model_type: str) -> str:
    """``"bert"`` or ``"llama"`` for a HF ``config.model_type``; UserError otherwise."""
    if model_type in BERT_FAMILY:
        return "bert"
    if model_type in LLAMA_FAMILY:
        return "llama"
    raise UserError(
        f"unsupported model_type {model_type!r}: supported are {', '.join(BERT_FAMILY + LLAMA_FAMILY)} "
        "(add its module names to lora_vs_full/models/targets.py)"
    )


def preset_modules(fam: str, preset: str) -> tuple[str, ...]:
    try:
        return PRESETS[fam][preset]
    except KeyError:
        raise UserError(
            f"unknown target preset {preset!r}: choose one of {', '.join(PRESETS[fam])}"
        ) from None


def _module_table(fam: str) -> dict[str, str]:
    return _BERT_MODULES if fam == "bert" else _LLAMA_MODULES


def _name_regex(fam: str, modules: tuple[str, ...], suffix: str) -> re.Pattern:
    table = _module_table(fam)
    alts = "|".join(f"(?P<{m}>{table[m]})" for m in modules)
    # (?:^|\.) anchors the layer path so "attention.output.dense" is never read as the layer's output.dense
    return re.compile(rf"(?:^|.*\.){_LAYER_RE[fam]}(?:{alts}){suffix}$")


def parse_weight_name(name: str, fam: str, preset: str = "all_linear") -> MatrixId | None:
    """Map a state-dict key (``roberta.encoder.layer.3.attention.self.query.weight``) to a MatrixId.

    Returns None for anything outside the preset (biases, embeddings, pooler, classifier, LayerNorm).
    """
    m = _name_regex(fam, preset_modules(fam, preset), r"\.weight").match(name)
    if m is None:
        return None
    module = next(k for k, v in m.groupdict().items() if v is not None and k in _module_table(fam))
    return MatrixId(layer=int(m.group(1)), module=module)


def select_matrices(names, fam: str, preset: str = "all_linear") -> dict[MatrixId, str]:
    """``{MatrixId: state-dict key}`` for every analysed matrix among ``names``, sorted by (layer, module)."""
    found = {}
    for n in names:
        mid = parse_weight_name(n, fam, preset)
        if mid is not None:
            if mid in found:
                raise UserError(f"two tensors map to {mid.name}: {found[mid]!r} and {n!r}")
            found[mid] = n
    return dict(sorted(found.items()))


def peft_target_regex(fam: str, preset: str) -> str:
    """A PEFT ``target_modules`` regex (full match on module names) for the preset.

    A regex rather than a suffix list, because a bare ``"dense"`` would also wrap BERT's pooler.
    """
    table = _module_table(fam)
    alts = "|".join(table[m] for m in preset_modules(fam, preset))
    return rf".*{_LAYER_RE[fam]}(?:{alts})"
