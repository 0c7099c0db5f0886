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


# Analyses runs=<glob> and SIGKILLs itself when the second checkpoint's analysis starts (the first part is
# then complete on disk, the combined table not yet written).
_ANALYZE_KILLER = """
import logging, os, signal, sys
import torch
torch.set_num_threads(1)
from lora_vs_full.cli.analyze import compose_analyze, run

class Killer(logging.Handler):
    seen = 0
    def emit(self, record):
        if record.getMessage().startswith("analysing"):
            Killer.seen += 1
            if Killer.seen == 2:
                os.kill(os.getpid(), signal.SIGKILL)

logging.getLogger("lvf-analyze").addHandler(Killer())
logging.getLogger("lvf-analyze").setLevel(logging.INFO)
run(compose_analyze(sys.argv[1:]))
"""


@pytest.mark.slow  # ~10-15 s: a subprocess plus two analyses / sequences
def test_sigkill_during_an_analysis_of_many_checkpoints_then_rerun(tiny_model_dir, tmp_path, caplog):
    import logging

    from test_analysis import _spiked_copy
    from test_cli_analyze import _fake_run
    from test_weights import make_lora, save_adapter

    from lora_vs_full.cli.analyze import compose_analyze, run

    runs = tmp_path / "runs"
    spiked = _spiked_copy(tiny_model_dir, tmp_path / "spiked", "roberta.encoder.layer.1.output.dense.weight")
    _fake_run(runs, "full", spiked, tiny_model_dir, "full", steps_dir=tiny_model_dir)
    _fake_run(runs, "lora", save_adapter(make_lora(tiny_model_dir, seed=3, b_std=0.3, r=2), tmp_path / "ad"),
              tiny_model_dir, "lora")  # fmt: skip
    args = [f"runs={runs}/*", "steps=true", "ks=[1,10]", "epsilons=[0.3,0.5]", "sim_n=8", "progress=false",
            "cache=off"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LVF_RESULTS": str(tmp_path / "results")}
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", _ANALYZE_KILLER, *args, f"out={killed}"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    done = [p.name for p in (killed / "parts").iterdir() if (p / "source.json").is_file()]
    assert len(done) == 1 and not (killed / "intruders.csv").exists()  # one part complete, no table

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed process: the same kernels, the same bits
    try:
        with caplog.at_level(logging.INFO, logger="lvf-analyze"):
            run(compose_analyze([*args, f"out={killed}"]))  # the rerun
        run(compose_analyze([*args, f"out={tmp_path / 'whole'}"]))  # uninterrupted
    finally:
        torch.set_num_threads(threads)
    assert f"up to date, skipping: {done[0]}" in caplog.text and caplog.text.count("analysing") == 2
    for table in ("intruders.csv", "matrices.csv"):
        assert (killed / table).read_bytes() == (tmp_path / "whole" / table).read_bytes(), table


# Runs a continual sequence and SIGKILLs itself once stage 1 is complete (its stage.json written).
_CONTINUAL_KILLER = """
import os, signal, sys
import torch
torch.set_num_threads(int(sys.argv[1]))
from lora_vs_full.continual import compose_continual, sequence
def log(msg):
    if msg.startswith("stage 1: probe"):
        os.kill(os.getpid(), signal.SIGKILL)
sequence.run_continual(compose_continual(sys.argv[2:]), log=log)
"""


@pytest.mark.slow  # ~10-15 s: a subprocess plus two analyses / sequences
def test_sigkill_during_a_continual_sequence_then_rerun(tiny_model_dir, tmp_path):
    from lora_vs_full.continual import compose_continual, sequence

    def overrides(out):
        return ["model=tiny", f"model.source={tiny_model_dir}", "method=lora", "method.rank=2",
                "sequence.tasks=[synth_sentiment,synth_nli]", "sequence.max_train_samples=16",
                "sequence.max_eval_samples=16", "optim.max_steps=2", "optim.batch_size=8", "optim.max_length=24",
                "probe.steps=3", "probe.train_samples=16", "probe.batch_size=8", "spectral.ks=[4]",
                "spectral.epsilons=[0.5]", f"paths.results_dir={tmp_path}", f"out={out}", "device=cpu"]  # fmt: skip

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", _CONTINUAL_KILLER, str(torch.get_num_threads()),
                           *overrides(killed)], env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    cfg = compose_continual(overrides(killed))
    run_dir = killed / sequence.run_name(cfg)
    assert (run_dir / "stage1" / "stage.json").is_file() and not (run_dir / "stage2" / "stage.json").exists()
    logs = []
    sequence.run_continual(cfg, log=logs.append)  # the rerun resumes at stage 2
    assert "resuming at stage 2" in " ".join(logs)
    whole = tmp_path / "whole"
    sequence.run_continual(compose_continual(overrides(whole)), log=lambda m: None)
    for table in ("continual.csv", "continual_intruders.csv"):
        a, b = (d / sequence.run_name(cfg) / table for d in (killed, whole))
        assert a.read_text() == b.read_text(), table
