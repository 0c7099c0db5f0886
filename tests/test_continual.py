"""Continual learning: the stage loop, resume, per-task heads, merging, probes, bad inputs.

One three-task run on the tiny model (synth_sentiment -> synth_nli -> sst2 from tiny SST-2 files written
here) is shared by most tests: it is first crashed at stage 2, then resumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from lora_vs_full.continual import compose_continual, sequence
from lora_vs_full.continual.probe import Features, ProbeConfig, head_accuracy, train_head
from lora_vs_full.errors import UserError

TASKS = ["synth_sentiment", "synth_nli", "sst2"]
POS = ["a charming and affecting journey", "wonderful , warm and funny", "a moving , beautiful film"]
NEG = ["bleak , dull and tedious", "contains no wit , only labored gags", "a boring , ugly mess"]


def _sst2_dir(root: Path) -> Path:
    folder = root / "SST-2"
    folder.mkdir(parents=True)
    for name, n in (("train.tsv", 8), ("dev.tsv", 4)):
        rows = [f"{POS[i % 3]} {i}\t1" if i % 2 else f"{NEG[i % 3]} {i}\t0" for i in range(n)]
        (folder / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return root


def _overrides(tmp: Path, *extra: str) -> list[str]:
    return [
        "model=tiny",
        "method=lora",
        "method.rank=2",
        f"sequence.tasks=[{','.join(TASKS)}]",
        f"sequence.data_dir={tmp / 'data'}",
        "sequence.max_train_samples=16",
        "sequence.max_eval_samples=16",
        "optim.max_steps=2",
        "optim.batch_size=8",
        "optim.max_length=24",
        "probe.steps=3",
        "probe.train_samples=16",
        "probe.batch_size=8",
        "sequence.lr_scale={synth_nli: 0.5, winogrande: 3}",  # stage 2 at half the rate; winogrande: ignored
        f"paths.results_dir={tmp / 'results'}",
        f"out={tmp / 'out'}",
        "device=cpu",
        *extra,
    ]


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, tiny_model_dir):
    """Run the sequence, crash while training stage 2, then resume; record which stages trained."""
    tmp = tmp_path_factory.mktemp("continual")
    _sst2_dir(tmp / "data")
    cfg = compose_continual(_overrides(tmp, f"model.source={tiny_model_dir}"))
    real = sequence.train_stage
    calls = []

    def crashing(*args, stage, **kwargs):
        calls.append(("first", stage))
        if stage == 2:
            raise Crash("injected failure at stage 2")
        return real(*args, stage=stage, **kwargs)

    sequence.train_stage = crashing
    try:
        with pytest.raises(Crash):
            sequence.run_continual(cfg, log=lambda _m: None)
        run_dir = Path(cfg.out) / sequence.run_name(cfg)
        after_crash = {p.name for p in run_dir.iterdir()}
        done1 = (run_dir / "stage1" / "stage.json").stat().st_mtime_ns

        def counting(*args, stage, **kwargs):
            calls.append(("resume", stage))
            return real(*args, stage=stage, **kwargs)

        sequence.train_stage = counting
        sequence.run_continual(cfg, log=lambda _m: None)
    finally:
        sequence.train_stage = real
    return {
        "cfg": cfg,
        "run_dir": run_dir,
        "calls": calls,
        "after_crash": after_crash,
        "done1": done1,
        "tmp": tmp,
    }


def test_sequence_completes_and_writes_tidy_tables(resumed):
    out = Path(resumed["cfg"].out)
    acc = pd.read_parquet(out / "continual.parquet")
    assert set(["method", "rank", "stage", "trained_task", "eval_task", "accuracy"]) <= set(acc.columns)
    assert sorted(acc.stage.unique()) == [0, 1, 2, 3]
    assert len(acc) == 4 * 3 and set(acc.eval_task) == set(TASKS)
    assert acc[acc.stage == 0].trained_task.isna().all()  # stage 0 = the pretrained baseline
    assert list(acc.drop_duplicates("stage").sort_values("stage").trained_task[1:]) == TASKS
    assert (acc.method == "lora").all() and (acc["rank"] == 2).all()
    assert acc.accuracy.between(0, 1).all()
    # n_eval: the eval rows behind each accuracy (the gate's and the binomial interval's n)
    n_eval = acc.drop_duplicates("eval_task").set_index("eval_task")["n_eval"].to_dict()
    assert n_eval == {"synth_sentiment": 16, "synth_nli": 16, "sst2": 4}
    # per-task max length measured over the rows used, capped by optim.max_length (24 here)
    lengths = json.loads((resumed["run_dir"] / "data.json").read_text())["lengths"]
    assert set(lengths) == set(TASKS) and all(0 < r["max_length"] <= 24 for r in lengths.values())
    intr = pd.read_csv(out / "continual_intruders.csv")
    assert set(["method", "rank", "stage", "k", "epsilon", "n_intruders"]) <= set(intr.columns)
    assert len(intr) == 4 * 51 and set(intr.k) == {10}
    assert (intr[intr.stage == 0].query("epsilon < 1").n_intruders == 0).all()  # W0 vs W0: none
    # counts are monotone in epsilon at every stage (a sum of per-matrix monotone counts)
    for _, g in intr.groupby("stage"):
        assert g.sort_values("epsilon").n_intruders.is_monotonic_increasing


def test_crash_then_resume_redoes_no_finished_stage(resumed):
    calls, run_dir = resumed["calls"], resumed["run_dir"]
    assert calls == [("first", 1), ("first", 2), ("resume", 2), ("resume", 3)]
    assert "stage2" not in resumed["after_crash"] or not (run_dir / "stage2/stage.json").exists()
    assert (run_dir / "stage1" / "stage.json").stat().st_mtime_ns == resumed["done1"]  # not rewritten
    # a third invocation has nothing to do
    sequence.run_continual(resumed["cfg"], log=lambda _m: None)
    assert (run_dir / "stage1" / "stage.json").stat().st_mtime_ns == resumed["done1"]


def test_heads_are_per_task_and_states_cumulative(resumed):
    run_dir = resumed["run_dir"]
    states = [load_file(run_dir / f"stage{t}" / "state.safetensors") for t in range(4)]
    assert not any(k.startswith("head.") for k in states[0])  # stage 0 trains nothing
    num_labels = [states[t]["head.classifier.out_proj.weight"].shape[0] for t in (1, 2, 3)]
    assert num_labels == [2, 3, 2]  # synth_sentiment, synth_nli, sst2
    assert not torch.equal(
        states[1]["head.classifier.out_proj.weight"], states[3]["head.classifier.out_proj.weight"]
    )
    # body: only LoRA-targeted matrices differ from the pretrained weights, and they accumulate
    body1 = {k for k in states[1] if not k.startswith("head.")}
    body3 = {k for k in states[3] if not k.startswith("head.")}
    assert body1 and body1 <= body3
    assert all(".encoder.layer." in k and k.endswith(".weight") for k in body3)
    assert not torch.equal(states[1][sorted(body1)[0]], states[3][sorted(body1)[0]])


def test_probe_on_untouched_model_reproduces_baseline_row(resumed):
    cfg = resumed["cfg"]
    acc = pd.read_parquet(Path(cfg.out) / "continual.parquet")
    from lora_vs_full.data import get_task
    from lora_vs_full.models.build import load_tokenizer

    task = "synth_nli"
    seed = sequence.task_seed(cfg.seed, task)
    model = sequence.build_stage_model(cfg, get_task(task).num_labels, seed, {}, "cpu")
    heads = {task: (model.classifier, {k: v.clone() for k, v in model.classifier.state_dict().items()})}
    got = sequence.probe_all(model, [task], heads, load_tokenizer(cfg.model), sequence.TaskData(cfg), cfg,
                             device="cpu")  # fmt: skip
    expected = acc.query("stage == 0 and eval_task == @task").accuracy.item()
    assert got[task] == expected


def test_resume_with_different_config_is_refused_and_touches_nothing(resumed):
    cfg, run_dir = resumed["cfg"], resumed["run_dir"]
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    changed = compose_continual(
        _overrides(resumed["tmp"], f"model.source={cfg.model.source}", "probe.steps=4")
    )
    with pytest.raises(UserError, match="different config.*probe.*overwrite=true"):
        sequence.run_continual(changed, log=lambda _m: None)
    assert before == {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}


def test_lora_stage_merge_preserves_the_function(tiny_model_dir, monkeypatch, tmp_path):
    """The merged model returned by a LoRA stage computes the same logits as the trained PEFT model."""
    from lora_vs_full.models.build import load_tokenizer
    from lora_vs_full.training import loop

    cfg = compose_continual(["model=tiny", f"model.source={tiny_model_dir}", "method.rank=4", "device=cpu"])
    tok = load_tokenizer(cfg.model)
    enc = tok(["the film was not good", "a fine day"], padding=True, return_tensors="pt")
    seen = {}

    def fake_train(model, *args, **kwargs):  # stands in for training: make every B non-zero
        torch.manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        model.eval()
        seen["logits"] = model(**enc).logits
        return {"eval_accuracy": None}

    monkeypatch.setattr(loop, "train", fake_train)
    model = sequence.build_stage_model(cfg, 3, 0, {}, "cpu")
    w0 = model.roberta.encoder.layer[0].attention.self.query.weight.detach().clone()

    class NoData:
        train = eval = staticmethod(lambda task: None)
        max_length = staticmethod(lambda task: 24)

    merged, _ = sequence.train_stage(model, cfg, "synth_nli", tok, NoData(), stage=1, family="bert",
                                     device="cpu", stage_dir=tmp_path, log=lambda _m: None)  # fmt: skip
    assert type(merged).__name__ == "RobertaForSequenceClassification"  # PEFT wrappers gone
    merged.eval()
    torch.testing.assert_close(merged(**enc).logits, seen["logits"], rtol=1e-5, atol=1e-5)
    assert not torch.equal(merged.roberta.encoder.layer[0].attention.self.query.weight, w0)


def test_probe_learns_separable_features_and_is_seeded():
    """Known answer: a linear head on linearly separable features reaches ~100 %; same seed, same head."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    feats = Features(list(x.split(32)), list(y.split(32)))
    cfg = ProbeConfig(steps=120, lr=1e-1, batch_size=32, train_samples=256)

    def fit(seed):
        torch.manual_seed(123)
        return train_head(torch.nn.Linear(8, 2), feats, cfg, seed=seed, device="cpu")

    a, b, c = fit(1), fit(1), fit(2)
    assert head_accuracy(a, feats, device="cpu") > 0.97
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, c.weight)  # the batch order follows the seed


@pytest.mark.parametrize(
    "tasks, match",
    [
        (["synth_sentiment", "no_such_task"], "no_such_task"),
        (["synth_sentiment"], "at least two"),
        (["synth_sentiment", "synth_nli", "synth_sentiment"], "repeats synth_sentiment"),
    ],
)
def test_bad_sequences_raise_user_error(tasks, match):
    from lora_vs_full.continual import validate_tasks

    with pytest.raises(UserError, match=match):
        validate_tasks(tasks)


def test_bad_probe_budget_raises_user_error():
    with pytest.raises(UserError, match="probe.steps=0"):
        ProbeConfig(steps=0)


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lora_vs_full.cli.continual", "model=tiny", "sequence.tasks=[synth_sentiment]",
         f"out={out}", f"paths.results_dir={tmp_path / 'results'}"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: sequence.tasks=['synth_sentiment']")
    assert not out.exists()


@pytest.mark.parametrize("preset", ["continual_offline", "continual_paper"])
@pytest.mark.parametrize("method", ["method=full", "method.rank=8"])
def test_presets_compose_and_validate(preset, method):
    from omegaconf import OmegaConf

    from lora_vs_full.continual.config import validate

    cfg = compose_continual([f"experiment={preset}", method])
    OmegaConf.resolve(cfg)
    assert len(validate(cfg)) >= 2


def test_typo_fails_at_compose_time():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="stpes"):
        compose_continual(["probe.stpes=3"])


def test_probe_features_are_the_classifier_input_of_the_current_body(tiny_model_dir):
    """Independent reference: RoBERTa's head reads the last hidden state; the cache must equal it, and
    must follow a change of the body."""
    import datasets

    from lora_vs_full.continual.probe import extract_features
    from lora_vs_full.models.build import load_tokenizer

    cfg = compose_continual(["model=tiny", f"model.source={tiny_model_dir}"])
    tok, model = load_tokenizer(cfg.model), sequence.build_stage_model(cfg, 2, 0, {}, "cpu")
    ds = datasets.Dataset.from_dict({"text": ["a fine day", "not good at all , sadly"], "label": [1, 0]})
    feats = extract_features(model, tok, ds, batch_size=2, max_length=16, device="cpu")
    enc = tok(list(ds["text"]), padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(feats.inputs[0], ref)
    assert feats.labels[0].tolist() == [1, 0]
    with torch.no_grad():
        model.roberta.encoder.layer[1].output.dense.weight.mul_(3.0)
    moved = extract_features(model, tok, ds, batch_size=2, max_length=16, device="cpu")
    assert not torch.allclose(moved.inputs[0], feats.inputs[0])


def test_pretrained_stage_is_shared_by_methods_of_a_seed_only(resumed):
    """Stage 0 (the untouched model) of another method with the same seed is reused, not recomputed; a
    different seed or probe budget computes its own."""
    import json

    tmp, cfg = resumed["tmp"], resumed["cfg"]
    calls = []
    real = sequence.probe_all
    base = [o for o in _overrides(tmp, f"model.source={cfg.model.source}") if not o.startswith("method")]

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    sequence.probe_all = counting
    try:
        full = compose_continual([*base, "method=full"])
        full_dir = sequence.run_continual(full, log=lambda _m: None)
        other = compose_continual([*base, "method=full", "seed=7"])
        other_dir = sequence.run_continual(other, log=lambda _m: None)
    finally:
        sequence.probe_all = real
    lora0 = json.loads((resumed["run_dir"] / "stage0" / "stage.json").read_text())
    full0 = json.loads((full_dir / "stage0" / "stage.json").read_text())
    other0 = json.loads((other_dir / "stage0" / "stage.json").read_text())
    assert (
        full0["probe_from"] == resumed["run_dir"].name and full0["probe_accuracy"] == lora0["probe_accuracy"]
    )
    assert other0["probe_from"] is None  # seed 7: its own rows and heads
    assert len(calls) == 3 + 4  # full: stages 1-3 only; seed 7: stages 0-3


def test_reproduction_runs_sequences_side_by_side_and_lists_failures(tmp_path, tiny_model_dir):
    """lvf-reproduce fig8 with jobs=2: each sequence in its own process; the results are those of the
    same sequence run alone, and a bad one is listed without stopping the other."""
    import json

    from lora_vs_full.reproduce.continual import run_all

    _sst2_dir(tmp_path / "data")
    base = [o for o in _overrides(tmp_path, f"model.source={tiny_model_dir}") if not o.startswith("method")]
    good = [[*base, "method=full"], [*base, "method=lora", "method.rank=2"]]
    bad = [*base, "method=lora", "method.rank=0"]
    with pytest.raises(UserError, match=r"1 of 3 continual runs failed \(2 completed\).*method.rank=0"):
        run_all([*good, bad], jobs=2, log=lambda _m: None)
    alone = tmp_path / "alone"
    solo_overrides = [
        *(o for o in base if not o.startswith("out=")),
        f"out={alone}",
        "method=lora",
        "method.rank=2",
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(
        max(1, (os.cpu_count() or 1) // 2)
    )  # as each of the two workers (cpu_count // jobs)
    try:
        run_all([solo_overrides], jobs=1, log=lambda _m: None)
    finally:
        torch.set_num_threads(threads)
    side = json.loads(
        (tmp_path / "out" / "lora-r2-a4-all_linear-seed42" / "stage3" / "stage.json").read_text()
    )
    solo = json.loads((alone / "lora-r2-a4-all_linear-seed42" / "stage3" / "stage.json").read_text())
    assert side["probe_accuracy"] == solo["probe_accuracy"]


def test_full_ft_identity_ignores_lora_keys():
    """A full fine-tune never reads LoRA's rank or lr rule, so changing them keeps its runs (not LoRA's)."""
    from lora_vs_full.continual.config import identity

    def ident(*o):
        return identity(compose_continual(["experiment=continual_offline", *o]))

    assert ident("method=full") == ident("method=full", "method.lr_rank1=1e-3", "method.lr_rank_power=0.5")
    assert ident("method=full") != ident("method=full", "optim.lr=3e-5")
    assert ident("method.rank=8") != ident("method.rank=8", "method.lr_rank1=1e-3")


def test_per_task_lr_scale_sets_each_stages_rate_and_is_validated(resumed):
    """sequence.lr_scale multiplies the method's rate on the listed task's stage only; entries for tasks
    outside the sequence neither act nor enter the run's identity; a bad entry is one UserError."""
    from lora_vs_full.continual.config import identity, lr_scales, validate
    from lora_vs_full.models.methods import method_lr

    cfg, run_dir = resumed["cfg"], resumed["run_dir"]
    base = method_lr(cfg.method, cfg.optim)
    lrs = [json.loads((run_dir / f"stage{i}" / "stage.json").read_text())["lr"] for i in (1, 2, 3)]
    assert lrs == pytest.approx([base, base / 2, base])
    assert identity(cfg)["sequence"]["lr_scale"] == {"synth_nli": 0.5}
    # the offline preset lists siqa and winogrande, which are not in its (synthetic) sequence
    plain = compose_continual(["experiment=continual_offline"])
    assert "lr_scale" not in identity(plain)["sequence"] and lr_scales(plain) == {}
    for bad, match in (("sequence.lr_scale={synth_nli: 0}", "must be a number > 0"),
                       ("sequence.lr_scale={no_such_task: 0.5}", "no_such_task")):  # fmt: skip
        with pytest.raises(UserError, match=match):
            validate(compose_continual(["sequence.tasks=[synth_sentiment,synth_nli]", bad]))


def test_collapse_table_reads_every_stage_of_a_run(resumed):
    """collapse.csv: one row per stage, stage 0 = the pretrained body's own features (recomputed here)."""
    from lora_vs_full.continual.diagnostics import _classifier_inputs, collapse_table, mean_pairwise_cosine
    from lora_vs_full.continual.probe import extract_features
    from lora_vs_full.models.build import load_tokenizer

    cfg, run_dir = resumed["cfg"], resumed["run_dir"]
    col = collapse_table([run_dir], "sst2", rows=4)
    assert list(col.stage) == [0, 1, 2, 3] and col.mean_pairwise_cosine.between(-1, 1).all()
    model = sequence.build_stage_model(cfg, 2, sequence.task_seed(cfg.seed, "synth_sentiment"), {}, "cpu")
    ds = sequence.TaskData(cfg).eval("sst2").select(range(4))
    feats = extract_features(model, load_tokenizer(cfg.model), ds, batch_size=64, max_length=24, device="cpu")
    assert col.mean_pairwise_cosine.iloc[0] == pytest.approx(
        mean_pairwise_cosine(_classifier_inputs(feats)), abs=1e-4
    )


def test_weight_change_is_the_relative_frobenius_distance_of_the_measured_matrices(resumed):
    """weight_change.csv against numpy on the stored safetensors: q, k, v, o, fc1, fc2 of every layer."""
    import re

    import numpy as np
    from safetensors.numpy import load_file as load_np

    from lora_vs_full.continual.diagnostics import weight_change_table

    cfg, run_dir = resumed["cfg"], resumed["run_dir"]
    table = weight_change_table([run_dir])
    assert list(table.stage) == [1, 2, 3]
    model = sequence.build_stage_model(cfg, 2, sequence.task_seed(cfg.seed, "synth_sentiment"), {}, "cpu")
    pattern = re.compile(r"layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|"
                         r"intermediate\.dense|output\.dense)\.weight$")  # fmt: skip
    w0 = {k: v.double().numpy() for k, v in model.state_dict().items() if pattern.search(k)}
    assert table.matrices.iloc[0] == len(w0) == 6 * model.config.num_hidden_layers
    norm0 = np.sqrt(sum((w**2).sum() for w in w0.values()))
    prev = w0
    for stage in (1, 2, 3):
        stored = load_np(str(run_dir / f"stage{stage}" / "state.safetensors"))
        now = {k: stored[k].astype(np.float64) if k in stored else w for k, w in w0.items()}
        row = table[table.stage == stage].iloc[0]
        dist = lambda a, b: np.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in w0)) / norm0  # noqa: E731
        assert row.from_pretrained == pytest.approx(dist(now, w0), abs=2e-6)
        assert row.stage_update == pytest.approx(dist(now, prev), abs=2e-6)
        prev = now
    assert table.from_pretrained.iloc[-1] > 0


def test_stage_replay_as_run_reproduces_the_stored_stage(resumed, tmp_path):
    """lora_vs_full.reproduce.replay: retraining stage 2 from stage 1's stored body with no override gives the
    stage's own stored eval accuracy and loss (same rows, seed, head init); a rerun replaces its row."""
    from lora_vs_full.reproduce import replay as fig8_replay

    run_dir, out = resumed["run_dir"], tmp_path / "replays.csv"
    stored = json.loads((run_dir / "stage2" / "stage.json").read_text())["train_result"]
    for _ in range(2):
        fig8_replay.main([str(run_dir), "2", "--out", str(out), "--work", str(tmp_path / "work")])
    table = pd.read_csv(out)
    assert len(table) == 1 and table.trained_task[0] == TASKS[1] and table.overrides[0] == "(as run)"
    assert table.eval_accuracy[0] == pytest.approx(stored["eval_accuracy"], abs=1e-4)
    assert table.eval_loss[0] == pytest.approx(stored["eval_loss"], abs=1e-3)
    # the gate, as the run judged it: the stored probes before and after the stage
    pre, post = (json.loads((run_dir / f"stage{i}" / "stage.json").read_text())["probe_accuracy"][TASKS[1]]
                 for i in (1, 2))  # fmt: skip
    assert table.probe_pre[0] == pytest.approx(pre, abs=1e-4)
    assert table.probe_post[0] == pytest.approx(post, abs=1e-4)
    fig8_replay.main(
        [str(run_dir), "2", "optim.grad_clip=0.1", "--out", str(out), "--work", str(tmp_path / "w")]
    )
    assert list(pd.read_csv(out).overrides) == ["(as run)", "optim.grad_clip=0.1"]
    for bad in (["optim.grad_klip=0.1"], ["optim.grad_clip"]):
        with pytest.raises(SystemExit, match="must be key=value with a key of"):
            fig8_replay.main([str(run_dir), "2", *bad, "--out", str(out)])
    with pytest.raises(SystemExit, match="not a training stage"):
        fig8_replay.main([str(run_dir), "9", "--out", str(out)])
    assert len(pd.read_csv(out)) == 2
