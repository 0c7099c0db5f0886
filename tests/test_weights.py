"""Weight sources: the LoRA merge against PEFT's own, sharded/legacy/corrupt checkpoints, pair resolution."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lora_vs_full.errors import UserError
from lora_vs_full.models.targets import parse_weight_name, peft_target_regex
from lora_vs_full.weights import AdapterWeights, HFWeights, open_model, open_pair


def make_lora(
    base_dir: Path, *, seed: int = 0, b_std: float = 0.1, preset: str = "all_linear", **lora_kwargs
):
    """A PEFT LoRA model on the tiny base with random NON-zero B (PEFT initialises B = 0, which would
    make every merge trivially equal to the base)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2)
    cfg = dict(r=4, lora_alpha=8, target_modules=peft_target_regex("bert", preset), task_type="SEQ_CLS")
    peft_model = get_peft_model(model, LoraConfig(**{**cfg, **lora_kwargs}))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, b_std)
    return peft_model


def save_adapter(peft_model, out: Path) -> Path:
    peft_model.save_pretrained(out)
    return out


def merged_reference(peft_model) -> dict:
    """PEFT's merge_and_unload, keyed by MatrixId."""
    merged = peft_model.merge_and_unload()
    return {
        mid: t.detach().clone()
        for k, t in merged.state_dict().items()
        if (mid := parse_weight_name(k, "bert")) is not None
    }


@pytest.mark.parametrize(
    "lora_kwargs",
    [
        {},
        {"use_rslora": True, "r": 8, "lora_alpha": 4},
        {
            "rank_pattern": {"layer.0.attention.self.query": 2, "intermediate.dense": 6},
            "alpha_pattern": {"value": 3, "layer.1.output.dense": 20},
        },
    ],
    ids=["plain", "rslora", "patterns"],
)
def test_adapter_merge_equals_peft_merge(tiny_model_dir, tmp_path, lora_kwargs):
    pm = make_lora(tiny_model_dir, **lora_kwargs)
    adapter_dir = save_adapter(pm, tmp_path / "adapter")
    ref = merged_reference(pm)
    base = HFWeights(tiny_model_dir)
    src = AdapterWeights(base, adapter_dir)
    assert len(src.lora_matrices()) == 12 == len(ref)
    for mid, key in src.matrices().items():
        W = src.get(key)
        assert W.dtype == torch.float64
        torch.testing.assert_close(W, ref[mid].to(torch.float64), atol=1e-6, rtol=0)
        assert (W - base.get(key).double()).abs().max() > 1e-3  # the update is really there


def test_patterns_use_pattern_rank_and_alpha(tiny_model_dir, tmp_path):
    pm = make_lora(
        tiny_model_dir, rank_pattern={"layer.0.attention.self.query": 2}, alpha_pattern={"value": 3}
    )
    src = AdapterWeights(HFWeights(tiny_model_dir), save_adapter(pm, tmp_path / "a"))
    scal = {m.name: src.scaling(m) for m in src.lora_matrices()}
    assert scal["layer0.q"] == 8 / 2 and scal["layer1.q"] == 8 / 4
    assert scal["layer0.v"] == scal["layer1.v"] == 3 / 4 and scal["layer0.k"] == 2.0


def test_untouched_matrices_equal_base(tiny_model_dir, tmp_path):
    pm = make_lora(tiny_model_dir, preset="qv_only")
    base = HFWeights(tiny_model_dir)
    src = AdapterWeights(base, save_adapter(pm, tmp_path / "a"))
    assert sorted(m.module for m in src.lora_matrices()) == ["q", "q", "v", "v"]
    for mid, key in src.matrices().items():
        same = torch.equal(src.get(key), base.get(key))
        assert same == (mid.module not in ("q", "v")), mid


def _edit_config(adapter: Path, **changes) -> None:
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg.update(changes)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"use_dora": True}, "use_dora"),
        ({"init_lora_weights": "pissa"}, "pissa"),
        ({"peft_type": "IA3"}, "IA3"),
    ],
)
def test_non_plain_adapters_refused(tiny_model_dir, tmp_path, changes, match):
    adapter = save_adapter(make_lora(tiny_model_dir), tmp_path / "a")
    _edit_config(adapter, **changes)
    with pytest.raises(UserError, match=match):  # the streaming merge refuses them (open_pair routes
        AdapterWeights(HFWeights(tiny_model_dir), adapter)  # DoRA/PiSSA to PEFT's merge: test_variants.py)


def test_open_pair_warns_on_other_base_name_and_refuses_shape_mismatch(tiny_model_dir, tmp_path, caplog):
    from transformers import RobertaConfig, RobertaForMaskedLM

    adapter = save_adapter(make_lora(tiny_model_dir), tmp_path / "a")
    moved = shutil.copytree(tiny_model_dir, tmp_path / "moved-base")  # same weights, another path
    with caplog.at_level(logging.WARNING, logger="lora_vs_full.weights.resolve"):
        base_src, tuned_src = open_pair(moved, adapter)
    assert any("trained on" in r.message and str(moved) in r.message for r in caplog.records)
    assert base_src.identity == HFWeights(tiny_model_dir).identity  # content fingerprint, not path

    small = RobertaForMaskedLM(
        RobertaConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        )
    )
    small.save_pretrained(tmp_path / "small")
    with pytest.raises(UserError, match="does not fit base"):
        open_pair(tmp_path / "small", adapter)


def _write_sharded(d: Path, tensors: dict, n_shards: int, model_type: str = "roberta") -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": model_type}))
    keys = sorted(tensors)
    weight_map = {}
    for i in range(n_shards):
        name = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: tensors[k] for k in keys[i::n_shards]}
        save_file(part, str(d / name))
        weight_map.update(dict.fromkeys(part, name))
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return d


def test_sharded_and_legacy_bin_read_the_same_tensors(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    sd = load_file(str(tiny_model_dir / "model.safetensors"))
    single = HFWeights(tiny_model_dir)
    sharded = HFWeights(_write_sharded(tmp_path / "sharded", sd, 3))
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(tiny_model_dir / "config.json", legacy / "config.json")
    torch.save(sd, legacy / "pytorch_model.bin")
    legacy_src = HFWeights(legacy)
    assert single.matrices() == sharded.matrices() == legacy_src.matrices()
    assert len(single.matrices()) == 12
    for key in single.matrices().values():
        assert torch.equal(single.get(key), sharded.get(key))
        assert torch.equal(single.get(key), legacy_src.get(key))


def test_identity_is_a_content_fingerprint(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    sd = load_file(str(tiny_model_dir / "model.safetensors"))
    a = HFWeights(_write_sharded(tmp_path / "a", sd, 2)).identity
    assert HFWeights(_write_sharded(tmp_path / "b", sd, 2)).identity == a  # same content, other path
    key = "roberta.encoder.layer.1.output.dense.weight"
    sd[key] = sd[key].clone()
    sd[key][0, 0] += 1.0  # one value, same shapes: the headers alone would not notice
    assert HFWeights(_write_sharded(tmp_path / "c", sd, 2)).identity != a


def test_truncated_safetensors_is_a_user_error(tiny_model_dir, tmp_path):
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    f = broken / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(UserError, match=r"model\.safetensors.*re-download"):
        open_model(broken)


def test_minilm_bertmodel_keys_map_to_canonical_matrices(minilm_dir):
    src = open_model(minilm_dir)
    mats = src.matrices()
    assert src.model_type == "bert" and len(mats) == 36  # 6 layers x q,k,v,o,fc1,fc2; pooler excluded
    assert all(not k.startswith("pooler") for k in mats.values())


def test_run_dir_resolves_to_checkpoint(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "checkpoint")
    (run / "final.json").write_text("{}")
    assert open_model(run).dir == run / "checkpoint"


def test_missing_path_and_offline_hub_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="no such directory"):
        open_model("/definitely/not/here")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE=0"):
        open_model("nobody-xyz/not-a-model-abc")
