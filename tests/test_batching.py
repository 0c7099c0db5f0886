"""Length-grouped batch order (seeded permutations, less padding) and the GPU fast-path switches on a CPU."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from lora_vs_full.config import compose_train, validate
from lora_vs_full.errors import UserError
from lora_vs_full.training.batching import batches, make_sampler, padding_stats
from lora_vs_full.training.optim import resolve_fast_paths


def _skewed_lengths(n=2000, seed=0):
    """GLUE-like: mostly short, a long tail (lognormal), clipped to [3, 128]."""
    g = torch.Generator().manual_seed(seed)
    return torch.exp(torch.randn(n, generator=g) * 0.6 + 3.0).clamp(3, 128).long().tolist()


def _epochs(sampler, k):
    return [list(iter(sampler)) for _ in range(k)]


@pytest.mark.parametrize("grouped", [False, True])
def test_epochs_are_seeded_permutations(grouped):
    lengths = _skewed_lengths()
    epochs = _epochs(make_sampler(lengths, 16, seed=3, group_by_length=grouped), 3)
    for order in epochs:
        assert sorted(order) == list(range(len(lengths)))  # every example exactly once per epoch
    assert epochs[0] != epochs[1]  # a fresh order every epoch
    assert _epochs(make_sampler(lengths, 16, seed=3, group_by_length=grouped), 3) == epochs  # same seed
    assert _epochs(make_sampler(lengths, 16, seed=4, group_by_length=grouped), 1)[0] != epochs[0]


def test_grouped_order_is_hf_trainers():
    """Mega-batches of 50 x 16 sorted longest first; the globally longest example opens the epoch.

    (Trainer caps the multiplier at n // (4 * batch) for small sets: 4,000 // 64 = 62 >= 50 here.)"""
    lengths = _skewed_lengths(4000)
    order = list(iter(make_sampler(lengths, 16, seed=0, group_by_length=True)))
    assert lengths[order[0]] == max(lengths)
    for start in range(0, len(order), 800):
        mega = [lengths[i] for i in order[start : start + 800]][1:]  # [0] may be the swapped-in longest
        assert mega == sorted(mega, reverse=True)


def test_grouping_cuts_padding_on_skewed_lengths():
    lengths = _skewed_lengths()
    pad = {
        g: padding_stats(lengths, batches(iter(make_sampler(lengths, 16, seed=0, group_by_length=g)), 16))
        for g in (False, True)
    }
    assert pad[False]["real_tokens"] == pad[True]["real_tokens"] == sum(lengths)
    assert pad[False]["pad_fraction"] > 0.3  # random batches of a skewed list waste a lot
    assert pad[True]["pad_fraction"] < pad[False]["pad_fraction"] / 5


def test_padding_stats_known_answer():
    # batches [3, 1] and [2]: padded 2*3 + 1*2 = 8 tokens, 6 real
    assert padding_stats([3, 1, 2], [[0, 1], [2]]) == {
        "real_tokens": 6,
        "padded_tokens": 8,
        "pad_fraction": 0.25,
    }


def test_fast_paths_resolve_off_on_cpu_and_config_records_them():
    cfg = compose_train([])
    o = cfg.optim
    assert (o.precision, o.tf32, o.fused_adamw, o.attn_implementation, o.compile) == (
        "auto", "auto", "auto", "auto", False
    )  # fmt: skip
    assert o.group_by_length is False
    assert resolve_fast_paths(o, "cpu") == {
        "precision": "fp32",
        "grad_scaler": False,
        "tf32": False,
        "fused_adamw": False,
        "attn_implementation": "auto",
        "compile": False,
    }
    assert resolve_fast_paths(OmegaConf.create({"precision": "bf16"}), "cpu")["precision"] == "bf16"
    # a switch set in the config is in the saved config.yaml
    saved = OmegaConf.to_yaml(compose_train(["optim.group_by_length=true", "optim.tf32=false"]))
    assert "group_by_length: true" in saved and "tf32: false" in saved


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.tf32=true", "optim.tf32=true needs a CUDA device"),
        ("optim.fused_adamw=true", "optim.fused_adamw=true needs a CUDA device"),
        ("optim.precision=fp16", "optim.precision=fp16 needs a CUDA device"),
    ],
)
def test_cuda_only_switches_are_unreachable_on_cpu(override, message):
    cfg = compose_train([override])
    validate(cfg)  # a valid value on some device ...
    with pytest.raises(UserError, match=message):
        resolve_fast_paths(cfg.optim, "cpu")  # ... but not on this one


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.precision=fp8", "unknown optim.precision='fp8'"),
        ("optim.tf32=maybe", "optim.tf32='maybe' is invalid"),
        ("optim.attn_implementation=flash", "unknown optim.attn_implementation='flash'"),
    ],
)
def test_bad_switch_values_are_one_line_errors(override, message):
    with pytest.raises(UserError, match=message):
        validate(compose_train([override]))


def test_grouped_run_logs_its_setup(tiny_model_dir, tmp_path):
    from lora_vs_full.runs import execute, run_dir_for

    cfg = compose_train(
        ["debug=smoke", f"model.source={tiny_model_dir}", f"paths.results_dir={tmp_path}",
         "optim.group_by_length=true", "optim.max_steps=4", "optim.attn_implementation=eager"]
    )  # fmt: skip
    execute(cfg, progress=False)
    events = [json.loads(x) for x in (run_dir_for(cfg) / "metrics.jsonl").read_text().splitlines()]
    setup = events[0]
    assert setup["event"] == "setup" and setup["group_by_length"] is True
    assert (setup["precision"], setup["tf32"], setup["fused_adamw"]) == ("fp32", False, False)
    assert setup["attn_implementation"] == "eager" and 0 <= setup["pad_fraction_epoch1"] < 1
    assert torch.backends.cuda.matmul.allow_tf32 is False  # no process-wide flag leaked


def test_bench_train_table_is_read_from_its_rows():
    """benchmarks/bench_train.py: the BENCHMARKS.md table and ratios are pure functions of the result rows."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # no work at import time
    rows = [
        {"impl": i, "order": o, "examples_per_s": v, "pad_fraction": p, "peak_mb": 1.0}
        for i, o, v, p in [("ours", "random", 10.0, 0.5), ("ours", "grouped", 20.0, 0.05),
                           ("trainer", "random", 10.0, 0.5), ("trainer", "grouped", 16.0, 0.06)]
    ]  # fmt: skip
    assert bench._ratios(rows) == {
        "ours_grouped_vs_trainer_default": 2.0,
        "ours_grouped_vs_trainer_grouped": 1.25,
        "ours_random_vs_trainer_default": 1.0,
    }
    table = bench._table(rows)
    assert [r["x Trainer default"] for r in table] == [1.0, 2.0, 1.0, 1.6]
    assert table[1]["configuration"] == "our loop, length-grouped"
