"""Intruder scaling intervention (paper v3 section 5, Table 3) as tensor functions plus a sweep driver.

For one analysed matrix with pretrained W0 and fine-tuned W_t = W0 + dW (LoRA merged), both (d_out, d_in):

* decompose W_t = U_t diag(S_t) Vh_t (thin SVD) and find its intruders among the top-k left vectors against
  ALL of W0's left vectors at epsilon (``lora_vs_full.spectral``: m_j = max_i |<u_t[j], u0[i]>| < eps);
* target component D = sum over the chosen intruders j of S_t[j] u_t[j] v_t[j]^T (mode ``"top1"``: only the
  intruder with the largest singular value; ``"all"``: every intruder among the top-k);
* control component C, ``control="size_matched"`` (default): for every chosen intruder j, the NON-intruder
  direction i of W_t (m_i >= epsilon, searched over all of W_t's vectors, each used once) whose singular
  value is nearest S_t[j]: C = sum S_t[i] u_t[i] v_t[i]^T. Scaled by the same lambda it removes a
  perturbation of the same spectral size as the intruder's, so "the control does not reduce forgetting"
  compares like with like. ``control="neighbour"`` (the earlier control): the DISTINCT pretrained neighbours
  i*(j) = argmax_i |<u_t[j], u0[i]>|, C = sum S0[i*] u0[i*] v0[i*]^T -- a different size (e.g. 7.35 vs 109);
* scaled weight W(lambda) = W_t + (lambda - 1) * D (or * C for the control). lambda = 1 is W_t exactly,
  lambda = 0 removes the component, lambda > 1 amplifies it. Matrices without intruders are left unchanged.

Forgetting (as in the paper's Table 3) = pseudo_loss(model) - pseudo_loss(untouched base); the sweep reports
accuracy and forgetting per lambda and their % change relative to lambda = 1:
``100 * (x(lambda) - x(1)) / x(1)`` (NaN when x(1) is 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lora_vs_full.errors import UserError
from lora_vs_full.spectral.intruders import intruder_mask, max_abs_cos
from lora_vs_full.spectral.svd import thin_svd

MODES = ("top1", "all")
CONTROLS = ("size_matched", "neighbour")
CONDITIONS = ("intruder", "control")
DEFAULT_LAMBDAS = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)  # the paper's Table 3 grid, lambda = 1 the reference


@dataclass
class ScalingPlan:
    """What one matrix's intervention scales: components D (intruder) and C (control), float64 (d_out, d_in)."""

    intruders: list[int]  # indices j into W_t's singular vectors that are scaled
    neighbours: list[int]  # control directions: W_t indices (size_matched) or W0 indices i* (neighbour)
    max_cos: list[float]  # m_j of the scaled intruders
    intruder: Tensor | None  # D, None when the matrix has no intruder among the top-k
    control: Tensor | None  # C
    intruder_sigma: list[float] = field(default_factory=list)  # S_t[j] of the scaled intruders
    control_sigma: list[float] = field(default_factory=list)  # singular values of the control directions

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
    W0: Tensor,
    Wt: Tensor,
    *,
    k: int = 10,
    epsilon: float = 0.5,
    mode: str = "top1",
    control: str = "size_matched",
    device=None,
) -> ScalingPlan:
    """Find the intruders of Wt against W0 and build the target and control components (module docstring)."""
    if mode not in MODES:
        raise UserError(f"mode={mode!r} is not supported; use one of {MODES}")
    if control not in CONTROLS:
        raise UserError(f"control={control!r} is not supported; use one of {CONTROLS}")
    if W0.shape != Wt.shape:
        raise UserError(
            f"W0 {tuple(W0.shape)} and W_t {tuple(Wt.shape)} differ in shape; pair the same matrix"
        )
    if k < 1 or not 0 < epsilon <= 1:
        raise UserError(f"need k >= 1 and 0 < epsilon <= 1, got k={k}, epsilon={epsilon}")
    base, tuned = thin_svd(W0, device=device), thin_svd(Wt, device=device)  # float64, on the CPU
    m_all = max_abs_cos(
        tuned.U, base.U
    )  # (r_t,) for every tuned vector: the non-intruder pool needs them all
    m = m_all[:k]
    chosen = torch.nonzero(intruder_mask(m, k, epsilon)).flatten().tolist()
    if mode == "top1":
        chosen = chosen[:1]  # vectors are ordered by singular value: the first intruder is the top one
    if not chosen:
        return ScalingPlan([], [], [], None, None)
    D = sum(tuned.S[j] * torch.outer(tuned.U[:, j], tuned.Vh[j]) for j in chosen)
    if control == "size_matched":
        pool = [i for i in range(len(m_all)) if m_all[i] >= epsilon]
        picked: list[int] = []
        for j in chosen:
            free = [i for i in pool if i not in picked]
            if not free:
                raise UserError("W_t has no non-intruder direction left for the size-matched control")
            picked.append(min(free, key=lambda i: (abs(float(tuned.S[i] - tuned.S[j])), i)))
        C = sum(tuned.S[i] * torch.outer(tuned.U[:, i], tuned.Vh[i]) for i in picked)
        c_sigma = [float(tuned.S[i]) for i in picked]
    else:
        cos = (tuned.U[:, :k].T @ base.U).abs()  # (k, r0): |<u_t[j], u0[i]>|
        picked = list(dict.fromkeys(int(cos[j].argmax()) for j in chosen))  # distinct, first-seen order
        C = sum(base.S[i] * torch.outer(base.U[:, i], base.Vh[i]) for i in picked)
        c_sigma = [float(base.S[i]) for i in picked]
    return ScalingPlan(
        chosen, picked, [float(m[j]) for j in chosen], D, C, [float(tuned.S[j]) for j in chosen], c_sigma
    )


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
    control: str = "size_matched",
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
        plan = plan_scaling(
            base_weights[name], Wt, k=k, epsilon=epsilon, mode=mode, control=control, device=device
        )
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


def ratio_bootstrap(num, den, *, n_resamples: int = 2000, seed: int = 0, level: float = 0.95):
    """``100 * mean(num) / mean(den)`` over paired units with a percentile-bootstrap interval (units resampled
    together, scipy.stats.bootstrap ``paired=True``): the % change of forgetting vs lambda = 1."""
    import numpy as np
    from scipy import stats as st

    a, b = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    point = 100.0 * a.mean() / b.mean() if b.mean() != 0 else math.nan
    if a.size < 2 or not math.isfinite(point) or np.all(a == a[0]):
        return point, point, point
    res = st.bootstrap(
        (a, b), lambda x, y, axis=-1: 100.0 * x.mean(axis=axis) / y.mean(axis=axis), paired=True,
        vectorized=True, n_resamples=n_resamples, confidence_level=level, method="percentile",
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_row(measured: dict, reference: dict, base_per_text) -> dict:
    """The numbers of one Table 3 row, every difference PAIRED with the lambda = 1 reference.

    ``measured`` / ``reference``: ``{"per_text": (n_texts,) pseudo-loss per text, "correct": (n_examples,) 0/1}``
    on the same texts and examples; ``base_per_text``: the untouched base's per-text pseudo-loss.
    Forgetting = mean over texts of (pseudo-loss - base's); deltas are measured - reference; each mean comes
    with a 95 % bootstrap interval over texts (pseudo-loss) or examples (accuracy), and ``*_distinct`` says
    whether that interval excludes 0.
    """
    import numpy as np

    from lora_vs_full import stats

    pt, ref_pt, base = (
        np.asarray(x, dtype=np.float64) for x in (measured["per_text"], reference["per_text"], base_per_text)
    )
    ok = np.isfinite(pt) & np.isfinite(ref_pt) & np.isfinite(base)  # texts with no scorable token drop out
    pt, ref_pt, base = pt[ok], ref_pt[ok], base[ok]
    c, ref_c = (
        np.asarray(measured["correct"], dtype=np.float64),
        np.asarray(reference["correct"], dtype=np.float64),
    )
    forgetting = stats.paired_bootstrap(pt, base)
    d_forget = stats.paired_bootstrap(pt, ref_pt)
    d_acc = stats.paired_bootstrap(c, ref_c)
    acc = stats.binomial(int(c.sum()), int(c.size))
    pct, pct_low, pct_high = ratio_bootstrap(pt - ref_pt, ref_pt - base)
    ref_acc = ref_c.mean()
    return {
        "accuracy": acc.mean, "accuracy_low": acc.low, "accuracy_high": acc.high, "n_examples": int(c.size),
        "pseudo_loss": float(pt.mean()),
        "forgetting": forgetting.mean, "forgetting_low": forgetting.low, "forgetting_high": forgetting.high,
        "n_texts": int(pt.size),
        "delta_accuracy": d_acc.mean, "delta_accuracy_low": d_acc.low, "delta_accuracy_high": d_acc.high,
        "accuracy_change_pct": pct_change(acc.mean, ref_acc),
        "accuracy_change_pct_low": 100.0 * d_acc.low / ref_acc, "accuracy_change_pct_high": 100.0 * d_acc.high / ref_acc,
        "accuracy_distinct": d_acc.distinguishable(),
        "delta_forgetting": d_forget.mean, "delta_forgetting_low": d_forget.low,
        "delta_forgetting_high": d_forget.high,
        "forgetting_change_pct": pct, "forgetting_change_pct_low": pct_low, "forgetting_change_pct_high": pct_high,
        "forgetting_distinct": d_forget.distinguishable(),
    }  # fmt: skip
