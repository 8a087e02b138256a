"""How much of a test figure is noise on the official test split, and what the paired promotion rule does about it.

Nothing is trained and no store is touched. Two parts:
  1. intervals: one draw of a binormal model with ROC-AUC --auc on --normal + --pneumonia films (the official
     test split: 234 + 390), its DeLong standard error and 95% interval, and Wilson intervals for a
     sensitivity of 0.95 and a specificity of 0.80 on those counts;
  2. promotion: --reps pairs of correlated models (score correlation --rho on the same films, as two
     versions trained on the same data are) with a true AUC gain of 0, 0.005, 0.01 and 0.02; the share
     promoted by the old rule (observed gain >= --margin) and by the paired rule (gain >= --margin and
     one-sided DeLong p < --alpha).
With --predictions A.csv [B.csv] (an evaluation's evaluation/predictions.csv: sha, label, probability) it
prints the same figures for real evaluations instead: A's AUC with its interval, and B against A, film by film.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.evaluate.intervals import auc_interval, paired_delong, wilson  # noqa: E402


def draw(rng, labels: np.ndarray, aucs: tuple[float, float], rho: float) -> np.ndarray:
    """Scores of two binormal models (unit variance per class) whose noise shares a part rho."""
    shared = rng.normal(size=len(labels))
    out = []
    for auc in aucs:
        mu = np.sqrt(2) * norm.ppf(auc)  # binormal, equal variances: AUC = Phi(mu / sqrt(2))
        out.append(mu * labels + np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.normal(size=len(labels)))
    return np.vstack(out)


def simulate(a) -> None:
    rng = np.random.default_rng(a.seed)
    labels = np.r_[np.zeros(a.normal), np.ones(a.pneumonia)].astype(int)
    auc, se, low, high = auc_interval(labels, draw(rng, labels, (a.auc, a.auc), a.rho)[0])
    print(f"1. one draw at true AUC {a.auc} on {a.normal} NORMAL + {a.pneumonia} PNEUMONIA films")
    print(f"   ROC-AUC {auc:.4f} [{low:.4f}, {high:.4f}]  DeLong SE {se:.4f}")
    for name, share, n in (("sensitivity", 0.95, a.pneumonia), ("specificity", 0.80, a.normal)):
        k = int(round(share * n))
        lo, hi = wilson(k, n)
        print(f"   {name} {k}/{n} = {k / n:.4f} [{lo:.4f}, {hi:.4f}] (Wilson)")
    print(f"\n2. promotion over {a.reps} pairs of versions, score correlation {a.rho}, champion AUC {a.auc}")
    print(f"   {'true gain':>9s}  {'mean observed':>13s}  {'SE of gain':>10s}  {'old rule':>8s}  {'paired rule':>11s}")
    for gain in (0.0, 0.005, 0.01, 0.02):
        diffs, ses, old, new = [], [], 0, 0
        for _ in range(a.reps):
            challenger, champion = draw(rng, labels, (a.auc + gain, a.auc), a.rho)
            test = paired_delong(labels, challenger, champion)
            diffs.append(test.difference)
            ses.append(test.se)
            old += test.difference >= a.margin
            new += test.difference >= a.margin and test.p_value < a.alpha
        print(f"   {gain:9.3f}  {np.mean(diffs):+13.4f}  {np.mean(ses):10.4f}  {old / a.reps:8.1%}  "
              f"{new / a.reps:11.1%}")
    print(f"   (old rule: gain >= margin {a.margin}; paired rule: and one-sided p < alpha {a.alpha}; "
          "a share at true gain 0 is a promotion on noise)")


def real(a) -> None:
    tables = [pd.read_csv(p).drop_duplicates("sha").set_index("sha") for p in a.predictions]
    first = tables[0]
    auc, se, low, high = auc_interval(first["label"].to_numpy(), first["probability"].to_numpy())
    print(f"{a.predictions[0]}: n={len(first)}  ROC-AUC {auc:.4f} [{low:.4f}, {high:.4f}]  DeLong SE {se:.4f}")
    if len(tables) == 2:
        joined = tables[1].join(first, how="inner", lsuffix="_b", rsuffix="_a")
        t = paired_delong(joined["label_a"].to_numpy(), joined["probability_b"].to_numpy(),
                          joined["probability_a"].to_numpy())
        print(f"{a.predictions[1]} - {a.predictions[0]} on {t.films} films matched by sha: AUC difference "
              f"{t.difference:+.4f} [{t.ci_low:+.4f}, {t.ci_high:+.4f}], SE {t.se:.4f}, one-sided p {t.p_value:.4g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--predictions", nargs="+", default=None, help="one or two evaluation/predictions.csv files")
    p.add_argument("--normal", type=int, default=234)
    p.add_argument("--pneumonia", type=int, default=390)
    p.add_argument("--auc", type=float, default=0.948)
    p.add_argument("--rho", type=float, default=0.7)
    p.add_argument("--reps", type=int, default=1000)
    p.add_argument("--margin", type=float, default=0.005)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    real(a) if a.predictions else simulate(a)


if __name__ == "__main__":
    main()
