"""Threshold rules and test-time augmentation for one registered model: chosen on validation, reported on test.

The version's own threshold comes from one rule (retrain-best's --threshold-rule). This script puts
the candidates side by side without tuning anything on test:
  sensitivity  the highest threshold that reaches --target-sensitivity on val (the default rule);
  youden       maximises sensitivity + specificity - 1 on val;
  prevalence   the Bayes threshold for a deployment prevalence given in advance (--prevalence;
               the heads train with balanced class weights, i.e. as if at 50%);
  0.5          no rule.
Each with and without test-time augmentation (the mean of the film and its mirror image). The
rule and TTA setting to keep are picked on val (highest val accuracy among those whose val
sensitivity reaches the target); test is read for the report only.
"""
from __future__ import annotations

import common
import numpy as np
from sklearn.metrics import roc_auc_score

from pipeline.config import DataConfig
from pipeline.evaluate.metrics import binary_metrics, choose_threshold
from pipeline.serving.pyfunc import load, read_path


def prevalence_threshold(prevalence: float, trained_at: float = 0.5) -> float:
    """P >= t  <=>  the prior-shift-corrected probability >= 0.5 at the new prevalence."""
    odds_shift = (prevalence / (1 - prevalence)) / (trained_at / (1 - trained_at))
    return 1.0 / (1.0 + odds_shift)


def proba(model, paths: list[str], mirror: bool) -> np.ndarray:
    grays = np.stack([model.gray(read_path(p)) for p in paths])
    plain = model.probabilities(grays)
    return (plain + model.probabilities(grays[:, :, ::-1].copy())) / 2 if mirror else plain


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], per_class=None)
    p.add_argument("--model", required=True, help="models:/NAME/VERSION")
    p.add_argument("--target-sensitivity", type=float, default=0.95)
    p.add_argument("--prevalence", type=float, default=0.625,
                   help="pneumonia share expected where the model is used (0.625: the official test split's)")
    a = p.parse_args()
    common.header("threshold rules x test-time augmentation, chosen on val, reported on test", a)
    manifest = common.subset(DataConfig(data_dir=a.data_dir, seed=a.seed), splits=("val", "test"))
    model = load(a.model)
    splits = {s: manifest[manifest["split"] == s] for s in ("val", "test")}
    rows, candidates = [], []
    for mirror in (False, True):
        p_val = proba(model, splits["val"]["path"].tolist(), mirror)
        p_test = proba(model, splits["test"]["path"].tolist(), mirror)
        y_val, y_test = splits["val"]["label"].to_numpy(), splits["test"]["label"].to_numpy()
        rules = {"sensitivity": choose_threshold(y_val, p_val, "sensitivity", a.target_sensitivity),
                 "youden": choose_threshold(y_val, p_val, "youden"),
                 f"prevalence {a.prevalence:.3f}": prevalence_threshold(a.prevalence), "0.5": 0.5}
        for rule, t in rules.items():
            val, test = binary_metrics(y_val, p_val, t), binary_metrics(y_test, p_test, t)
            row = {"TTA": "mirror" if mirror else "none", "rule": rule, "threshold": t,
                   "val AUC": roc_auc_score(y_val, p_val), "val acc": val["accuracy"], "val sens": val["sensitivity"],
                   "test AUC": roc_auc_score(y_test, p_test), "test acc": test["accuracy"],
                   "test sens": test["sensitivity"], "test spec": test["specificity"]}
            rows.append(row)
            if val["sensitivity"] >= a.target_sensitivity:
                candidates.append(row)
    common.table(rows, f"val {len(splits['val'])} images, test {len(splits['test'])} images")
    pick = max(candidates, key=lambda r: (r["val acc"], r["val AUC"]))
    print(f"\nCHOSEN ON VAL: TTA={pick['TTA']}, rule={pick['rule']} (val acc {pick['val acc']:.3f}, val sens "
          f"{pick['val sens']:.3f}) -> test AUC {pick['test AUC']:.4f}, accuracy {pick['test acc']:.4f}, "
          f"sensitivity {pick['test sens']:.4f}, specificity {pick['test spec']:.4f}")


if __name__ == "__main__":
    main()
