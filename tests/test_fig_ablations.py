"""The ablation figures (alpha, variants, bonly, datasize, evolution) draw from their tables alone: synthetic
tables in a temporary results root -> PNG + the exact CSV, headline values equal to the table's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

import fig_alpha  # noqa: E402
import fig_bonly  # noqa: E402
import fig_datasize  # noqa: E402
import fig_evolution  # noqa: E402
import fig_variants  # noqa: E402

from lora_vs_full.reproduce.variants import summarise, summary_json  # noqa: E402


def _write_sweep(
    root: Path, figure: str, groups: list[str], xs: list, seeds=(1, 2), full=True
) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows, curves = [], []
    items = [(g, x) for g in groups for x in xs] + ([("full FT", None)] if full else [])
    for g, x in items:
        for s in seeds:
            n = int(rng.integers(0, 40))
            rows.append({"task": "sst2", "group": g, "x": x, "seed": s, "run": f"{g}-{x}-{s}", "rank": x, "alpha": 8,
                         "lr": 1e-4, "eval_accuracy": 0.8 + 0.01 * s, "acc_low": 0.78, "acc_high": 0.83,
                         "n_intruders": n})  # fmt: skip
            for eps in (0.1, 0.5, 0.9):
                curves.append({"task": "sst2", "group": g, "x": x, "seed": s, "run": f"{g}-{x}-{s}", "epsilon": eps,
                               "n_intruders": int(n * eps * 2), "n_matrices": 36})  # fmt: skip
    runs = pd.DataFrame(rows)
    d = root / "tables" / f"{figure}-test"
    d.mkdir(parents=True)
    summary = summarise(runs)
    runs.to_csv(d / "runs.csv", index=False)
    pd.DataFrame(curves).to_csv(d / "curves.csv", index=False)
    summary.to_csv(d / "summary.csv", index=False)
    (d / "summary.json").write_text(json.dumps({"meta": {"k": 10, "epsilon": 0.5}, **summary_json(summary)}))
    return summary


@pytest.mark.parametrize(
    "module,figure,groups,xs",
    [
        (fig_alpha, "alpha", ["alpha=2r", "alpha=8"], [1, 8, 64]),
        (fig_datasize, "datasize", ["r=1", "r=8"], [500, 2000]),
        (fig_bonly, "bonly", ["A and B", "B only"], [8]),
        (fig_variants, "variants", ["LoRA", "DoRA", "VeRA"], [None]),
    ],
)
def test_sweep_figures_draw_from_tables(module, figure, groups, xs, tmp_path, monkeypatch):
    monkeypatch.setenv("LVF_RESULTS", str(tmp_path))
    summary = _write_sweep(tmp_path, figure, groups, xs)
    module.main(["--preset", "test"])
    out = tmp_path / "figures" / f"{figure}-test"
    assert (out / f"{figure}.png").stat().st_size > 1000
    head = pd.read_csv(out / f"{figure}_headline.csv")
    assert len(head) == len(summary)
    assert np.allclose(head["intruders_mean"], summary["intruders_mean"])
    assert (summary["intruders_low"] <= summary["intruders_mean"]).all()  # two seeds: a real t interval
    if figure == "variants":
        assert head["acc_matches_lora"].all()  # every synthetic accuracy overlaps LoRA's


def test_missing_tables_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LVF_RESULTS", str(tmp_path))
    for module in (fig_alpha, fig_evolution):
        with pytest.raises(SystemExit) as exc:
            module.main(["--preset", "nope"])
        assert exc.value.code == 2
    assert "make reproduce-evolution PRESET=nope" in capsys.readouterr().err


def test_evolution_figure_draws_from_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("LVF_RESULTS", str(tmp_path))
    d = tmp_path / "tables" / "evolution-test"
    d.mkdir(parents=True)
    rows = []
    for method, rank in (("lora", 8), ("full", None)):
        for step in (25, 50, 75):
            rows.append({"run": method, "task": "sst2", "method": method, "rank": rank, "seed": 42, "step": step,
                         "n_intruders": step // 25 if method == "lora" else 0, "n_matrices": 36,
                         "matrices_with_intruder": 1, "top_sigma_mean": step / 10, "top_rank_median": 2,
                         "top_max_cos_mean": 0.3, "sigma_1_mean": 9.0})  # fmt: skip
    pd.DataFrame(rows).to_csv(d / "steps.csv", index=False)
    (d / "summary.json").write_text(json.dumps({"meta": {"k": 10, "epsilon": 0.5}}))
    fig_evolution.main(["--preset", "test"])
    out = tmp_path / "figures" / "evolution-test"
    assert (out / "evolution.png").stat().st_size > 1000
    drawn = pd.read_csv(out / "evolution.csv")
    assert len(drawn) == 6 and (drawn["n_seeds"] == 1).all()
