"""Run directories of ``lvf-train``: naming, idempotency, executing one run, loading a finished run.

Layout (the contract in docs/ARCHITECTURE.md)::

    <paths.runs_dir>/<model>/<task>/<method_tag>/seed<k>/
      config.yaml  provenance.json  metrics.jsonl  checkpoint/  [checkpoints/step-<n>/]  final.json

``final.json`` is written last and atomically; its presence means the run is complete. Rerunning the
same config skips a complete run; a complete run with a different config is a UserError unless
``overwrite=true``; a directory without ``final.json`` (an interrupted run) is wiped and restarted.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lora_vs_full import provenance
from lora_vs_full.errors import UserError
from lora_vs_full.storage import atomic_write_json, atomic_write_text, read_json

_log = logging.getLogger("lora_vs_full.train")

# Keys that say where or how a run executes, not what it computes: ignored when comparing configs.
_NOT_IDENTITY = ("paths", "overwrite", "device", "tracker", "hydra")


def method_tag(method_cfg) -> str:
    """``full`` or ``lora-r8-a16-all_linear`` (+ ``-rslora``, ``-init_default``, ``-lr<x>`` when non-default).

    An explicit ``method.lr`` is part of the name so learning-rate sweeps get one directory per value.
    """
    if method_cfg.name == "full":
        tag = "full"
        if method_cfg.get("trainable", "encoder_weights") != "encoder_weights":
            tag += f"-{method_cfg.trainable}"
    else:
        from lora_vs_full.models.methods import lora_alpha_and_lr

        alpha, _ = lora_alpha_and_lr(method_cfg)
        tag = f"lora-r{int(method_cfg.rank)}-a{alpha:g}"
        if method_cfg.alpha_policy == "rslora":
            tag += "-rslora"
        tag += f"-{method_cfg.targets}"
        if method_cfg.get("init", "gaussian") != "gaussian":
            tag += f"-init_{method_cfg.init}"
    if method_cfg.get("lr") is not None:
        tag += f"-lr{float(method_cfg.lr):.3g}"
    return tag


def run_id(cfg) -> str:
    return f"{cfg.model.name}/{cfg.task.name}/{method_tag(cfg.method)}/seed{int(cfg.seed)}"


def run_dir_for(cfg) -> Path:
    """``<paths.runs_dir>/<model>/<task>/<method_tag>/seed<k>``."""
    return Path(cfg.paths.runs_dir) / run_id(cfg)


def identity(cfg) -> dict:
    """The part of a config that determines a run's result (location and logging knobs dropped)."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    c = {k: v for k, v in c.items() if k not in _NOT_IDENTITY}
    c["task"] = {k: v for k, v in c["task"].items() if k != "data_dir"}  # same data, other location
    if c["model"].get("builder"):  # a built/packaged model: its local path is machine-specific
        c["model"] = {k: v for k, v in c["model"].items() if k != "source"}
    return c


def _diff(old, new, prefix="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def is_complete(run_dir) -> bool:
    return (Path(run_dir) / "final.json").is_file()


def read_final(run_dir) -> dict:
    path = Path(run_dir) / "final.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a complete run (no final.json): train it with lvf-train first")
    return read_json(path)


def prepare_run_dir(run_dir: Path, cfg, *, overwrite: bool = False, log=_log.info) -> bool:
    """Make ``run_dir`` ready; False when a complete run with the same config already exists (skip)."""
    if is_complete(run_dir):
        stored = OmegaConf.load(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
        changes = _diff(identity(stored), identity(cfg)) if stored is not None else ["config.yaml missing"]
        if not changes:
            log(f"skipping: {run_dir} is already complete with the same config")
            return False
        if not overwrite:
            shown = "; ".join(changes[:3]) + (
                f"; ... ({len(changes)} differences)" if len(changes) > 3 else ""
            )
            raise UserError(
                f"{run_dir} is complete with a different config ({shown}): pass overwrite=true to replace "
                "it, or set method.lr / paths.runs_dir to keep both"
            )
        log(f"overwrite=true: replacing the complete run in {run_dir}")
        shutil.rmtree(run_dir)
    elif run_dir.exists():
        log(f"{run_dir} holds an interrupted run (no final.json): wiping its partial files and restarting")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    return True


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but no CUDA device is visible: use device=auto or device=cpu")
    return torch.device(name)


def _data_source(spec, data_dir) -> dict:
    if spec.source == "synthetic":
        return {"source": "synthetic"}
    if data_dir is not None:
        return {"source": "local", "data_dir": str(Path(data_dir).resolve())}
    return {
        "source": "hub",
        "hub_id": spec.hub_id,
        "hub_config": spec.hub_config,
        "revision": spec.hub_revision,
    }


def execute(cfg: DictConfig, *, log=_log.info, progress: bool = True) -> dict:
    """Run one composed ``lvf-train`` config into its run directory; returns ``final.json``'s content."""
    from lora_vs_full.config import validate

    validate(cfg)  # before the heavy imports: a bad value fails in a fraction of a second
    import torch

    from lora_vs_full.data import get_task, load_task
    from lora_vs_full.models import build, methods, targets
    from lora_vs_full.training.loop import make_tracker, train

    run_dir = run_dir_for(cfg)
    if not prepare_run_dir(run_dir, cfg, overwrite=bool(cfg.overwrite), log=log):
        return read_final(run_dir)
    t_start = time.time()
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    spec = get_task(cfg.task.name)
    device = _device(cfg.device)
    src, revision = build.resolve_model_source(cfg.model)
    data = _data_source(spec, cfg.task.data_dir)
    atomic_write_json(run_dir / "provenance.json", provenance.collect(run_id=run_id(cfg), data=data))

    t = cfg.task
    train_ds = load_task(t.name, "train", data_dir=t.data_dir, max_samples=t.max_train_samples, seed=cfg.seed)
    eval_ds = load_task(t.name, "eval", data_dir=t.data_dir, max_samples=t.max_eval_samples, seed=cfg.seed)
    torch.manual_seed(int(cfg.seed))  # classifier-head and LoRA initialisation
    tokenizer = build.load_tokenizer(cfg.model)
    model = build.build_classifier(cfg.model, spec.num_labels)
    fam = targets.family(model.config.model_type)
    model = methods.apply_method(model, cfg.method, family=fam)
    lr = methods.method_lr(cfg.method, cfg.optim)
    summary = methods.trainable_summary(model)
    alpha = methods.lora_alpha_and_lr(cfg.method)[0] if cfg.method.name == "lora" else None
    log(
        f"{run_id(cfg)}: {summary['trainable_params']:,} of {summary['total_params']:,} parameters trainable "
        f"({summary['trainable_tensors']} tensors), lr {lr:.3g}"
        + (f", alpha {alpha:g}" if alpha is not None else "")
        + f", {len(train_ds):,} train / {len(eval_ds):,} eval rows, device {device}"
    )
    if cfg.method.name == "lora":
        sat = methods.saturated_targets(model, cfg.method, family=fam)
        if sat:
            log(
                f"rank {cfg.method.rank} saturates {len(sat)} target matrices (min(d_in, d_out) < r), e.g. {sat[0]}"
            )

    tracker = make_tracker(cfg.tracker, run_dir, OmegaConf.to_container(cfg, resolve=True))
    try:
        result = train(
            model, tokenizer, train_ds, eval_ds, cfg.optim, lr=lr, seed=int(cfg.seed), device=device,
            run_dir=run_dir, log=log, tracker=tracker, progress=progress,
            save_fn=lambda dest: build.save_checkpoint(model, tokenizer, dest),
        )  # fmt: skip
    finally:
        if tracker is not None:
            tracker.close()
    if cfg.save_checkpoint:
        build.save_checkpoint(model, tokenizer, run_dir / "checkpoint")
    timings = {"total_seconds": round(time.time() - t_start, 3), "train_seconds": result["train_seconds"]}
    atomic_write_json(
        run_dir / "provenance.json",
        provenance.collect(
            run_id=run_id(cfg), data=data, timings=timings, trainable=summary["trainable_params"]
        ),
    )
    final = {
        "run_id": run_id(cfg),
        "model": cfg.model.name,
        "base_model": src,
        "base_revision": revision,
        "task": spec.name,
        "method": cfg.method.name,
        "method_tag": method_tag(cfg.method),
        "rank": int(cfg.method.rank) if cfg.method.name == "lora" else None,
        "alpha": alpha,
        "use_rslora": cfg.method.name == "lora" and cfg.method.alpha_policy == "rslora",
        # full FT trains every matrix of the all_linear preset (plus more under all_but_embeddings)
        "targets": cfg.method.targets if cfg.method.name == "lora" else "all_linear",
        "trainable": None if cfg.method.name == "lora" else cfg.method.trainable,
        "lr": lr,
        "seed": int(cfg.seed),
        "steps": result["steps"],
        "eval_accuracy": result["eval_accuracy"],
        "eval_loss": result["eval_loss"],
        "train_loss": result["train_loss"],
        "diverged": result["diverged"],
        "num_labels": spec.num_labels,
        "trainable_params": summary["trainable_params"],
        "train_seconds": result["train_seconds"],
    }
    atomic_write_json(run_dir / "final.json", final)  # LAST: marks the run complete
    log(f"done: {run_dir} (eval accuracy {final['eval_accuracy']:.4f}, {result['steps']} steps)")
    return final


def load_run_model(run_dir, *, merged: bool = True, device="cpu"):
    """``(model, tokenizer, final)`` of a complete run, in eval mode on ``device``.

    LoRA: the base classifier from ``final["base_model"]`` + ``PeftModel.from_pretrained(base,
    run/checkpoint)``, merged into plain weights (``merge_and_unload``) unless ``merged=False``.
    Full FT: the saved classifier itself.
    """
    from transformers import AutoTokenizer

    from lora_vs_full.models.build import load_classifier

    run_dir = Path(run_dir)
    final = read_final(run_dir)
    ckpt = run_dir / "checkpoint"
    if not ckpt.is_dir():
        raise UserError(f"{run_dir} has no checkpoint/ (trained with save_checkpoint=false?): retrain it")
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    if final["method"] == "lora":
        from peft import PeftModel

        base = load_classifier(final["base_model"], final["num_labels"], revision=final.get("base_revision"))
        model = PeftModel.from_pretrained(base, ckpt)
        if merged:
            model = model.merge_and_unload()
    else:
        model = load_classifier(str(ckpt), final["num_labels"])
    return model.to(device).eval(), tokenizer, final
