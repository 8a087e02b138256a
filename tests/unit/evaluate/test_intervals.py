"""DeLong and Wilson intervals against published worked examples, the O(m*n) definition and a bootstrap."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from pipeline.evaluate.intervals import (
    auc_interval,
    counts,
    delong,
    interval_report,
    paired_delong,
    wilson,
    with_interval,
)
from pipeline.evaluate.metrics import binary_metrics
from pipeline.evaluate.metrics import test_report as report_of

# Hanley & McNeil (1982), Radiology 143:29-36, Table 1: 109 CT images rated 1 (definitely normal) .. 5
# (definitely abnormal). Published: area 0.893, standard error 0.032 (their exponential approximation).
HM_NORMAL, HM_ABNORMAL = (33, 6, 6, 11, 2), (3, 2, 2, 11, 33)

# pROC's `aSAH` data (Turck et al. 2010; 113 patients, outcome Good/Poor, WFNS score, S100B in ug/l), as
# OUTCOME,WFNS,S100B. Published in pROC (Robin et al. 2011, BMC Bioinformatics 12:77, and its manual):
# S100B AUC 0.7314, 95% CI 0.6301-0.8326 (DeLong); roc.test(WFNS, S100B): Z = 2.209, two-sided p = 0.02718.
ASAH = """
G,1,0.13 G,1,0.14 G,1,0.1 G,1,0.04 P,3,0.13 P,2,0.1 G,5,0.47 P,4,0.16 G,1,0.18 G,2,0.1 P,5,0.12
G,2,0.1 P,5,0.44 P,5,0.71 G,1,0.04 G,2,0.08 P,5,0.49 G,2,0.04 P,2,0.07 P,5,0.33 P,2,0.09 G,1,0.09
P,1,0.07 G,1,0.11 G,1,0.07 G,2,0.17 G,1,0.07 G,2,0.11 G,1,0.13 G,1,0.19 G,3,0.05 G,4,0.16 P,2,0.41
G,1,0.14 G,4,0.34 P,5,0.35 P,4,0.48 G,1,0.09 P,4,0.96 P,2,0.25 G,5,0.5 G,5,0.46 G,1,0.16 G,1,0.07
G,2,0.43 G,4,0.45 G,1,0.11 G,1,0.08 G,2,0.09 P,5,0.86 P,5,0.52 G,2,0.08 G,1,0.06 G,2,0.13 P,5,2.07
G,1,0.1 G,2,0.14 G,2,0.15 P,2,0.07 G,1,0.06 P,5,0.77 G,1,0.05 G,1,0.09 P,2,0.3 P,5,0.03 P,2,0.09
G,1,0.04 P,4,0.23 P,5,0.7 G,2,0.09 P,4,0.27 P,4,0.71 P,1,0.08 P,4,0.26 G,1,0.08 G,2,0.16 G,1,0.09
P,4,0.13 P,2,0.1 G,1,0.08 P,2,0.11 G,3,0.33 G,2,0.11 G,4,0.28 G,2,0.07 G,1,0.1 G,4,0.32 P,5,0.22
G,1,0.07 G,1,0.05 G,5,0.24 G,4,0.38 G,2,0.1 G,2,0.15 G,1,0.08 G,1,0.14 G,1,0.1 G,3,0.07 G,1,0.04
G,2,0.19 P,5,0.56 P,2,0.14 P,2,0.58 P,5,0.32 P,5,0.82 P,5,0.74 G,2,0.15 G,4,0.47 G,4,0.17 P,5,0.44
G,1,0.15 G,1,0.5 G,1,0.48
"""


def hanley_mcneil() -> tuple[np.ndarray, np.ndarray]:
    ratings = np.arange(1, 6, dtype=float)
    scores = np.r_[np.repeat(ratings, HM_NORMAL), np.repeat(ratings, HM_ABNORMAL)]
    return np.r_[np.zeros(sum(HM_NORMAL)), np.ones(sum(HM_ABNORMAL))], scores


def asah() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [r.split(",") for r in ASAH.split()]
    return (np.array([r[0] == "P" for r in rows], dtype=int), np.array([float(r[1]) for r in rows]),
            np.array([float(r[2]) for r in rows]))


def placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988)'s definition, pair by pair: psi = 1 above, 1/2 tied, 0 below."""
    pos, neg = scores[y == 1], scores[y == 0]
    psi = (pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])
    return psi.mean(axis=1), psi.mean(axis=0)


def bootstrap_aucs(y: np.ndarray, scores: np.ndarray, reps: int = 2000, seed: int = 0) -> np.ndarray:
    """AUCs of a class-stratified bootstrap over films (DeLong's variance is conditional on the class
    counts), all replicates at once by the Mann-Whitney rank sum; scores: (k, n) -> (k, reps)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.hstack([rng.choice(pos, (reps, len(pos))), rng.choice(neg, (reps, len(neg)))])
    m, n = len(pos), len(neg)
    ranks = rankdata(np.atleast_2d(scores)[:, idx], axis=2)
    return (ranks[:, :, :m].sum(axis=2) - m * (m + 1) / 2) / (m * n)


def test_hanley_mcneil_worked_example():
    y, s = hanley_mcneil()
    auc, se, low, high = auc_interval(y, s)
    assert round(auc, 3) == 0.893  # the published area (ties between ratings count half)
    assert se == pytest.approx(0.032, rel=0.10)  # another estimator of the same SE: close, not equal
    assert low == pytest.approx(auc - 1.959964 * se) and high == pytest.approx(auc + 1.959964 * se)


def test_proc_asah_single_auc_interval_and_paired_test():
    y, wfns, s100b = asah()
    assert len(y) == 113 and y.sum() == 41  # the data set as pROC ships it: 72 good, 41 poor outcomes
    auc, se, low, high = auc_interval(y, s100b)
    assert (round(auc, 4), round(low, 4), round(high, 4)) == (0.7314, 0.6301, 0.8326)
    paired = paired_delong(y, wfns, s100b)
    assert round(paired.difference / paired.se, 3) == 2.209
    assert round(2 * paired.p_value, 5) == 0.02718  # pROC's p is two-sided; ours is the one-sided half
    assert paired.ci_low > 0 and paired.challenger_auc == pytest.approx(roc_auc_score(y, wfns))
    reverse = paired_delong(y, s100b, wfns)  # control: the worse one as challenger gets no evidence
    assert reverse.difference == pytest.approx(-paired.difference) and reverse.p_value > 0.95


def test_fast_algorithm_equals_the_definition_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    a = np.round(y + rng.normal(0, 1.2, 300), 1)  # rounded: many ties within and across classes
    b = np.round(0.5 * a + rng.normal(0, 1.0, 300), 1)
    aucs, cov = delong(y, np.vstack([a, b]))
    va, wa = placements(y, a)
    vb, wb = placements(y, b)
    m, n = int(y.sum()), int((1 - y).sum())
    expected = np.cov(np.vstack([va, vb])) / m + np.cov(np.vstack([wa, wb])) / n
    np.testing.assert_allclose(aucs, [roc_auc_score(y, a), roc_auc_score(y, b)], atol=1e-12)
    np.testing.assert_allclose(cov, expected, rtol=1e-10)
    assert cov[0, 1] > 0  # control: the two scores are correlated, so the cross term is exercised


def test_standard_errors_agree_with_a_bootstrap_on_the_same_predictions():
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(234), np.ones(390)].astype(int)  # the official test split's class counts
    latent = y * 2.3 + rng.normal(0, 1, len(y))
    champion, challenger = latent + rng.normal(0, 0.6, len(y)), latent + rng.normal(0, 0.5, len(y))
    _, se, _, _ = auc_interval(y, challenger)
    boot = bootstrap_aucs(y, np.vstack([challenger, champion]))
    assert boot[0].mean() == pytest.approx(roc_auc_score(y, challenger), abs=0.005)  # control: right AUCs
    assert se == pytest.approx(boot[0].std(ddof=1), rel=0.10)
    paired = paired_delong(y, challenger, champion)
    assert paired.se == pytest.approx((boot[0] - boot[1]).std(ddof=1), rel=0.10)
    assert paired.se < np.hypot(se, auc_interval(y, champion)[1])  # pairing removes the shared variance


def test_identical_rankings_are_no_evidence_and_a_clear_gain_is():
    y, s = hanley_mcneil()
    same = paired_delong(y, s, s.copy())
    assert same.difference == 0.0 and same.se == 0.0 and same.p_value == 1.0
    monotone = paired_delong(y, np.exp(s), s)  # same ranking, other scale: still the same model for AUC
    assert monotone.difference == 0.0 and monotone.p_value == 1.0
    rng = np.random.default_rng(3)
    better = np.where(y == 1, 6.0, 0.0) + rng.normal(0, 0.1, len(y))  # control: near-perfect separation
    assert paired_delong(y, better, s).p_value < 1e-3


def test_one_sided_p_holds_its_level_under_no_difference():
    """Two equally good, correlated models on 300 films: p < 0.05 about 5% of the time, not more."""
    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(120), np.ones(180)].astype(int)
    ps = []
    for _ in range(400):
        latent = y * 1.5 + rng.normal(0, 1, len(y))
        ps.append(paired_delong(y, latent + rng.normal(0, 0.7, len(y)), latent + rng.normal(0, 0.7, len(y))).p_value)
    share = float(np.mean(np.array(ps) < 0.05))
    assert 0.02 <= share <= 0.09, share


def test_wilson_against_newcombe_1998():
    """Newcombe (1998), Stat. Med. 17:857-872, Table I, method 3 (score interval without correction)."""
    assert tuple(round(x, 4) for x in wilson(81, 263)) == (0.2553, 0.3662)
    assert tuple(round(x, 4) for x in wilson(15, 148)) == (0.0624, 0.1605)
    assert tuple(round(x, 4) for x in wilson(0, 20)) == (0.0, 0.1611)
    assert all(np.isnan(wilson(0, 0)))  # nothing to count (e.g. PPV with no positive call)


def test_report_intervals_bracket_their_figures_and_use_the_right_counts():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    proba = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1, 200))))
    report = report_of(y, proba, 0.4)
    at = binary_metrics(y, proba, 0.4)
    for name in ("auc", "accuracy", "sensitivity", "specificity", "precision", "npv"):
        assert report[f"test_{name}_ci_low"] <= report[f"test_{name}"] <= report[f"test_{name}_ci_high"], name
        assert report[f"test_{name}_ci_high"] - report[f"test_{name}_ci_low"] > 0.01, name  # not vacuous
    k, n = counts(y, proba, 0.4)["sensitivity"]
    assert k / n == pytest.approx(at["sensitivity"])
    assert (report["test_sensitivity_ci_low"], report["test_sensitivity_ci_high"]) == wilson(k, n)
    tn, fn = int(((proba < 0.4) & (y == 0)).sum()), int(((proba < 0.4) & (y == 1)).sum())
    assert report["test_npv"] == pytest.approx(tn / (tn + fn))
    assert set(interval_report(y, proba, 0.4)) <= set(report)


def test_with_interval_prints_value_and_bounds():
    report = {"test_auc": 0.948, "test_auc_ci_low": 0.9312, "test_auc_ci_high": 0.96481, "test_f1": 0.9}
    assert with_interval(report, "auc") == "0.9480 [0.9312, 0.9648]"
    assert with_interval(report, "f1") == "0.9000"


def test_delong_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        delong(np.ones(5), np.arange(5.0))


def test_normal_quantile_is_the_95_percent_one():
    assert norm.cdf(1.959964) == pytest.approx(0.975, abs=1e-6)
