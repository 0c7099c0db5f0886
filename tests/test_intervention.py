"""Intruder scaling intervention: planted rank-one spikes with known answers (pure tensors, CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lora_vs_full.errors import UserError
from lora_vs_full.forgetting.intervention import (
    WeightPatcher,
    check_lambdas,
    plan_scaling,
    scaled_weight,
    sweep,
)
from lora_vs_full.spectral.intruders import max_abs_cos
from lora_vs_full.spectral.svd import thin_svd

K, EPS = 10, 0.5


def _base(m=48, n=32, seed=0):
    """W0 with a decaying spectrum, float64: U0 diag(s) V0^T."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    s = torch.linspace(10, 1, n, dtype=torch.float64)
    return U[:, :n] @ torch.diag(s) @ V.T, U, V


def _spiked(scale=20.0, seed=0):
    """W_t = W0 + scale * u v^T with u orthogonal to W0's column space: exactly one intruder, the top one."""
    W0, U, V = _base(seed=seed)
    # u is outside span(U0[:, :32]); v is W0's weakest right vector, so W_t's top left vector is ~u
    u, v = U[:, -1], V[:, -1]
    return W0, W0 + scale * torch.outer(u, v), u


def _intruders(W0, W):
    m = max_abs_cos(thin_svd(W).U, thin_svd(W0).U, K)
    return (m < EPS).nonzero().flatten().tolist()


def test_planted_spike_is_found_and_lambda_zero_removes_it():
    W0, Wt, u = _spiked()
    assert _intruders(W0, Wt) == [0]  # the spike is the top singular vector and an intruder
    plan = plan_scaling(W0, Wt, k=K, epsilon=EPS, mode="top1", device="cpu")
    assert plan.intruders == [0] and plan.max_cos[0] < 0.1
    # the component is (to rounding) exactly the planted rank-one update: sigma u v^T of W_t
    assert torch.linalg.matrix_rank(plan.intruder).item() == 1
    W_removed = scaled_weight(Wt, plan.intruder, 0.0)
    assert _intruders(W0, W_removed) == []
    assert abs(float(u @ thin_svd(W_removed).U[:, 0])) < EPS
    assert torch.equal(scaled_weight(Wt, plan.intruder, 1.0), Wt)  # lambda = 1 is W_t exactly
    W2 = scaled_weight(Wt, plan.intruder, 2.0)
    assert float(thin_svd(W2).S[0]) == pytest.approx(2 * float(thin_svd(Wt).S[0]), rel=1e-9)


def test_negated_spike_is_found_and_removed_alike():
    W0, Wt, _ = _spiked()
    Wneg = 2 * W0 - Wt  # W0 - spike: only signs differ, the |cos| test must not care
    a = plan_scaling(W0, Wt, k=K, epsilon=EPS, device="cpu")
    b = plan_scaling(W0, Wneg, k=K, epsilon=EPS, device="cpu")
    assert a.intruders == b.intruders == [0] and a.max_cos == pytest.approx(b.max_cos, abs=1e-12)
    assert _intruders(W0, scaled_weight(Wneg, b.intruder, 0.0)) == []


def test_neighbour_control_scales_the_pretrained_neighbour_not_the_intruder():
    W0, Wt, u = _spiked()
    plan = plan_scaling(W0, Wt, k=K, epsilon=EPS, control="neighbour", device="cpu")
    base = thin_svd(W0)
    i = plan.neighbours[0]
    assert i == int((thin_svd(Wt).U[:, 0] @ base.U).abs().argmax())  # definition: argmax_i |<u_t, u0_i>|
    expected = base.S[i] * torch.outer(base.U[:, i], base.Vh[i])
    assert torch.allclose(plan.control, expected, atol=1e-12)
    # a different direction: the control's column space is (nearly) orthogonal to the intruder
    u_ctl = torch.linalg.svd(plan.control).U[:, 0]
    assert abs(float(u_ctl @ u)) < 0.1
    W_ctl = scaled_weight(Wt, plan.control, 0.0)
    assert _intruders(W0, W_ctl) == [0]  # the intruder survives the control


def test_size_matched_control_has_the_intruders_sigma():
    """Known matrix: W0 (12 x 8) has singular values 20, 12, 6.01, 3, 1, 0.5, 0.3, 0.01; a spike of 6 along a
    left direction outside W0's column space (on W0's weakest right vector) is the one intruder, sigma
    sqrt(36 + 0.01^2). The control must be W_t's non-intruder direction of sigma 6.01 (nearest), not the top."""
    g = torch.Generator().manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    s0 = torch.tensor([20.0, 12.0, 6.01, 3.0, 1.0, 0.5, 0.3, 0.01], dtype=torch.float64)
    W0 = U[:, :8] @ torch.diag(s0) @ V.T
    Wt = W0 + 6.0 * torch.outer(U[:, 10], V[:, 7])
    plan = plan_scaling(W0, Wt, k=K, epsilon=EPS, device="cpu")
    assert plan.intruder_sigma == pytest.approx([6.0], abs=1e-4)
    assert plan.control_sigma == pytest.approx(plan.intruder_sigma, abs=0.011)  # 6.01 vs 6.00
    assert torch.linalg.matrix_norm(plan.control, ord=2) == pytest.approx(6.01, abs=1e-9)
    u_ctl = torch.linalg.svd(plan.control).U[:, 0]
    assert abs(float(u_ctl @ U[:, 2])) == pytest.approx(1.0, abs=1e-9)  # the pretrained 6.01 direction
    # the control leaves the intruder in place and shrinks the matched direction by lambda
    S = torch.linalg.svdvals(scaled_weight(Wt, plan.control, 0.5))
    assert sorted(S[:5].tolist(), reverse=True) == pytest.approx([20.0, 12.0, 6.0, 3.005, 3.0], abs=1e-4)
    # the old control scaled W0's own neighbour, whatever its size
    old = plan_scaling(W0, Wt, k=K, epsilon=EPS, control="neighbour", device="cpu")
    assert old.neighbours and min(abs(old.control_sigma[0] - x) for x in s0.tolist()) < 1e-9
    with pytest.raises(UserError, match="control='other'"):
        plan_scaling(W0, Wt, control="other")


def test_mode_all_scales_every_intruder_and_no_intruder_means_no_plan():
    W0, U, V = _base()
    Wt = W0 + 20 * torch.outer(U[:, -1], V[:, -1]) + 15 * torch.outer(U[:, -2], V[:, -2])
    top1 = plan_scaling(W0, Wt, k=K, epsilon=EPS, mode="top1", device="cpu")
    both = plan_scaling(W0, Wt, k=K, epsilon=EPS, mode="all", device="cpu")
    assert top1.intruders == [0] and both.intruders == [0, 1]
    assert _intruders(W0, scaled_weight(Wt, both.intruder, 0.0)) == []
    assert _intruders(W0, scaled_weight(Wt, top1.intruder, 0.0)) == [0]  # the second spike becomes the top
    none = plan_scaling(W0, W0 + 1e-3 * torch.randn(W0.shape, dtype=torch.float64), k=K, epsilon=EPS)
    assert none.intruder is None and none.intruders == []


def test_patcher_and_sweep_restore_and_report_relative_changes():
    W0, Wt, _ = _spiked()
    lin = nn.Linear(Wt.shape[1], Wt.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(Wt.float())
    plans = {"m": plan_scaling(W0, Wt, k=K, epsilon=EPS, device="cpu")}
    patcher = WeightPatcher({"m": lin.weight}, plans)
    original = lin.weight.detach().clone()

    def measure():  # a stand-in: "accuracy" and "pseudo-loss" grow with the top singular value
        s = float(torch.linalg.matrix_norm(lin.weight.detach().double(), ord=2))
        return {"accuracy": s / 100, "pseudo_loss": 1.0 + s / 10}

    rows = sweep(patcher, [0.0, 0.5, 1.0, 2.0], measure, base_pseudo_loss=1.0)
    assert torch.equal(lin.weight, original)  # restored to W_t
    by = {(r["condition"], r["lambda"]): r for r in rows}
    assert len(rows) == 8
    s1 = float(thin_svd(Wt).S[0])
    assert by["intruder", 1.0]["forgetting"] == pytest.approx(s1 / 10, rel=1e-5)
    assert (
        by["intruder", 1.0]["accuracy_change_pct"] == 0 and by["control", 1.0]["forgetting_change_pct"] == 0
    )
    assert by["intruder", 2.0]["forgetting_change_pct"] == pytest.approx(100, rel=1e-4)  # sigma doubles
    assert by["intruder", 0.0]["forgetting"] < by["control", 0.0]["forgetting"]


def test_bad_inputs():
    with pytest.raises(UserError, match=r"lambda must be >= 0.*\[-0.5\]"):
        check_lambdas([1.0, -0.5])
    with pytest.raises(UserError, match="lambdas is empty"):
        check_lambdas([])
    W0, Wt, _ = _spiked()
    with pytest.raises(UserError, match="mode='top3'"):
        plan_scaling(W0, Wt, mode="top3")
    with pytest.raises(UserError, match="differ in shape"):
        plan_scaling(W0, Wt[:, :-1])


def test_peft_reduce_keeps_the_trained_classifier_head(tiny_model_dir):
    """PEFT's reduce_intruder_dimension alone re-initialises modules_to_save heads; our wrapper keeps them."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from peft.utils import ModulesToSaveWrapper
    from transformers import AutoModelForSequenceClassification

    from lora_vs_full.forgetting.intervention import peft_reduce_keeping_heads

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    model = get_peft_model(
        base, LoraConfig(task_type=TaskType.SEQ_CLS, r=2, target_modules=["query", "value"])
    )
    heads = [m for m in model.modules() if isinstance(m, ModulesToSaveWrapper)]
    assert heads
    for h in heads:  # "train" the head: it now differs from the base copy PEFT would start from
        for p in h.modules_to_save["default"].parameters():
            p.data.add_(torch.randn_like(p))
    peft_reduce_keeping_heads(model)
    assert model.active_adapter == "intruder_reduced"
    for h in heads:
        trained = h.modules_to_save["default"].state_dict()
        kept = h.modules_to_save["intruder_reduced"].state_dict()
        assert all(torch.equal(trained[k], kept[k]) for k in trained)
