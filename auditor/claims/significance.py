"""Is the improvement over the SOTA at least 0.005 nats, at p < 0.01? (one-sided Welch t-test)"""

from __future__ import annotations

import math
from dataclasses import dataclass



MARGIN_NATS = 0.005
ALPHA = 0.01


@dataclass
class Significance:
    passed: bool
    p_value: float
    t_statistic: float
    df: float
    mean_new: float
    mean_sota: float
    improvement: float  # sota - new, in nats
    method: str  # which test, for the message


def welch_improvement(new: list[float], sota: list[float], margin: float = MARGIN_NATS) -> Significance | None:
    """H0: mean(sota) - mean(new) <= margin; H1: the improvement exceeds the margin.

    With one SOTA figure (no per-seed values) this is a one-sample t-test of the new runs
    against `sota - margin`. Needs at least two new runs: one run has no variance.
    """
    if len(new) < 2 or not sota:
        return None
    mean_new = sum(new) / len(new)
    mean_sota = sum(sota) / len(sota)
    var_new = _variance(new)
    improvement = mean_sota - mean_new
    if len(sota) >= 2:
        var_sota = _variance(sota)
        se_sq = var_new / len(new) + var_sota / len(sota)
        denominator = (var_new / len(new)) ** 2 / (len(new) - 1) + (var_sota / len(sota)) ** 2 / (len(sota) - 1)
        df = se_sq**2 / denominator if denominator > 0 else float(len(new) + len(sota) - 2)
        method = f"one-sided Welch t-test, {len(new)} vs {len(sota)} runs"
    else:
        se_sq = var_new / len(new)
        df = float(len(new) - 1)
        method = f"one-sided one-sample t-test of {len(new)} runs against a single SOTA figure"
    if se_sq <= 0:
        passed = improvement > margin
        return Significance(passed, 0.0 if passed else 1.0, math.inf if passed else -math.inf, df,
                            mean_new, mean_sota, improvement, method + " (zero variance)")
    t = (improvement - margin) / math.sqrt(se_sq)
    from scipy import stats  # imported here: scipy.stats is slow to import

    p = float(stats.t.sf(t, df))
    return Significance(p < ALPHA, p, t, df, mean_new, mean_sota, improvement, method)


def _variance(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)
