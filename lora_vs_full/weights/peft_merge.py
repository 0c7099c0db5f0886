"""PEFT adapters that do not merge as W0 + s * B @ A, merged in memory by PEFT itself.

DoRA (a per-column magnitude), AdaLoRA (P diag(E) Q with a rank pattern), VeRA (shared frozen projections
scaled by trained vectors) and the initialisations that rewrite the base (PiSSA, OLoRA: the adapter is
relative to W0 minus its initial top-r part) have no closed form the streaming merge of :mod:`.adapter`
implements. Here the base is loaded once as a ``transformers`` model, the adapter is loaded onto it with
``PeftModel.from_pretrained`` (for PiSSA / OLoRA PEFT redoes the base split on load, so the original base is
the right input) and every tuner layer's ``merge()`` (what ``merge_and_unload`` does before unwrapping) gives the merged weights. The pretrained W0 the analysis compares
against is the base :class:`WeightSource`, read separately from disk, never the mutated in-memory base.

Memory: the whole model in float32 (fine for the encoder models trained here; a 7B variant adapter needs
~30 GB RAM). The merged matrices are returned in float64 like :class:`AdapterWeights`' merge.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor

from lora_vs_full.errors import UserError
from lora_vs_full.models.targets import select_matrices
from lora_vs_full.weights.adapter import _BASE_MUTATING_INITS, ADAPTER_CONFIG, ADAPTER_WEIGHTS
from lora_vs_full.weights.source import WeightSource, _file_sha256

# adapter_config.json -> the variant name recorded in the run columns
_PEFT_TYPES = {"ADALORA": "adalora", "VERA": "vera"}
_MERGED_INITS = ("pissa", "olora")  # base-mutating inits PEFT redoes on load (deterministic: SVD / QR of W0)
_HEAD_SUFFIXES = ("classifier.weight", "classifier.out_proj.weight", "score.weight")


def peft_variant(adapter_dir: Path) -> str | None:
    """The variant name when ``adapter_dir`` needs PEFT's own merge (dora, pissa, olora, adalora, vera), else None."""
    try:
        cfg = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError):
        return None  # read_adapter_config reports it
    if cfg.get("peft_type") in _PEFT_TYPES:
        return _PEFT_TYPES[cfg["peft_type"]]
    if cfg.get("peft_type") != "LORA":
        return None
    init = str(cfg.get("init_lora_weights", True)).lower()
    for name in _MERGED_INITS:
        if init.startswith(name):
            return name
    if init.startswith(_BASE_MUTATING_INITS):  # corda, lora_ga, eva, loftq: need data/quantiser to redo
        return None
    return "dora" if cfg.get("use_dora") else None


def merge_in_place(peft_model):
    """Every tuner layer's ``merge()`` (the merge half of ``merge_and_unload``); returns the base model.

    The unload half is skipped: PEFT 0.21's VeRA ``merge_and_unload`` fails on a sequence classifier (it
    tries to replace the ``modules_to_save`` head as if it were a Linear; the same failure as huggingface/peft#3114
    reports for GraLoRA). Keys keep ``.base_layer.``.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in peft_model.modules():
        if isinstance(module, BaseTunerLayer) and hasattr(module, "base_layer"):
            module.merge()
    return peft_model.get_base_model()


def _num_labels(adapter_file: Path) -> int:
    from safetensors import safe_open

    with safe_open(adapter_file, framework="pt", device="cpu") as fh:
        for key in fh.keys():
            if key.endswith(_HEAD_SUFFIXES):
                return int(fh.get_slice(key).get_shape()[0])
    return 2


class PeftMergedWeights(WeightSource):
    """``base`` (an :class:`HFWeights` directory) with a PEFT variant adapter merged in by PEFT, in memory."""

    def __init__(self, base: WeightSource, adapter_dir: str | Path):
        self.base = base
        self.dir = Path(adapter_dir)
        self.location = str(self.dir)
        self.model_type = base.model_type
        self.variant = peft_variant(self.dir)
        if self.variant is None:
            raise UserError(
                f"{self.dir} is not a DoRA/PiSSA/OLoRA/AdaLoRA/VeRA adapter; open it as a plain adapter"
            )
        self.config = json.loads((self.dir / ADAPTER_CONFIG).read_text())
        self._file = self.dir / ADAPTER_WEIGHTS
        if not self._file.is_file():
            raise UserError(f"{self.dir} has no {ADAPTER_WEIGHTS}; re-save the adapter with PEFT")
        base_dir = getattr(base, "dir", None)
        if base_dir is None or not (Path(base_dir) / "config.json").is_file():
            raise UserError(
                f"a {self.variant} adapter is merged by PEFT and needs a local base model directory"
            )
        self._base_dir = Path(base_dir)
        h = hashlib.sha256(base.identity.encode())
        _file_sha256(self._file, h)
        self.identity = f"{base.identity}+{self.variant}:{h.hexdigest()[:32]}"
        self._merged: dict[str, Tensor] | None = None
        self._base_ids = base.matrices("all_linear")
        self._key_to_id = {key: mid for mid, key in self._base_ids.items()}

    def _load(self) -> dict:
        """MatrixId -> merged tensor (float32 as PEFT merged it), built on first use."""
        if self._merged is None:
            import transformers
            from peft import PeftModel
            from transformers.utils import logging as hf_logging

            task = self.config.get("task_type")
            if task == "SEQ_CLS":
                cls, kw = (
                    transformers.AutoModelForSequenceClassification,
                    {"num_labels": _num_labels(self._file)},
                )
            elif task == "CAUSAL_LM":
                cls, kw = transformers.AutoModelForCausalLM, {}
            else:
                cls, kw = transformers.AutoModel, {}
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # the head PEFT overwrites is "newly initialised": expected
            try:
                model = cls.from_pretrained(self._base_dir, dtype=torch.float32, **kw)
                merged = merge_in_place(PeftModel.from_pretrained(model, self.dir))
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise UserError(f"PEFT cannot merge {self.dir} onto {self._base_dir}: {first}") from None
            finally:
                hf_logging.set_verbosity(verbosity)
            sd = {k.replace(".base_layer.", "."): v.detach() for k, v in merged.state_dict().items()}
            ids = select_matrices(list(sd), self.family, "all_linear")
            self._merged = {mid: sd[key] for mid, key in ids.items()}
            missing = sorted(m.name for m in self._base_ids if m not in self._merged)
            if missing:
                raise UserError(f"the merged {self.variant} model lacks {', '.join(missing[:4])} of the base")
        return self._merged

    def keys(self) -> list[str]:
        return self.base.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return self.base.shape(key)

    def get(self, key: str) -> Tensor:
        mid = self._key_to_id.get(key)
        if mid is None:  # outside the analysed matrices: not merged here
            return self.base.get(key)
        return self._load()[mid].to(torch.float64)

    def merge(self, key: str, W0: Tensor) -> Tensor:
        return self.get(key) if key in self._key_to_id else W0

    def run_meta(self) -> dict:
        cfg = self.config
        r = cfg.get("target_r") if self.variant == "adalora" else cfg.get("r")
        alpha = None if self.variant == "vera" else cfg.get("lora_alpha")
        return {"method": "lora", "rank": int(r) if r else None, "alpha": float(alpha) if alpha else None}

    def describe(self) -> dict:
        return {
            **super().describe(),
            "base": self.base.describe(),
            "variant": self.variant,
            "merge": "peft tuner-layer merge() (in memory)",
            "peft": {
                k: self.config.get(k)
                for k in (
                    "peft_type",
                    "r",
                    "lora_alpha",
                    "use_dora",
                    "init_lora_weights",
                    "target_r",
                    "init_r",
                )
            },  # fmt: skip
            "weights_file": self._file.name,
        }
