"""One set of metrics for search (val_*) and test (test_*): a trial's score and a version's report cannot disagree.

Thresholds are chosen here too, on validation probabilities only (the caller passes which).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score, roc_curve

from pipeline.evaluate.intervals import interval_report

LOWER_IS_BETTER = {"val_loss"}  # every other --metric is maximised


def choose_threshold(y_true: np.ndarray, proba: np.ndarray, rule: str, target_sensitivity: float = 0.95) -> float:
    """'sensitivity': the highest threshold that still catches target_sensitivity of pneumonia cases
    (missing pneumonia costs more than a false alarm); 'youden': maximise sensitivity + specificity - 1."""
    fpr, tpr, thresholds = roc_curve(y_true, proba)
    thresholds = np.clip(thresholds, 0.0, 1.0)  # sklearn puts +inf first
    if rule == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    reaching = np.flatnonzero(tpr >= target_sensitivity)
    return float(thresholds[reaching[0]])


def binary_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    pred = (proba >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, pred, labels=[0, 1]).ravel()

    def ratio(a, b):
        return float(a / b) if b else 0.0

    precision, sensitivity = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {"accuracy": ratio(tp + tn, len(y_true)), "precision": precision, "sensitivity": sensitivity,
            "specificity": ratio(tn, tn + fp), "f1": ratio(2 * precision * sensitivity, precision + sensitivity)}


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5,
                           prefix: str = "val_") -> dict[str, float]:
    """A search trial's names (val_auc, val_accuracy, val_precision, val_recall, val_f1), from binary_metrics."""
    at = binary_metrics(y_true, proba, threshold)
    both = len(np.unique(y_true)) == 2
    return {f"{prefix}auc": float(roc_auc_score(y_true, proba)) if both else float("nan"),
            f"{prefix}accuracy": at["accuracy"], f"{prefix}precision": at["precision"],
            f"{prefix}recall": at["sensitivity"], f"{prefix}f1": at["f1"]}


def test_report(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Metric names as they are recorded on the run and on the registered model version, each test figure
    with its 95% interval (`test_<name>_ci_low/_ci_high`: DeLong for AUC, Wilson for proportions)."""
    out = {"test_auc": float(roc_auc_score(y_true, proba)), "test_pr_auc": float(average_precision_score(y_true, proba)),
           "threshold": float(threshold)}
    out.update({f"test_{k}": v for k, v in binary_metrics(y_true, proba, threshold).items()})
    out["test_recall"] = out["test_sensitivity"]
    out.update(interval_report(y_true, proba, threshold))
    out.update({f"test_{k}_at_0.5": v for k, v in binary_metrics(y_true, proba, 0.5).items()})
    return out
