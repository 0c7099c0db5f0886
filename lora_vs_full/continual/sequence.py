"""Sequential fine-tuning of ONE model over a task sequence, with probes and spectra after every stage.

PAPER.md §5 (v1 Fig. 8). Stage 0 is the untouched pretrained model; stage t >= 1 fine-tunes on task t
with the method's recipe, starting from the weights left by stage t-1:

- LoRA: a fresh adapter (PEFT) on the current weights, trained, then merged (``merge_and_unload``) so
  the next stage starts from W_{t-1} + s B_t A_t.
- full FT: the method's trainable set keeps training.

Every task has its own classification head (num_labels differ), initialised from a task-specific seed.
After every stage each task of the sequence is scored by a probe (:mod:`.probe`: only its head retrained
on the frozen body) and the adapted matrices are compared with the ORIGINAL pretrained ones (intruder
counts over the k x epsilon grid, summed over matrices).

Run directory ``<out>/<method_tag>-seed<k>/``::

    config.yaml  identity.json        the composed config; the part a resume must match
    stage<t>/state.safetensors        body tensors that differ from the pretrained ones + this stage's head
    stage<t>/stage.json               provenance, lr, fine-tune result, probe and intruder rows (LAST)
    continual.{parquet,csv}  continual_intruders.{parquet,csv}      this run's tidy tables

A stage is complete iff its ``stage.json`` exists; a rerun resumes after the last complete stage.
"""

from __future__ import annotations

import shutil
import time
import zlib
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from lora_vs_full import provenance
from lora_vs_full.continual import config as ccfg
from lora_vs_full.continual.probe import probe_accuracy
from lora_vs_full.continual.tables import DONE_FILE, collect_tables, write_run_tables
from lora_vs_full.device import resolve_device
from lora_vs_full.errors import UserError
from lora_vs_full.lifecycle import config_diff, locked_by, refuse_mismatch
from lora_vs_full.storage import (
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    read_json,
)

STATE_FILE = "state.safetensors"
HEAD_PREFIX = "head."  # keys of the stage's head inside state.safetensors


def task_seed(seed: int, task: str) -> int:
    """A stable per-task seed (crc32, not ``hash``: Python salts string hashes per process)."""
    return (seed * 1_000_003 + zlib.crc32(task.encode())) % 2**31


def run_name(cfg: DictConfig) -> str:
    from lora_vs_full.runs import method_tag

    return f"{method_tag(cfg.method)}-seed{cfg.seed}"


# ---------------------------------------------------------------- run directory and resume guard
def prepare_run_dir(cfg: DictConfig, log=print) -> Path:
    """Create (or reopen) the run directory; refuse a resume whose stored config differs."""
    run_dir = Path(cfg.out) / run_name(cfg)
    ident = ccfg.identity(cfg)
    stored = run_dir / "identity.json"
    if stored.is_file():
        old = read_json(stored)
        if old != ident:
            if not cfg.overwrite:
                refuse_mismatch(run_dir, "a continual run", config_diff(old, ident),  # names the nested keys
                                "pass overwrite=true to replace it, or out=<another directory>")  # fmt: skip
            log(f"overwrite=true: replacing {run_dir} (its config differs)")
            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not stored.is_file():
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        atomic_write_json(stored, ident)
    return run_dir


def completed_stages(run_dir: Path, n_stages: int) -> int:
    """Number of leading stages already complete (0..n_stages); later partial stage dirs are wiped."""
    done = 0
    while done < n_stages and (run_dir / f"stage{done}" / DONE_FILE).is_file():
        done += 1
    for t in range(done, n_stages):
        shutil.rmtree(run_dir / f"stage{t}", ignore_errors=True)
    return done


# ---------------------------------------------------------------- models
def body_state(model) -> dict[str, torch.Tensor]:
    """Every tensor of a plain HF classifier except its head (detached CPU copies)."""
    from lora_vs_full.models.methods import is_head_param

    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if not is_head_param(k)}


def head_state(model) -> dict[str, torch.Tensor]:
    from lora_vs_full.models.methods import is_head_param

    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if is_head_param(k)}


def probe_head(model) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A task's probe head: the model's classifier (its structure) and a copy of its initial state."""
    return model.classifier, {k: v.clone() for k, v in model.classifier.state_dict().items()}


def stored_body(stage_dir: Path) -> dict[str, torch.Tensor]:
    """The body tensors a finished stage stored (those that differ from the pretrained ones; no head)."""
    state = load_file(stage_dir / STATE_FILE)
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}


def changed_tensors(current: dict, original: dict) -> dict[str, torch.Tensor]:
    """The tensors of ``current`` that differ from ``original``: what a stage state must store."""
    return {k: v.contiguous() for k, v in current.items() if not torch.equal(v, original[k])}


def build_stage_model(cfg: DictConfig, num_labels: int, head_seed: int, changed: dict, device):
    """The pretrained classifier with this task's fresh head (seeded) and the body tensors in ``changed``.

    Pass the FULL body (original + changed) when some body tensors are absent from the checkpoint (a
    randomly initialised pooler would otherwise differ between stages built with different head seeds)."""
    from lora_vs_full.models.build import build_classifier

    torch.manual_seed(head_seed)
    model = build_classifier(cfg.model, num_labels)
    if changed:
        missing = set(changed) - set(model.state_dict())
        if missing:
            raise UserError(
                f"stage state has tensors the model lacks ({sorted(missing)[:3]}...): delete the run dir"
            )
        model.load_state_dict(changed, strict=False)
    return model.to(device)


def train_stage(model, cfg: DictConfig, task: str, tokenizer, data, *, stage: int, family: str, device,
                stage_dir: Path, log, progress: bool = True):  # fmt: skip
    """Fine-tune ``model`` on ``task`` with the method; return (plain merged model, training result).

    The fine-tune's own eval (on the task's capped eval set, with the trained head) and its loss curve
    go to ``stage_dir/metrics.jsonl``."""
    from lora_vs_full.models.methods import apply_method
    from lora_vs_full.training.loop import train

    torch.manual_seed(cfg.seed + stage)  # LoRA's A init
    model = apply_method(model, cfg.method, family=family)
    stage_dir.mkdir(parents=True, exist_ok=True)
    result = train(model, tokenizer, data.train(task), data.eval(task), cfg.optim, seed=cfg.seed + stage,
                   lr=ccfg.stage_lr(cfg, task), device=device, max_length=data.max_length(task),
                   run_dir=stage_dir, log=log, progress=progress)  # fmt: skip
    if cfg.method.name == "lora":
        model = model.merge_and_unload()  # W <- W + s B A; the head leaves modules_to_save
    for p in model.parameters():
        p.requires_grad_(False)
    return model, result


class TaskData:
    """Loads each task's train / probe / eval rows once per process (capped, seeded subsets), keeps each
    load's data record (files, substitutions) and the per-task max length (:mod:`.lengths`)."""

    def __init__(self, cfg: DictConfig):
        self.cfg, self._cache, self.records, self.lengths = cfg, {}, {}, {}

    def _get(self, task: str, split: str, cap):
        from lora_vs_full.data import load_task_with_record

        key = (task, split, cap)
        if key not in self._cache:
            s = self.cfg.sequence
            ds, rec = load_task_with_record(task, split, data_dir=s.data_dir, max_samples=cap, seed=self.cfg.seed,
                                            allow_substitutes=bool(s.get("allow_substitutes", False)),
                                            hub_root=s.get("hub_root"), check_rows=bool(s.get("check_rows", True)))  # fmt: skip
            self._cache[key], self.records[f"{task}/{split}/{cap}"] = ds, rec
        return self._cache[key]

    def train(self, task):
        return self._get(task, "train", self.cfg.sequence.max_train_samples)

    def probe_train(self, task):
        return self._get(task, "train", int(self.cfg.probe.train_samples))

    def eval(self, task):
        return self._get(task, "eval", self.cfg.sequence.max_eval_samples)

    def measure_lengths(self, tokenizer, tasks) -> dict[str, dict]:
        """Per task: the max length (measured over every row the run uses, or optim.max_length) and the
        truncation it leaves (:func:`.lengths.measure`)."""
        from lora_vs_full.continual.lengths import measure

        auto = bool(self.cfg.sequence.get("auto_max_length", False))
        for task in tasks:
            rows = [self.train(task), self.probe_train(task), self.eval(task)]
            self.lengths[task] = measure(
                tokenizer, task, rows, ceiling=int(self.cfg.optim.max_length), auto=auto
            )
        return self.lengths

    def max_length(self, task) -> int:
        return (
            int(self.lengths[task]["max_length"]) if task in self.lengths else int(self.cfg.optim.max_length)
        )


# ---------------------------------------------------------------- measurements
def probe_all(model, tasks, heads, tokenizer, data, cfg, *, device) -> dict[str, float]:
    """Probe accuracy of the frozen ``model`` on every task (same seeds at every stage)."""
    pcfg = ccfg.probe_config(cfg)
    out = {}
    for task in tasks:
        template, init = heads[task]
        out[task] = probe_accuracy(model, template, init, tokenizer, data.probe_train(task), data.eval(task),
                                   pcfg, max_length=data.max_length(task), seed=task_seed(cfg.seed, task),
                                   device=device)  # fmt: skip
    return out


def intruder_grid(original: dict, changed: dict, cfg: DictConfig, family: str, cache) -> pd.DataFrame:
    """Intruder counts of the current weights against the ORIGINAL pretrained ones, summed over matrices.

    Columns k, epsilon, n_intruders (one row per grid point). Per matrix: thin SVD of W_t, max |cos| of
    its top-k left vectors against ALL of W0's (spectral engine), counted over the grid. Base
    decompositions come from ``cache`` (once per run, reused by every stage). A matrix the sequence has
    not changed contributes 0 (its vectors ARE the pretrained ones, m_j = 1), so it is not decomposed.
    """
    from lora_vs_full.models.targets import select_matrices
    from lora_vs_full.spectral import DEFAULT_EPSILONS, intruder_counts, max_abs_cos, thin_svd, validate_grid

    s = cfg.spectral
    ks, eps = validate_grid(list(s.ks), list(s.epsilons) if s.epsilons is not None else DEFAULT_EPSILONS)
    dtype = getattr(torch, s.dtype)
    total = torch.zeros(len(ks), len(eps), dtype=torch.int64)
    for _mid, key in select_matrices(original, family, s.preset).items():
        if key not in changed:
            continue
        W0, Wt = original[key], changed[key]
        base = cache.get_or_compute(cfg.model.name, key, W0, dtype=dtype)
        tuned = thin_svd(Wt, dtype=dtype)
        total += intruder_counts(max_abs_cos(tuned.U, base.U.to(dtype), max(ks)), ks, eps)
    rows = [
        {"k": k, "epsilon": e, "n_intruders": int(total[i, j])}
        for i, k in enumerate(ks)
        for j, e in enumerate(eps)
    ]
    return pd.DataFrame(rows)


def pretrained_key(cfg: DictConfig) -> dict:
    """What the stage-0 probe (the untouched pretrained model) depends on: model, sequence data, probe
    budget, per-task lengths' ceiling and seed -- not the method. Every method of a seed shares it."""
    ident = ccfg.identity(cfg)
    return {k: ident[k] for k in ("model", "sequence", "probe", "seed")} | {
        "max_length": ident["optim"]["max_length"]
    }


def shared_pretrained(out: Path, key: dict, run_dir: Path) -> tuple[dict, str] | None:
    """A complete stage 0 of another run under ``out`` with the same :func:`pretrained_key` (its probe
    accuracies are this run's too: the probe is deterministic for the same body, rows and seed)."""
    for done in sorted(Path(out).glob(f"*/stage0/{DONE_FILE}")):
        if done.parent.parent.resolve() == run_dir.resolve():
            continue
        rec = read_json(done)
        if rec.get("pretrained_key") == key:
            return rec, done.parent.parent.name
    return None


# ---------------------------------------------------------------- the sequence
def _run_dir_to_lock(cfg: DictConfig, **_kw) -> Path:
    ccfg.validate(cfg)  # bad input is refused before the lock creates any directory
    return Path(cfg.out) / run_name(cfg)


@locked_by(_run_dir_to_lock, "continual run")  # one writer per run directory (its stages and tables)
def run_continual(cfg: DictConfig, *, log=print, progress: bool = True) -> Path:
    """Run (or resume) the whole sequence for ``cfg``; returns the run directory.

    Writes the run's tables after every stage, and the combined tables of every run under ``cfg.out``.
    """
    from lora_vs_full.data import get_task
    from lora_vs_full.models.build import load_tokenizer
    from lora_vs_full.models.targets import family as model_family
    from lora_vs_full.spectral import SVDCache

    tasks = ccfg.validate(cfg)
    device = resolve_device(cfg.device)
    run_dir = prepare_run_dir(cfg, log=log)
    n_stages = len(tasks) + 1
    start = completed_stages(run_dir, n_stages)
    if start == n_stages:
        log(f"{run_dir}: all {n_stages} stages complete (same config); nothing to do")
        collect_tables(Path(cfg.out))
        return run_dir
    if start:
        log(f"{run_dir}: resuming at stage {start} ({start} stage(s) complete)")

    tokenizer = load_tokenizer(cfg.model)
    heads, original, family = {}, None, None
    for task in tasks:  # one fresh head per task, seeded by the task name: same init at every stage
        m = build_stage_model(cfg, get_task(task).num_labels, task_seed(cfg.seed, task), {}, "cpu")
        heads[task] = probe_head(m)
        if original is None:
            original, family = body_state(m), model_family(m.config.model_type)
        del m
    changed = {}
    if start:
        changed = stored_body(run_dir / f"stage{start - 1}")
    data, cache = TaskData(cfg), SVDCache(None)
    from lora_vs_full.continual.lengths import describe

    for rec in data.measure_lengths(tokenizer, tasks).values():
        log("max length " + describe(rec))
    atomic_write_json(run_dir / "data.json", {"lengths": data.lengths, "records": data.records})
    gate = ccfg.gate(cfg)
    n_eval = {t: len(data.eval(t)) for t in tasks}
    pkey = pretrained_key(cfg)

    for stage in range(start, n_stages):
        t0 = time.time()
        trained = tasks[stage - 1] if stage else None
        model = build_stage_model(cfg, get_task(trained or tasks[0]).num_labels,
                                  task_seed(cfg.seed, trained or tasks[0]), {**original, **changed}, device)  # fmt: skip
        result = None
        if trained is not None:
            log(f"stage {stage}/{n_stages - 1}: fine-tuning on {trained} ({cfg.method.name})")
            model, result = train_stage(model, cfg, trained, tokenizer, data, stage=stage, family=family,
                                        device=device, stage_dir=run_dir / f"stage{stage}", log=log,
                                        progress=progress)  # fmt: skip
            changed = changed_tensors(body_state(model), original)
        model.eval()
        shared = shared_pretrained(Path(cfg.out), pkey, run_dir) if trained is None else None
        if shared is not None:
            acc = {t: shared[0]["probe_accuracy"][t] for t in tasks}
            log(f"stage 0: the pretrained probe of {shared[1]} (same model, rows, probe and seed)")
        else:
            acc = probe_all(model, tasks, heads, tokenizer, data, cfg, device=device)
        grid = intruder_grid(original, changed, cfg, family, cache)
        heads_out = head_state(model) if trained is not None else {}  # stage 0 trains no head
        tensors = {**changed, **{HEAD_PREFIX + k: v.contiguous() for k, v in heads_out.items()}}
        stage_dir = run_dir / f"stage{stage}"
        atomic_write_with(stage_dir / STATE_FILE, lambda p, t=tensors: save_file(t, str(p)))
        atomic_write_json(stage_dir / DONE_FILE, {
            "stage": stage, "trained_task": trained, "train_result": _jsonable(result),
            "lr": ccfg.stage_lr(cfg, trained) if trained else None,
            "probe_accuracy": acc, "n_eval": n_eval, "max_length": {t: data.max_length(t) for t in tasks},
            "intruders": grid.to_dict("records"),
            **({"pretrained_key": pkey, "probe_from": shared and shared[1]} if trained is None else {}),
            "seconds": round(time.time() - t0, 1), "provenance": provenance.collect(stage=stage),
        })  # fmt: skip
        head = grid[(grid.k == 10) & (grid.epsilon == 0.5)].n_intruders
        log(f"stage {stage}: probe " + ", ".join(f"{t}={a:.3f}" for t, a in acc.items())
            + (f"; intruders(k=10, eps=0.5)={int(head.iloc[0])}" if len(head) else ""))  # fmt: skip
        if trained is not None:  # the learned-stage gate, as the summary will judge it (continual.summary)
            pre = read_json(run_dir / f"stage{stage - 1}" / DONE_FILE)["probe_accuracy"][trained]
            gain, margin = acc[trained] - pre, gate.margin(pre, n_eval[trained])
            learned = gate.learned(pre, acc[trained], n_eval[trained])
            log(f"stage {stage}: {trained} probe {pre:.3f} -> {acc[trained]:.3f} (gain {gain:+.3f}, margin "
                f"{margin:.3f}): {'learned' if learned else 'NOT LEARNED'}")  # fmt: skip
        write_run_tables(run_dir, cfg)
        collect_tables(Path(cfg.out))
        del model
    return run_dir


def _jsonable(result):
    if result is None:
        return None
    return {k: v for k, v in dict(result).items() if isinstance(v, (int, float, str, bool, type(None)))}
