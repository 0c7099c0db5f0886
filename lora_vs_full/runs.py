"""Run directories of ``lvf-train``: naming, idempotency, executing one run, loading a finished run.

Layout (the contract in docs/ARCHITECTURE.md)::

    <paths.runs_dir>/<model>/<task>/<method_tag>/seed<k>/
      config.yaml  provenance.json  metrics.jsonl  checkpoint/  [checkpoints/step-<n>/]  final.json

``final.json`` is written last and atomically; its presence means the run is complete. Rerunning the
same config skips a complete run; a complete run with a different config is a UserError unless
``overwrite=true``. A directory without ``final.json`` is an interrupted run: when it holds a resumable
state (``state/``, every ``save_state_every`` steps, see ``lora_vs_full.training.resume``) and the same
config, the rerun continues from it; with a different config it is refused naming the differing keys
(``overwrite=true`` restarts it); without a state it is wiped and restarted. One process at a time works
on a run directory (``lora_vs_full.lifecycle.locked``). This is the lifecycle every unit shares
(``lora_vs_full.lifecycle``).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lora_vs_full import provenance
from lora_vs_full.device import resolve_device
from lora_vs_full.errors import UserError
from lora_vs_full.lifecycle import config_diff, describe_diff, locked
from lora_vs_full.storage import atomic_write_json, atomic_write_text, ensure_dir, read_json

_log = logging.getLogger("lora_vs_full.train")

# Keys that say where or how a run executes, not what it computes: ignored when comparing configs.
_NOT_IDENTITY = ("paths", "overwrite", "device", "tracker", "hydra", "save_state_every", "keep_states")


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
        kind = method_cfg.get("variant", "lora") or "lora"  # a PEFT variant names its own directory
        tag = f"{kind}-r{int(method_cfg.rank)}" + ("" if kind == "vera" else f"-a{alpha:g}")
        if method_cfg.alpha_policy == "rslora":
            tag += "-rslora"
        tag += f"-{method_cfg.targets}"
        if method_cfg.get("init", "gaussian") != "gaussian":
            tag += f"-init_{method_cfg.init}"
        if method_cfg.get("train", "AB") != "AB":
            tag += f"-{method_cfg.train}"
        if kind == "loraplus":
            tag += f"-ratio{float(method_cfg.loraplus_lr_ratio):g}"
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
    from lora_vs_full.data import TASK_LOCATION_KEYS

    # same data, other location or strictness (a substitute is recorded; without it the run fails)
    c["task"] = {
        k: v
        for k, v in c["task"].items()
        if k not in TASK_LOCATION_KEYS and not (k == "revision" and v is None)
    }
    if isinstance(c.get("method"), dict) and c["method"].get("lr_rule") == "inv_sqrt_rank":
        c["method"]["lr_rule"] = "rank_power"  # the same rule at power 0.5, under its older name
    for group, added in (("method", _ADDED_METHOD_DEFAULTS), ("optim", _ADDED_OPTIM_DEFAULTS)):
        if isinstance(c.get(group), dict):
            c[group] = {k: v for k, v in c[group].items() if added.get(k, ...) != v}
    if c["model"].get("builder"):  # a built/packaged model: its local path is machine-specific
        c["model"] = {k: v for k, v in c["model"].items() if k != "source"}
    return c


# method keys added after runs were made (PEFT variants): at their default they are dropped from the identity,
# so a run stored before they existed still matches its config
_ADDED_METHOD_DEFAULTS = {"variant": "lora", "train": "AB", "loraplus_lr_ratio": 16.0, "adalora_init_r": None,
                          "adalora_tinit": 0.1, "adalora_tfinal": 0.2, "vera_d_initial": 0.1,
                          "lr_rank_power": 0.5}  # fmt: skip
# optim keys added after runs were made (length grouping, GPU fast paths; `bf16` was replaced by `precision`):
# at their default / CPU value they are dropped the same way
_ADDED_OPTIM_DEFAULTS = {"group_by_length": False, "precision": "auto", "tf32": "auto", "fused_adamw": "auto",
                         "attn_implementation": "auto", "compile": False, "bf16": False}  # fmt: skip

_diff = config_diff  # the shared comparison (lifecycle.py); kept under its old name for callers


def is_complete(run_dir) -> bool:
    return (Path(run_dir) / "final.json").is_file()


def read_final(run_dir) -> dict:
    path = Path(run_dir) / "final.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a complete run (no final.json): train it with lvf-train first")
    return read_json(path)


def _stored_changes(run_dir: Path, cfg) -> list[str]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return ["config.yaml missing"]
    try:
        stored = OmegaConf.load(path)
    except Exception:  # a corrupt config.yaml: treat the run as made with an unknown config
        return ["config.yaml unreadable"]
    return config_diff(identity(stored), identity(cfg))


def is_current(run_dir, cfg) -> bool:
    """True when ``run_dir`` is complete and was made with ``cfg``'s identity (a rerun skips it)."""
    try:
        return is_complete(run_dir) and not _stored_changes(Path(run_dir), cfg)
    except UserError:
        return False


def prepare_run_dir(run_dir: Path, cfg, *, overwrite: bool = False, log=_log.info) -> bool:
    """Make ``run_dir`` ready; False when a complete run with the same config already exists (skip).

    An interrupted run with a resumable state and the same config is kept (``execute`` resumes it)."""
    from lora_vs_full.training.resume import has_state

    run_dir = Path(run_dir)
    if is_complete(run_dir):
        changes = _stored_changes(run_dir, cfg)
        if not changes:
            log(f"skipping: {run_dir} is already complete with the same config")
            return False
        if not overwrite:
            raise UserError(
                f"{run_dir} is complete with a different config ({describe_diff(changes)}): pass "
                "overwrite=true to replace it, or set method.lr / paths.runs_dir to keep both"
            )
        log(f"overwrite=true: replacing the complete run in {run_dir}")
        shutil.rmtree(run_dir)
    elif run_dir.exists() and has_state(run_dir):
        changes = _stored_changes(run_dir, cfg)
        if not changes:
            log(f"{run_dir} holds an interrupted run with a resumable state and the same config: resuming")
            return True
        if not overwrite:
            raise UserError(
                f"{run_dir} holds an interrupted run made with a different config ({describe_diff(changes)}): "
                "rerun with its config to resume it, pass overwrite=true to restart it, or set "
                "paths.runs_dir to keep both"
            )
        log(f"overwrite=true: restarting the interrupted run in {run_dir} (its config differs)")
        shutil.rmtree(run_dir)
    elif run_dir.exists():
        log(f"{run_dir} holds an interrupted run (no final.json): wiping its partial files and restarting")
        shutil.rmtree(run_dir)
    ensure_dir(run_dir)
    return True


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
    run_dir = run_dir_for(cfg)
    if is_current(run_dir, cfg):  # skip without taking the lock
        log(f"skipping: {run_dir} is already complete with the same config")
        return read_final(run_dir)
    with locked(run_dir, "run directory"):
        fresh = not run_dir.exists()
        try:
            return _execute_locked(cfg, run_dir, log=log, progress=progress)
        except UserError:
            from lora_vs_full.training.resume import has_state

            if fresh and not is_complete(run_dir) and not has_state(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)  # bad input (data, model) leaves nothing behind
            raise


def _execute_locked(cfg: DictConfig, run_dir: Path, *, log, progress: bool) -> dict:
    import torch

    from lora_vs_full.data import get_task, load_run_data
    from lora_vs_full.models import build, methods, targets
    from lora_vs_full.training.loop import make_tracker, train
    from lora_vs_full.training.resume import state_dir

    if not prepare_run_dir(run_dir, cfg, overwrite=bool(cfg.overwrite), log=log):
        return read_final(run_dir)
    t_start = time.time()
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    spec = get_task(cfg.task.name)
    device = resolve_device(cfg.device)
    src, revision = build.resolve_model_source(cfg.model)
    data = _data_source(spec, cfg.task.data_dir)
    atomic_write_json(run_dir / "provenance.json", provenance.collect(run_id=run_id(cfg), data=data))

    # the training code path for data: every file read (sha256), resolved Hub commits, substitutions
    train_ds, eval_ds, data = load_run_data(cfg.task, seed=int(cfg.seed))
    base = provenance.model_record(src, revision)  # resolved commit of the base; a pinned sha must match
    torch.manual_seed(int(cfg.seed))  # classifier-head and LoRA initialisation
    tokenizer = build.load_tokenizer(cfg.model)
    model = build.build_classifier(cfg.model, spec.num_labels)
    fam = targets.family(model.config.model_type)
    from lora_vs_full.training.optim import total_steps

    model = methods.apply_method(
        model, cfg.method, family=fam, total_steps=total_steps(len(train_ds), cfg.optim)
    )
    lr = methods.method_lr(cfg.method, cfg.optim)
    summary = methods.trainable_summary(model)
    # VeRA has no alpha (its scale is the trained vectors), so none is recorded
    has_alpha = cfg.method.name == "lora" and methods.variant(cfg.method) != "vera"
    alpha = methods.lora_alpha_and_lr(cfg.method)[0] if has_alpha else None
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
            state_every=cfg.get("save_state_every"), keep_states=int(cfg.get("keep_states") or 2),
            make_optim=methods.optimizer_factory(cfg.method), on_step=methods.step_hook(model, cfg.method),
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
            run_id=run_id(cfg),
            data=data,
            base_model=base,
            timings=timings,
            trainable=summary["trainable_params"],
        ),  # fmt: skip
    )
    final = {
        "run_id": run_id(cfg),
        "model": cfg.model.name,
        "base_model": src,
        # the commit the base resolved to (analysis, pseudo-loss, intervention load the base at it)
        "base_revision": base["commit"] or revision,
        "base_revision_requested": revision,
        "data_revisions": data["revisions"],  # Hub dataset id -> {requested, commit}
        "substitutions": data["substitutions"],  # substitute files used (tables/headlines carry them)
        "task": spec.name,
        "method": cfg.method.name,
        "method_tag": method_tag(cfg.method),
        # PEFT variant (models/methods.py) and which LoRA factors trained; null for full FT
        "variant": methods.variant(cfg.method) if cfg.method.name == "lora" else None,
        "train": cfg.method.get("train", "AB") if cfg.method.name == "lora" else None,
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
    shutil.rmtree(state_dir(run_dir), ignore_errors=True)  # resumable states are for incomplete runs only
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
