"""A local multirun with one failing job finishes the others, prints the summary and exits non-zero."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lora_vs_full.cli._common import summarize


def test_multirun_with_one_failing_job_finishes_the_others(tiny_model_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = ["-m", "debug=smoke", f"model.source={tiny_model_dir}", f"paths.results_dir={tmp_path}",
            "optim.max_steps=1", "task.max_eval_samples=8", "method.rank=0,1"]  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "lora_vs_full.cli.train", *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=240)  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]  # the only failure is a user error
    assert "error: method.rank=0 is invalid: use an integer in 1..2048" in out.stderr
    assert "Traceback" not in out.stderr
    summary = out.stderr[out.stderr.index("sweep: ") :].splitlines()
    assert summary[0] == "sweep: 1 done, 0 skipped, 1 failed"
    assert summary[1].startswith("  failed job 0: ") and "method.rank=0" in summary[1]
    assert "train.log" in summary[1]
    runs = tmp_path / "runs" / "tiny" / "synth_sentiment"
    assert sorted(p.name for p in runs.iterdir()) == ["lora-r1-a2-all_linear"]  # after the failure
    assert all((p / "seed42" / "final.json").is_file() for p in runs.iterdir())
    records = sorted((tmp_path / "hydra" / "multirun").glob("*/*/*/lvf_job.json"))
    assert [json.loads(p.read_text())["status"] for p in records] == ["failed", "done"]


def test_summary_counts_skipped_and_unfinished_and_picks_the_status():
    recs = [
        {"job": "0", "status": "skipped", "overrides": ["a=1"], "log": None, "error": None},
        {"job": "1", "status": "unfinished", "overrides": ["a=2"], "log": None, "error": "no record"},
    ]
    text, status = summarize(recs)
    assert text.splitlines()[0] == "sweep: 0 done, 1 skipped, 0 failed, 1 unfinished" and status == 1
    assert summarize(recs[:1]) == ("sweep: 0 done, 1 skipped, 0 failed", 0)
