"""The test report as a person reads it: every figure with its 95% interval, then calibration and the OOD share."""
from __future__ import annotations

from pipeline.evaluate.intervals import with_interval


def print_report(report: dict, names: tuple[str, ...], width: int = 12) -> None:
    """One test figure a line, `value [low, high]` where it has a 95% interval (DeLong for AUC, Wilson)."""
    print(f"  {'':{width}s} value  [95% CI]")
    for name in names:
        if f"test_{name}" in report:
            print(f"  {name:{width}s} {with_interval(report, name)}")


def print_calibration_and_ood(report: dict) -> None:
    """The served probability's calibration and the OOD guard's share, as the evaluation recorded them."""
    if "test_brier" in report:
        print(f"  calibration: Brier {report['test_brier']:.4f} (uncalibrated {report['test_brier_uncalibrated']:.4f}), "
              f"ECE {report['test_ece']:.4f} (uncalibrated {report['test_ece_uncalibrated']:.4f})")
    if "test_ood_share" in report:
        print(f"  flagged out of distribution: {report['test_ood_share']:.1%}")
