"""lvf-analyze end to end: real subprocesses for the console script, in-process Hydra compose for the
many bad-input cases (each subprocess costs seconds of imports on the shared CPUs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_analysis import _one_thread, _spiked_copy  # noqa: F401 (autouse fixture)
from test_weights import make_lora, save_adapter

from lora_vs_full.cli._common import user_errors_exit

LVF_ANALYZE = str(Path(sys.executable).parent / "lvf-analyze")
FAST = ["ks=[1,10]", "epsilons=[0.3,0.5]", "sim_n=8", "progress=false"]


def _cli(args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "LVF_RESULTS": str(cwd / "results")}
    return subprocess.run([LVF_ANALYZE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    pm = make_lora(tiny_model_dir, seed=3, b_std=0.3, r=2)
    return save_adapter(pm, tmp_path_factory.mktemp("cli") / "adapter")


def test_pair_with_adapter_writes_everything(tiny_model_dir, adapter_dir, tmp_path):
    out = tmp_path / "out"
    proc = _cli(
        [f"base={tiny_model_dir}", f"tuned={adapter_dir}", f"out={out}", "label=lora-r2", *FAST], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "intruders at k=10, epsilon=0.5" in proc.stdout and "lora-r2" in proc.stdout
    for name in ("intruders.parquet", "intruders.csv", "matrices.parquet", "matrices.csv", "provenance.json"):
        assert (out / name).is_file(), name
    assert (out / "spectra" / "lora-r2.safetensors").is_file()
    intr = pd.read_parquet(out / "intruders.parquet")
    assert len(intr) == 12 * 2 * 2 and (intr["run"] == "lora-r2").all()
    assert intr.query("k == 10 and epsilon == 0.5")["n_intruders"].sum() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out",
        "results",
    ]  # no Hydra outputs/ or logs in cwd


def test_corrupted_safetensors_is_error_exit_2(tiny_model_dir, tmp_path):
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    f = broken / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    proc = _cli([f"base={tiny_model_dir}", f"tuned={broken}", f"out={tmp_path / 'out'}", *FAST], tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr.startswith("error: ")
        and "re-download" in proc.stderr
        and len(proc.stderr.splitlines()) == 1
    )
    assert not (tmp_path / "out" / "intruders.parquet").exists()


def _compose(overrides):
    from lora_vs_full.cli.analyze import compose_analyze

    return compose_analyze(overrides)


def _run_inprocess(overrides, capsys):
    from lora_vs_full.cli.analyze import run

    cfg = _compose([*FAST, *overrides])  # later overrides win
    with pytest.raises(SystemExit) as exc:
        user_errors_exit(run)(cfg)
        raise SystemExit(0)
    return exc.value.code, capsys.readouterr()


def test_full_ft_pair_in_process(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LVF_RESULTS", str(tmp_path / "results"))
    key = "roberta.encoder.layer.0.attention.self.value.weight"
    tuned = _spiked_copy(tiny_model_dir, tmp_path / "full", key)
    code, cap = _run_inprocess(
        [f"base={tiny_model_dir}", f"tuned={tuned}", f"out={tmp_path / 'out'}"], capsys
    )
    assert code == 0, cap.err
    intr = pd.read_parquet(tmp_path / "out" / "intruders.parquet")
    head = intr.query("k == 10 and epsilon == 0.5").set_index("matrix")["n_intruders"]
    assert head["layer0.v"] == 1 and head.sum() == 1


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["tuned=/no/such/dir"], "no such directory"),
        (["tuned={tiny}", "epsilons=[0.5,1.5]"], "epsilon=1.5"),
        (["tuned={tiny}", "ks=0"], "k=0"),
        (["tuned={small}"], r"is \(128, 64\) but tuned .* is \(64, 32\)"),
        (["tuned={tiny}", "preset=everything"], "unknown target preset"),
    ],
    ids=["missing-path", "eps-1.5", "k-0", "shape-mismatch", "bad-preset"],
)
def test_bad_inputs_exit_2_without_tables(tiny_model_dir, tmp_path, monkeypatch, capsys, overrides, message):
    from transformers import RobertaConfig, RobertaForMaskedLM

    monkeypatch.setenv("LVF_RESULTS", str(tmp_path / "results"))
    small = tmp_path / "small"
    if any("{small}" in o for o in overrides):
        cfg = RobertaConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
        RobertaForMaskedLM(cfg).save_pretrained(small)
        capsys.readouterr()  # drop transformers' progress bar
    overrides = [o.format(tiny=tiny_model_dir, small=small) for o in overrides]
    out = tmp_path / "out"
    code, cap = _run_inprocess([f"base={tiny_model_dir}", f"out={out}", *overrides], capsys)
    assert code == 2
    assert cap.err.startswith("error: ") and len(cap.err.strip().splitlines()) == 1
    assert re.search(message, cap.err), cap.err
    assert not (out / "intruders.parquet").exists()


def _fake_run(
    root: Path, name: str, checkpoint_src: Path, base: Path, method: str, steps_dir: Path | None = None
):
    run = root / name
    shutil.copytree(checkpoint_src, run / "checkpoint")
    if steps_dir is not None:
        shutil.copytree(steps_dir, run / "checkpoints" / "step-5")
    final = {
        "run_id": f"tiny/synth/{name}/seed0",
        "model": "tiny",
        "base_model": str(base),
        "base_revision": None,
        "task": "synth",
        "method": method,
        "rank": 2 if method == "lora" else None,
        "alpha": 4 if method == "lora" else None,
        "lr": 1e-3,
        "seed": 0,
        "steps": 10,
    }
    (run / "final.json").write_text(json.dumps(final))
    return run


def test_runs_glob_then_rerun_skips(tiny_model_dir, adapter_dir, tmp_path):
    runs = tmp_path / "runs"
    key = "roberta.encoder.layer.1.output.dense.weight"
    full_ckpt = _spiked_copy(tiny_model_dir, tmp_path / "spiked", key)
    _fake_run(runs, "full", full_ckpt, tiny_model_dir, "full", steps_dir=tiny_model_dir)
    _fake_run(runs, "lora", adapter_dir, tiny_model_dir, "lora")
    (runs / "unfinished").mkdir()  # no final.json: skipped with a note
    out = tmp_path / "out"
    args = [f"runs={runs}/*", f"out={out}", "steps=true", *FAST]
    first = _cli(args, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "skipping" in first.stderr and "unfinished" in first.stderr
    intr = pd.read_parquet(out / "intruders.parquet")
    assert set(intr["run"]) == {"tiny/synth/full/seed0", "tiny/synth/lora/seed0"}
    steps = {(r, None if pd.isna(s) else int(s)) for r, s in zip(intr["run"], intr["step"], strict=True)}
    # final checkpoints carry step NA (records.py); intermediate ones their step number
    assert steps == {
        ("tiny/synth/full/seed0", None),
        ("tiny/synth/full/seed0", 5),
        ("tiny/synth/lora/seed0", None),
    }
    head = intr.query("k == 10 and epsilon == 0.5")
    full = head[head["run"] == "tiny/synth/full/seed0"]
    assert full[full["step"] == 5]["n_intruders"].sum() == 0  # = base
    assert full[full["step"].isna()]["n_intruders"].sum() == 1  # the spike
    parts = sorted((out / "parts").iterdir())
    assert len(parts) == 3 and (out / "spectra" / "tiny_synth_full_seed0_step-5.safetensors").is_file()
    mtimes = {p.name: (p / "intruders.parquet").stat().st_mtime_ns for p in parts}

    second = _cli(args, tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("up to date, skipping") == 3 and "analysing" not in second.stderr
    assert {p.name: (p / "intruders.parquet").stat().st_mtime_ns for p in parts} == mtimes
    assert pd.read_parquet(out / "intruders.parquet").equals(intr)
