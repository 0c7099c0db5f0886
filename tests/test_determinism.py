"""Determinism: the same config and seed give identical final.json metrics on CPU; lvf-analyze writes
byte-identical tables when rerun; provenance records what can change results across machines."""

from __future__ import annotations

import pytest
from test_analysis import _one_thread, _spiked_copy  # noqa: F401 (autouse fixture)

from lora_vs_full.config import compose_train
from lora_vs_full.runs import execute, run_dir_for
from lora_vs_full.storage import read_json

_TIMING = ("train_seconds",)


def test_same_seed_same_final_metrics_on_cpu(tiny_model_dir, tmp_path):
    finals, events = [], []
    for name in ("a", "b"):
        cfg = compose_train(["debug=smoke", "optim.max_steps=6", f"model.source={tiny_model_dir}",
                             f"paths.results_dir={tmp_path / name}"])  # fmt: skip
        final = execute(cfg, log=lambda m: None, progress=False)
        finals.append({k: v for k, v in final.items() if k not in _TIMING})
        lines = (run_dir_for(cfg) / "metrics.jsonl").read_text().splitlines()
        events.append(
            [line.split('"time"')[0] + line.split(",", 1)[1] for line in lines if '"train"' in line]
        )
    assert finals[0] == finals[1]
    assert events[0] == events[1] and events[0]
    # a different seed gives a different run (the test can see a difference)
    other = execute(compose_train(["debug=smoke", "optim.max_steps=6", "seed=7", f"model.source={tiny_model_dir}",
                                   f"paths.results_dir={tmp_path / 'c'}"]), log=lambda m: None, progress=False)  # fmt: skip
    assert other["train_loss"] != finals[0]["train_loss"]


def test_provenance_records_threads_blas_and_versions(tiny_model_dir, tmp_path):
    cfg = compose_train(["debug=smoke", "optim.max_steps=1", f"model.source={tiny_model_dir}",
                         f"paths.results_dir={tmp_path}"])  # fmt: skip
    execute(cfg, log=lambda m: None, progress=False)
    prov = read_json(run_dir_for(cfg) / "provenance.json")
    dev = prov["device"]
    assert dev["torch_threads"] >= 1 and dev["torch_interop_threads"] >= 1
    assert dev["torch_build"]["BLAS_INFO"] and dev["torch_build"]["TORCH_VERSION"]
    assert "OMP_NUM_THREADS" in dev["env"] and dev["cpu_capability"]
    for pkg in ("torch", "transformers", "peft", "numpy", "scipy", "tokenizers"):
        assert prov["packages"][pkg], pkg


def test_analyze_tables_are_byte_identical_across_reruns(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from lora_vs_full.cli.analyze import compose_analyze, run

    monkeypatch.setenv("LVF_RESULTS", str(tmp_path / "results"))
    key = "roberta.encoder.layer.0.attention.self.value.weight"
    tuned = _spiked_copy(tiny_model_dir, tmp_path / "full", key)
    tables = []
    for name in ("a", "b"):
        out = tmp_path / name
        run(compose_analyze([f"base={tiny_model_dir}", f"tuned={tuned}", f"out={out}", "ks=[1,10]",
                             "epsilons=[0.3,0.5]", "sim_n=8", "progress=false", "label=x"]))  # fmt: skip
        tables.append({f: (out / f).read_bytes() for f in ("intruders.csv", "matrices.csv")})
    for f in tables[0]:
        assert tables[0][f] == tables[1][f], f
    capsys.readouterr()


@pytest.mark.parametrize("bad", ["cuda:7", "gpu", "tpu"])
def test_one_device_resolver_refuses_absent_devices(bad):
    import torch

    from lora_vs_full.device import resolve_device
    from lora_vs_full.errors import UserError

    if bad.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("8 GPUs visible")
    with pytest.raises(UserError, match="device="):
        resolve_device(bad)
