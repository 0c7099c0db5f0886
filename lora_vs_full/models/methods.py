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

Variants (``method=dora|pissa|olora|adalora|vera|loraplus``, i.e. ``method.variant``; paper appendix), all
through PEFT's own options: DoRA ``use_dora``; PiSSA / OLoRA ``init_lora_weights``; AdaLoRA
``AdaLoraConfig`` + ``update_and_allocate`` after every step (:func:`step_hook`); VeRA ``VeraConfig``;
LoRA+ ``peft.optimizers.create_loraplus_optimizer`` (:func:`optimizer_factory`). ``method.train=B_only``
freezes A. Only plain LoRA (+ LoRA+, B-only) merges as W0 + s B A; the others are merged in memory by PEFT
for the analysis (lora_vs_full/weights/peft_merge.py).
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
    alpha (paper: alpha * lr = 2.4e-3, i.e. 1.2e-3 / r at alpha = 2r) or ``rank_power`` ->
    lr_rank1 / r ** lr_rank_power (the short-budget rule, conf/lr/short_budget.yaml; ``inv_sqrt_rank`` is
    its power-0.5 case under the name earlier runs used).
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
    if rule == "inv_sqrt_rank":  # rank_power at 0.5 (its name in runs made before rank_power existed)
        return alpha, float(method_cfg.lr_rank1) / math.sqrt(r)
    if rule == "rank_power":
        return alpha, float(method_cfg.lr_rank1) / r ** float(method_cfg.get("lr_rank_power", 0.5))
    raise UserError(f"unknown method.lr_rule={rule!r}: use alpha_product, rank_power or inv_sqrt_rank")


def method_lr(method_cfg, optim_cfg) -> float:
    """The learning rate a run uses: LoRA's rule (or method.lr); full FT: method.lr, else optim.lr."""
    if method_cfg.name == "lora" and variant(method_cfg) == "vera" and method_cfg.get("lr") is None:
        raise UserError("method.variant=vera has no alpha rule for its learning rate: set method.lr")
    if method_cfg.name == "lora":
        return lora_alpha_and_lr(method_cfg)[1]
    return float(method_cfg.lr if method_cfg.get("lr") is not None else optim_cfg.lr)


def variant(method_cfg) -> str:
    """The PEFT variant of a LoRA method config (``lora`` for plain LoRA and for full FT configs)."""
    return str(method_cfg.get("variant", "lora") or "lora")


# method.variant -> LoraConfig.init_lora_weights for the inits that derive A/B from W0 (and rewrite W0)
_WEIGHT_INITS = {"pissa": "pissa", "olora": "olora"}


def lora_config(method_cfg, *, family: str):
    """The ``peft.LoraConfig`` for a LoRA method config (plain LoRA, DoRA, PiSSA, OLoRA, LoRA+).

    DoRA: ``use_dora=True``. PiSSA / OLoRA: ``init_lora_weights="pissa"|"olora"`` (A, B from the SVD / QR
    of W0, and W0 replaced by the residual: PEFT redoes this when it loads the adapter onto the original
    base, so the saved adapter still merges onto the pretrained model). LoRA+ is plain LoRA with another
    optimiser (:func:`optimizer_factory`).
    """
    from peft import LoraConfig, TaskType

    alpha, _ = lora_alpha_and_lr(method_cfg)
    kind = variant(method_cfg)
    # "gaussian": A ~ N(0, 1/r^2), B = 0 -- the paper's "A isotropic Gaussian"; True = PEFT's Kaiming A
    init = _WEIGHT_INITS.get(kind, "gaussian" if method_cfg.init == "gaussian" else True)
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=int(method_cfg.rank),
        lora_alpha=alpha,
        lora_dropout=float(method_cfg.get("dropout", 0.0)),
        target_modules=targets.peft_target_regex(family, method_cfg.targets),
        use_rslora=method_cfg.alpha_policy == "rslora",
        use_dora=kind == "dora",
        init_lora_weights=init,
        bias="none",
    )


def peft_config(method_cfg, *, family: str, total_steps: int | None = None):
    """The PEFT config of any LoRA variant: ``LoraConfig``, ``AdaLoraConfig`` or ``VeraConfig``.

    AdaLoRA: ``method.rank`` is the target (average) rank, it starts at ``adalora_init_r`` (default
    ceil(1.5 r)) and prunes singular values between ``tinit`` and ``total_steps - tfinal`` (fractions of the
    run in the method config), so it needs the run's ``total_steps``. VeRA: ``method.rank`` is the rank of
    the frozen random projections shared by all layers (VeRA's own default is 256); only the scaling vectors
    d, b (and the head) train.
    """
    from peft import AdaLoraConfig, TaskType, VeraConfig

    kind = variant(method_cfg)
    target = targets.peft_target_regex(family, method_cfg.targets)
    r = int(method_cfg.rank)
    if kind == "adalora":
        if not total_steps:
            raise UserError(
                "method.variant=adalora needs the run's total steps (set optim.max_steps or epochs)"
            )
        init_r = int(method_cfg.get("adalora_init_r") or math.ceil(1.5 * r))
        if init_r < r:
            raise UserError(f"method.adalora_init_r={init_r} is below method.rank={r}: AdaLoRA only prunes")
        tinit = int(float(method_cfg.adalora_tinit) * total_steps)
        tfinal = max(1, int(float(method_cfg.adalora_tfinal) * total_steps))
        if tinit >= total_steps - tfinal:
            raise UserError(
                f"AdaLoRA has no budgeting phase in {total_steps} steps (tinit {tinit}, tfinal {tfinal}): "
                "lower method.adalora_tinit / adalora_tfinal or train longer"
            )
        return AdaLoraConfig(
            task_type=TaskType.SEQ_CLS, init_r=init_r, target_r=r, lora_alpha=lora_alpha_and_lr(method_cfg)[0],
            lora_dropout=float(method_cfg.get("dropout", 0.0)), target_modules=target, total_step=int(total_steps),
            tinit=tinit, tfinal=tfinal, deltaT=1,
        )  # fmt: skip
    if kind == "vera":
        return VeraConfig(
            task_type=TaskType.SEQ_CLS, r=r, target_modules=target, save_projection=True,
            vera_dropout=float(method_cfg.get("dropout", 0.0)), d_initial=float(method_cfg.vera_d_initial),
        )  # fmt: skip
    return lora_config(method_cfg, family=family)


def optimizer_factory(method_cfg):
    """``make_optimizer``-compatible factory for the method, or None for the default AdamW.

    LoRA+: PEFT's ``create_loraplus_optimizer`` (B's learning rate = ``loraplus_lr_ratio`` x lr; A, the
    head and everything else at lr).
    """
    if method_cfg.get("name") != "lora" or variant(method_cfg) != "loraplus":
        return None
    ratio = float(method_cfg.loraplus_lr_ratio)

    def make(model, lr: float, weight_decay: float = 0.0, *, fused: bool = False):
        import torch
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(
            model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=ratio, weight_decay=weight_decay,
            fused=True if fused else None,
        )  # fmt: skip

    return make


def step_hook(model, method_cfg):
    """Called after each optimiser step, before ``zero_grad`` (gradients still there), or None.

    AdaLoRA: ``update_and_allocate(step)`` -- importance scores and the rank budget (PEFT's contract).
    """
    if method_cfg.get("name") != "lora" or variant(method_cfg) != "adalora":
        return None
    return lambda step: model.base_model.update_and_allocate(step)


def saturated_targets(model, method_cfg, *, family: str) -> list[str]:
    """Targeted modules whose ``min(d_in, d_out)`` is below the rank (the update's rank saturates)."""
    pattern = re.compile(targets.peft_target_regex(family, method_cfg.targets))
    r = int(method_cfg.rank)
    return [
        name
        for name, mod in model.named_modules()
        if pattern.fullmatch(name) and hasattr(mod, "weight") and min(mod.weight.shape) < r
    ]


def apply_method(model, method_cfg, *, family: str, total_steps: int | None = None):
    """Prepare ``model`` (a plain HF sequence classifier) for ``method_cfg``; returns the model to train.

    full: sets ``requires_grad`` in place and returns ``model``. lora (any ``method.variant``):
    ``peft.get_peft_model`` (LoRA init draws from torch's global RNG, so seed first); ``method.train=B_only``
    then freezes every ``lora_A`` (a fixed random projection; the optimiser never sees it).
    ``total_steps``: the run's optimiser steps (AdaLoRA's schedule needs them).
    """
    if method_cfg.name == "full":
        trainable = method_cfg.get("trainable", "encoder_weights")
        for name, p in model.named_parameters():
            p.requires_grad_(full_trainable(name, trainable))
        return model
    if method_cfg.name == "lora":
        from peft import get_peft_model

        peft_model = get_peft_model(model, peft_config(method_cfg, family=family, total_steps=total_steps))
        if method_cfg.get("train", "AB") == "B_only":
            for name, p in peft_model.named_parameters():
                if ".lora_A." in name:
                    p.requires_grad_(False)
        return peft_model
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
