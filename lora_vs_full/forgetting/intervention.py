"""Intruder scaling intervention (paper v3 section 5, Table 3) as tensor functions plus a sweep driver.

For one analysed matrix with pretrained W0 and fine-tuned W_t = W0 + dW (LoRA merged), both (d_out, d_in):

* decompose W_t = U_t diag(S_t) Vh_t (thin SVD) and find its intruders among the top-k left vectors against
  ALL of W0's left vectors at epsilon (``lora_vs_full.spectral``: m_j = max_i |<u_t[j], u0[i]>| < eps);
* target component D = sum over the chosen intruders j of S_t[j] u_t[j] v_t[j]^T (mode ``"top1"``: only the
  intruder with the largest singular value; ``"all"``: every intruder among the top-k);
* control component C = sum over the DISTINCT pretrained neighbours i*(j) = argmax_i |<u_t[j], u0[i]>| of the
  chosen intruders of S0[i*] u0[i*] v0[i*]^T -- the pretrained direction the intruder is most similar to,
  taken from W0's own SVD (so the control has the same "is it the most aligned direction" definition as the
  intruder test, but scales a direction that pre-training put there);
* scaled weight W(lambda) = W_t + (lambda - 1) * D (or * C for the control). lambda = 1 is W_t exactly,
  lambda = 0 removes the component, lambda > 1 amplifies it. Matrices without intruders are left unchanged.

Forgetting (as in the paper's Table 3) = pseudo_loss(model) - pseudo_loss(untouched base); the sweep reports
accuracy and forgetting per lambda and their % change relative to lambda = 1:
``100 * (x(lambda) - x(1)) / x(1)`` (NaN when x(1) is 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lora_vs_full.errors import UserError
from lora_vs_full.spectral.intruders import intruder_mask, max_abs_cos
from lora_vs_full.spectral.svd import thin_svd

MODES = ("top1", "all")
CONDITIONS = ("intruder", "control")
DEFAULT_LAMBDAS = (0.0, 0.25, 0.5, 0.7, 0.9, 1.0, 1.5, 2.0)


@dataclass
class ScalingPlan:
    """What one matrix's intervention scales: components D (intruder) and C (control), float64 (d_out, d_in)."""

    intruders: list[int]  # indices j into W_t's singular vectors that are scaled
    neighbours: list[int]  # distinct pretrained indices i* scaled by the control
    max_cos: list[float]  # m_j of the scaled intruders
    intruder: Tensor | None  # D, None when the matrix has no intruder among the top-k
    control: Tensor | None  # C

    def component(self, condition: str) -> Tensor | None:
        return self.intruder if condition == "intruder" else self.control


def check_lambdas(lambdas: Sequence[float]) -> list[float]:
    lams = [float(x) for x in lambdas]
    if not lams:
        raise UserError("lambdas is empty; pass e.g. lambdas=[0,0.25,0.5,0.7,0.9,1,1.5,2]")
    bad = [x for x in lams if not math.isfinite(x) or x < 0]
    if bad:
        raise UserError(f"lambda must be >= 0 (0 removes the intruder, 1 leaves it), got {bad}")
    return lams


def plan_scaling(
    W0: Tensor, Wt: Tensor, *, k: int = 10, epsilon: float = 0.5, mode: str = "top1", device=None
) -> ScalingPlan:
    """Find the intruders of Wt against W0 and build the target and control components (module docstring)."""
    if mode not in MODES:
        raise UserError(f"mode={mode!r} is not supported; use one of {MODES}")
    if W0.shape != Wt.shape:
        raise UserError(
            f"W0 {tuple(W0.shape)} and W_t {tuple(Wt.shape)} differ in shape; pair the same matrix"
        )
    if k < 1 or not 0 < epsilon <= 1:
        raise UserError(f"need k >= 1 and 0 < epsilon <= 1, got k={k}, epsilon={epsilon}")
    base, tuned = thin_svd(W0, device=device), thin_svd(Wt, device=device)  # float64, on the CPU
    cos = (tuned.U[:, :k].T @ base.U).abs()  # (k, r0): |<u_t[j], u0[i]>|
    m = max_abs_cos(tuned.U, base.U, k)
    chosen = torch.nonzero(intruder_mask(m, k, epsilon)).flatten().tolist()
    if mode == "top1":
        chosen = chosen[:1]  # vectors are ordered by singular value: the first intruder is the top one
    if not chosen:
        return ScalingPlan([], [], [], None, None)
    neighbours = list(dict.fromkeys(int(cos[j].argmax()) for j in chosen))  # distinct, first-seen order
    D = sum(tuned.S[j] * torch.outer(tuned.U[:, j], tuned.Vh[j]) for j in chosen)
    C = sum(base.S[i] * torch.outer(base.U[:, i], base.Vh[i]) for i in neighbours)
    return ScalingPlan(chosen, neighbours, [float(m[j]) for j in chosen], D, C)


def scaled_weight(Wt: Tensor, component: Tensor | None, lam: float) -> Tensor:
    """W_t + (lam - 1) * component, computed in float64 and returned in W_t's dtype and device."""
    if component is None or lam == 1.0:
        return Wt.clone()
    out = Wt.detach().double() + (lam - 1.0) * component.to(Wt.device)
    return out.to(Wt.dtype)


def plan_model(
    base_weights: Mapping[str, Tensor],
    tuned: Mapping[str, Tensor],
    *,
    k: int,
    epsilon: float,
    mode: str,
    device=None,
) -> dict[str, ScalingPlan]:
    """Plans for matrices paired by canonical id: ``{tuned param name: ScalingPlan}`` (only those with intruders).

    ``base_weights`` / ``tuned``: ``{canonical matrix name or param name: W}``; pairing is by equal key, so map
    both through ``lora_vs_full.models.targets.select_matrices`` first.
    """
    plans = {}
    for name, Wt in tuned.items():
        if name not in base_weights:
            raise UserError(
                f"matrix {name} of the fine-tuned model has no pretrained counterpart; check base_model"
            )
        plan = plan_scaling(base_weights[name], Wt, k=k, epsilon=epsilon, mode=mode, device=device)
        if plan.intruder is not None:
            plans[name] = plan
    return plans


class WeightPatcher:
    """Sets ``W(lambda)`` into a model's parameters in place and restores the originals.

    ``params``: ``{plan key: the nn.Parameter (d_out, d_in) of that matrix in the model}``.
    """

    def __init__(self, params: Mapping[str, nn.Parameter], plans: Mapping[str, ScalingPlan]):
        self.params = dict(params)
        self.plans = dict(plans)
        self.original = {key: self.params[key].detach().clone() for key in self.plans}

    @torch.no_grad()
    def apply(self, lam: float, condition: str) -> None:
        for key, plan in self.plans.items():
            self.params[key].copy_(scaled_weight(self.original[key], plan.component(condition), lam))

    @torch.no_grad()
    def restore(self) -> None:
        for key, W in self.original.items():
            self.params[key].copy_(W)


def pct_change(x: float, ref: float) -> float:
    return math.nan if ref == 0 or not math.isfinite(ref) else 100.0 * (x - ref) / ref


def sweep(
    patcher: WeightPatcher,
    lambdas: Sequence[float],
    measure: Callable[[], dict],
    *,
    base_pseudo_loss: float,
    conditions: Sequence[str] = CONDITIONS,
) -> list[dict]:
    """Measure every (condition, lambda); rows with accuracy, pseudo_loss, forgetting and % changes vs lambda=1.

    ``measure()`` evaluates the model as currently patched: ``{"accuracy": float, "pseudo_loss": float}``.
    lambda = 1 (the unmodified fine-tune) is measured once and shared by the conditions. The model is
    restored to W_t afterwards, also on error.
    """
    lams = check_lambdas(lambdas)
    results: dict[tuple[str, float], dict] = {}
    try:
        patcher.restore()
        reference = measure()
        for cond in conditions:
            if cond not in CONDITIONS:
                raise UserError(f"condition {cond!r} unknown; use {CONDITIONS}")
            for lam in lams:
                if lam == 1.0 or not patcher.plans:  # nothing to scale: every lambda is W_t
                    results[cond, lam] = reference
                    continue
                patcher.apply(lam, cond)
                results[cond, lam] = measure()
    finally:
        patcher.restore()
    f_ref = reference["pseudo_loss"] - base_pseudo_loss
    rows = []
    for (cond, lam), r in results.items():
        forgetting = r["pseudo_loss"] - base_pseudo_loss
        rows.append(
            {
                "condition": cond,
                "lambda": lam,
                "accuracy": r["accuracy"],
                "pseudo_loss": r["pseudo_loss"],
                "forgetting": forgetting,
                "accuracy_change_pct": pct_change(r["accuracy"], reference["accuracy"]),
                "forgetting_change_pct": pct_change(forgetting, f_ref),
            }
        )
    return rows


def peft_reduce_keeping_heads(peft_model, adapter: str = "default", new: str = "intruder_reduced") -> None:
    """PEFT's ``reduce_intruder_dimension`` at its defaults, keeping the trained classifier head.

    PEFT (0.21) builds the mitigated adapter with ``add_adapter``, which gives every ``modules_to_save``
    module (a SEQ_CLS model's classifier) a fresh copy of the *untrained* base head -- measured here: SST-2
    accuracy fell to 0.27. The head is not part of the intervention, so copy the trained one across.
    """
    from peft.tuners.lora.intruders import reduce_intruder_dimension
    from peft.utils import ModulesToSaveWrapper

    reduce_intruder_dimension(peft_model, old_adapter_name=adapter, new_adapter_name=new, logging_sink=None)
    for module in peft_model.modules():
        if isinstance(module, ModulesToSaveWrapper) and new in module.modules_to_save:
            module.modules_to_save[new].load_state_dict(module.modules_to_save[adapter].state_dict())
