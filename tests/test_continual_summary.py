"""Issue 11: the learned-stage gate, the forgetting definition, the verdict, and measured truncation.

Hand-made tables with known answers; no training."""

from __future__ import annotations

import pandas as pd
import pytest

from lora_vs_full.continual import lengths
from lora_vs_full.continual.summary import (
    Gate,
    eligibility,
    end_forgetting,
    forgetting_table,
    headline,
    stage_gate,
    summarize,
)
from lora_vs_full.errors import UserError

TASKS = ("a", "b", "c")


def _run(method, rank, seed, acc_by_stage, n=400, run=None):
    """Rows of one run: ``acc_by_stage[stage] = {task: accuracy}``; stage t trains TASKS[t-1]."""
    run = run or f"{method}{rank or ''}-seed{seed}"
    rows = []
    for stage, accs in enumerate(acc_by_stage):
        for task, a in accs.items():
            rows.append({"run": run, "model": "m", "method": method, "rank": rank, "seed": seed, "stage": stage,
                         "trained_task": TASKS[stage - 1] if stage else pd.NA, "eval_task": task,
                         "accuracy": a, "n_eval": n})  # fmt: skip
    return rows


def _table(rows):
    df = pd.DataFrame(rows)
    df["rank"] = df["rank"].astype("Int64")
    return df


# A run that learns every stage: a 0.5 -> 0.9, then forgotten to 0.7 and 0.6; b 0.5 -> 0.8 -> 0.75.
LEARNS = [
    {"a": 0.50, "b": 0.50, "c": 0.50},
    {"a": 0.90, "b": 0.50, "c": 0.50},
    {"a": 0.70, "b": 0.80, "c": 0.50},
    {"a": 0.60, "b": 0.75, "c": 0.85},
]


def test_forgetting_is_own_stage_minus_stage_t_on_a_hand_made_table():
    f = forgetting_table(_table(_run("full", None, 0, LEARNS))).set_index(["eval_task", "stage"])[
        "forgetting"
    ]
    assert f[("a", 1)] == pytest.approx(0.0)
    assert f[("a", 2)] == pytest.approx(0.20)  # 0.90 - 0.70
    assert f[("a", 3)] == pytest.approx(0.30)  # 0.90 - 0.60
    assert f[("b", 3)] == pytest.approx(0.05)  # 0.80 - 0.75
    assert ("a", 0) not in f.index  # nothing to forget before the task was trained
    end = end_forgetting(
        _table(_run("full", None, 0, LEARNS)), stage_gate(_table(_run("full", None, 0, LEARNS)))
    )
    assert end["end_forgetting"].iloc[0] == pytest.approx((0.30 + 0.05) / 2)  # earlier tasks a, b at stage 3
    assert end["n_tasks"].iloc[0] == 2


def test_gate_margin_is_the_larger_of_5_points_and_z_binomial_se():
    g = Gate(min_gain=0.05, z=1.645)
    assert g.margin(0.5, 10_000) == pytest.approx(0.05)  # SE 0.005: the 5 points win
    assert g.margin(0.5, 100) == pytest.approx(1.645 * 0.05)  # SE 0.05: 0.082 > 0.05
    with pytest.raises(UserError, match="gate.min_gain"):
        Gate(min_gain=1.5)


def test_a_stage_that_does_not_learn_is_flagged_and_the_headline_refuses_its_run():
    # seed 1 of r=1 does not learn task b (0.50 -> 0.52 < 5 points); task b is learnable (others learn it)
    stuck = [dict(s) for s in LEARNS]
    stuck[2]["b"], stuck[3]["b"] = 0.52, 0.51
    rows = []
    for seed in (0, 1, 2):
        rows += _run("full", None, seed, LEARNS)
        rows += _run("lora", 1, seed, stuck if seed == 1 else LEARNS)
    acc = _table(rows)
    gates = stage_gate(acc)
    bad = gates[(gates["run"] == "lora1-seed1") & (gates["stage"] == 2)]
    assert not bad["learned"].iloc[0] and bad["gain"].iloc[0] == pytest.approx(0.02)
    assert gates.drop(bad.index)["learned"].all()
    elig = eligibility(gates).set_index("run")
    assert (
        not elig.loc["lora1-seed1", "eligible"]
        and "stage 2 (b) not learned" in elig.loc["lora1-seed1", "reason"]
    )
    intr = pd.DataFrame([{"run": r, "method": m, "rank": k, "seed": s, "stage": t, "trained_task": pd.NA, "k": 10,
                          "epsilon": 0.5, "n_intruders": 3 if m == "lora" else 0}
                         for r, m, k, s, t in acc[["run", "method", "rank", "seed", "stage"]].drop_duplicates()
                         .itertuples(index=False)])  # fmt: skip
    summary = summarize(acc, intr)
    assert (
        summary["methods"]["r1"]["eligible_runs"] == 2 and summary["methods"]["r1"]["stages_learned"] == "8/9"
    )
    text = headline(summary)
    assert "no forgetting conclusion from LoRA r=1 seed 1: stage 2 (b) not learned" in text
    # identical forgetting in every eligible run: no difference, so no verdict either way
    assert summary["verdict"] == "cannot decide"


def test_task_no_run_learns_is_not_learnable_and_does_not_disqualify_runs():
    flat = [dict(s) for s in LEARNS]
    for s in flat:
        s["c"] = 0.50  # task c stays at chance in every run
    rows = [r for seed in (0, 1) for r in _run("full", None, seed, flat) + _run("lora", 1, seed, flat)]
    acc = _table(rows)
    intr = pd.DataFrame([{"run": "x", "method": "full", "rank": pd.NA, "seed": 0, "stage": 0, "trained_task": pd.NA,
                          "k": 10, "epsilon": 0.5, "n_intruders": 0}])  # fmt: skip
    summary = summarize(acc, intr)
    assert summary["not_learnable"] == ["c"]
    assert all(m["eligible_runs"] == m["runs"] for m in summary["methods"].values())
    # 4 runs x stages a, b (c is not learnable): all learned; every stage counted in stages_learned
    assert summary["learnable_stages_learned"] == "8/8"
    assert {m["learnable_stages_learned"] for m in summary["methods"].values()} == {"4/4"}
    assert {m["stages_learned"] for m in summary["methods"].values()} == {"4/6"}
    assert "Not learnable at this budget" in headline(summary)


def test_one_noisy_pass_does_not_make_a_chance_task_learnable_but_a_methods_mean_does():
    """Task c at chance everywhere except one run's noisy +0.06 (mean gain of that method 0.02 < 0.05):
    not learnable, so it disqualifies nobody. Task b learned on average by full FT only (+0.30 in every
    seed) while LoRA r=1 stays at +0.01: learnable, and every r=1 run is ineligible for it."""
    from lora_vs_full.continual.summary import learnable_tasks

    def curve(c_end, b_gain):
        s = [dict(x) for x in LEARNS]
        s[2]["b"] = s[3]["b"] = 0.50 + b_gain
        s[3]["c"] = c_end
        return s

    rows = []
    for seed in (0, 1, 2):
        rows += _run("full", None, seed, curve(0.50, 0.30))
        rows += _run("lora", 1, seed, curve(0.56 if seed == 2 else 0.50, 0.01))
    gates = stage_gate(_table(rows))
    noisy = gates[(gates["run"] == "lora1-seed2") & (gates["trained_task"] == "c")]
    assert noisy["learned"].iloc[0]  # the single noisy pass
    assert learnable_tasks(gates) == {"a": True, "b": True, "c": False}
    from lora_vs_full.continual.summary import gate_summary

    gs = gate_summary(gates).set_index(["trained_task", "method"])
    assert gs.loc[("c", "LoRA r=1"), "learned"] == "1/3" and not gs.loc[("c", "LoRA r=1"), "learnable"]
    assert gs.loc[("c", "LoRA r=1"), "mean_gain"] == pytest.approx(0.02)  # (0 + 0 + 0.06) / 3
    assert gs.loc[("b", "full FT"), "learned"] == "3/3" and gs.loc[("b", "LoRA r=1"), "learned"] == "0/3"
    assert list(gs.index.get_level_values("method")[:2]) == ["full FT", "LoRA r=1"]
    elig = eligibility(gates).set_index("run")["eligible"].to_dict()
    assert elig == {
        **{f"full-seed{s}": True for s in (0, 1, 2)},
        **{f"lora1-seed{s}": False for s in (0, 1, 2)},
    }


def test_verdict_supports_when_low_rank_forgets_more_than_full_and_high_rank():
    rows = []
    for seed, jitter in zip((0, 1, 2), (0.0, 0.01, -0.01), strict=True):

        def curve(end_a, jitter=jitter):
            c = [dict(s) for s in LEARNS]
            c[3]["a"] = end_a + jitter
            return c

        rows += _run("full", None, seed, curve(0.85))
        rows += _run("lora", 1, seed, curve(0.55))
        rows += _run("lora", 64, seed, curve(0.83))
    acc = _table(rows)
    intr = pd.DataFrame([{"run": "x", "method": "full", "rank": pd.NA, "seed": 0, "stage": 3, "trained_task": "c",
                          "k": 10, "epsilon": 0.5, "n_intruders": 0}])  # fmt: skip
    summary = summarize(acc, intr)
    assert summary["verdict"] == "supports", summary["verdict_reason"]
    assert "Before the end" not in headline(summary)  # the end has its interval: no earlier stage is named
    assert summary["comparisons"]["r1_minus_full"]["mean"] == pytest.approx(
        0.15
    )  # (0.30 - 0.0) / 2 per task a
    # reversed roles contradict the claim
    swapped = acc.copy()
    swapped["method"] = swapped["method"].map({"full": "lora", "lora": "full"})
    swapped["rank"] = [pd.NA if m == "full" else 1 for m in swapped["method"]]
    swapped = swapped[~swapped["run"].str.startswith("lora64")]
    swapped["rank"] = swapped["rank"].astype("Int64")
    assert summarize(swapped, intr)["verdict"] == "contradicts"


def test_truncation_measured_on_a_known_string(minilm_dir):
    from transformers import AutoTokenizer

    from lora_vs_full.data.formatting import siqa_text, winogrande_text

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    assert lengths.token_lengths(tok, ["hello world"]).tolist() == [4]  # [CLS] hello world [SEP]
    text = siqa_text("kai went to the store.", "why did kai go?", "to buy milk", "to sleep", "to swim")
    need = int(lengths.choice_end_lengths(tok, "siqa", [text])[0])
    full = int(lengths.token_lengths(tok, [text])[0])
    assert need < full  # the format line comes after the answers
    # "... answer3: to swim" ends at token `need`; the prefix tokenises as the full string's head
    assert (
        tok(text)["input_ids"][: need - 1] == tok(text[: text.rfind("\n\nAnswer format:")])["input_ids"][:-1]
    )
    ds = {"text": [text]}

    class _DS(dict):
        column_names = ["text"]

    rec = lengths.measure(tok, "siqa", [_DS(ds)], ceiling=512)
    assert rec["max_length"] == lengths.choose_max_length(full, 512) and rec["truncated"] == 0.0
    assert rec["answers_cut"] == 0.0
    cut = lengths.measure(tok, "siqa", [_DS(ds)], ceiling=need - 1, auto=False)
    assert cut["answers_cut"] == 1.0 and cut["truncated"] == 1.0
    fits = lengths.measure(tok, "siqa", [_DS(ds)], ceiling=need, auto=False)
    assert fits["answers_cut"] == 0.0 and fits["truncated"] == 1.0  # only the format line is cut
    wg = winogrande_text("the trophy did not fit in the case because _ was big.", "trophy", "case")
    assert lengths.choice_end_lengths(tok, "winogrande", [wg])[0] < lengths.token_lengths(tok, [wg])[0]
    assert lengths.choice_end_lengths(tok, "sst2", ["x"]) is None


def test_mean_pairwise_cosine_known_answers():
    import torch

    from lora_vs_full.continual.diagnostics import mean_pairwise_cosine

    assert mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.0)
    assert mean_pairwise_cosine(torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])) == pytest.approx(1.0)
    # three unit vectors 120 degrees apart: every pair has cosine -1/2
    x = torch.tensor([[1.0, 0.0], [-0.5, 3**0.5 / 2], [-0.5, -(3**0.5) / 2]])
    assert mean_pairwise_cosine(x) == pytest.approx(-0.5)


def test_a_late_unlearned_stage_leaves_earlier_stages_comparable_and_the_headline_says_where():
    """r=1 fails the LAST stage (c) in seeds 0 and 1: no end comparison (1 shared eligible seed), but at
    stage 2 every run learned everything so far, so stage 2 is compared over 3 seeds and named in the
    headline. r=1 forgets a (0.9 -> 0.5) where full FT keeps it (0.9 -> 0.85): +0.35 per seed, an interval
    clear of 0 -> supports at stage 2."""
    from lora_vs_full.continual.summary import stage_comparisons_table, stage_forgetting

    def curve(a_at_2, c_end, jitter):
        s = [dict(x) for x in LEARNS]
        s[2]["a"] = a_at_2 + jitter
        s[3]["c"] = c_end
        return s

    rows = []
    for seed, jitter in zip((0, 1, 2), (0.0, 0.01, -0.01), strict=True):
        rows += _run("full", None, seed, curve(0.85, 0.85, jitter))
        rows += _run("lora", 1, seed, curve(0.50, 0.52 if seed < 2 else 0.85, jitter))
    acc = _table(rows)
    gates = stage_gate(acc)
    sf = stage_forgetting(acc, gates).set_index(["run", "stage"])
    # a: 0.90 - 0.50, the only earlier task
    assert sf.loc[("lora1-seed0", 2), "forgetting"] == pytest.approx(0.40)
    assert sf.loc[("lora1-seed0", 2), "eligible"] and not sf.loc[("lora1-seed0", 3), "eligible"]
    assert sf.loc[("lora1-seed0", 3), "reason"].startswith("stage 3 (c) not learned")
    assert sf.loc[("lora1-seed0", 3), "n_tasks"] == 2 and sf.loc[("lora1-seed0", 3), "last"]
    intr = pd.DataFrame([{"run": "x", "method": "full", "rank": pd.NA, "seed": 0, "stage": 3, "trained_task": "c",
                          "k": 10, "epsilon": 0.5, "n_intruders": 0}])  # fmt: skip
    summary = summarize(acc, intr)
    assert summary["verdict"] == "cannot decide" and "share 1 eligible seed" in summary["verdict_reason"]
    by = {st["stage"]: st for st in summary["by_stage"]}
    assert by[2]["comparisons"]["r1_minus_full"]["n"] == 3
    assert by[2]["comparisons"]["r1_minus_full"]["mean"] == pytest.approx(0.35)
    assert by[2]["verdict"] == "supports" and by[3]["verdict"] == "cannot decide"
    assert summary["before_end"]["stage"] == 2
    text = headline(summary)
    assert "Before the end (the latest stage whose runs give an interval): stage 2 (b): SUPPORTS" in text
    # at the end only seed 2 is eligible in both, and there both runs forget the same (a 0.60, b 0.75)
    assert "stage 3 (c, 2 earlier task(s)): r1 - full +0.000 (1 seed, no interval) over 1 seed(s)" in text
    table = stage_comparisons_table(summary)
    assert table.set_index(["stage", "comparison"]).loc[(2, "r1 - full"), "n_seeds"] == 3


def test_no_learnable_task_gives_no_forgetting_and_cannot_decide():
    flat = [{"a": 0.5, "b": 0.5, "c": 0.5}] * 4  # nothing is ever learned
    acc = _table([r for seed in (0, 1) for r in _run("full", None, seed, flat) + _run("lora", 1, seed, flat)])
    intr = pd.DataFrame([{"run": "x", "method": "full", "rank": pd.NA, "seed": 0, "stage": 0, "trained_task": pd.NA,
                          "k": 10, "epsilon": 0.5, "n_intruders": 0}])  # fmt: skip
    summary = summarize(acc, intr)
    assert summary["not_learnable"] == ["a", "b", "c"] and summary["by_stage"] == []
    assert summary["verdict"] == "cannot decide" and "share 0 eligible seed" in summary["verdict_reason"]
    assert "Not learnable at this budget" in headline(summary)
