"""lvf-train as a command: one-line errors with exit status 2, and a submitit_local sweep of two tiny runs."""

from __future__ import annotations

import os
import subprocess
import sys

from lora_vs_full.storage import read_json

ENTRY = [sys.executable, "-m", "lora_vs_full.cli.train"]


def _run(args, cwd, timeout=240):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(ENTRY + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_bad_values_exit_2_with_one_line(tmp_path):
    out = _run(["debug=smoke", "method.rank=0", f"paths.results_dir={tmp_path}"], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: method.rank=0 is invalid: use an integer in 1..2048"]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_typo_fails_at_compose_naming_the_key(tmp_path):
    out = _run(["debug=smoke", "method.rnak=8", f"paths.results_dir={tmp_path}"], cwd=tmp_path)
    assert out.returncode != 0 and "method.rnak" in out.stderr and "Traceback" not in out.stderr


def test_submitit_local_sweep_of_two_tiny_runs(tiny_model_dir, tmp_path):
    out = _run(
        [
            "-m",
            "launcher=submitit_local",
            "debug=smoke",
            "method.rank=1,2",
            f"model.source={tiny_model_dir}",
            f"paths.results_dir={tmp_path}",
            "optim.max_steps=2",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for rank in (1, 2):
        run = (
            tmp_path / "runs" / "tiny" / "synth_sentiment" / f"lora-r{rank}-a{2 * rank}-all_linear" / "seed42"
        )
        final = read_json(run / "final.json")
        assert (final["rank"], final["steps"]) == (rank, 2)
    # Hydra's own files went under results_dir, nothing into the cwd
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hydra", "runs"]
    assert list((tmp_path / "hydra" / "multirun").glob("*/*/.submitit"))
