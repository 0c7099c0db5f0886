"""Representation collapse of a continual run's body, stage by stage.

A probe at exactly chance (or the majority rate) on every task at once means the body no longer tells
inputs apart. This measures it directly: the mean pairwise cosine similarity of what the classifier
receives (BERT: the pooled [CLS] output; RoBERTa: the [CLS] hidden state) over the same eval rows at every
stage. The pretrained MiniLM's pooled outputs sit near 0.7 on SST-2 sentences; a collapsed body at 1.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from lora_vs_full.storage import read_json

COLLAPSE_COSINE = 0.99  # mean pairwise cosine above which a body is reported as collapsed


def mean_pairwise_cosine(x: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of distinct rows of ``x`` (rows, features)."""
    x = torch.nn.functional.normalize(x.double(), dim=-1)
    n = x.shape[0]
    if n < 2:
        raise ValueError("need at least two rows")
    sims = x @ x.T
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


def _classifier_inputs(feats) -> torch.Tensor:
    rows = [x[:, 0] if x.ndim == 3 else x for x in feats.inputs]  # RoBERTa: position 0 = <s>
    return torch.cat(rows)


def collapse_task(tasks: list[str]) -> str:
    """The task whose eval rows the collapse is measured on: SST-2 when in the sequence, else the first."""
    return "sst2" if "sst2" in tasks else tasks[0]


def body_cosine(model, tokenizer, ds, *, max_length: int) -> float:
    """The collapse measure of ``model`` on ``ds``: mean pairwise cosine of what its classifier receives."""
    from lora_vs_full.continual.probe import extract_features

    feats = extract_features(model, tokenizer, ds, batch_size=64, max_length=max_length, device="cpu")
    return mean_pairwise_cosine(_classifier_inputs(feats))


def collapse_table(run_dirs: list[Path], task: str, *, rows: int = 128) -> pd.DataFrame:
    """Per (run, stage): mean pairwise cosine of the classifier inputs on ``rows`` eval rows of ``task``
    (the same rows at every stage of a run), and whether it exceeds :data:`COLLAPSE_COSINE`."""
    from omegaconf import OmegaConf

    from lora_vs_full.continual.sequence import TaskData, build_stage_model, stored_body, task_seed
    from lora_vs_full.data import get_task
    from lora_vs_full.models.build import load_tokenizer

    out = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        cfg = OmegaConf.load(run_dir / "config.yaml")
        if task not in list(cfg.sequence.tasks):
            continue
        tok, data = load_tokenizer(cfg.model), TaskData(cfg)
        eval_rows = data.eval(task)
        ds = eval_rows.select(range(min(rows, len(eval_rows))))
        lengths = read_json(run_dir / "data.json")["lengths"]
        max_length = int(lengths[task]["max_length"]) if task in lengths else int(cfg.optim.max_length)
        first = cfg.sequence.tasks[0]
        base = build_stage_model(cfg, get_task(first).num_labels, task_seed(cfg.seed, first), {}, "cpu")
        original = {k: v.clone() for k, v in base.state_dict().items()}
        for stage_json in sorted(run_dir.glob("stage*/stage.json"), key=lambda p: int(p.parent.name[5:])):
            stage = int(stage_json.parent.name[5:])
            base.load_state_dict({**original, **stored_body(stage_json.parent)})
            cos = body_cosine(base, tok, ds, max_length=max_length)
            out.append({"run": run_dir.name, "seed": int(cfg.seed), "stage": stage,
                        "trained_task": read_json(stage_json)["trained_task"], "task": task, "rows": len(ds),
                        "mean_pairwise_cosine": round(cos, 4), "collapsed": cos > COLLAPSE_COSINE})  # fmt: skip
    return pd.DataFrame(out)


def _distance(a: dict, b: dict, keys: list[str]) -> float:
    """Frobenius norm of a - b over the matrices ``keys`` taken together."""
    return float(torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in keys)))


def weight_change_table(run_dirs: list[Path]) -> pd.DataFrame:
    """Per (run, stage >= 1): how far the measured matrices (``spectral.preset``: q, k, v, o, fc1, fc2 of
    every layer) moved, all matrices together in Frobenius norm relative to the ORIGINAL pretrained ones:
    ``from_pretrained`` = ||W_t - W_0|| / ||W_0||, ``stage_update`` = ||W_t - W_{t-1}|| / ||W_0||."""
    from omegaconf import OmegaConf

    from lora_vs_full.continual.sequence import build_stage_model, stored_body, task_seed
    from lora_vs_full.data import get_task
    from lora_vs_full.models.targets import family as model_family
    from lora_vs_full.models.targets import select_matrices

    out = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        cfg = OmegaConf.load(run_dir / "config.yaml")
        rank = int(cfg.method.rank) if cfg.method.name == "lora" else pd.NA
        first = cfg.sequence.tasks[0]
        base = build_stage_model(cfg, get_task(first).num_labels, task_seed(cfg.seed, first), {}, "cpu")
        original = {k: v.detach().double() for k, v in base.state_dict().items()}
        keys = list(
            select_matrices(original, model_family(base.config.model_type), cfg.spectral.preset).values()
        )
        norm0 = _distance(original, dict.fromkeys(keys, 0.0), keys)
        prev = original
        for stage_json in sorted(run_dir.glob("stage*/stage.json"), key=lambda p: int(p.parent.name[5:])):
            stage = int(stage_json.parent.name[5:])
            if stage == 0:
                continue
            now = {**original, **{k: v.double() for k, v in stored_body(stage_json.parent).items()}}
            out.append({"run": run_dir.name, "method": cfg.method.name, "rank": rank, "seed": int(cfg.seed),
                        "stage": stage, "trained_task": read_json(stage_json)["trained_task"], "matrices": len(keys),
                        "from_pretrained": round(_distance(now, original, keys) / norm0, 6),
                        "stage_update": round(_distance(now, prev, keys) / norm0, 6)})  # fmt: skip
            prev = now
    table = pd.DataFrame(out)
    if len(table):
        table["rank"] = table["rank"].astype("Int64")
    return table
