"""A PEFT LoRA adapter directory seen as the merged model W0 + s * B @ A, one matrix at a time.

Conventions (PEFT's, so the merge equals ``merge_and_unload``): ``lora_A.weight`` is (r, d_in),
``lora_B.weight`` is (d_out, r); s = lora_alpha / r, or lora_alpha / sqrt(r) with ``use_rslora``; r and
alpha per module from ``rank_pattern`` / ``alpha_pattern``, matched with PEFT's own ``get_pattern_key``
against the module name without the ``base_model.model.`` wrapper prefix (PEFT matches the unwrapped
model's module names). The merge is computed and returned in float64, so neither a half-precision base
nor a cast back down ever rounds the update away.

Only matrices the adapter touches change; every other key returns the base tensor unchanged.

Legacy adapters (early PEFT, e.g. ``tloen/alpaca-lora-7b``) ship ``adapter_model.bin``, a pickle: it is read
with ``torch.load(weights_only=True)`` only, so a file that tries to run code is refused, never executed.
Their configs carry keys current PEFT dropped (``enable_lora``, ``merge_weights``, ``fan_in_fan_out=false``);
those are ignored, as they do not change the merge of a plain nn.Linear LoRA.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import torch
from torch import Tensor

from lora_vs_full.errors import UserError
from lora_vs_full.models.targets import MatrixId, parse_weight_name
from lora_vs_full.weights.source import WeightSource, _file_sha256, load_bin_safely, read_safetensors_header

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_WEIGHTS_BIN = "adapter_model.bin"  # legacy pickle: torch.load(weights_only=True) only
_WRAPPER_PREFIX = "base_model.model."
# "<module>.lora_A.weight" (saved, no adapter name) or "<module>.lora_A.<adapter>.weight" (in-memory)
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
# Config fields that turn LoRA into something that does not merge as W0 + s * B @ A.
_VARIANT_FLAGS = ("use_dora", "use_qalora", "use_bdlora", "alora_invocation_tokens", "arrow_config")
# Initialisations that rewrite W0 itself: the saved adapter is relative to a modified base.
_BASE_MUTATING_INITS = ("pissa", "olora", "corda", "lora_ga", "eva", "loftq")


def is_adapter_dir(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def read_adapter_config(adapter_dir: Path) -> dict:
    """The adapter's config, refusing anything that is not a plain, mergeable LoRA."""
    cfg_path = adapter_dir / ADAPTER_CONFIG
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{cfg_path} is not valid JSON ({exc}); re-save the adapter") from None
    if cfg.get("peft_type") != "LORA":
        raise UserError(
            f"{adapter_dir} is a {cfg.get('peft_type')!r} adapter; only plain LoRA can be analysed"
        )
    for flag in _VARIANT_FLAGS:
        if cfg.get(flag):
            raise UserError(
                f"{adapter_dir} uses {flag}={cfg[flag]!r}, which does not merge as W0 + s*B@A; "
                "analyse a merged full checkpoint instead (PeftModel.merge_and_unload + save_pretrained)"
            )
    if cfg.get("enable_lora"):  # early PEFT's MergedLinear (fused qkv): not a per-module A/B pair
        raise UserError(
            f"{adapter_dir} has enable_lora={cfg['enable_lora']!r} (fused-qkv MergedLinear of early PEFT); "
            "analyse a merged full checkpoint instead"
        )
    for key in ("r", "lora_alpha"):
        if not isinstance(cfg.get(key), (int, float)) or isinstance(cfg.get(key), bool) or cfg[key] <= 0:
            raise UserError(f"{cfg_path} has {key}={cfg.get(key)!r}; a LoRA adapter needs a positive {key}")
    if cfg.get("fan_in_fan_out"):
        raise UserError(
            f"{adapter_dir} has fan_in_fan_out=true (Conv1D models); only nn.Linear models are supported"
        )
    init = str(cfg.get("init_lora_weights", True)).lower()
    if init.startswith(_BASE_MUTATING_INITS):
        raise UserError(
            f"{adapter_dir} was initialised with init_lora_weights={init!r}, which modifies the base weights; "
            "save it with path_initial_model_for_weight_conversion so it applies to the original base"
        )
    return cfg


class AdapterWeights(WeightSource):
    """``base`` with the LoRA adapter in ``adapter_dir`` merged in, per matrix, on demand."""

    def __init__(self, base: WeightSource, adapter_dir: str | Path):
        self.base = base
        self.dir = Path(adapter_dir)
        self.location = str(self.dir)
        self.model_type = base.model_type
        self.config = read_adapter_config(self.dir)
        self._file = self.dir / ADAPTER_WEIGHTS
        self._bin: dict[str, Tensor] | None = None
        if self._file.is_file():
            header, _ = read_safetensors_header(self._file)  # validates size: a truncated file fails here
        elif (self.dir / ADAPTER_WEIGHTS_BIN).is_file():
            self._file = self.dir / ADAPTER_WEIGHTS_BIN
            self._bin = load_bin_safely(self._file)
            header = {k: {"shape": list(t.shape)} for k, t in self._bin.items()}
        else:
            raise UserError(
                f"{self.dir} has {ADAPTER_CONFIG} but neither {ADAPTER_WEIGHTS} nor {ADAPTER_WEIGHTS_BIN}; "
                "re-save the adapter"
            )
        h = hashlib.sha256(base.identity.encode())
        _file_sha256(self._file, h)  # whole file, streamed: an r = 2048 7B adapter is 10 GB
        self.identity = f"{base.identity}+lora:{h.hexdigest()[:32]}"
        # MatrixId -> (module name, key of lora_A, key of lora_B)
        modules: dict[str, dict[str, str]] = {}
        for key in header:
            m = _LORA_KEY.match(key)
            if m:
                modules.setdefault(m["module"], {})[m["ab"]] = key
        self._lora: dict[MatrixId, tuple[str, str, str]] = {}
        for module, ab in modules.items():
            if set(ab) != {"A", "B"}:
                missing = ({"A", "B"} - set(ab)).pop()
                raise UserError(f"{self._file} lacks lora_{missing} for {module!r}; re-save the adapter")
            mid = parse_weight_name(module + ".weight", self.family, "all_linear")
            if mid is not None:  # LoRA on other modules (pooler, head) is outside the analysis
                self._lora[mid] = (module.removeprefix(_WRAPPER_PREFIX), ab["A"], ab["B"])
        self._base_ids = base.matrices("all_linear")  # all_linear is a superset of every preset
        unknown = sorted(m.name for m in self._lora if m not in self._base_ids)
        if unknown:
            raise UserError(
                f"adapter {self.dir} targets {', '.join(unknown[:4])} which the base {base.location} lacks; "
                "pass the base model the adapter was trained on"
            )
        self._header = header
        self._key_to_id = {key: mid for mid, key in self._base_ids.items()}

    # --- shapes and scaling -----------------------------------------------------------------------
    def lora_matrices(self) -> list[MatrixId]:
        return sorted(self._lora)

    def scaling(self, mid: MatrixId) -> float:
        """s for one matrix: alpha / r (alpha / sqrt(r) with rsLoRA), honouring rank/alpha patterns."""
        module = self._lora[mid][0]
        cfg = self.config
        rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
        r, alpha = cfg["r"], cfg["lora_alpha"]
        if rank_pattern or alpha_pattern:
            # PEFT's own matcher, so patterns mean exactly what they meant at training time (imported
            # only here: `import peft` pulls in transformers, seconds of start-up for plain adapters).
            from peft.utils.other import get_pattern_key

            r = rank_pattern.get(get_pattern_key(rank_pattern.keys(), module), r)
            alpha = alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), module), alpha)
        saved_r = self._header[self._lora[mid][1]]["shape"][0]
        if saved_r != r:
            raise UserError(
                f"{self._file}: {module} has rank {saved_r} but adapter_config says r={r}; the files do not match"
            )
        return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r

    def check_shapes(self) -> None:
        """UserError when any adapted matrix's A/B shapes do not fit the base matrix."""
        for mid, (_module, a_key, b_key) in self._lora.items():
            d_out, d_in = self.base.shape(self._base_ids[mid])
            (r_a, a_in), (b_out, r_b) = self._header[a_key]["shape"], self._header[b_key]["shape"]
            if (a_in, b_out, r_a) != (d_in, d_out, r_b):
                raise UserError(
                    f"adapter {self.dir} does not fit base {self.base.location} at {mid.name}: "
                    f"B@A is ({b_out}x{r_b})@({r_a}x{a_in}) but the base matrix is {d_out}x{d_in}; "
                    "pass the base model the adapter was trained on"
                )

    # --- WeightSource -----------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return self.base.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return self.base.shape(key)

    def get(self, key: str) -> Tensor:
        W0 = self.base.get(key)
        mid = self._key_to_id.get(key)
        if mid not in self._lora:
            return W0
        return self.merge(key, W0)

    def merge(self, key: str, W0: Tensor) -> Tensor:
        """W0 + s B A for ``key`` given the base tensor already read (the one-pass analysis reads W0 once
        for many fine-tunes); W0 itself when the adapter does not touch ``key``."""
        mid = self._key_to_id.get(key)
        if mid not in self._lora:
            return W0
        _, a_key, b_key = self._lora[mid]
        if self._bin is not None:
            A, B = self._bin[a_key].to(torch.float64), self._bin[b_key].to(torch.float64)
        else:
            from safetensors import safe_open

            with safe_open(self._file, framework="pt", device="cpu") as fh:
                A = fh.get_tensor(a_key).to(torch.float64)
                B = fh.get_tensor(b_key).to(torch.float64)
        # float64 out: a float32/half base is exact in float64, and rounding the merge back down would
        # blur a small update (the fp16 mistake of PAPER.md, in miniature).
        return W0.to(torch.float64) + self.scaling(mid) * (B @ A)

    def run_meta(self) -> dict:
        """method / rank / alpha from the adapter's own config (never typed by hand). A rank_pattern or
        alpha_pattern that gives modules different values leaves the column at the config's default r."""
        return {"method": "lora", "rank": int(self.config["r"]), "alpha": float(self.config["lora_alpha"])}

    def describe(self) -> dict:
        return {
            **super().describe(),
            "base": self.base.describe(),
            "lora": {
                k: self.config.get(k)
                for k in ("r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern")
            },
            "base_model_name_or_path": self.config.get("base_model_name_or_path"),
            "weights_file": self._file.name,
        }
