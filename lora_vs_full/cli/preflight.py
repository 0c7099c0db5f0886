"""``lvf-preflight``: everything a paper-scale reproduction needs, checked before any GPU hour is spent.

    lvf-preflight paper [--data-dir DIR] [--hub-root DIR] [key=value ...]   (make preflight PRESET=paper)
    lvf-preflight offline | llama

1. Plan: compose every run of the preset (``conf/reproduce/<figure>_<preset>.yaml`` for the figures in
   ``conf/preflight.yaml``) through ``lvf-train`` / ``lvf-continual``'s own config code and print the number
   of runs, optimiser steps, tokens, disk for checkpoints / resumable states / the base-SVD cache, and
   device-hours from a step time MEASURED here with a few real optimiser steps (the model and device
   measured on are printed; on a CPU the hours are CPU hours).
2. Checks, through the training code path: every dataset split of the plan (``load_run_data``: row counts
   against the registry, label set, files and resolved commit, one formatted example per task), every
   model id and revision (resolved commit), the pretrained MLM head the pseudo-loss needs, gated repos.
   Offline (``HF_HUB_OFFLINE=1``) the Hub checks cannot run: each one is listed as NOT RUN with what it
   would have checked, and the exit status stays 0 when everything that could run passed.

Exit status: 0 when every check that ran passed; 2 with ``error: <n> check(s) failed`` otherwise.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from lora_vs_full.cli._common import CONFIG_DIR, user_errors_exit
from lora_vs_full.errors import UserError


@dataclass
class Report:
    """What preflight found: passed checks, failures, checks it could not run, and notes."""

    ok: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_settings(overrides: list[str]) -> OmegaConf:
    cfg = OmegaConf.load(Path(CONFIG_DIR) / "preflight.yaml")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"override {bad[0]!r} is not key=value (e.g. measure_steps=5)")
    unknown = [o.split("=", 1)[0] for o in overrides if o.split("=", 1)[0] not in cfg]
    if unknown:
        raise UserError(f"unknown preflight setting {unknown[0]!r}: choose one of {', '.join(cfg)}")
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))


def _hub_offline() -> bool:
    from huggingface_hub.constants import is_offline_mode

    return bool(is_offline_mode())


# --- the plan ---------------------------------------------------------------------------------------


def preset_runs(preset: str, settings, data_dir: str | None, hub_root: str | None) -> list[dict]:
    """One entry per run of the preset: ``{"figure", "kind", "cfg", "tasks", "desc"}`` (composed configs)."""
    from lora_vs_full.reproduce import common

    names = set(common.preset_names())
    runs = []
    for figure in settings.figures:
        if f"{figure}_{preset}" not in names:
            continue
        from lora_vs_full.cli.reproduce import resolve

        _, schema = resolve(figure)
        pcfg = common.load_preset(f"{figure}_{preset}", schema=schema)
        extra = [f"task.hub_root={hub_root}"] if hub_root else []
        if settings.allow_substitutes:
            extra.append("task.allow_substitutes=true")
        if figure == "fig5":
            from lora_vs_full.config import compose_train
            from lora_vs_full.reproduce import fig5

            if pcfg.get("manifest"):  # analysis-only preset (llama): public checkpoints, nothing trained
                manifest = OmegaConf.load(Path(CONFIG_DIR) / "manifests" / f"{pcfg.manifest}.yaml")
                for group in manifest.groups:
                    runs.append({"figure": figure, "kind": "analysis", "base": group.base,
                                 "tuned": [ft.id for ft in group.fine_tunes]})  # fmt: skip
                continue
            from lora_vs_full.runs import run_id

            for ov in fig5.sweep(pcfg, data_dir):
                cfg = _compose(compose_train, [*ov, *extra])
                runs.append({"figure": figure, "kind": "train", "cfg": cfg, "tasks": [cfg.task.name],
                             "desc": run_id(cfg)})  # fmt: skip
        elif figure == "fig8":
            from lora_vs_full.continual import compose_continual
            from lora_vs_full.reproduce import continual

            for ov in continual.sweep(pcfg, data_dir):
                cfg = _compose(compose_continual, [*ov, *(["sequence.allow_substitutes=true"]
                                                         if settings.allow_substitutes else [])])  # fmt: skip
                from lora_vs_full.runs import method_tag

                tasks = list(cfg.sequence.tasks)
                desc = f"{'>'.join(tasks)} {method_tag(cfg.method)} seed{cfg.seed}"
                runs.append({"figure": figure, "kind": "continual", "cfg": cfg, "tasks": tasks, "desc": desc})
    if not runs:
        raise UserError(
            f"preset {preset!r} has no conf/reproduce/<figure>_{preset}.yaml for figures "
            f"{list(settings.figures)}: use one of {sorted({n.split('_', 1)[1] for n in names})}"
        )
    return runs


_COMPOSED: dict = {}


def _compose(compose, overrides: list[str]):
    """``compose(overrides)``, composing once per override list without ``method.rank`` (Hydra composition
    dominates the plan's time): the rank is then set on a copy, as the override would set it."""
    rank = [o for o in overrides if o.startswith("method.rank=")]
    key = (compose.__name__, tuple(o for o in overrides if not o.startswith("method.rank=")))
    if key not in _COMPOSED:
        _COMPOSED[key] = compose(list(key[1]) + rank[:1])
    cfg = _COMPOSED[key].copy()
    if rank:
        cfg.method.rank = int(rank[0].split("=", 1)[1])
    return cfg


def _rows_for(task: str, split: str, measured: dict) -> tuple[int | None, str]:
    """Rows of a task split: measured when its data were loaded here, else the registry's Hub count."""
    from lora_vs_full.data import get_task

    if (task, split) in measured:
        return measured[(task, split)], "measured"
    spec = get_task(task)
    if spec.source == "synthetic":
        return None, "unknown"
    hub_split = spec.train_split if split == "train" else spec.eval_split
    return spec.rows_expected(hub_split, spec.hub_config), "registry"


def train_steps(rows: int | None, cap, optim) -> int | None:
    """Optimiser steps of one fine-tuning: ``max_steps``, else epochs x ceil(rows / batch)."""
    if optim.get("max_steps"):
        return int(optim.max_steps)
    if rows is None:
        return None
    n = min(rows, cap) if cap else rows
    return int(optim.epochs) * math.ceil(n / int(optim.batch_size))


# --- parameter counts, disk, timing ----------------------------------------------------------------


def _model_config(model_cfg):
    """``(transformers config, label)`` of a run's model; offline and uncached: the family's defaults."""
    from transformers import AutoConfig

    from lora_vs_full.models.build import resolve_model_source

    src, revision = resolve_model_source(model_cfg)
    try:
        return AutoConfig.from_pretrained(src, revision=revision), src
    except (OSError, ValueError):
        if "roberta-large" in str(src):
            from transformers import RobertaConfig

            c = RobertaConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                              intermediate_size=4096, vocab_size=50265, max_position_embeddings=514)  # fmt: skip
            return c, f"{src} (config not reachable: roberta-large's published shape, random weights)"
        if "roberta" in str(src):
            from transformers import RobertaConfig

            c = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1)
            return c, f"{src} (config not reachable: roberta-base's published shape, random weights)"
        raise UserError(f"cannot read the config of model {src!r} here (offline and not cached)") from None


def _timing_model(model_cfg, num_labels: int, *, meta: bool = False):
    """``(model, what)``: the real base when loadable here, else random weights of the same shape;
    ``meta``: shapes only (parameter counts without timing)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from lora_vs_full.models import build

    if not meta:
        try:
            return build.build_classifier(
                model_cfg, num_labels
            ), f"{build.resolve_model_source(model_cfg)[0]}"
        except UserError:
            pass
    config, what = _model_config(model_cfg)
    config.num_labels = num_labels
    with torch.device("meta" if meta else "cpu"):
        return AutoModelForSequenceClassification.from_config(config), what


def param_counts(model) -> dict:
    """Total parameters, the parameters LoRA adds per unit of rank on all_linear targets, and the head's."""
    from lora_vs_full.models import targets

    fam = targets.family(model.config.model_type)
    per_rank = sum(
        p.shape[0] + p.shape[1]
        for n, p in model.named_parameters()
        if targets.parse_weight_name(n, fam) is not None
    )
    head = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("classifier", "score")))
    return {"total": sum(p.numel() for p in model.parameters()), "lora_per_rank": per_rank, "head": head}


def time_steps(model, method_cfg, *, device, batch: int, seq_len: int, steps: int, bf16: bool) -> float:
    """Seconds per optimiser step (forward, backward, AdamW) on random token ids, after one warm-up."""
    import torch

    from lora_vs_full.models import methods, targets

    torch.manual_seed(0)
    model = methods.apply_method(model, method_cfg, family=targets.family(model.config.model_type))
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
    vocab = model.config.vocab_size
    ids = torch.randint(5, vocab, (batch, seq_len), device=device)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    mask = torch.ones_like(ids)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


# --- checks ----------------------------------------------------------------------------------------


def check_data(runs: list[dict], settings, report: Report, offline: bool) -> tuple[dict, dict]:
    """Load every (task, data source) of the plan through ``load_run_data``; returns measured rows and
    mean token counts per task."""
    from lora_vs_full.data import get_task, load_run_data

    rows, lengths, seen = {}, {}, set()
    for run in runs:
        if run["kind"] == "analysis":
            continue
        cfg = run["cfg"]
        for task in run["tasks"]:
            if run["kind"] == "train":
                tcfg = cfg.task
            else:  # continual: the sequence's data settings, in the task-config shape load_run_data reads
                s = cfg.sequence
                tcfg = OmegaConf.create({"name": task, "data_dir": s.get("data_dir"), "max_train_samples": None,
                                         "max_eval_samples": None,
                                         "allow_substitutes": bool(s.get("allow_substitutes", False))})  # fmt: skip
            key = (task, tcfg.get("data_dir"), tcfg.get("hub_root"), tcfg.get("revision"))
            if key in seen:
                continue
            seen.add(key)
            spec = get_task(task)
            where = (
                tcfg.get("data_dir")
                or tcfg.get("hub_root")
                or (
                    f"{spec.hub_id}/{spec.hub_config}@{tcfg.get('revision') or spec.hub_revision}"
                    if spec.hub_id
                    else "synthetic"
                )
            )
            if spec.source == "paper" and not tcfg.get("data_dir") and not tcfg.get("hub_root") and offline:
                report.not_run.append(
                    f"data {task}: {where} train+eval splits (rows = registry counts, label set, files and "
                    "commit, formatted example) -- offline; run online, or pass --data-dir / --hub-root"
                )
                continue
            full = OmegaConf.merge(tcfg, {"max_train_samples": None, "max_eval_samples": None})
            try:
                train, evals, rec = load_run_data(full, seed=0)
            except UserError as exc:
                report.failed.append(f"data {task} ({where}): {exc}")
                continue
            if not rec["substitutions"]:  # a substitute's size is not the paper's: plan with the registry's
                rows[(task, "train")], rows[(task, "eval")] = len(train), len(evals)
            labels = sorted(set(train["label"]) | set(evals["label"]))
            lengths[task] = _mean_tokens(run["cfg"], train, settings, report)
            commit = rec["train"].get("commit")
            files = sum(len(rec[s]["files"]) for s in ("train", "eval"))
            msg = (f"data {task}: {len(train):,} train / {len(evals):,} eval rows from {rec['train']['origin']}"
                   f"{' @ ' + commit[:12] if commit else ''}; labels {labels} of {spec.num_labels}; "
                   f"{files} file(s) hashed")  # fmt: skip
            if labels != list(range(spec.num_labels)):
                report.failed.append(msg + f" -- label set {labels} is not 0..{spec.num_labels - 1}")
            else:
                report.ok.append(msg)
            for sub in rec["substitutions"]:
                report.notes.append(f"SUBSTITUTE ({task}): {sub}")
            ex = evals[0]
            text = ex["text"] + (f" || {ex['text_pair']}" if "text_pair" in ex else "")
            report.notes.append(
                f"example {task} (eval row 0, label {ex['label']}): {text[: settings.example_chars]!r}"
            )
    return rows, lengths


def _mean_tokens(cfg, ds, settings, report: Report) -> float | None:
    """Padded tokens per example (mean tokenised length, capped at optim.max_length, over one minus the padding
    share of the run's batch order) of up to ``measure_max_rows`` rows; with the model's tokenizer, else (offline, not cached) the packaged MiniLM WordPiece tokenizer as a named proxy."""
    from transformers import AutoTokenizer

    from lora_vs_full.models.build import load_tokenizer
    from lora_vs_full.models.tiny import minilm_path

    try:
        tok = load_tokenizer(cfg.model)
    except UserError:
        try:
            tok = AutoTokenizer.from_pretrained(minilm_path())
        except Exception:  # noqa: BLE001 - no tokenizer at all: lengths unknown
            return None
        note = f"token lengths measured with the MiniLM WordPiece tokenizer as a proxy ({cfg.model.source}'s is not here)"
        if note not in report.notes:
            report.notes.append(note)
    n = min(len(ds), int(settings.measure_max_rows))
    sample = ds.select(range(n))
    pair = list(sample["text_pair"]) if "text_pair" in sample.column_names else None
    enc = tok(list(sample["text"]), pair, truncation=True, max_length=int(cfg.optim.max_length))
    lens = [len(x) for x in enc["input_ids"]]
    if not lens:
        return None
    # Tokens a step actually processes: batches are padded to their longest member, in the order the run will
    # use (random, or length-grouped with optim.group_by_length) -- so the estimate counts the padding.
    from lora_vs_full.training.batching import epoch_pad_fraction

    group = bool(cfg.optim.get("group_by_length", False))
    pad = epoch_pad_fraction(
        lens, int(cfg.optim.batch_size), seed=int(cfg.get("seed", 42)), group_by_length=group
    )
    note = "step cost measured at padded batch lengths (the run's batch order: " + (
        "length-grouped)" if group else "random)"
    )
    if note not in report.notes:
        report.notes.append(note)
    return sum(lens) / len(lens) / max(1e-9, 1.0 - pad)


def check_models(runs: list[dict], report: Report, offline: bool) -> None:
    """Every model id: resolved commit, tokenizer, the MLM head (pseudo-loss); gated repos named."""
    from lora_vs_full import provenance
    from lora_vs_full.models.build import resolve_model_source

    seen = set()
    for run in runs:
        if run["kind"] == "analysis":
            repos = [(run["base"], None)] + [(t, None) for t in run["tuned"]]
        else:
            repos = [resolve_model_source(run["cfg"].model)]
        for src, revision in repos:
            if (src, revision) in seen:
                continue
            seen.add((src, revision))
            if Path(str(src)).exists():
                rec = provenance.model_record(src, revision)
                report.ok.append(f"model {src}: local, {len(rec['files'])} weight file(s) hashed")
                _check_head(src, None, report, run)
                continue
            try:
                commit = provenance.resolve_commit(src, revision)
            except UserError as exc:
                gated = "Gated" in str(exc)
                report.failed.append(
                    f"model {src}: {'GATED -- needs a token with access: ' if gated else ''}{exc}"
                )
                continue
            if commit is None:
                what = ("resolve the commit, download size, gated?" if run["kind"] == "analysis"
                        else "resolve the commit, load tokenizer/config, MLM head, gated?")  # fmt: skip
                report.not_run.append(
                    f"model {src}@{revision or 'main'}: {what} -- "
                    + ("offline and not in the HF cache" if offline else "Hub unreachable, not cached")
                )
                continue
            size = _repo_bytes(src, commit)
            report.ok.append(f"model {src}@{revision or 'main'} -> commit {commit}"
                             + (f", {_fmt_bytes(size)} to download" if size else ""))  # fmt: skip
            _check_head(src, commit, report, run)


def _repo_bytes(repo: str, commit: str) -> int | None:
    """Total size of a model repo's files at ``commit`` (the Hub's metadata); None when unavailable."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo, revision=commit, files_metadata=True)
        return sum(s.size or 0 for s in info.siblings or [])
    except Exception:  # noqa: BLE001 - the size is informational
        return None


def _check_head(src: str, revision: str | None, report: Report, run: dict) -> None:
    if run["kind"] == "analysis":
        return
    from lora_vs_full.forgetting.mlm_head import head_required, pretrained_head

    try:
        required = head_required(src, revision=revision)
        head = pretrained_head(src, revision=revision)
    except UserError as exc:
        report.failed.append(f"MLM head of {src}: {exc}")
        return
    if head is not None:
        report.ok.append(f"MLM head of {src}: pretrained head present (pseudo-loss scores with it)")
    elif required:
        report.failed.append(f"MLM head of {src}: a masked-LM base whose checkpoint has no head weights")
    else:
        report.notes.append(
            f"MLM head of {src}: none shipped; the pseudo-loss fits a probe head (docs/forgetting.md)"
        )


# --- the command -----------------------------------------------------------------------------------


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def plan_and_measure(runs, settings, rows, lengths, report: Report, log=print) -> dict:
    """Steps, tokens, disk and device-hours of every run; times a few real steps here."""
    from lora_vs_full.device import resolve_device

    train_like = [r for r in runs if r["kind"] != "analysis"]
    totals = {"runs": len(runs), "steps": 0, "tokens": 0, "ckpt_bytes": 0, "state_bytes": 0, "seconds": 0.0,
              "rows": []}  # fmt: skip
    if not train_like:
        return totals
    first = train_like[0]["cfg"]
    device = resolve_device(first.get("device", "auto"))
    model, what = _timing_model(first.model, 3, meta=int(settings.measure_steps) <= 0)
    counts = param_counts(model)
    seq = [v for v in lengths.values() if v]
    seq_len = int(round(sum(seq) / len(seq))) if seq else int(first.optim.max_length)
    if settings.get("measure_seq_len"):
        seq_len = int(settings.measure_seq_len)
    batch = int(first.optim.batch_size)
    bf16 = device.type == "cuda" and first.optim.get("precision", "auto") in ("auto", "bf16")
    t_full = t_lora = None
    if int(settings.measure_steps) > 0:
        full_cfg = OmegaConf.create({"name": "full", "trainable": "encoder_weights", "lr": None})
        lora_cfg = OmegaConf.merge(
            OmegaConf.load(Path(CONFIG_DIR) / "method" / "lora.yaml"), {"rank": int(settings.measure_rank)}
        )
        import copy

        t_full = time_steps(copy.deepcopy(model), full_cfg, device=device, batch=batch, seq_len=seq_len,
                            steps=int(settings.measure_steps), bf16=bf16)  # fmt: skip
        t_lora = time_steps(copy.deepcopy(model), lora_cfg, device=device, batch=batch, seq_len=seq_len,
                            steps=int(settings.measure_steps), bf16=bf16)  # fmt: skip
        name = device.type if device.type == "cpu" else __import__("torch").cuda.get_device_name(device)
        threads = __import__("torch").get_num_threads()
        report.notes.append(
            f"measured on {name}{f' ({threads} threads)' if device.type == 'cpu' else ''} with {what}: "
            f"{t_full:.3g} s/step full FT, {t_lora:.3g} s/step LoRA r={settings.measure_rank} "
            f"(batch {batch} x {seq_len} tokens{', bf16 autocast' if bf16 else ''}, {settings.measure_steps} steps)"
        )
    base_flops = 4 * counts["total"]

    def step_seconds(method) -> float | None:
        """Measured for full FT and LoRA r=measure_rank; other ranks scaled by their step FLOPs."""
        if t_full is None:
            return None
        if method.name == "full":
            return t_full
        flops = base_flops + 6 * counts["lora_per_rank"] * int(method.rank)
        return t_lora * flops / (base_flops + 6 * counts["lora_per_rank"] * int(settings.measure_rank))

    log(f"{'figure':7} {'run':70} {'steps':>9} {'tokens':>10} {'ckpt':>9} {'hours':>8}")
    for run in train_like:
        cfg = run["cfg"]
        steps, unknown = 0, False
        for task in run["tasks"]:
            n, _ = _rows_for(task, "train", rows)
            cap = cfg.task.max_train_samples if run["kind"] == "train" else cfg.sequence.max_train_samples
            s = train_steps(n, cap, cfg.optim)
            unknown |= s is None
            steps += s or 0
        method = cfg.method
        trained = (
            counts["total"]
            if method.name == "full"
            else counts["lora_per_rank"] * int(method.rank) + counts["head"]
        )
        ckpt = 4 * trained  # float32 safetensors (LoRA: adapter + head; full: the whole model)
        state = 2 * (4 * trained * 3)  # keep_states=2 resumable states: weights + two AdamW moments
        tokens = steps * batch * seq_len
        sec = step_seconds(method)
        hours = steps * sec / 3600 if sec is not None else None
        totals["steps"] += steps
        totals["tokens"] += tokens
        totals["ckpt_bytes"] += ckpt * (len(run["tasks"]) if run["kind"] == "continual" else 1)
        totals["state_bytes"] = max(totals["state_bytes"], state)
        totals["seconds"] += (steps * sec) if sec is not None else 0.0
        totals["rows"].append({"figure": run["figure"], "run": run["desc"], "steps": None if unknown else steps,
                               "tokens": tokens, "checkpoint_bytes": ckpt, "seconds_per_step": sec,
                               "device_hours": hours})  # fmt: skip
        log(f"{run['figure']:7} {run['desc'][:70]:70} {steps if not unknown else '?':>9} {tokens:>10.3g} "
            f"{_fmt_bytes(ckpt):>9} {hours if hours is not None else float('nan'):>8.3g}")  # fmt: skip
    # the analysis: base-SVD cache (float64 U and S of every analysed base matrix) and per-run tables/spectra
    from lora_vs_full import budget
    from lora_vs_full.models import targets
    from lora_vs_full.spectral.grid import DEFAULT_EPSILONS, DEFAULT_KS

    fam = targets.family(model.config.model_type)
    shapes = [
        tuple(p.shape) for n, p in model.named_parameters() if targets.parse_weight_name(n, fam) is not None
    ]
    n_analysed = sum(1 for r in train_like if r["kind"] == "train")
    totals["cache_bytes"] = budget.cache_bytes_for(shapes, 8)
    totals["analysis_bytes"] = budget.output_bytes_for(
        shapes, n_analysed, n_cells=len(DEFAULT_KS) * len(DEFAULT_EPSILONS), sim_n=100, k_max=max(DEFAULT_KS)
    )
    totals.update(model=what, device=str(device), seq_len=seq_len, batch=batch, t_full=t_full, t_lora=t_lora,
                  base_params=counts["total"])  # fmt: skip
    return totals


def _write(dest: Path, preset: str, totals: dict, report: Report, offline: bool) -> None:
    """``plan.csv`` (one row per run) and ``summary.json`` (totals, measured step times, check lists)."""
    import pandas as pd

    from lora_vs_full import provenance
    from lora_vs_full.storage import atomic_write_json, atomic_write_with

    plan = pd.DataFrame(totals["rows"])
    atomic_write_with(dest / "plan.csv", lambda p: plan.to_csv(p, index=False))
    summary = {k: v for k, v in totals.items() if k != "rows"}
    summary.update(preset=preset, hub_offline=offline, device_hours=round(totals["seconds"] / 3600, 1),
                   checkpoint_gb=round(totals["ckpt_bytes"] / 1e9, 1),
                   cache_gb=round(totals.get("cache_bytes", 0) / 1e9, 2),
                   analysis_gb=round(totals.get("analysis_bytes", 0) / 1e9, 2), ok=report.ok, notes=report.notes,
                   not_run=report.not_run, failed=report.failed)  # fmt: skip
    atomic_write_json(dest / "summary.json", summary)
    atomic_write_json(dest / "provenance.json", provenance.collect(preset=preset))
    print(f"wrote {dest / 'plan.csv'}, {dest / 'summary.json'}")


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="lvf-preflight", description=__doc__.splitlines()[0])
    ap.add_argument("preset", help="paper | offline | llama (conf/reproduce/<figure>_<preset>.yaml)")
    ap.add_argument(
        "--data-dir", default=os.environ.get("LVF_DATA_DIR") or None, help="original release files"
    )
    ap.add_argument("--hub-root", default=None, help="local Hub mirror <root>/<repo id>/<revision>/")
    ap.add_argument(
        "--out", default=None, help="also write plan.csv + summary.json here (e.g. results/tables/...)"
    )
    ap.add_argument("overrides", nargs="*", help="conf/preflight.yaml settings as key=value")
    args = ap.parse_intermixed_args(argv)
    settings = load_settings(args.overrides)
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a directory")
    online = str(settings.online).lower()
    offline = _hub_offline() or online == "false"
    report = Report()
    runs = preset_runs(args.preset, settings, args.data_dir, args.hub_root)
    print(f"lvf-preflight {args.preset}: {len(runs)} run(s) in "
          f"{', '.join(sorted({r['figure'] for r in runs}))}; Hub {'OFFLINE' if offline else 'online'}")  # fmt: skip
    rows, lengths = check_data(runs, settings, report, offline)
    check_models(runs, report, offline)
    if online == "true" and report.not_run:
        report.failed.append("online=true but the Hub checks could not run (see NOT RUN)")
    print("\nplan (steps from the registry's row counts unless the release files were loaded here):")
    totals = plan_and_measure(runs, settings, rows, lengths, report)
    print(
        f"\ntotal: {totals['runs']} runs, {totals['steps']:,} optimiser steps, {totals['tokens']:.3g} tokens "
        f"(mean input {totals.get('seq_len', '?')} tokens{' measured' if lengths else ', max_length: no data here'}), "
        f"checkpoints {_fmt_bytes(totals['ckpt_bytes'])}, resumable states up to {_fmt_bytes(totals['state_bytes'])} "
        f"per run in flight; analysis: base-SVD cache {_fmt_bytes(totals.get('cache_bytes', 0))}, tables and "
        f"spectra {_fmt_bytes(totals.get('analysis_bytes', 0))} (default k x epsilon grid)"
    )
    if totals.get("t_full") is not None:
        print(f"device time: {totals['seconds'] / 3600:,.1f} h on {totals['device']} ({totals['model']})")
    for title, items in (("ok", report.ok), ("NOTE", report.notes), ("NOT RUN", report.not_run),
                         ("FAILED", report.failed)):  # fmt: skip
        for item in items:
            print(f"{title}: {item}")
    print(f"\nsummary: {len(report.ok)} checks passed, {len(report.failed)} failed, {len(report.not_run)} not run"
          + (" (offline: run `make preflight` where the Hub is reachable before renting the GPU)" if report.not_run else ""))  # fmt: skip
    if args.out:
        _write(Path(args.out), args.preset, totals, report, offline)
    if report.failed:
        raise UserError(f"{len(report.failed)} preflight check(s) failed (listed above as FAILED)")


if __name__ == "__main__":
    main()
