"""The promotion criteria and how a decision reads: floors as MLflow MetricThresholds, and the paired
DeLong test of challenger against champion on the same films (`--alpha`, `--margin`)."""
from __future__ import annotations

from typing import Protocol

from pipeline.config import PipelineError, PromoteConfig


class PredictionsMissing(PipelineError, LookupError):
    """A version's evaluation on the test set has no per-film probabilities to pair (e.g. an older run):
    re-evaluating that version can fix it, so promotion knows which one to re-evaluate."""

    def __init__(self, version: str, message: str):
        super().__init__(message)
        self.version = str(version)


class Paired(Protocol):
    """What promotion needs of a paired comparison (evaluate.intervals.PairedAUC has it)."""
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    films: int

    def figures(self) -> dict[str, float]: ...


def floor_thresholds(cfg: PromoteConfig) -> dict:
    """The floors every promotion needs, the first included, as MLflow MetricThresholds."""
    from mlflow.models import MetricThreshold

    return {"auc": MetricThreshold(threshold=cfg.min_auc, greater_is_better=True),
            "sensitivity": MetricThreshold(threshold=cfg.min_sensitivity, greater_is_better=True)}


def describe(label: str, version, ev: dict) -> str:
    return (f"{label} v{version.version}: AUC {ev['auc']:.4f}, sensitivity {ev['sensitivity']:.3f}, "
            f"specificity {ev['specificity']:.3f}, accuracy {ev['accuracy']:.3f}")


def floor_checks(cfg: PromoteConfig, ch: dict) -> list[str]:
    return [f"  AUC {ch['auc']:.4f} >= min {cfg.min_auc:.4f}: {'ok' if ch['auc'] >= cfg.min_auc else 'FAILED'}",
            f"  sensitivity {ch['sensitivity']:.3f} >= min {cfg.min_sensitivity:.3f}: "
            f"{'ok' if ch['sensitivity'] >= cfg.min_sensitivity else 'FAILED'}"]


def paired_checks(cfg: PromoteConfig, paired: Paired) -> tuple[list[str], bool]:
    """The gain and its evidence, film by film: both must pass. A gain inside the noise is refused
    however large the point estimate, and a significant gain smaller than the margin is not worth a swap."""
    gain_ok = paired.difference >= cfg.margin
    p_ok = paired.p_value < cfg.alpha
    lines = [f"  paired DeLong on {paired.films} films matched by content hash: AUC difference "
             f"{paired.difference:+.4f} [95% CI {paired.ci_low:+.4f}, {paired.ci_high:+.4f}], "
             f"one-sided p = {paired.p_value:.4g}",
             f"  AUC gain {paired.difference:+.4f} >= margin {cfg.margin:.4f}: {'ok' if gain_ok else 'FAILED'}",
             f"  p {paired.p_value:.4g} < alpha {cfg.alpha:g}: "
             + ("ok" if p_ok else "FAILED (the gain is not significant: it is within the noise of this test set)")]
    return lines, gain_ok and p_ok
