"""Mid-run resume: a training run killed with SIGKILL resumes from its last saved state and ends with the
same metrics, bit for bit on CPU, as an uninterrupted run; a changed config is refused naming the keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from lora_vs_full.config import compose_train
from lora_vs_full.errors import UserError
from lora_vs_full.runs import execute, run_dir_for
from lora_vs_full.storage import read_json
from lora_vs_full.training.resume import list_states

# 64 train rows / batch 8 = 8 batches per epoch: 16 steps span two epochs; evaluations mid-epoch too
_BASE = ["debug=smoke", "optim.max_steps=16", "optim.eval_every_steps=6", "save_state_every=4",
         "optim.log_every_steps=3"]  # fmt: skip

# Kills its own process (SIGKILL, no cleanup) right after the state of step KILL_AT is written.
_KILLER = """
import os, signal, sys
import torch
torch.set_num_threads(int(sys.argv[1]))
from lora_vs_full.config import compose_train
from lora_vs_full.runs import execute
def log(msg):
    if msg.startswith(f"step {sys.argv[2]}: saved resumable state"):
        os.kill(os.getpid(), signal.SIGKILL)
execute(compose_train(sys.argv[3:]), log=log, progress=False)
"""


def _overrides(tiny_model_dir, root, *extra):
    return [*_BASE, f"model.source={tiny_model_dir}", f"paths.results_dir={root}", *extra]


def _events(run_dir):
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["event"] in ("train", "eval"):
            out.append({k: v for k, v in e.items() if k != "time"})
    return out


def _metrics(final):
    return {k: v for k, v in final.items() if k not in ("train_seconds",)}


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    cfg = compose_train(_overrides(tiny_model_dir, root))
    final = execute(cfg, log=lambda m: None, progress=False)
    return final, _events(run_dir_for(cfg))


def test_sigkill_mid_run_then_rerun_matches_uninterrupted(tiny_model_dir, tmp_path, uninterrupted):
    overrides = _overrides(tiny_model_dir, tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(torch.get_num_threads()), "12", *overrides],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    cfg = compose_train(overrides)
    run_dir = run_dir_for(cfg)
    assert not (run_dir / "final.json").exists()
    assert [p.name for p in list_states(run_dir)] == ["step-000000008.pt", "step-000000012.pt"]  # keep 2

    # a changed config is refused, naming the key, and the state is kept
    with pytest.raises(UserError, match=r"different config \(optim\.warmup_ratio: 0\.06 -> 0\.1\)"):
        execute(compose_train([*overrides, "optim.warmup_ratio=0.1"]), log=lambda m: None, progress=False)
    assert list_states(run_dir)

    logs = []
    final = execute(cfg, log=logs.append, progress=False)  # the rerun of the same command
    assert any(m.startswith("resuming at step 12/16") for m in logs), logs
    whole_final, whole_events = uninterrupted
    assert _metrics(final) == _metrics(whole_final)  # bit-identical on CPU
    assert _events(run_dir) == whole_events  # the killed attempt's events after step 12 were cut
    assert not (run_dir / "state").exists()  # a complete run keeps no resumable state
    assert read_json(run_dir / "final.json")["steps"] == 16


def test_crash_in_process_full_ft_resumes_identically(tiny_model_dir, tmp_path):
    """Full fine-tuning (every encoder weight in the state), a crash at step 8 (an epoch boundary)."""
    extra = ["method=full", "optim.max_steps=12"]
    whole = execute(compose_train(_overrides(tiny_model_dir, tmp_path / "a", *extra)), log=lambda m: None,
                    progress=False)  # fmt: skip
    cfg = compose_train(_overrides(tiny_model_dir, tmp_path / "b", *extra))

    class Crash(Exception):
        pass

    def crash(msg):
        if msg.startswith("step 8: saved resumable state"):
            raise Crash

    with pytest.raises(Crash):
        execute(cfg, log=crash, progress=False)
    final = execute(cfg, log=lambda m: None, progress=False)
    assert _metrics(final) == _metrics(whole)
