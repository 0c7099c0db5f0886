"""experiments/fig9.py and experiments/table3.py: synthetic tidy tables in, files + exact numbers out."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

import fig9  # noqa: E402
import table3  # noqa: E402

from lora_vs_full.errors import UserError  # noqa: E402
from lora_vs_full.records import RUN_COLUMNS  # noqa: E402

BASE = "models/minilm"


def _pl_row(method, rank, seed, pl, acc, task="sst2", head="probe"):
    row = {c: None for c in RUN_COLUMNS}
    run = "base:" + BASE if method == "base" else f"minilm/{task}/{method}{rank or ''}/seed{seed}"
    row |= dict(run=run, model="minilm", task=None if method == "base" else task, method=method,
                rank=rank, alpha=None if rank is None else 2 * rank, lr=1e-4, seed=seed)  # fmt: skip
    return row | dict(base=BASE, pseudo_loss=pl, eval_accuracy=acc, head=head)


@pytest.fixture
def pseudoloss_table():
    rows = [_pl_row("base", None, None, 2.0, None)]
    # two seeds for r=1 (mean 2.5), one for r=8 and r=64, two for full (mean 2.3); a second task
    rows += [_pl_row("lora", 1, 1, 2.4, 0.80), _pl_row("lora", 1, 2, 2.6, 0.70)]
    rows += [_pl_row("lora", 8, 1, 2.1, 0.85), _pl_row("lora", 64, 1, 2.45, 0.6)]
    rows += [_pl_row("full", None, 1, 2.2, 0.9), _pl_row("full", None, 2, 2.4, 0.8)]
    rows += [_pl_row("lora", 1, 1, 3.0, 0.55, task="synth_nli")]
    df = pd.DataFrame(rows)
    df["forgetting"] = df["pseudo_loss"] - 2.0
    return df


def test_fig9_writes_files_and_csv_equals_seed_means(pseudoloss_table, tmp_path):
    d = tmp_path / "pl"
    d.mkdir()
    pseudoloss_table.to_parquet(d / "pseudoloss.parquet")
    logs = []
    paths = fig9.make_fig9(d, tmp_path / "figs", name="f9", log=logs.append)
    assert sorted(p.name for p in paths) == ["f9.csv", "f9.pdf", "f9.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert any("probe MLM head" in m for m in logs)  # MiniLM: the caveat is said, not hidden
    csv = pd.read_csv(tmp_path / "figs" / "f9.csv")
    # independent recomputation from the raw rows
    raw = pseudoloss_table
    for task in ("sst2", "synth_nli"):
        sub = csv[csv["task"] == task]
        assert sub.loc[sub["method"] == "base", "pseudo_loss"].item() == 2.0  # base row repeated per task
        for (m, r), g in raw[(raw["task"] == task)].groupby(["method", "rank"], dropna=False):
            got = sub[(sub["method"] == m) & (sub["rank"].fillna(-1) == (-1 if pd.isna(r) else r))]
            assert got["pseudo_loss"].item() == pytest.approx(g["pseudo_loss"].mean())
            assert got["forgetting"].item() == pytest.approx(g["pseudo_loss"].mean() - 2.0)
            assert got["eval_accuracy"].item() == pytest.approx(g["eval_accuracy"].mean())
            assert got["n_seeds"].item() == len(g)
    assert set(csv["head"]) == {"probe"}
    assert csv.loc[(csv["task"] == "sst2") & (csv["rank"] == 1), "pseudo_loss"].item() == pytest.approx(2.5)


def test_fig9_bad_inputs_name_the_command(pseudoloss_table, tmp_path):
    with pytest.raises(UserError, match="lvf-pseudoloss runs="):
        fig9.make_fig9(tmp_path / "nowhere", tmp_path / "figs")
    with pytest.raises(UserError, match="has no rows.*lvf-pseudoloss"):
        fig9.fig9_table(pseudoloss_table.iloc[0:0])
    with pytest.raises(UserError, match="no base reference row"):
        fig9.fig9_table(pseudoloss_table[pseudoloss_table["method"] != "base"])
    with pytest.raises(UserError, match="only base rows"):
        fig9.fig9_table(pseudoloss_table[pseudoloss_table["method"] == "base"])
    two_lr = pd.concat([pseudoloss_table, pseudoloss_table.iloc[[1]].assign(lr=3e-4)])
    with pytest.raises(UserError, match="several alpha/lr"):
        fig9.fig9_table(two_lr)


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
    lines = fig9.docs_corpus(repo, tmp_path / "c.txt").read_text().splitlines()
    assert lines == [
        "The model forgets some of what it learned during pre-training.",
        "See the guide for make test and the rest of the commands here.",
    ]


def _iv_rows():
    rows = []
    ref = {"intruder": (0.90, 0.30), "control": (0.90, 0.30)}
    for cond in ("intruder", "control"):
        for lam in (0.0, 0.5, 1.0, 2.0):
            acc = ref[cond][0] - (0.1 * abs(1 - lam) if cond == "intruder" else 0.01 * (1 - lam))
            forg = ref[cond][1] * (lam if cond == "intruder" else 1.0 + 0.1 * (1 - lam))
            rows.append(dict(condition=cond, **{"lambda": lam}, accuracy=acc, forgetting=forg))
    rows.append(dict(condition="peft_reduce", **{"lambda": 0.75}, accuracy=0.89, forgetting=0.2))
    df = pd.DataFrame(rows)
    for col, src in (("accuracy_change_pct", "accuracy"), ("forgetting_change_pct", "forgetting")):
        refv = {
            c: df.loc[(df["condition"] == c) & (df["lambda"] == 1.0), src].item()
            for c in ("intruder", "control")
        }
        refv["peft_reduce"] = refv["intruder"]
        df[col] = [100 * (v - refv[c]) / refv[c] for c, v in zip(df["condition"], df[src], strict=True)]
    return df.assign(run="minilm/sst2/lora-r1/seed42", n_scaled=36, head="probe")


def test_table3_writes_table_and_plot_with_paper_percentages(tmp_path):
    d = tmp_path / "iv"
    d.mkdir()
    _iv_rows().to_parquet(d / "intervention.parquet")
    paths = table3.make_table3(d, tmp_path / "figs", name="t3", log=lambda m: None)
    names = sorted(p.name for p in paths)
    assert names == ["t3-lambda.csv", "t3-lambda.pdf", "t3-lambda.png", "t3.csv", "t3.md"]
    t = pd.read_csv(tmp_path / "figs" / "t3.csv")
    lam05 = t[t["row"] == "lambda = 0.5"].iloc[0]
    # independent: intruder forgetting 0.15 vs 0.30 -> -50 %; accuracy 0.85 vs 0.90 -> -5.556 %
    assert lam05["intruder_forget_pct"] == pytest.approx(-50.0)
    assert lam05["intruder_acc_pct"] == pytest.approx(100 * (0.85 - 0.9) / 0.9)
    assert lam05["control_forget_pct"] == pytest.approx(5.0)
    peft = t[t["row"].str.startswith("PEFT")].iloc[0]
    assert peft["lambda"] == 0.75 and peft["intruder_forget_pct"] == pytest.approx(100 * (0.2 - 0.3) / 0.3)
    assert np.isnan(peft["control_acc_pct"])
    md = (tmp_path / "figs" / "t3.md").read_text()
    assert "| lambda = 0.5 | -5.6 | -50.0 | -0.6 | +5.0 |" in md and "probe" in md
    plot = pd.read_csv(tmp_path / "figs" / "t3-lambda.csv")
    assert len(plot) == 2 * 9  # accuracy + forgetting for 8 sweep rows + PEFT
    got = plot[(plot["metric"] == "forgetting") & (plot["condition"] == "intruder")].sort_values("lambda")
    assert got["value"].tolist() == pytest.approx([0.0, 0.15, 0.3, 0.6])


def test_table3_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="lvf-intervene run="):
        table3.make_table3(tmp_path / "nowhere", tmp_path / "figs")
    with pytest.raises(UserError, match="no rows"):
        table3.table3(_iv_rows().iloc[0:0])
    with pytest.raises(UserError, match="lambda = 1"):
        table3.table3(_iv_rows().query("`lambda` != 1.0"))
    with pytest.raises(UserError, match="does not exist.*reproduce-fig5"):
        table3.pick_run(tmp_path / "no-runs", "sst2", 1)
    (tmp_path / "runs" / "m" / "sst2" / "lora-r1-a2-all_linear" / "seed1").mkdir(parents=True)
    with pytest.raises(UserError, match="no complete LoRA r=1 run of task sst2"):
        table3.pick_run(tmp_path / "runs", "sst2", 1)
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        table3.reproduce_table3("huge")
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        fig9.reproduce_fig9("huge")


@pytest.mark.slow  # ~20 s alone: three subprocesses
def test_end_to_end_on_a_tiny_smoke_run(tmp_path, monkeypatch):
    """lvf-train (tiny, 2 steps) -> lvf-pseudoloss + lvf-intervene -> fig9 + table3, through the same
    presets.lvf subprocess path reproduce_* use."""
    import presets

    monkeypatch.chdir(tmp_path)
    text = tmp_path / "text.txt"
    text.write_text(
        "\n".join(f"Sentence {i} of plain English text about rivers, towns and old roads." for i in range(4))
    )
    common = [f"paths.runs_dir={tmp_path}/runs", f"paths.results_dir={tmp_path}/res"]
    presets.lvf("train", "debug=smoke", "method=lora", "method.rank=1", "optim.max_steps=2",
                "task.max_eval_samples=16", *common, log=lambda m: None)  # fmt: skip
    small = [f"text_file={text}", "corpus.n_texts=2", "scoring.max_length=16", "progress=false", common[1]]
    presets.lvf(
        "pseudoloss", f"runs={tmp_path}/runs/*/*/*/seed*", f"out={tmp_path}/pl", *small, log=lambda m: None
    )
    fig9.make_fig9(tmp_path / "pl", tmp_path / "figs", log=lambda m: None)
    csv = pd.read_csv(tmp_path / "figs" / "fig9.csv")
    assert sorted(csv["method"]) == ["base", "lora"] and set(csv["head"]) == {"pretrained"}
    run = table3.pick_run(tmp_path / "runs", "synth_sentiment", 1)
    presets.lvf("intervene", f"run={run}", f"out={tmp_path}/iv", "lambdas=[0,1]", "eval.max_samples=16",
                *small, log=lambda m: None)  # fmt: skip
    table3.make_table3(tmp_path / "iv", tmp_path / "figs", log=lambda m: None)
    t = pd.read_csv(tmp_path / "figs" / "table3.csv")
    assert t.loc[t["row"] == "lambda = 1", "intruder_forget_pct"].abs().item() < 1e-9
    assert t["row"].str.startswith("PEFT").any()
