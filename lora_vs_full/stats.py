"""Intervals and rank correlations for every reported difference — thin wrappers over scipy.stats.

Conventions shared by the forgetting, continual and figure tables: a 95 % interval is ``(low, high)``;
an interval that contains 0 means "no measurable difference" (:func:`distinguishable`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean with its interval; ``n`` is the number of units it was resampled over (texts, examples, seeds)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def distinguishable(self) -> bool:
        return distinguishable(self.low, self.high)


def distinguishable(low: float, high: float) -> bool:
    """True when the interval excludes 0 (the difference is measurable)."""
    return bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))


def bootstrap_mean(values, *, n_resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> Estimate:
    """Mean of ``values`` with a percentile-bootstrap interval (scipy.stats.bootstrap).

    For a paired difference pass the per-unit differences (fine-tuned minus base on the same text).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if x.size == 1 or np.all(x == x[0]):
        return Estimate(float(x.mean()), float(x.mean()), float(x.mean()), int(x.size))
    res = stats.bootstrap(
        (x,), np.mean, n_resamples=n_resamples, confidence_level=level, method="percentile",
        rng=np.random.default_rng(seed), vectorized=True,
    )  # fmt: skip
    ci = res.confidence_interval
    return Estimate(float(x.mean()), float(ci.low), float(ci.high), int(x.size))


def paired_bootstrap(after, before, **kw) -> Estimate:
    """Mean of ``after - before`` over paired units, with its bootstrap interval."""
    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    return bootstrap_mean(a - b, **kw)


def t_interval(values, *, level: float = LEVEL) -> Estimate:
    """Mean across seeds with a Student-t interval; one seed gives a NaN-width interval (not zero)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    m = float(x.mean())
    if x.size == 1:
        return Estimate(m, float("nan"), float("nan"), 1)
    low, high = stats.t.interval(level, df=x.size - 1, loc=m, scale=stats.sem(x))
    if not np.isfinite(low):  # all values equal: sem = 0
        low = high = m
    return Estimate(m, float(low), float(high), int(x.size))


def binomial(correct: int, total: int, *, level: float = LEVEL) -> Estimate:
    """Accuracy ``correct / total`` with its Wilson interval (scipy.stats.binomtest)."""
    if total <= 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    ci = stats.binomtest(int(correct), int(total)).proportion_ci(confidence_level=level, method="wilson")
    return Estimate(correct / total, float(ci.low), float(ci.high), int(total))


def spearman(x, y) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (scipy.stats.spearmanr)."""
    res = stats.spearmanr(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return float(res.statistic), float(res.pvalue)


def proportion_difference(
    correct_a: int, total_a: int, correct_b: int, total_b: int, *, level: float = LEVEL
) -> Estimate:
    """``p_a - p_b`` of two independent accuracies with Newcombe's hybrid score interval (from the two Wilson
    intervals; Newcombe 1998, method 10). ``n`` is the smaller sample."""
    a, b = binomial(correct_a, total_a, level=level), binomial(correct_b, total_b, level=level)
    d = a.mean - b.mean
    low = d - np.sqrt((a.mean - a.low) ** 2 + (b.high - b.mean) ** 2)
    high = d + np.sqrt((a.high - a.mean) ** 2 + (b.mean - b.low) ** 2)
    return Estimate(float(d), float(low), float(high), int(min(total_a, total_b)))
