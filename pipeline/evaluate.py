"""Threshold choice on validation, test metrics, and the plots a reviewer looks at."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (ConfusionMatrixDisplay, average_precision_score, confusion_matrix,  # noqa: E402
                             roc_auc_score, roc_curve)

from .data import CLASSES  # noqa: E402


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


def test_report(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Metric names as they are recorded on the run and on the registered model version."""
    out = {"test_auc": float(roc_auc_score(y_true, proba)), "test_pr_auc": float(average_precision_score(y_true, proba)),
           "threshold": float(threshold)}
    out.update({f"test_{k}": v for k, v in binary_metrics(y_true, proba, threshold).items()})
    out["test_recall"] = out["test_sensitivity"]
    out.update({f"test_{k}_at_0.5": v for k, v in binary_metrics(y_true, proba, 0.5).items()})
    return out


def confusion_figure(y_true: np.ndarray, proba: np.ndarray, threshold: float):
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, t in zip(axes, (threshold, 0.5)):
        cm = confusion_matrix(y_true, (proba >= t).astype(int), labels=[0, 1])
        ConfusionMatrixDisplay(cm, display_labels=CLASSES).plot(ax=ax, colorbar=False, cmap="Blues")
        ax.set_title(f"threshold {t:.3f}" + (" (chosen)" if t == threshold else ""))
    fig.tight_layout()
    return fig


def roc_figure(y_true: np.ndarray, proba: np.ndarray, threshold: float):
    fpr, tpr, thresholds = roc_curve(y_true, proba)
    at = binary_metrics(y_true, proba, threshold)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"ROC-AUC {roc_auc_score(y_true, proba):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.scatter([1 - at["specificity"]], [at["sensitivity"]], color="red", zorder=3,
               label=f"threshold {threshold:.3f}")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def pick_gradcam_cases(y_true: np.ndarray, proba: np.ndarray, threshold: float, count: int,
                       seed: int = 0) -> np.ndarray:
    """Misclassified images first (they are what a reviewer needs to see), then correct ones of each class."""
    rng = np.random.default_rng(seed)
    wrong = np.flatnonzero((proba >= threshold) != y_true.astype(bool))
    right = np.setdiff1d(np.arange(len(y_true)), wrong)
    picks = list(rng.permutation(wrong)[: count // 2])
    for label in (0, 1):
        pool = rng.permutation(right[y_true[right] == label])
        picks.extend(pool[: (count - len(picks)) // (2 - label)])
    return np.array(sorted(picks), dtype=np.int64)
