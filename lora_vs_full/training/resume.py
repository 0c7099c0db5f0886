"""Mid-run resumable training state: what a killed run needs to continue exactly where it stopped.

Every ``save_state_every`` optimiser steps the loop writes ``<run_dir>/state/step-<n>.pt`` (atomically:
a temporary sibling, fsync, rename) holding

* the trainable parameters (LoRA adapter + head, or the full FT trainable set; frozen weights are
  rebuilt from the base model and the seed, exactly as the first attempt built them),
* the optimiser, learning-rate scheduler and gradient-scaler states,
* the RNG states (torch CPU, every CUDA device, the data sampler's generator at the start of the
  current epoch), and the position in the epoch (batches already consumed),
* the loop's bookkeeping: step, epoch, the loss window since the last log line, the last evaluation,
  elapsed training seconds, and the byte length of ``metrics.jsonl`` at that step (the rerun cuts the
  events a killed attempt appended after it).

Only the newest ``keep_states`` files are kept. The rerun of the same command (``runs.execute`` checks
the config first) rebuilds the model, loads the newest readable state and replays the epoch's order up
to the saved position, so a resumed CPU run ends with bit-identical metrics to an uninterrupted one
(``tests/test_resume.py``). On CUDA, kernels such as atomics-based reductions are not bit-reproducible
even without a resume; there the metrics agree to run-to-run noise.

The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, never
arbitrary pickled objects.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from lora_vs_full.storage import atomic_write_with

STATE_DIR = "state"
_NAME = re.compile(r"^step-(\d+)\.pt$")


def state_dir(run_dir) -> Path:
    return Path(run_dir) / STATE_DIR


def list_states(run_dir) -> list[Path]:
    """Saved states of a run, oldest first."""
    d = state_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def has_state(run_dir) -> bool:
    return bool(list_states(run_dir))


def sampler_generator(loader) -> torch.Generator | None:
    """The generator that orders the loader's epochs (its sampler's, else the loader's own)."""
    return getattr(loader.sampler, "generator", None) or getattr(loader, "generator", None)


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def save_state(run_dir, step: int, payload: dict, *, keep: int = 2, log=None) -> Path:
    """Write ``state/step-<step>.pt`` atomically and prune to the newest ``keep``."""
    path = state_dir(run_dir) / f"step-{step:09d}.pt"
    atomic_write_with(path, lambda p: torch.save(payload, p))
    for old in list_states(run_dir)[: -max(int(keep), 1)]:
        old.unlink(missing_ok=True)
    if log is not None:
        log(f"step {step}: saved resumable state {path.name}")
    return path


def load_latest(run_dir, *, log=print) -> dict | None:
    """The newest readable state (an unreadable one is reported and the previous one tried), or None."""
    for path in reversed(list_states(run_dir)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated file (copied by hand, a failing disk): try the older one
            log(f"cannot read {path} ({type(exc).__name__}: {exc}); trying an older state")
            continue
        state["path"] = str(path)
        return state
    return None


def capture_rng(device) -> dict:
    out = {"cpu": torch.get_rng_state()}
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def load_trainables(model, tensors: dict) -> None:
    params = dict(model.named_parameters())
    missing = sorted(set(tensors) - set(params))
    if missing:
        raise ValueError(f"saved state has parameters the model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(params[name].device))


def truncate_metrics(path: Path, size: int) -> None:
    """Cut ``metrics.jsonl`` back to ``size`` bytes: the events logged after the saved step go."""
    if path.is_file() and path.stat().st_size > size:
        with open(path, "r+b") as fh:
            fh.truncate(size)
