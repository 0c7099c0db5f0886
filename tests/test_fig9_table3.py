"""Forgetting reproductions: the tables lora_vs_full/reproduce/forgetting.py writes and the drawing scripts
experiments/fig9.py, table3.py, fig_correlation.py (synthetic tables in, files + exact numbers out)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

import fig9  # noqa: E402
import fig_correlation  # noqa: E402
import table3  # noqa: E402

from lora_vs_full.errors import UserError  # noqa: E402
from lora_vs_full.reproduce import common, forgetting  # noqa: E402


def _pl_table():
    """An lvf-pseudoloss table: base + r1, r8 and full FT at 3 seeds each (forgetting with text CIs)."""
    rows = [{"run": "base:m", "method": "base", "rank": np.nan, "lr": np.nan, "seed": np.nan, "eval_accuracy": np.nan,
             "pseudo_loss": 7.0, "forgetting": 0.0, "forgetting_low": 0.0, "forgetting_high": 0.0, "n_texts": 50,
             "head": "probe"}]  # fmt: skip
    for method, rank, f in (("lora", 1, 0.10), ("lora", 8, 0.12), ("full", np.nan, 0.30)):
        for i, seed in enumerate((42, 43, 44)):
            v = f + 0.01 * (i - 1)
            rows.append({"run": f"m/sst2/{method}{rank}/seed{seed}", "method": method, "rank": rank, "lr": 1e-4,
                         "seed": seed, "eval_accuracy": 0.8 + 0.01 * i, "pseudo_loss": 7.0 + v, "forgetting": v,
                         "forgetting_low": v - 0.02, "forgetting_high": v + 0.02, "n_texts": 50, "head": "probe"})  # fmt: skip
    return pd.DataFrame(rows)


def test_fig9_tables_average_seeds_with_t_intervals_and_draw(tmp_path):
    pl = _pl_table()
    agg = forgetting.fig9_tables(pl)
    assert list(agg["method"]) == ["base", "full", "lora", "lora"]
    r8 = agg[(agg["method"] == "lora") & (agg["rank"] == 8)].iloc[0]
    # seeds 0.11, 0.12, 0.13: mean 0.12, t-interval 0.12 +- t(0.975, 2) * 0.01 / sqrt(3)
    assert r8["forgetting"] == pytest.approx(0.12) and r8["n_seeds"] == 3
    assert r8["forgetting_high"] - r8["forgetting"] == pytest.approx(4.302653 * 0.01 / np.sqrt(3), rel=1e-5)
    assert r8["text_half_width"] == pytest.approx(0.02)
    tables = tmp_path / "tables"
    tables.mkdir()
    agg.to_csv(tables / "fig9.csv", index=False)
    forgetting._run_rows(pl).to_csv(tables / "runs.csv", index=False)
    paths = fig9.make_fig9(tables, tmp_path / "fig")
    assert {p.name for p in paths} == {"fig9.png", "fig9.pdf", "fig9.csv"}
    assert pd.read_csv(tmp_path / "fig" / "fig9.csv")["forgetting"].tolist() == pytest.approx(
        agg["forgetting"].tolist()
    )
    one = pl[(pl["seed"].isna()) | (pl["seed"] == 42) | (pl["rank"] == 8)]  # r1 and full FT: one seed
    agg1 = forgetting.fig9_tables(one)
    assert agg1.loc[agg1["method"] == "full", "forgetting_low"].isna().all()  # no interval from one seed
    agg1.to_csv(tables / "fig9.csv", index=False)
    forgetting._run_rows(one).to_csv(tables / "runs.csv", index=False)
    assert len(fig9.make_fig9(tables, tmp_path / "fig1")) == 3  # drawn with the runs' intervals over texts
    with pytest.raises(UserError, match="make reproduce-fig9"):
        fig9.load(tmp_path / "nowhere")


def _table3_rows():
    rows = []
    for cond, lams in (("intruder", (0.1, 0.7, 1.0)), ("control", (0.1, 0.7, 1.0)), ("peft_reduce", (0.75,))):
        for lam in lams:
            f = -50.0 * (1 - lam) if cond == "intruder" else 1.0
            rows.append({"condition": cond, "lambda": lam, "accuracy": 0.8, "accuracy_change_pct": -1.0 * (lam < 1),
                         "accuracy_change_pct_low": -3.0, "accuracy_change_pct_high": 1.0, "accuracy_distinct": False,
                         "forgetting": 0.1, "forgetting_change_pct": f, "forgetting_change_pct_low": f - 5,
                         "forgetting_change_pct_high": f + 5, "forgetting_distinct": abs(f) > 5})  # fmt: skip
    return pd.DataFrame(rows)


def test_table3_markdown_says_which_rows_are_distinguishable(tmp_path):
    tables = tmp_path / "t"
    tables.mkdir()
    _table3_rows().to_csv(tables / "table3.csv", index=False)
    paths = table3.make_table3(tables, tmp_path / "fig")
    md = (tmp_path / "fig" / "table3.md").read_text()
    assert "| intruder | 0.1 | 0.8000 | -1.0 [-3.0, +1.0] | -45.0 [-50.0, -40.0] | no / yes |" in md
    assert "| control | 0.7 |" in md and "| intruder | 1 |" not in md  # the reference row is implied
    assert "peft_reduce | 0.75" in md and {p.name for p in paths} >= {"table3.png", "table3.csv"}
    bad = _table3_rows()
    bad = bad[bad["lambda"] != 1.0]
    bad.to_csv(tables / "table3.csv", index=False)
    with pytest.raises(UserError, match="lambda = 1"):
        table3.load(tables)


def test_correlation_figure_from_rho_json(tmp_path):
    tables = tmp_path / "c"
    tables.mkdir()
    df = pd.DataFrame({"lr": [1e-5, 1e-4, 1e-3], "n_intruders": [0, 3, 9], "forgetting": [0.01, 0.05, 0.4],
                       "forgetting_low": [0.0, 0.04, 0.3], "forgetting_high": [0.02, 0.06, 0.5],
                       "eval_accuracy": [0.7, 0.8, 0.75]})  # fmt: skip
    df.to_csv(tables / "runs.csv", index=False)
    rho = {"intruders_vs_forgetting": {"rho": 1.0, "p": 0.0}, "intruders_vs_accuracy": {"rho": 0.5, "p": 0.67},
           "k": 10, "epsilon": 0.5, "rank": 8, "n_runs": 3}  # fmt: skip
    (tables / "rho.json").write_text(json.dumps(rho))
    assert {p.name for p in fig_correlation.make(tables, tmp_path / "f")} == {
        "correlation.png",
        "correlation.pdf",
        "correlation.csv",
    }


def test_presets_compose_and_share_runs():
    f9 = common.load_preset("fig9_offline", schema=forgetting.Fig9Preset)
    corr = common.load_preset("correlation_offline", schema=forgetting.CorrelationPreset)
    t3 = common.load_preset("table3_offline", schema=forgetting.Table3Preset)
    assert (
        len(f9.seeds) >= 3 and len(corr.lrs) >= 6 and corr.rank == 8 and corr.k == 10 and corr.epsilon == 0.5
    )
    assert list(t3.lambdas) == [0.1, 0.3, 0.5, 0.7, 0.9, 1.0] and t3.eval_max_samples is None
    fig9_runs = [sorted(o) for o in forgetting.fig9_sweep(f9, "/data")]
    default_lr = [
        sorted(o) for o in forgetting.correlation_sweep(corr, "/data") if not any("method.lr" in x for x in o)
    ]
    assert default_lr and default_lr[0] in fig9_runs  # the correlation's default-lr run is fig9's r = 8 run
    with pytest.raises(UserError):
        common.load_preset("table3_offline", ["k=ten"], schema=forgetting.Table3Preset)
    reduced = ["seeds=[42]", "++seeds_for={r8:[42,43],full:[42,43]}"]
    red = common.load_preset("fig9_offline", reduced, schema=forgetting.Fig9Preset)
    assert len(forgetting.fig9_sweep(red, None)) == 1 + 2 + 1 + 2  # r1, r8 x2, r64, full x2
    bad = common.load_preset("fig9_offline", ["++seeds_for={r2:[1]}"], schema=forgetting.Fig9Preset)
    with pytest.raises(UserError, match="seeds_for names"):
        forgetting.fig9_sweep(bad, None)


def test_docs_corpus_is_prose_only(tmp_path):
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "README.md").write_text(
        "# Title here is a heading\n\n- The model forgets some of what it learned during pre-training.\n"
        "```\ncode line that should never appear in the corpus text\n```\n| a | table | row | with | six | words |\n"
        "Short line.\n"
    )
    (repo / "docs" / "x.md").write_text(
        "See [the guide](http://x) for `make test` and the rest of the commands here.\n"
    )
    lines = forgetting.docs_corpus(repo, tmp_path / "c.txt").read_text().splitlines()
    assert lines == [
        "The model forgets some of what it learned during pre-training.",
        "See the guide for make test and the rest of the commands here.",
    ]
