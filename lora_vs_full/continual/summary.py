"""What a continual run shows: the learned-stage gate, forgetting, intruders per stage, and the verdict.

Pure functions of the tidy accuracy / intruder tables (:mod:`.tables`), so every number can be
recomputed from committed CSVs. Definitions (issue 11; docs/continual.md):

- **Gate.** Stage t trains task T_t. It *learned* T_t iff the probe accuracy on T_t right after stage t
  beats the probe accuracy right before it (stage t-1) by at least
  ``margin = max(min_gain, z * sqrt(p (1 - p) / n))`` with p the pre-stage accuracy and n the eval set
  size: the larger of a fixed 5 points and a one-sided 95 % (z = 1.645) binomial standard error of the
  pre-stage accuracy. A run that did not learn a stage cannot show forgetting of it.
- **Learnable task.** A task is learnable at this budget iff some method learns it on average: the mean
  gain over that method's runs (its seeds) reaches their mean margin. Otherwise it is treated as not
  learnable by this model at this budget: reported, excluded from forgetting means, and it does not
  disqualify runs. A run that failed a learnable task's gate is *not eligible*. (Not "some run passed":
  among many runs of a task at chance, one noisy pass of the gate is likely, and it would disqualify
  every other run.)
- **Forgetting** of task i after stage t >= s_i (s_i = the stage that trained i):
  ``acc_i(s_i) - acc_i(t)`` (probe accuracies; positive = forgotten).
- **End forgetting** of a run: mean forgetting of its earlier learnable tasks (all but the last stage's)
  at the last stage. Per method: mean over eligible seeds with a Student-t interval across seeds.
- **Verdict** on the paper's v1 Fig. 8 claim ("low-rank LoRA forgets earlier tasks more than full FT;
  higher ranks approach full FT"), from seed-paired differences of end forgetting with t intervals:
  *supports* when (lowest rank - full) > 0 and (lowest rank - highest rank) > 0 are both
  distinguishable; *contradicts* when (lowest rank - full) < 0 is; otherwise *cannot decide* (no
  measurable difference, or too few eligible seeds).
- **By stage**: the same comparison at every stage t >= 2, over the runs that learned every learnable
  stage up to t (what a run does later cannot change what it shows at t). When the end has < 2 seed pairs
  the headline also gives *before the end*: the latest earlier stage with >= 2 seed pairs (a fixed rule).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lora_vs_full import stats
from lora_vs_full.errors import UserError

RUN_KEYS = ["run", "method", "rank", "seed"]


@dataclass(frozen=True)
class Gate:
    """The learned-stage margin: ``max(min_gain, z * binomial SE of the pre-stage accuracy)``."""

    min_gain: float = 0.05
    z: float = 1.645

    def __post_init__(self) -> None:
        if not (0 <= float(self.min_gain) < 1):
            raise UserError(f"gate.min_gain={self.min_gain!r} must be in [0, 1) (accuracy points, e.g. 0.05)")
        if not float(self.z) >= 0:
            raise UserError(f"gate.z={self.z!r} must be >= 0 (e.g. 1.645 for a one-sided 95 % margin)")

    def margin(self, pre: float, n: int) -> float:
        se = math.sqrt(max(pre * (1 - pre), 0.0) / n) if n > 0 else float("inf")
        return max(float(self.min_gain), float(self.z) * se)

    def learned(self, pre: float, post: float, n: int) -> bool:
        """The stage learned its task: ``post - pre >= margin`` (float round-off forgiven)."""
        return bool(post - pre >= self.margin(pre, n) - 1e-12)

    def describe(self) -> str:
        return (f"gain >= max({self.min_gain:g}, {self.z:g} x binomial SE of the pre-stage accuracy on the "
                "eval set)")  # fmt: skip


def method_label(method, rank) -> str:
    return "full FT" if method == "full" else f"LoRA r={int(rank)}"


def method_key(method, rank) -> str:
    """A key without spaces (summary.json paths, docs markers): ``full``, ``r1``, ``r64``."""
    return "full" if method == "full" else f"r{int(rank)}"


_KEY_OF_LABEL = lambda label: "full" if label == "full FT" else "r" + label.split("=")[1]  # noqa: E731


def _label_order(df: pd.DataFrame) -> list[str]:
    keys = df[["method", "rank"]].drop_duplicates()
    keys = keys.assign(_o=[(0 if m == "full" else 1, -1 if pd.isna(r) else int(r)) for m, r in
                           zip(keys["method"], keys["rank"], strict=True)])  # fmt: skip
    return [method_label(m, r) for m, r in keys.sort_values("_o")[["method", "rank"]].itertuples(index=False)]


def stage_gate(acc: pd.DataFrame, gate: Gate = Gate()) -> pd.DataFrame:
    """One row per (run, stage >= 1): the trained task's probe accuracy before (stage t-1) and after
    (stage t), the gain, the margin and ``learned``. ``acc`` needs RUN_KEYS, stage, trained_task,
    eval_task, accuracy, n_eval."""
    rows = []
    for keys, run in acc.groupby("run", sort=True):
        meta = run.iloc[0]
        trained = run.dropna(subset=["trained_task"]).groupby("stage")["trained_task"].first()
        for stage, task in trained.items():
            before = run[(run["stage"] == stage - 1) & (run["eval_task"] == task)]
            after = run[(run["stage"] == stage) & (run["eval_task"] == task)]
            if before.empty or after.empty:
                continue
            pre, post, n = (
                float(before["accuracy"].iloc[0]),
                float(after["accuracy"].iloc[0]),
                int(after["n_eval"].iloc[0]),
            )
            margin = gate.margin(pre, n)
            rows.append({"run": keys, "method": meta["method"], "rank": meta["rank"], "seed": meta["seed"],
                         "stage": int(stage), "trained_task": str(task), "pre": pre, "post": post,
                         "gain": post - pre, "n_eval": n, "margin": margin,
                         "learned": gate.learned(pre, post, n)})  # fmt: skip
    cols = [*RUN_KEYS, "stage", "trained_task", "pre", "post", "gain", "n_eval", "margin", "learned"]
    out = pd.DataFrame(rows, columns=cols)
    out["rank"] = out["rank"].astype("Int64")
    return out


def learnable_tasks(gates: pd.DataFrame) -> dict[str, bool]:
    """task -> True if some method learns it on average: the mean gain of the method's runs (seeds) on
    the task's stage reaches their mean margin."""
    out = {}
    for task, g in gates.groupby("trained_task"):
        by_method = g.groupby(["method", "rank"], dropna=False)[["gain", "margin"]].mean()
        out[str(task)] = bool((by_method["gain"] >= by_method["margin"] - 1e-12).any())
    return out


def gate_summary(gates: pd.DataFrame) -> pd.DataFrame:
    """Per (stage, method): the runs that learned the stage's task, their mean gain and margin -- the
    numbers behind :func:`learnable_tasks` -- and whether the task counts as learnable."""
    learnable = learnable_tasks(gates)
    rows = []
    for (stage, task, method, rank), g in gates.groupby(
        ["stage", "trained_task", "method", "rank"], dropna=False
    ):
        rows.append({"stage": int(stage), "trained_task": task, "method": method_label(method, rank),
                     "learned": _learned_of(g), "mean_gain": round(float(g["gain"].mean()), 4),
                     "mean_margin": round(float(g["margin"].mean()), 4), "learnable": learnable[task]})  # fmt: skip
    order = {lab: i for i, lab in enumerate(_label_order(gates))}
    out = pd.DataFrame(rows)
    return out.sort_values(
        ["stage", "method"], key=lambda c: c.map(order) if c.name == "method" else c
    ).reset_index(drop=True)


def eligibility(gates: pd.DataFrame, through: int | None = None) -> pd.DataFrame:
    """One row per run: ``eligible`` (every learnable stage up to stage ``through`` learned; every stage
    when None) and the ``reason`` when not."""
    learnable = learnable_tasks(gates)
    rows = []
    for run, g in gates.groupby("run", sort=True):
        bad = g[~g["learned"] & g["trained_task"].map(learnable)]
        if through is not None:
            bad = bad[bad["stage"] <= through]
        reason = "; ".join(f"stage {s} ({t}) not learned: gain {gain:+.3f} < margin {m:.3f}"
                           for s, t, gain, m in bad[["stage", "trained_task", "gain", "margin"]].itertuples(index=False))  # fmt: skip
        m = g.iloc[0]
        rows.append({"run": run, "method": m["method"], "rank": m["rank"], "seed": m["seed"],
                     "eligible": bad.empty, "reason": reason})  # fmt: skip
    out = pd.DataFrame(rows, columns=[*RUN_KEYS, "eligible", "reason"])
    out["rank"] = out["rank"].astype("Int64")
    return out


def forgetting_table(acc: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, task i, stage t >= s_i): ``forgetting = acc_i(s_i) - acc_i(t)``."""
    rows = []
    for run, r in acc.groupby("run", sort=True):
        meta = r.iloc[0]
        own = r.dropna(subset=["trained_task"]).groupby("trained_task")["stage"].first()
        for task, s_i in own.items():
            rows_i = r[r["eval_task"] == task].set_index("stage")
            at = rows_i["accuracy"]
            if s_i not in at.index:
                continue
            n = int(rows_i["n_eval"].iloc[0]) if "n_eval" in rows_i else 0
            for t in sorted(x for x in at.index if x >= s_i):
                rows.append({"run": run, "method": meta["method"], "rank": meta["rank"], "seed": meta["seed"],
                             "eval_task": str(task), "trained_stage": int(s_i), "stage": int(t),
                             "forgetting": float(at[s_i] - at[t]),
                             "eval_var": _diff_var(at[s_i], at[t], n)})  # fmt: skip
    cols = [*RUN_KEYS, "eval_task", "trained_stage", "stage", "forgetting", "eval_var"]
    out = pd.DataFrame(rows, columns=cols)
    out["rank"] = out["rank"].astype("Int64")
    return out


def _diff_var(p1: float, p2: float, n: int) -> float:
    """Eval-set (binomial) variance of a difference of two accuracies on n items, taken as independent --
    conservative: the same items score both, which correlates them positively."""
    return (p1 * (1 - p1) + p2 * (1 - p2)) / n if n > 0 else float("nan")


def stage_forgetting(acc: pd.DataFrame, gates: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, stage t >= 2): mean forgetting of the run's earlier LEARNABLE tasks (trained
    before t) at stage t, its eval-set 95 % interval, and ``eligible`` = every learnable stage up to t
    learned (what happens after t cannot change what the run shows at t)."""
    learnable = learnable_tasks(gates)
    f = forgetting_table(acc)
    f = f[(f["stage"] > f["trained_stage"]) & f["eval_task"].map(lambda t: learnable.get(t, False))]
    last = acc.groupby("run")["stage"].max()
    rows = []
    for t in sorted(f["stage"].unique()):
        elig = eligibility(gates, through=int(t)).set_index("run")
        for run, sel in f[f["stage"] == t].groupby("run", sort=True):
            m = sel.iloc[0]
            mean = float(sel["forgetting"].mean())
            # 95 % eval-set interval of this one run's mean (the across-seed interval is in the summary)
            half = 1.96 * float(np.sqrt(sel["eval_var"].sum())) / len(sel)
            rows.append({"run": run, "method": m["method"], "rank": m["rank"], "seed": m["seed"], "stage": int(t),
                         "last": int(t) == int(last[run]), "n_tasks": len(sel), "forgetting": mean,
                         "eval_low": mean - half, "eval_high": mean + half,
                         "eligible": bool(elig.loc[run, "eligible"]), "reason": elig.loc[run, "reason"]})  # fmt: skip
    cols = [*RUN_KEYS, "stage", "last", "n_tasks", "forgetting", "eval_low", "eval_high", "eligible", "reason"]  # fmt: skip
    out = pd.DataFrame(rows, columns=cols)
    out["rank"] = out["rank"].astype("Int64")
    out[["last", "eligible"]] = out[["last", "eligible"]].astype(bool)  # typed even when empty (masks)
    return out.sort_values(["run", "stage"]).reset_index(drop=True)


def end_forgetting(acc: pd.DataFrame, gates: pd.DataFrame, sf: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run: :func:`stage_forgetting` (``sf`` when already computed) at the run's last stage,
    where eligible = every learnable stage learned."""
    sf = stage_forgetting(acc, gates) if sf is None else sf
    out = sf[sf["last"]].drop(columns=["stage", "last"]).rename(columns={"forgetting": "end_forgetting"})
    return out.reset_index(drop=True)


def accuracy_intervals(acc: pd.DataFrame) -> pd.DataFrame:
    """Per (method, rank, stage, eval_task): mean probe accuracy over seeds with its t interval across
    seeds, and the eval set's Wilson (binomial) interval around that mean."""
    rows = []
    for (method, rank, stage, task), g in acc.groupby(["method", "rank", "stage", "eval_task"], dropna=False):
        est = stats.t_interval(g["accuracy"])
        n = int(g["n_eval"].iloc[0])
        b = stats.binomial(round(est.mean * n), n)
        tt = g["trained_task"].dropna()
        rows.append({"method": method, "rank": rank, "label": method_label(method, rank), "stage": int(stage),
                     "trained_task": tt.iloc[0] if len(tt) else pd.NA, "eval_task": task,
                     "accuracy": est.mean, "seed_low": est.low, "seed_high": est.high, "n_seeds": est.n,
                     "binom_low": b.low, "binom_high": b.high, "n_eval": n})  # fmt: skip
    out = pd.DataFrame(rows)
    out["rank"] = out["rank"].astype("Int64")
    return out.sort_values(["method", "rank", "eval_task", "stage"]).reset_index(drop=True)


def intruders_per_stage(intr: pd.DataFrame, *, k: int = 10, epsilon: float = 0.5) -> pd.DataFrame:
    """Per (method, rank, stage): intruders at (k, epsilon), mean over seeds with its t interval."""
    sel = intr[(intr["k"] == k) & ((intr["epsilon"] - epsilon).abs() < 1e-9)]
    if sel.empty:
        raise UserError(f"no intruder rows at k={k}, epsilon={epsilon}: pick values from the run's grid")
    rows = []
    for (method, rank, stage), g in sel.groupby(["method", "rank", "stage"], dropna=False):
        est = stats.t_interval(g["n_intruders"])
        tt = g["trained_task"].dropna()
        rows.append({"method": method, "rank": rank, "label": method_label(method, rank), "stage": int(stage),
                     "trained_task": tt.iloc[0] if len(tt) else pd.NA, "k": k, "epsilon": epsilon,
                     "n_intruders": est.mean, "low": est.low, "high": est.high, "n_seeds": est.n})  # fmt: skip
    out = pd.DataFrame(rows)
    out["rank"] = out["rank"].astype("Int64")
    return out.sort_values(["method", "rank", "stage"]).reset_index(drop=True)


def _est(e: stats.Estimate) -> dict:
    f = lambda v: None if v is None or not np.isfinite(v) else round(float(v), 4)  # noqa: E731
    return {"mean": f(e.mean), "low": f(e.low), "high": f(e.high), "n": int(e.n)}


def _paired(ends: pd.DataFrame, a: str, b: str, col: str = "end_forgetting") -> stats.Estimate:
    """Seed-paired difference of ``col``, label a minus label b, over seeds eligible in both."""
    e = ends[ends["eligible"]].set_index(["label", "seed"])[col]
    sa, sb = e.get(a, pd.Series(dtype=float)), e.get(b, pd.Series(dtype=float))
    common = (
        sorted(set(sa.index) & set(sb.index))
        if a in e.index.get_level_values(0) and b in e.index.get_level_values(0)
        else []
    )
    return stats.t_interval([float(sa[s] - sb[s]) for s in common])


def compare(ends: pd.DataFrame, labels: list[str], col: str = "end_forgetting") -> tuple[dict, str, str]:
    """(comparisons, verdict, reason) of the paper's claim from one row per (label, seed) with ``col``
    and ``eligible``: seed-paired t intervals of lowest rank - full, highest rank - full, lowest - highest."""
    lora = [lab for lab in labels if lab != "full FT"]
    if "full FT" not in labels or not lora:
        return {}, "cannot decide", "needs full FT and at least one LoRA rank"
    low, high = lora[0], lora[-1]
    d_low = _paired(ends, low, "full FT", col)
    comparisons = {f"{_KEY_OF_LABEL(low)}_minus_full": _est(d_low)}
    d_lh = None
    if high != low:
        comparisons[f"{_KEY_OF_LABEL(high)}_minus_full"] = _est(_paired(ends, high, "full FT", col))
        d_lh = _paired(ends, low, high, col)
        comparisons[f"{_KEY_OF_LABEL(low)}_minus_{_KEY_OF_LABEL(high)}"] = _est(d_lh)
    if d_low.n < 2:
        return comparisons, "cannot decide", (
            f"{low} and full FT share {d_low.n} eligible seed(s); an interval needs >= 2 "
            "(a run with an unlearned stage cannot show forgetting of what it never learned)")  # fmt: skip
    if d_low.distinguishable() and d_low.mean > 0:
        if d_lh is not None and d_lh.n >= 2 and d_lh.distinguishable() and d_lh.mean > 0:
            return comparisons, "supports", f"{low} forgets more than full FT and more than {high}"
        if d_lh is None:
            return comparisons, "supports", f"{low} forgets more than full FT (no higher rank was run)"
        return comparisons, "supports", (f"{low} forgets more than full FT; whether {high} approaches full FT "
                                         "cannot be decided from the intervals")  # fmt: skip
    if d_low.distinguishable() and d_low.mean < 0:
        return comparisons, "contradicts", f"{low} forgets LESS than full FT"
    why = f"no measurable difference: the interval of {low} - full FT contains 0"
    return comparisons, "cannot decide", why


def by_stage(sf: pd.DataFrame, labels: list[str], trained: dict[int, str]) -> list[dict]:
    """Per stage t >= 2 (:func:`stage_forgetting`, runs eligible through t): each method's mean forgetting
    of its earlier learnable tasks with a t interval across eligible seeds, the comparisons and verdict."""
    out = []
    for t, g in sf.groupby("stage", sort=True):
        comparisons, verdict, why = compare(g, labels, "forgetting")
        methods = {}
        for label in labels:
            e = g[g["label"] == label]
            methods[_KEY_OF_LABEL(label)] = {"eligible_runs": int(e["eligible"].sum()), "runs": int(len(e)),
                                             "forgetting": _est(stats.t_interval(e.loc[e["eligible"], "forgetting"]))}  # fmt: skip
        out.append({"stage": int(t), "trained_task": trained.get(int(t)), "n_tasks": int(g["n_tasks"].max()),
                    "methods": methods, "comparisons": comparisons, "verdict": verdict, "verdict_reason": why})  # fmt: skip
    return out


def _learned_of(g: pd.DataFrame) -> str:
    return f"{int(g['learned'].sum())}/{len(g)}"


def summarize(acc: pd.DataFrame, intr: pd.DataFrame, gate: Gate = Gate(), *, k: int = 10,
              epsilon: float = 0.5) -> dict:  # fmt: skip
    """The headline numbers as one JSON-able dict (see the module docstring for every definition)."""
    gates = stage_gate(acc, gate)
    if gates.empty:
        raise UserError("no complete fine-tuning stage in the tables: run the sequence first")
    learnable = learnable_tasks(gates)
    sf = stage_forgetting(acc, gates)
    sf["label"] = [method_label(m, r) for m, r in zip(sf["method"], sf["rank"], strict=True)]
    ends = end_forgetting(acc, gates, sf)
    ips = intruders_per_stage(intr, k=k, epsilon=epsilon)
    labels = _label_order(acc)
    methods = {}
    for label in labels:
        e = ends[ends["label"] == label]
        ok = e[e["eligible"]]
        g = gates[[method_label(m, r) == label for m, r in zip(gates["method"], gates["rank"], strict=True)]]
        ip = ips[ips["label"] == label]
        methods[_KEY_OF_LABEL(label)] = {
            "label": label, "runs": int(len(e)), "eligible_runs": int(len(ok)),
            "excluded": {f"seed {int(s)}": r for s, r in e.loc[~e["eligible"], ["seed", "reason"]].itertuples(index=False)},
            "end_forgetting": _est(stats.t_interval(ok["end_forgetting"])),
            "end_forgetting_all_runs": _est(stats.t_interval(e["end_forgetting"])),
            # each run's end forgetting with its eval-set (binomial) 95 % interval, eligible or not
            "per_seed": {f"seed{int(r.seed)}": {**_est(stats.Estimate(r.end_forgetting, r.eval_low, r.eval_high,
                                                                        int(r.n_tasks))), "eligible": bool(r.eligible)}
                         for r in e.itertuples(index=False)},
            "stages_learned": _learned_of(g),
            "learnable_stages_learned": _learned_of(g[g["trained_task"].map(learnable)]),
            "intruders_per_stage": {int(s): _est(stats.Estimate(m, lo, hi, n)) for s, m, lo, hi, n in
                                    ip[["stage", "n_intruders", "low", "high", "n_seeds"]].itertuples(index=False)},
        }  # fmt: skip
    comparisons, verdict, why = compare(ends, labels)
    trained = gates.groupby("stage")["trained_task"].first().to_dict()
    stages = by_stage(sf, labels, trained)
    # The latest stage before the end at which the lowest rank and full FT share >= 2 seeds eligible so far:
    # what the runs show when the end has too few eligible seeds (a fixed rule, not the best-looking stage).
    first = next(iter(comparisons), None)  # lowest rank - full
    earlier = [st for st in stages[:-1] if first and st["comparisons"].get(first, {"n": 0})["n"] >= 2]
    return {
        "gate": {"min_gain": gate.min_gain, "z": gate.z, "rule": gate.describe()},
        "learnable_tasks": learnable,
        "not_learnable": sorted(t for t, ok in learnable.items() if not ok),
        "learnable_stages_learned": _learned_of(gates[gates["trained_task"].map(learnable)]),
        "methods": methods,
        "comparisons": comparisons,
        "verdict": verdict,
        "verdict_reason": why,
        "by_stage": stages,
        "before_end": earlier[-1] if earlier else None,
        "intruders_at": {"k": k, "epsilon": epsilon},
        "claim": "v1 Fig. 8: low-rank LoRA forgets earlier tasks more than full FT; higher ranks approach full FT",
    }


def _fmt(e: dict) -> str:
    if e["mean"] is None:
        return "n/a"
    if e["low"] is None:
        return f"{e['mean']:+.3f} (1 seed, no interval)"
    return f"{e['mean']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}]"


def _fmt_count(e: dict) -> str:
    if e["mean"] is None:
        return "n/a"
    if e["low"] is None:
        return f"{e['mean']:.1f} (1 seed)"
    return f"{e['mean']:.1f} [{max(e['low'], 0):.1f}, {e['high']:.1f}]"


def headline(summary: dict) -> str:
    """The printed headline: per method end forgetting (eligible seeds), exclusions, the verdict."""
    lines = [f"Learned-stage gate: {summary['gate']['rule']}."]
    if summary["not_learnable"]:
        lines.append("Not learnable at this budget (no method's mean gain over its seeds reaches the gate's margin; "
                     "excluded from forgetting): "
                     + ", ".join(summary["not_learnable"]) + ".")  # fmt: skip
    lines.append("Mean forgetting of earlier tasks at the end (probe accuracy after own stage minus at the "
                 "last stage; 95 % t interval across eligible seeds):")  # fmt: skip
    for m in summary["methods"].values():
        label = m["label"]
        last = max(m["intruders_per_stage"]) if m["intruders_per_stage"] else None
        intr = (
            f"; intruders (k=10, eps=0.5) at the end {_fmt_count(m['intruders_per_stage'][last])}"
            if last is not None
            else ""
        )
        lines.append(f"  {label:<10} {_fmt(m['end_forgetting'])}  ({m['eligible_runs']}/{m['runs']} runs eligible, "
                     f"stages learned {m['stages_learned']}){intr}")  # fmt: skip
        for seed, r in m["per_seed"].items():
            note = "" if r["eligible"] else " -- descriptive only, not eligible"
            lines.append(f"    {seed}: {_fmt(r)} over {r['n']} earlier task(s), eval-set interval{note}")
        for seed, reason in m["excluded"].items():
            lines.append(f"    no forgetting conclusion from {label} {seed}: {reason}")
    for name, e in summary["comparisons"].items():
        lines.append(f"  difference {name.replace('_minus_', ' - ')} (seed-paired): {_fmt(e)}")
    lines.append(
        f"Paper claim ({summary['claim']}): {summary['verdict'].upper()} -- {summary['verdict_reason']}."
    )
    if summary.get("by_stage"):
        lines.append("By stage (mean forgetting of the earlier learnable tasks at that stage, over the runs that "
                     "learned every learnable stage up to it; seed-paired):")  # fmt: skip
        for st in summary["by_stage"]:
            name, e = next(iter(st["comparisons"].items()), (None, None))
            diff = f"{name.replace('_minus_', ' - ')} {_fmt(e)} over {e['n']} seed(s)" if name else "no comparison"  # fmt: skip
            why = "" if st["verdict"] != "cannot decide" else f" ({re.split('[:;]', st['verdict_reason'])[0]})"  # fmt: skip
            lines.append(f"  stage {st['stage']} ({st['trained_task']}, {st['n_tasks']} earlier task(s)): {diff} "
                         f"-> {st['verdict']}{why}")  # fmt: skip
    b = summary.get("before_end")
    end_pairs = next(iter(summary["comparisons"].values()), {"n": 0})["n"]
    if end_pairs < 2 and b:  # the end gives no interval: say what the latest stage with one shows
        lines.append(f"Before the end (the latest stage whose runs give an interval): stage {b['stage']} "
                     f"({b['trained_task']}): {b['verdict'].upper()} -- {b['verdict_reason']}.")  # fmt: skip
    return "\n".join(lines)


def stage_comparisons_table(summary: dict) -> pd.DataFrame:
    """One row per (stage, comparison) of ``summary["by_stage"]``: the seed-paired difference with its
    t interval and the seeds behind it; ``stage_verdict`` is the stage's (decided by lowest rank - full FT
    and lowest - highest rank, as at the end), repeated on each of its rows."""
    rows = [{"stage": st["stage"], "trained_task": st["trained_task"], "n_tasks": st["n_tasks"],
             "comparison": name.replace("_minus_", " - "), "mean": e["mean"], "low": e["low"], "high": e["high"],
             "n_seeds": e["n"], "stage_verdict": st["verdict"]}
            for st in summary.get("by_stage", []) for name, e in st["comparisons"].items()]  # fmt: skip
    cols = [
        "stage",
        "trained_task",
        "n_tasks",
        "comparison",
        "mean",
        "low",
        "high",
        "n_seeds",
        "stage_verdict",
    ]
    return pd.DataFrame(rows, columns=cols)


def headline_table(summary: dict) -> pd.DataFrame:
    """One row per method: end forgetting (eligible seeds) and end-of-sequence intruders, with intervals."""
    rows = []
    for m in summary["methods"].values():
        f = m["end_forgetting"]
        last = max(m["intruders_per_stage"]) if m["intruders_per_stage"] else None
        i = m["intruders_per_stage"][last] if last is not None else {"mean": None, "low": None, "high": None}
        f_all = m["end_forgetting_all_runs"]
        rows.append({"method": m["label"], "runs": m["runs"], "eligible_runs": m["eligible_runs"],
                     "end_forgetting_all_runs": f_all["mean"],
                     "stages_learned": m["stages_learned"], "end_forgetting": f["mean"],
                     "forgetting_low": f["low"], "forgetting_high": f["high"], "intruders_end": i["mean"],
                     "intruders_low": i["low"], "intruders_high": i["high"]})  # fmt: skip
    return pd.DataFrame(rows)
