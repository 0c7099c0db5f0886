"""The evolution table (lora_vs_full/reproduce/evolution.py): one row per (step, matrix), the same counts as
lvf-analyze on the same checkpoints, and the top intruder recomputed from an independent SVD."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lora_vs_full.config import compose_train
from lora_vs_full.reproduce.evolution import evolution_table, step_summary, with_final_steps
from lora_vs_full.reproduce.variants import analyse_run
from lora_vs_full.runs import execute, run_dir_for
from lora_vs_full.weights import open_pair


@pytest.fixture(scope="module")
def analysed(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evolution")
    cfg = compose_train(["debug=smoke", f"model.source={tiny_model_dir}", f"paths.results_dir={tmp}",
                         "method=lora", "method.rank=4", "method.lr=5e-3", "optim.checkpoint_every_steps=4"])  # fmt: skip
    final = execute(cfg, progress=False)
    run = run_dir_for(cfg)
    out = analyse_run(run, tmp / "analysis", {"epsilons": "[0.5,0.9]", "cache": "off"}, k=10, steps=True)
    return run, out, final


@pytest.mark.parametrize("eps", [0.5, 0.9])
def test_one_row_per_step_and_matrix_matching_lvf_analyze(analysed, eps):
    run, out, final = analysed
    evo = with_final_steps(evolution_table(out, k=10, epsilon=eps), {final["run_id"]: final["steps"]})
    assert sorted(evo["step"].unique()) == [4, 8]  # the final checkpoint is step-8's duplicate: dropped
    assert len(evo) == 2 * 12 and not evo.duplicated(["step", "matrix"]).any()
    intr = pd.read_parquet(out / "intruders.parquet")
    intr = intr[(intr["k"] == 10) & ((intr["epsilon"] - eps).abs() < 1e-9) & intr["step"].notna()]
    merged = evo.merge(intr[["step", "matrix", "n_intruders"]].astype({"step": "Float64"}), on=["step", "matrix"],
                       suffixes=("", "_analyze"))  # fmt: skip
    assert len(merged) == len(evo)
    assert (merged["n_intruders"] == merged["n_intruders_analyze"]).all()
    per_step = step_summary(evo)
    assert list(per_step["n_intruders"]) == [int(evo[evo["step"] == s]["n_intruders"].sum()) for s in (4, 8)]


def test_top_intruder_matches_an_independent_svd(analysed, tiny_model_dir):
    run, out, final = analysed
    evo = with_final_steps(evolution_table(out, k=10, epsilon=0.9), {final["run_id"]: final["steps"]})
    base_src, tuned_src = open_pair(tiny_model_dir, run / "checkpoints" / "step-4")
    checked = 0
    for mid, key in base_src.matrices().items():
        W0 = base_src.get(key).double()
        Wt = tuned_src.merge(key, W0).double()
        U0 = torch.linalg.svd(W0, full_matrices=False).U
        Ut, St, _ = torch.linalg.svd(Wt, full_matrices=False)
        max_cos = (Ut[:, :10].T @ U0).abs().max(dim=1).values.numpy()
        row = evo[(evo["step"] == 4) & (evo["matrix"] == mid.name)].iloc[0]
        hits = np.flatnonzero(max_cos < 0.9)
        assert row["n_intruders"] == len(hits)
        if len(hits):
            checked += 1
            assert row["top_rank"] == hits[0] + 1
            assert row["top_sigma"] == pytest.approx(float(St[hits[0]]), rel=1e-9)
            assert row["top_max_cos"] == pytest.approx(float(max_cos[hits[0]]), abs=1e-9)
        else:
            assert math.isnan(row["top_rank"])
    assert checked > 0  # the comparison is not vacuous


def test_evolution_presets_compose_as_valid_train_configs():
    from lora_vs_full.config import validate
    from lora_vs_full.reproduce import common, evolution

    for preset in ("offline", "paper"):
        cfg = common.load_preset(f"evolution_{preset}", schema=evolution.EvolutionPreset)
        sweep = evolution.sweep(cfg, "/data")
        assert len(sweep) == 2 and all("optim.checkpoint_every_steps" in " ".join(s) for s in sweep)
        for overrides in sweep:
            validate(compose_train(overrides))
