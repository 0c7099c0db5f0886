"""Typed schema for ``lvf-continual`` and its start-of-run validation.

The model / method / optim / paths groups are exactly ``lvf-train``'s (same yaml files, same dataclasses
from :mod:`lora_vs_full.config`), so ``lvf-continual method=lora method.rank=8`` means what it means for
``lvf-train``. Only the sequence, the probe and the spectral bookkeeping are new here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lora_vs_full.config import MethodConfig, ModelConfig, OptimConfig
from lora_vs_full.config import validate as validate_train
from lora_vs_full.errors import UserError

PAPER_SEQUENCE = ("mnli", "qqp", "sst2", "siqa", "winogrande", "fever")


@dataclass
class SequenceConfig:
    tasks: list[str] = field(default_factory=lambda: list(PAPER_SEQUENCE))
    max_train_samples: int | None = None  # cap per task for the fine-tuning stage (seeded subset)
    max_eval_samples: int | None = None  # cap per task for the probe's eval set
    data_dir: str | None = None  # original release files; None = Hugging Face Hub
    allow_substitutes: bool = False  # local files: accept a documented substitute (recorded in data.json)
    hub_root: str | None = None  # local mirror of the Hub repos, <hub_root>/<repo id>/<revision>/ (data.hub)
    check_rows: bool = True  # a Hub split must have the registry's row count
    # Per-task max length = the longest tokenised input among the rows used, capped by optim.max_length
    # (so no SIQA answer / WinoGrande option is cut); false = optim.max_length for every task.
    auto_max_length: bool = True
    # {task: multiplier of the method's learning rate} (a task not listed: 1). Entries for tasks outside
    # `tasks` are ignored (one preset serves the synthetic and the real sequence). Typed Any, not a dict,
    # so that `sequence.lr_scale={siqa: 0.5}` composes over the default None.
    lr_scale: Any = None


@dataclass
class ProbeSchema:  # the Hydra-side twin of continual.probe.ProbeConfig (which validates)
    steps: int = 200  # head-only AdamW steps on cached features of the frozen body
    lr: float = 1e-3
    batch_size: int = 32
    train_samples: int = 1000  # rows of the task's train split the head is fitted on


@dataclass
class GateSchema:  # the learned-stage gate (continual.summary.Gate); judges runs, does not change them
    min_gain: float = 0.05  # at least 5 accuracy points over the pre-stage probe ...
    z: float = 1.645  # ... or z x the binomial SE of the pre-stage accuracy, if larger (one-sided 95 %)


@dataclass
class SpectralSchema:
    ks: list[int] = field(default_factory=lambda: [10])
    epsilons: list[float] | None = None  # None = lora_vs_full.spectral.DEFAULT_EPSILONS (0, 0.02, ..., 1)
    preset: str = "all_linear"  # which matrices are counted (q, k, v, o, fc1, fc2 of every layer)
    dtype: str = "float64"


@dataclass
class ContinualConfig:
    paths: Any = None
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    launcher: Any = None
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    probe: ProbeSchema = field(default_factory=ProbeSchema)
    spectral: SpectralSchema = field(default_factory=SpectralSchema)
    gate: GateSchema = field(default_factory=GateSchema)
    seed: int = 42
    device: str = "auto"
    out: str = "results/continual"  # tables at <out>/continual.*; one run directory per method under it
    overwrite: bool = False  # replace a run whose stored config differs (otherwise: UserError)


# Keys that define a run's results; a resume must match them exactly. Paths, device and overwrite
# only say where/how it runs; the gate only judges the results (recomputed from the tables).
IDENTITY_KEYS = ("model", "method", "optim", "sequence", "probe", "spectral", "seed")
FULL_METHOD_KEYS = ("name", "lr", "trainable")  # what a full fine-tune reads from `method`


def register_configs() -> None:
    """Register ``continual_schema`` (and lvf-train's schemas) in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from lora_vs_full.config import register_configs as register_train

    register_train()
    ConfigStore.instance().store(name="continual_schema", node=ContinualConfig)


def validate_tasks(tasks) -> tuple[str, ...]:
    """The task names of a sequence, checked: every name known, at least two, no repeats."""
    from lora_vs_full.data import get_task

    tasks = tuple(str(t) for t in tasks)
    for name in tasks:
        get_task(name)  # UserError listing the known tasks
    if len(tasks) < 2:
        raise UserError(
            f"sequence.tasks={list(tasks)} has {len(tasks)} task: continual learning needs at least two, "
            "e.g. sequence.tasks=[synth_sentiment,synth_nli]"
        )
    repeated = sorted({t for t in tasks if tasks.count(t) > 1})
    if repeated:
        raise UserError(
            f"sequence.tasks repeats {', '.join(repeated)}: each task has one head and one eval row per "
            "stage, so list every task once"
        )
    return tasks


def validate(cfg: DictConfig) -> tuple[str, ...]:
    """Raise a one-line UserError for the first bad value; return the validated task sequence.

    Method and optimiser values go through lvf-train's own validation (one source of truth), fed a
    view of this config with the first task in the ``task`` slot.
    """
    tasks = validate_tasks(cfg.sequence.tasks)
    view = OmegaConf.create(
        {
            "method": OmegaConf.to_container(cfg.method),
            "optim": OmegaConf.to_container(cfg.optim),
            "task": {
                "name": tasks[0],
                "max_train_samples": cfg.sequence.max_train_samples,
                "max_eval_samples": cfg.sequence.max_eval_samples,
            },
            "tracker": "none",
            "device": cfg.device,
        }
    )
    validate_train(view)
    lr_scales(cfg)  # UserError on a bad per-task rate multiplier
    probe_config(cfg)  # UserError on a bad probe budget
    gate(cfg)  # UserError on a bad gate
    from lora_vs_full.spectral import DEFAULT_EPSILONS, validate_grid

    s = cfg.spectral  # a bad k / epsilon fails here, before the run directory exists
    validate_grid(list(s.ks), list(s.epsilons) if s.epsilons is not None else DEFAULT_EPSILONS)
    return tasks


def lr_scales(cfg: DictConfig) -> dict[str, float]:
    """``sequence.lr_scale`` restricted to the sequence's tasks, validated (known task, finite value > 0)."""
    import math

    from lora_vs_full.data import get_task

    tasks = [str(t) for t in cfg.sequence.tasks]
    scales = cfg.sequence.get("lr_scale") or {}
    if not isinstance(scales, (dict, DictConfig)):
        raise UserError(
            f"sequence.lr_scale={scales!r} must map task names to numbers, e.g. 'sequence.lr_scale={{siqa: 0.5}}'"
        )
    out = {}
    for task, value in scales.items():
        get_task(str(task))  # UserError listing the known tasks
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            raise UserError(
                f"sequence.lr_scale.{task}={value!r} must be a number > 0 (e.g. sequence.lr_scale.{task}=0.5)"
            )
        if str(task) in tasks:
            out[str(task)] = value
    return out


def stage_lr(cfg: DictConfig, task: str) -> float:
    """The learning rate of the stage that trains ``task``: the method's (``models.methods.method_lr``)
    times the task's ``sequence.lr_scale`` (1 when not listed)."""
    from lora_vs_full.models.methods import method_lr

    return method_lr(cfg.method, cfg.optim) * lr_scales(cfg).get(task, 1.0)


def gate(cfg: DictConfig):
    """The learned-stage gate as a validated :class:`~lora_vs_full.continual.summary.Gate`."""
    from lora_vs_full.continual.summary import Gate

    g = cfg.get("gate") or {}
    return Gate(min_gain=float(g.get("min_gain", 0.05)), z=float(g.get("z", 1.645)))


def probe_config(cfg: DictConfig):
    """The probe budget as the (validated, immutable) :class:`~lora_vs_full.continual.probe.ProbeConfig`."""
    from lora_vs_full.continual.probe import ProbeConfig

    return ProbeConfig(**OmegaConf.to_container(cfg.probe, resolve=True))


def identity(cfg: DictConfig) -> dict:
    """The resolved sub-config that defines a run's results (compared on resume)."""
    out = {k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig) else cfg[k]
           for k in IDENTITY_KEYS}  # fmt: skip
    for key in (
        "hub_root",
        "check_rows",
    ):  # where a Hub mirror is / how strictly rows are checked: not results
        out["sequence"].pop(key, None)
    out["sequence"].pop("lr_scale", None)  # only the entries that act on this sequence define its results
    if scales := lr_scales(cfg):
        out["sequence"]["lr_scale"] = scales
    if out["method"].get("name") == "full":  # LoRA's keys (rank, lr rule, ...) do not change a full FT run
        out["method"] = {k: v for k, v in out["method"].items() if k in FULL_METHOD_KEYS}
    return out


def compose_continual(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``continual.yaml`` with command-line style overrides outside a Hydra app (tests, scripts).

    Interpolations (``paths``) are resolved against the environment at call time.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lora_vs_full.cli._common import CONFIG_DIR

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="continual", overrides=list(overrides))
