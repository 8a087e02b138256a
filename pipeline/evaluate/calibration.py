"""How far the served probabilities can be taken at face value: Brier score, expected calibration error
and a reliability diagram, before and after the version's calibration; and the share flagged as OOD."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import brier_score_loss  # noqa: E402

from pipeline.infra import tracking  # noqa: E402

ECE_BINS = 15


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width bins of p(pneumonia) of (films in bin / films) x |pneumonia share - mean p|.
    Bin b holds b/bins <= p < (b+1)/bins; p = 1 falls in the last bin. (scikit-learn has no ECE.)"""
    y, p = np.asarray(y_true, np.float64), np.asarray(proba, np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in np.unique(which):
        inside = which == b
        total += inside.sum() / len(p) * abs(y[inside].mean() - p[inside].mean())
    return float(total)


def calibration_report(y_true: np.ndarray, raw: np.ndarray, calibrated: np.ndarray) -> dict[str, float]:
    return {"test_brier": float(brier_score_loss(y_true, calibrated)),
            "test_brier_uncalibrated": float(brier_score_loss(y_true, raw)),
            "test_ece": expected_calibration_error(y_true, calibrated),
            "test_ece_uncalibrated": expected_calibration_error(y_true, raw)}


def reliability_figure(y_true: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, method: str):
    """Observed pneumonia share against mean predicted probability per bin, before and after calibration."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, label="perfectly calibrated")
    for proba, name in ((raw, "uncalibrated"), (calibrated, f"calibrated ({method})")):
        observed, predicted = calibration_curve(y_true, proba, n_bins=ECE_BINS, strategy="uniform")
        ax.plot(predicted, observed, "o-", markersize=3,
                label=f"{name}: ECE {expected_calibration_error(y_true, proba):.3f}, "
                      f"Brier {brier_score_loss(y_true, proba):.3f}")
        hist.hist(proba, bins=ECE_BINS, range=(0, 1), histtype="step", label=name)
    ax.set_ylabel("observed share of pneumonia")
    ax.legend(loc="upper left", fontsize=7)
    hist.set_xlabel("predicted probability of pneumonia")
    hist.set_ylabel("films")
    fig.tight_layout()
    return fig


def log_calibration_and_ood(model, outputs, labels: np.ndarray) -> dict[str, float]:
    """Inside the evaluation run: the calibration metrics, the reliability diagram and test_ood_share;
    returns the metrics so the caller's report carries them too."""
    import mlflow

    report = calibration_report(labels, outputs.raw, outputs.probability)
    if getattr(model, "ood", None) is not None:
        report["test_ood_share"] = float(np.mean(~np.asarray(outputs.in_distribution, bool)))
    mlflow.log_metrics(report)
    tracking.log_figure(reliability_figure(labels, outputs.raw, outputs.probability, model.calibration.method),
                        "evaluation/reliability.png")
    return report


def ood_tags(fingerprint: str, report: dict[str, float]) -> dict[str, str]:
    """`eval.<fingerprint>.ood_share` beside the version's other figures for that set (none without a detector)."""
    if "test_ood_share" not in report:
        return {}
    return {f"eval.{fingerprint}.ood_share": f"{report['test_ood_share']:.6f}"}
