"""PEFT variants of LoRA (method=dora|pissa|olora|adalora|vera|loraplus, method.train=B_only).

Known answers: the weights the analysis reads for a saved variant adapter equal PEFT's own
``merge_and_unload`` of the trained in-memory model (for PiSSA/OLoRA that model's base was rewritten to the
residual, so this checks that the saved adapter merges onto the ORIGINAL base); the pretrained side stays
the original W0; B-only training leaves A bit-identical; AdaLoRA's and LoRA+'s training hooks run.
"""

from __future__ import annotations

import pytest
import torch

from lora_vs_full.config import compose_train
from lora_vs_full.errors import UserError
from lora_vs_full.models.build import load_classifier, save_checkpoint
from lora_vs_full.models.methods import apply_method, optimizer_factory, step_hook
from lora_vs_full.runs import execute, method_tag, run_dir_for
from lora_vs_full.weights import open_pair

VARIANTS = ["dora", "pissa", "olora", "adalora", "vera", "loraplus"]


def _method(*overrides):
    return compose_train(list(overrides)).method


def _perturb(model, seed=1):
    """Give every trainable adapter tensor a non-trivial value (B, E, VeRA's b start at 0)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.requires_grad and "classifier" not in name:
            p.data.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("variant", VARIANTS + ["B_only"])
def test_analysed_weights_equal_peft_merge_and_unload(tiny_model_dir, tmp_path, variant):
    overrides = ["method.train=B_only"] if variant == "B_only" else [f"method={variant}"]
    method = _method(*overrides, "method.rank=4", "method.lr=1e-3")
    torch.manual_seed(0)
    base = load_classifier(str(tiny_model_dir), 2)
    w0 = {n: p.detach().clone() for n, p in base.state_dict().items() if n.endswith(".weight")}
    model = apply_method(base, method, family="bert", total_steps=20)
    _perturb(model)
    ckpt = save_checkpoint(model, None, tmp_path / "ckpt")
    if variant == "vera":  # PEFT 0.21's VeRA merge_and_unload fails on the classifier head: its merge() half
        from lora_vs_full.weights.peft_merge import merge_in_place

        expected = {k.replace(".base_layer.", "."): v for k, v in merge_in_place(model).state_dict().items()}
    else:
        expected = model.merge_and_unload().state_dict()
    base_src, tuned_src = open_pair(tiny_model_dir, ckpt)
    mats = base_src.matrices("all_linear")
    assert len(mats) == 12
    for mid, key in mats.items():
        name = f"roberta.{key}" if not key.startswith("roberta.") else key
        got = tuned_src.merge(key, base_src.get(key))
        torch.testing.assert_close(got.float(), expected[name], rtol=0, atol=2e-5)
        torch.testing.assert_close(base_src.get(key), w0[name], rtol=0, atol=0)  # W0: the original base
        assert not torch.allclose(got.float(), w0[name], atol=1e-4), mid.name  # the update is there
    meta = tuned_src.run_meta()
    assert meta["method"] == "lora" and meta["rank"] == (256 if variant == "vera" else 4) or variant == "vera"


def test_dora_merge_matches_its_formula(tiny_model_dir, tmp_path):
    """An independent reference for one matrix: W = m * V / ||V||_col with V = W0 + s B A (s = alpha / r)."""
    torch.manual_seed(0)
    model = apply_method(load_classifier(str(tiny_model_dir), 2), _method("method=dora", "method.rank=4"),
                         family="bert")  # fmt: skip
    _perturb(model)
    ckpt = save_checkpoint(model, None, tmp_path / "ckpt")
    layer = model.get_submodule("base_model.model.roberta.encoder.layer.1.attention.self.query")
    W0, A, B = (
        layer.base_layer.weight.double(),
        layer.lora_A["default"].weight.double(),
        layer.lora_B["default"].weight.double(),
    )
    m = layer.lora_magnitude_vector["default"].weight.double()
    V = W0 + (8 / 4) * B @ A
    ref = (m / V.norm(dim=1)).unsqueeze(1) * V
    base_src, tuned_src = open_pair(tiny_model_dir, ckpt)
    key = next(k for mid, k in base_src.matrices().items() if mid.layer == 1 and mid.module == "q")
    torch.testing.assert_close(tuned_src.get(key), ref, rtol=0, atol=1e-5)


def test_b_only_leaves_a_bit_identical_after_training(tiny_model_dir, tmp_path):
    cfg = compose_train(["debug=smoke", f"model.source={tiny_model_dir}", f"paths.results_dir={tmp_path}",
                         "method=lora", "method.rank=4", "method.train=B_only"])  # fmt: skip
    assert method_tag(cfg.method) == "lora-r4-a8-all_linear-B_only"
    final = execute(cfg, progress=False)
    assert final["train"] == "B_only" and final["variant"] == "lora" and final["steps"] == 8
    from safetensors.torch import load_file

    saved = load_file(str(run_dir_for(cfg) / "checkpoint" / "adapter_model.safetensors"))
    torch.manual_seed(int(cfg.seed))  # the run's initialisation: head, then A
    init = apply_method(load_classifier(str(tiny_model_dir), 2), cfg.method, family="bert")
    init_sd = {k.replace(".default", ""): v for k, v in init.state_dict().items()}
    a_keys = [k for k in saved if ".lora_A." in k]
    b_keys = [k for k in saved if ".lora_B." in k]
    assert len(a_keys) == len(b_keys) == 12
    for k in a_keys:
        assert torch.equal(saved[k], init_sd[k]), k  # bit-identical
    assert all(saved[k].abs().max() > 0 for k in b_keys)  # B trained (it starts at 0)


def test_adalora_and_loraplus_train_through_their_hooks(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    ada = _method("method=adalora", "method.rank=2")
    model = apply_method(load_classifier(str(tiny_model_dir), 2), ada, family="bert", total_steps=10)
    assert step_hook(model, ada) is not None and optimizer_factory(ada) is None
    plus = _method("method=loraplus", "method.rank=2")
    model = apply_method(load_classifier(str(tiny_model_dir), 2), plus, family="bert")
    opt = optimizer_factory(plus)(model, 1e-3)
    lrs = sorted({g["lr"] for g in opt.param_groups if g["params"]})
    assert lrs == [pytest.approx(1e-3), pytest.approx(16e-3)]
    cfg = compose_train(["debug=smoke", f"model.source={tiny_model_dir}", f"paths.results_dir={tmp_path}",
                         "method=adalora", "method.rank=2"])  # fmt: skip
    final = execute(cfg, progress=False)
    assert final["variant"] == "adalora" and final["steps"] == 8
    base_src, tuned_src = open_pair(tiny_model_dir, run_dir_for(cfg))
    assert type(tuned_src).__name__ == "PeftMergedWeights" and tuned_src.run_meta()["rank"] == 2


def test_variant_bad_values_are_one_line_errors(tiny_model_dir):
    from lora_vs_full.config import validate

    with pytest.raises(UserError, match="method.train=B_only does not apply to method.variant=pissa"):
        validate(compose_train(["method=pissa", "method.train=B_only"]))
    with pytest.raises(UserError, match="unknown method.variant='doora'"):
        validate(compose_train(["method.variant=doora"]))
    with pytest.raises(UserError, match="no budgeting phase"):
        apply_method(
            load_classifier(str(tiny_model_dir), 2), _method("method=adalora"), family="bert", total_steps=1
        )
    names = {method_tag(_method(f"method={v}")) for v in VARIANTS} | {method_tag(_method("method=lora"))}
    assert len(names) == len(VARIANTS) + 1  # every variant trains into its own run directory


@pytest.mark.slow  # composes every offline run (~10 s); the preset schema test in test_reproduce.py stays fast
def test_sweep_presets_compose_as_valid_train_configs():
    from lora_vs_full.config import validate
    from lora_vs_full.reproduce import common, variants

    for figure in ("alpha", "variants", "bonly", "datasize"):
        for preset in ("offline", "paper"):
            cfg = common.load_preset(f"{figure}_{preset}", schema=variants.SweepPreset)
            plan = variants.plan(cfg, "/data")
            n_x = max(1, len(cfg.x_values))
            assert len(plan) == len(cfg.data_tasks) * (len(cfg.groups) * n_x + int(cfg.full)) * len(cfg.seeds)
            if preset == "offline":  # (composing all 78 paper runs would take seconds)
                cfgs = [compose_train(p["overrides"]) for p in plan]
                for c in cfgs:
                    validate(c)
                assert len({str(run_dir_for(c)) for c in cfgs}) == len(plan)  # one run directory per run
    with pytest.raises(UserError, match="seeds"):
        variants.plan(common.load_preset("bonly_offline", ["seeds=[]"], schema=variants.SweepPreset), None)
