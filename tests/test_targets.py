import re

import pytest

from lora_vs_full.errors import UserError
from lora_vs_full.models.targets import (
    MatrixId,
    family,
    parse_weight_name,
    peft_target_regex,
    select_matrices,
)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("roberta.encoder.layer.3.attention.self.query.weight", MatrixId(3, "q")),
        ("encoder.layer.0.attention.self.key.weight", MatrixId(0, "k")),
        ("bert.encoder.layer.5.attention.self.value.weight", MatrixId(5, "v")),
        ("roberta.encoder.layer.3.attention.output.dense.weight", MatrixId(3, "o")),
        ("roberta.encoder.layer.3.intermediate.dense.weight", MatrixId(3, "fc1")),
        ("roberta.encoder.layer.3.output.dense.weight", MatrixId(3, "fc2")),
        ("pooler.dense.weight", None),
        ("classifier.dense.weight", None),
        ("roberta.encoder.layer.3.output.dense.bias", None),
        ("roberta.encoder.layer.3.output.LayerNorm.weight", None),
        ("roberta.embeddings.word_embeddings.weight", None),
    ],
)
def test_bert_names(name, expected):
    assert parse_weight_name(name, "bert") == expected


def test_llama_names_and_presets():
    assert parse_weight_name("model.layers.31.mlp.down_proj.weight", "llama") == MatrixId(31, "down")
    assert parse_weight_name("model.layers.2.self_attn.k_proj.weight", "llama", "qv_only") is None
    assert parse_weight_name("lm_head.weight", "llama") is None


def test_select_counts_roberta_base_layout():
    names = [
        f"roberta.encoder.layer.{i}.{m}.weight"
        for i in range(12)
        for m in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        )
    ] + ["roberta.pooler.dense.weight", "classifier.out_proj.weight"]
    assert len(select_matrices(names, "bert")) == 72  # the paper's 72 matrices
    assert len(select_matrices(names, "bert", "qv_only")) == 24
    assert len(select_matrices(names, "bert", "mlp_only")) == 24


def test_peft_regex_skips_pooler():
    rx = peft_target_regex("bert", "all_linear")
    assert re.fullmatch(rx, "bert.encoder.layer.0.output.dense")
    assert re.fullmatch(rx, "bert.encoder.layer.0.attention.output.dense")
    assert not re.fullmatch(rx, "bert.pooler.dense")
    assert not re.fullmatch(rx, "classifier")


def test_unknown_family_and_preset_are_user_errors():
    with pytest.raises(UserError, match="unsupported model_type"):
        family("gpt2")
    with pytest.raises(UserError, match="unknown target preset"):
        parse_weight_name("encoder.layer.0.attention.self.query.weight", "bert", "everything")
