"""Fine-tuning methods: which parameters full FT trains, and LoRA through PEFT (alpha policy, lr rule).

Full fine-tuning (``method.trainable``):

- ``encoder_weights`` (default, the authors' set): every ``*.weight`` matrix inside the encoder layers
  (q, k, v, o, fc1, fc2) plus the whole classifier head; embeddings, LayerNorm, biases and BERT's
  pooler stay frozen (the pooler is frozen for LoRA too, since PEFT's SEQ_CLS only saves the classifier).
- ``all_but_embeddings``: every parameter except the embeddings.

LoRA: ``peft.LoraConfig(task_type=SEQ_CLS)`` so the classifier head is trained in full
(``modules_to_save``) and never LoRA-wrapped; targets come from
:func:`lora_vs_full.models.targets.peft_target_regex` (a regex, so BERT's ``pooler.dense`` never matches).
The merged weight is ``W0 + s * B @ A`` with ``s = alpha / r`` (``alpha / sqrt(r)`` under rsLoRA).
"""

from __future__ import annotations

import math
import re

from lora_vs_full.errors import UserError
from lora_vs_full.models import targets

_ENCODER_WEIGHT = re.compile(r"(?:^|\.)encoder\.layer\.\d+\..*\.weight$")
_HEAD_PREFIXES = ("classifier.", "score.")


def is_head_param(name: str) -> bool:
    """True for the sequence-classification head (RoBERTa ``classifier.{dense,out_proj}``, BERT ``classifier``)."""
    return name.startswith(_HEAD_PREFIXES)


def full_trainable(name: str, trainable: str = "encoder_weights") -> bool:
    """Whether full fine-tuning trains parameter ``name`` (a plain HF classifier's parameter name)."""
    if is_head_param(name):
        return True
    if trainable == "all_but_embeddings":
        return ".embeddings." not in f".{name}"
    if trainable == "encoder_weights":
        return bool(_ENCODER_WEIGHT.search(name)) and "LayerNorm" not in name
    raise UserError(f"unknown method.trainable={trainable!r}: use encoder_weights or all_but_embeddings")


def lora_alpha_and_lr(method_cfg) -> tuple[float, float]:
    """``(alpha, lr)`` of a LoRA method config.

    alpha: ``2r`` -> 2r (the paper) | ``fixed`` and ``rslora`` -> ``fixed_alpha`` (8; rsLoRA then scales
    by alpha/sqrt(r)). lr: an explicit ``method.lr`` wins; else ``alpha_product`` -> lr_alpha_product /
    alpha (paper: alpha * lr = 2.4e-3, i.e. 1.2e-3 / r at alpha = 2r) or ``inv_sqrt_rank`` ->
    lr_rank1 / sqrt(r) (the short-budget preset, see conf/experiment/offline_sst2.yaml).
    """
    r = int(method_cfg.rank)
    policy = method_cfg.alpha_policy
    if policy == "2r":
        alpha = 2.0 * r
    elif policy in ("fixed", "rslora"):
        alpha = float(method_cfg.fixed_alpha)
    else:
        raise UserError(f"unknown method.alpha_policy={policy!r}: use 2r, fixed or rslora")
    if method_cfg.get("lr") is not None:
        return alpha, float(method_cfg.lr)
    rule = method_cfg.get("lr_rule", "alpha_product")
    if rule == "alpha_product":
        return alpha, float(method_cfg.lr_alpha_product) / alpha
    if rule == "inv_sqrt_rank":
        return alpha, float(method_cfg.lr_rank1) / math.sqrt(r)
    raise UserError(f"unknown method.lr_rule={rule!r}: use alpha_product or inv_sqrt_rank")


def method_lr(method_cfg, optim_cfg) -> float:
    """The learning rate a run uses: LoRA's rule (or method.lr); full FT: method.lr, else optim.lr."""
    if method_cfg.name == "lora":
        return lora_alpha_and_lr(method_cfg)[1]
    return float(method_cfg.lr if method_cfg.get("lr") is not None else optim_cfg.lr)


def lora_config(method_cfg, *, family: str):
    """The ``peft.LoraConfig`` for a LoRA method config."""
    from peft import LoraConfig, TaskType

    alpha, _ = lora_alpha_and_lr(method_cfg)
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=int(method_cfg.rank),
        lora_alpha=alpha,
        lora_dropout=float(method_cfg.get("dropout", 0.0)),
        target_modules=targets.peft_target_regex(family, method_cfg.targets),
        use_rslora=method_cfg.alpha_policy == "rslora",
        # "gaussian": A ~ N(0, 1/r^2), B = 0 -- the paper's "A isotropic Gaussian"; True = PEFT's Kaiming A
        init_lora_weights="gaussian" if method_cfg.init == "gaussian" else True,
        bias="none",
    )


def saturated_targets(model, method_cfg, *, family: str) -> list[str]:
    """Targeted modules whose ``min(d_in, d_out)`` is below the rank (the update's rank saturates)."""
    pattern = re.compile(targets.peft_target_regex(family, method_cfg.targets))
    r = int(method_cfg.rank)
    return [
        name
        for name, mod in model.named_modules()
        if pattern.fullmatch(name) and hasattr(mod, "weight") and min(mod.weight.shape) < r
    ]


def apply_method(model, method_cfg, *, family: str):
    """Prepare ``model`` (a plain HF sequence classifier) for ``method_cfg``; returns the model to train.

    full: sets ``requires_grad`` in place and returns ``model``. lora: ``peft.get_peft_model`` (LoRA
    init draws from torch's global RNG, so seed first).
    """
    if method_cfg.name == "full":
        trainable = method_cfg.get("trainable", "encoder_weights")
        for name, p in model.named_parameters():
            p.requires_grad_(full_trainable(name, trainable))
        return model
    if method_cfg.name == "lora":
        from peft import get_peft_model

        return get_peft_model(model, lora_config(method_cfg, family=family))
    raise UserError(f"unknown method {method_cfg.name!r}: use method=full or method=lora")


def trainable_summary(model) -> dict:
    """Counts of trainable vs all parameters, and the trainable parameter names."""
    names, n_train, n_total = [], 0, 0
    for name, p in model.named_parameters():
        n_total += p.numel()
        if p.requires_grad:
            n_train += p.numel()
            names.append(name)
    return {
        "trainable_params": n_train,
        "total_params": n_total,
        "trainable_fraction": n_train / max(n_total, 1),
        "trainable_tensors": len(names),
        "trainable_names": names,
    }
