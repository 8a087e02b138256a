"""After retraining, before the threshold: fit the served probability's calibration on validation and the
out-of-distribution detector on training films (its threshold on validation). Test films are never read."""
from __future__ import annotations

from dataclasses import dataclass

import keras
import mlflow
import numpy as np

from pipeline.data.dataset import Dataset
from pipeline.data.preprocess import to_model_input
from pipeline.modeling.calibration import Calibration, fit_calibration
from pipeline.modeling.ood import OodDetector, fit_detector


@dataclass
class Guards:
    calibration: Calibration
    ood: OodDetector | None
    val_calibrated: np.ndarray  # what the threshold is chosen on

    def version_tags(self) -> dict[str, str]:
        tags = {"calibration.method": self.calibration.method,
                "calibration.params": self.calibration.to_config()["calibration_params"]}
        if self.ood is not None:
            tags.update({"ood.detector": self.ood.name, "ood.threshold": f"{self.ood.threshold:.6g}"})
        return tags


def probabilities_and_features(model: keras.Model, grays: np.ndarray, batch_size: int = 32):
    """The classifier's probability and its pooled backbone features ("pool") in one pass."""
    both = keras.Model(model.input, [model.output, model.get_layer("pool").output])
    proba, features = both.predict(to_model_input(grays), batch_size=batch_size, verbose=0)
    return np.asarray(proba, np.float64).reshape(-1), np.asarray(features, np.float32)


def fit_guards(model: keras.Model, dataset: Dataset, calibration: str, ood_detector: str,
               flag_share: float = 0.05, val_raw: np.ndarray | None = None) -> Guards:
    """Inside the active run: fit both, log what they are and what they do on validation. `val_raw`: what the
    version serves before calibration when that is not `model`'s own output (an ensemble, test-time views);
    the detector always reads `model`'s features (member 0)."""
    x_train, _ = dataset.split("train")
    x_val, y_val = dataset.split("val")
    own_raw, val_features = probabilities_and_features(model, x_val)
    val_raw = own_raw if val_raw is None else val_raw
    fitted = fit_calibration(val_raw, y_val, calibration)
    val_calibrated = fitted.apply(val_raw)
    detector = None
    if ood_detector != "none":
        _, train_features = probabilities_and_features(model, x_train)
        detector = fit_detector(ood_detector, train_features, x_train, val_features, x_val, flag_share)
        val_share = float(np.mean(detector.flags(detector.score(val_features, x_val))))
        mlflow.log_metrics({"ood_threshold": detector.threshold, "val_ood_share": val_share})
        print(f"out-of-distribution guard: {detector.name}, threshold {detector.threshold:.4g} "
              f"flags {val_share:.1%} of val", flush=True)
    guards = Guards(fitted, detector, val_calibrated)
    mlflow.set_tags(guards.version_tags())
    print(f"calibration: {fitted.method} {fitted.params or ''}", flush=True)
    return guards
