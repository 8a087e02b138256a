"""95% intervals for the test figures: ROC-AUC by DeLong, proportions by Wilson, and the paired DeLong test.

No well-kept Python library computes DeLong's variance (scikit-learn gives the AUC only), so it is
written once here, with the fast midrank algorithm of Sun & Xu (2014, IEEE Signal Process. Lett. 21:1389),
and tested against Hanley & McNeil (1982)'s worked example, the O(m*n) definition and a bootstrap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, norm, rankdata

Z95 = float(norm.ppf(0.975))
PROPORTIONS = ("accuracy", "sensitivity", "specificity", "precision", "npv")  # Wilson; with "auc" (DeLong)


def _split(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores as (models, films) with positives first; DeLong needs both classes."""
    y = np.asarray(y_true).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    if s.shape[1] != len(y) or y.all() or not y.any():
        raise ValueError(f"DeLong needs one score per film and both classes ({int(y.sum())} of {len(y)} positive)")
    return s[:, y], s[:, ~y]


def delong(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k models scored on the same films (scores: (k, n) or (n,)) and their k x k DeLong covariance.

    Sun & Xu: midranks within positives, within negatives and over both give every film's placement
    value in O(n log n); the covariance is that of the placements, per class."""
    pos, neg = _split(y_true, scores)
    m, n = pos.shape[1], neg.shape[1]
    tx, ty = rankdata(pos, axis=1), rankdata(neg, axis=1)  # rankdata's default ties method: midranks
    tz = rankdata(np.hstack([pos, neg]), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v10 = (tz[:, :m] - tx) / n  # per positive: share of negatives it outranks (ties count half)
    v01 = 1.0 - (tz[:, m:] - ty) / m  # per negative: share of positives that outrank it
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def auc_interval(y_true: np.ndarray, proba: np.ndarray) -> tuple[float, float, float, float]:
    """(AUC, standard error, low, high): the normal 95% interval of DeLong's variance, clipped to [0, 1]."""
    aucs, cov = delong(y_true, proba)
    auc, se = float(aucs[0]), float(np.sqrt(max(cov[0, 0], 0.0)))
    return auc, se, max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se)


@dataclass(frozen=True)


class PairedAUC:
    """Challenger minus champion on the same films: the AUC difference, its 95% interval, and the
    one-sided p of DeLong's z that the challenger's AUC is higher (H0: not higher)."""
    challenger_auc: float
    champion_auc: float
    difference: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    films: int

    def figures(self) -> dict[str, float]:
        return {"paired_auc_difference": self.difference, "paired_auc_difference_ci_low": self.ci_low,
                "paired_auc_difference_ci_high": self.ci_high, "paired_auc_difference_se": self.se,
                "paired_p_value": self.p_value, "paired_films": float(self.films)}


def paired_delong(y_true: np.ndarray, challenger: np.ndarray, champion: np.ndarray) -> PairedAUC:
    """DeLong et al. (1988)'s test of two correlated AUCs. Identical rankings have no variance: the
    difference is then exactly 0 and p is 1 (no evidence at all that the challenger is better)."""
    aucs, cov = delong(y_true, np.vstack([challenger, champion]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(var)) if var > 1e-15 else 0.0
    if se == 0.0:
        p = 0.0 if diff > 0 else 1.0
    else:
        p = float(norm.sf(diff / se))
    return PairedAUC(float(aucs[0]), float(aucs[1]), diff, se, diff - Z95 * se, diff + Z95 * se, p, len(y_true))


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """Wilson's score interval (Newcombe 1998, method 3); (nan, nan) when there is nothing to count."""
    if trials == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def counts(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, tuple[int, int]]:
    """(successes, trials) behind each proportion at the threshold, as the Wilson interval needs them."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(proba) >= threshold
    tp, tn = int((pred & y).sum()), int((~pred & ~y).sum())
    fp, fn = int((pred & ~y).sum()), int((~pred & y).sum())
    return {"accuracy": (tp + tn, len(y)), "sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp),
            "precision": (tp, tp + fp), "npv": (tn, tn + fn)}


def interval_report(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """`test_<name>_ci_low` / `test_<name>_ci_high` for auc (DeLong) and every proportion (Wilson), plus
    `test_npv` and `test_auc_se`, named as the run metrics are."""
    auc, se, low, high = auc_interval(y_true, proba)
    out = {"test_auc_se": se, "test_auc_ci_low": low, "test_auc_ci_high": high}
    for name, (k, n) in counts(y_true, proba, threshold).items():
        out[f"test_{name}_ci_low"], out[f"test_{name}_ci_high"] = wilson(k, n)
    k, n = counts(y_true, proba, threshold)["npv"]
    out["test_npv"] = float(k / n) if n else 0.0
    return out


def with_interval(report: dict[str, float], name: str, digits: int = 4) -> str:
    """`value [low, high]` for a test figure of a report (just the value when it has no interval)."""
    value = report[f"test_{name}"]
    low, high = report.get(f"test_{name}_ci_low"), report.get(f"test_{name}_ci_high")
    if low is None or high is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
