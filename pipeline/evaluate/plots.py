"""The test report's figures: confusion matrices, ROC and PR curves, each marking the chosen threshold."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from pipeline.data.dataset import CLASSES  # noqa: E402
from pipeline.evaluate.metrics import binary_metrics  # noqa: E402


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


def pr_figure(y_true: np.ndarray, proba: np.ndarray, threshold: float):
    precision, recall, _ = precision_recall_curve(y_true, proba)
    at = binary_metrics(y_true, proba, threshold)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(recall, precision, label=f"PR-AUC {average_precision_score(y_true, proba):.3f}")
    ax.axhline(float(np.mean(y_true)), linestyle="--", color="grey", linewidth=0.8, label="prevalence")
    ax.scatter([at["sensitivity"]], [at["precision"]], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("sensitivity (recall)")
    ax.set_ylabel("precision")
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig
