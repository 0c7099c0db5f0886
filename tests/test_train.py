"""Methods (trainable sets, LoRA merge) and tiny end-to-end lvf-train runs (artefacts, idempotency, reload)."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from lora_vs_full.config import compose_train
from lora_vs_full.errors import UserError
from lora_vs_full.models.build import load_classifier, load_tokenizer
from lora_vs_full.models.methods import apply_method, trainable_summary
from lora_vs_full.runs import execute, load_run_model, run_dir_for
from lora_vs_full.training.loop import evaluate, make_tracker

# The six analysed matrices of a BERT/RoBERTa layer, spelled out independently of models/targets.py.
LAYER_MATRICES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
ROBERTA_HEAD = {
    "classifier.dense.weight",
    "classifier.dense.bias",
    "classifier.out_proj.weight",
    "classifier.out_proj.bias",
}


def _cfg(tiny_model_dir, tmp_path, *overrides):
    return compose_train(
        ["debug=smoke", f"model.source={tiny_model_dir}", f"paths.results_dir={tmp_path}", *overrides]
    )


def _classifier(src, num_labels=2, seed=0):
    torch.manual_seed(seed)
    return load_classifier(str(src), num_labels)


def test_full_trains_exactly_encoder_weight_matrices_and_head(tiny_model_dir, minilm_dir):
    method = compose_train(["method=full"]).method
    model = apply_method(_classifier(tiny_model_dir), method, family="bert")
    expected = {f"roberta.encoder.layer.{i}.{m}.weight" for i in range(2) for m in LAYER_MATRICES}
    assert set(trainable_summary(model)["trainable_names"]) == expected | ROBERTA_HEAD

    bert = apply_method(_classifier(minilm_dir), method, family="bert")  # BertModel -> BERT classifier
    expected = {f"bert.encoder.layer.{i}.{m}.weight" for i in range(6) for m in LAYER_MATRICES}
    names = set(trainable_summary(bert)["trainable_names"])
    assert names == expected | {"classifier.weight", "classifier.bias"}  # pooler, LayerNorm, biases frozen


def test_full_all_but_embeddings(tiny_model_dir):
    method = compose_train(["method=full", "method.trainable=all_but_embeddings"]).method
    model = apply_method(_classifier(tiny_model_dir), method, family="bert")
    for name, p in model.named_parameters():
        assert p.requires_grad == (".embeddings." not in name), name


def test_lora_trains_only_adapters_and_head(minilm_dir):
    method = compose_train(["method=lora", "method.rank=4"]).method
    model = apply_method(_classifier(minilm_dir), method, family="bert")
    names = trainable_summary(model)["trainable_names"]
    lora = [n for n in names if ".lora_A." in n or ".lora_B." in n]
    head = [n for n in names if "classifier.modules_to_save" in n]
    assert sorted(lora + head) == sorted(names)
    assert len(lora) == 6 * 6 * 2 and len(head) == 2
    assert not any("pooler" in n for n in lora)  # BERT's pooler.dense is never LoRA-wrapped
    wrapped = {n.split(".lora_")[0].split("encoder.layer.")[1].split(".", 1)[1] for n in lora}
    assert wrapped == set(LAYER_MATRICES)


@pytest.mark.parametrize("policy, scale", [("2r", 16 / 8), ("rslora", 8 / 8**0.5), ("fixed", 8 / 8)])
def test_merged_weight_is_w0_plus_s_b_a(tiny_model_dir, policy, scale):
    method = compose_train(["method.rank=8", f"method.alpha_policy={policy}"]).method
    base = _classifier(tiny_model_dir)
    w0 = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = apply_method(base, method, family="bert")
    torch.manual_seed(1)
    for n, p in model.named_parameters():  # B starts at 0: give it a value so the merge is non-trivial
        if ".lora_B." in n:
            p.data.normal_()
    key = "roberta.encoder.layer.1.intermediate.dense"
    mod = model.get_submodule(f"base_model.model.{key}")
    a, b = mod.lora_A["default"].weight.detach(), mod.lora_B["default"].weight.detach()
    merged = model.merge_and_unload()
    expected = w0[f"{key}.weight"] + scale * (b @ a)  # (out x r) @ (r x in)
    torch.testing.assert_close(merged.get_parameter(f"{key}.weight"), expected, rtol=1e-5, atol=1e-6)


def test_evaluate_restores_mode(tiny_model_dir):
    import datasets

    model = _classifier(tiny_model_dir)
    tok = load_tokenizer(OmegaConf.create({"source": str(tiny_model_dir), "builder": None}))
    ds = datasets.Dataset.from_list([{"text": "good film", "label": 1}, {"text": "bad", "label": 0}] * 3)
    for mode in (True, False):
        model.train(mode)
        out = evaluate(model, tok, ds, batch_size=4, max_length=16, device="cpu")
        assert model.training is mode and out["n"] == 6 and 0 <= out["accuracy"] <= 1


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_lora_run_artefacts_skip_refuse_reload(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path, "method=lora", "method.rank=4", "optim.checkpoint_every_steps=4")
    final = execute(cfg, progress=False)
    run = run_dir_for(cfg)
    assert run == tmp_path / "runs" / "tiny" / "synth_sentiment" / "lora-r4-a8-all_linear" / "seed42"
    for f in ("config.yaml", "provenance.json", "metrics.jsonl", "final.json", "checkpoint/adapter_model.safetensors",
              "checkpoint/adapter_config.json", "checkpoint/tokenizer.json", "checkpoints/step-4/adapter_model.safetensors",
              "checkpoints/step-8/adapter_model.safetensors"):  # fmt: skip
        assert (run / f).is_file(), f
    required = {"run_id", "model", "base_model", "base_revision", "task", "method", "rank", "alpha", "use_rslora",
                "targets", "lr", "seed", "steps", "eval_accuracy", "num_labels"}  # fmt: skip
    assert required <= set(final)
    assert (final["rank"], final["alpha"], final["steps"], final["lr"]) == (4, 8.0, 8, pytest.approx(3e-4))
    assert final["base_model"] == str(tiny_model_dir)
    events = _events(run)
    assert [e["step"] for e in events if e["event"] == "train"] == [2, 4, 6, 8]
    assert events[-1]["event"] == "eval" and events[-1]["accuracy"] == final["eval_accuracy"]
    assert not list(tmp_path.glob("**/*.pkl")) and not list(run.glob("**/*.bin"))

    # the reloaded adapter reproduces the trained model: same eval loss, merged or not
    model, tok, _ = load_run_model(run, merged=False)
    merged, _, _ = load_run_model(run, merged=True)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    from lora_vs_full.data import load_task

    ds = load_task("synth_sentiment", "eval", max_samples=32, seed=42)
    ev = evaluate(merged, tok, ds, batch_size=32, max_length=32, device="cpu")
    assert ev["loss"] == pytest.approx(final["eval_loss"], abs=1e-5)
    batch = tok(["a wonderful, moving film", "dull and lifeless"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, merged(**batch).logits, rtol=1e-4, atol=1e-5)

    # rerun: skipped, same result; changed config: refused; overwrite=true: replaced
    before = (run / "final.json").read_bytes()
    logs = []
    assert execute(cfg, progress=False, log=logs.append) == final
    assert any("skipping" in line and "same config" in line for line in logs)
    assert (run / "final.json").read_bytes() == before
    changed = _cfg(tiny_model_dir, tmp_path, "method=lora", "method.rank=4", "optim.max_steps=4")
    with pytest.raises(UserError, match=r"different config \(.*optim\.max_steps: 8 -> 4\).*overwrite=true"):
        execute(changed, progress=False)
    changed.overwrite = True
    assert execute(changed, progress=False)["steps"] == 4
    assert not (run / "checkpoints").exists()  # the old run's files went with it


def test_full_run_reload_and_determinism(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path / "a", "method=full", "optim.lr=1e-3")
    final = execute(cfg, progress=False)
    run = run_dir_for(cfg)
    assert (run / "checkpoint" / "model.safetensors").is_file() and final["rank"] is None
    model, tok, _ = load_run_model(run)
    from lora_vs_full.data import load_task

    ds = load_task("synth_sentiment", "eval", max_samples=32, seed=42)
    ev = evaluate(model, tok, ds, batch_size=32, max_length=32, device="cpu")
    assert ev["loss"] == pytest.approx(final["eval_loss"], abs=1e-5)
    # the same config elsewhere gives bit-identical training curves (seeded init, shuffling, dropout)
    cfg_b = _cfg(tiny_model_dir, tmp_path / "b", "method=full", "optim.lr=1e-3")
    final_b = execute(cfg_b, progress=False)

    def curve(run_dir):
        return [{k: v for k, v in e.items() if k != "time"} for e in _events(run_dir)]

    strip, strip_b = curve(run), curve(run_dir_for(cfg_b))
    assert len(strip) >= 5
    assert strip == strip_b and final_b["eval_loss"] == final["eval_loss"]


def test_interrupted_run_is_wiped_and_restarted(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path, "method=full", "optim.max_steps=2")
    run = run_dir_for(cfg)
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"event": "train", "step": 999}\n')
    (run / "stale.txt").write_text("partial")
    logs = []
    execute(cfg, progress=False, log=logs.append)
    assert any("interrupted" in line for line in logs)
    assert not (run / "stale.txt").exists() and all(e["step"] <= 2 for e in _events(run))


def test_missing_tracker_package_is_a_clear_error(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    with pytest.raises(UserError, match=r"tracker=tensorboard needs the tensorboard package"):
        make_tracker("tensorboard", tmp_path)


def test_ranks_above_min_dim_are_allowed_and_reported_saturated(tiny_model_dir):
    from lora_vs_full.models.methods import saturated_targets

    method = compose_train(["method.rank=100"]).method  # tiny: q/k/v/o are 64 x 64, fc1/fc2 64 x 128
    model = apply_method(_classifier(tiny_model_dir), method, family="bert")
    assert len(saturated_targets(model, method, family="bert")) == 2 * 6  # min(d_in, d_out) = 64 < 100
    small = compose_train(["method.rank=8"]).method
    assert saturated_targets(model, small, family="bert") == []


def test_unreachable_model_says_how_to_use_a_local_one(tmp_path):
    from lora_vs_full.models.build import build_classifier

    cfg = OmegaConf.create(
        {"name": "x", "source": "no-such-org/no-such-model", "revision": None, "builder": None}
    )
    with pytest.raises(UserError, match=r"cannot load model 'no-such-org/no-such-model'.*model\.source="):
        build_classifier(cfg, 2)
