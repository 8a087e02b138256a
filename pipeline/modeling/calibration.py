"""Post-hoc calibration of the classifier's probability: Platt or temperature scaling, fitted on validation.

Both act on the logit, so they keep the ranking (ROC-AUC unchanged) and only move the probabilities;
the fitted parameters travel with the version (model_config) and the pyfunc applies them when serving.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from pipeline.config import CALIBRATIONS, PipelineError

CALIBRATION_METHODS = CALIBRATIONS
log = logging.getLogger(__name__)
_EPS = 1e-7


class CalibrationError(PipelineError, ValueError):
    """Calibration cannot be fitted on these validation probabilities."""


def _logit(proba: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(proba, np.float64), _EPS, 1 - _EPS))


@dataclass(frozen=True)
class Calibration:
    """p_calibrated = sigmoid(slope * logit(p) + intercept); temperature scaling is slope = 1/T, intercept 0."""
    method: str = "none"
    params: dict = field(default_factory=dict)

    @property
    def slope(self) -> float:
        if self.method == "temperature":
            return 1.0 / float(self.params["temperature"])
        return float(self.params.get("slope", 1.0))

    @property
    def intercept(self) -> float:
        return float(self.params.get("intercept", 0.0)) if self.method == "platt" else 0.0

    def apply(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba, np.float64)
        if self.method == "none":
            return proba
        return expit(self.slope * _logit(proba) + self.intercept)

    def to_config(self) -> dict:
        """What goes into the pyfunc's model_config (plain JSON types)."""
        return {"calibration_method": self.method, "calibration_params": json.dumps(self.params, sort_keys=True)}

    @classmethod
    def from_config(cls, config: dict) -> Calibration:
        """A version saved before calibration existed has no keys: it serves its raw probability."""
        method = config.get("calibration_method") or "none"
        return cls(method, json.loads(config.get("calibration_params") or "{}"))


def fit_platt(proba: np.ndarray, y: np.ndarray) -> Calibration:
    """Platt scaling: a 1-feature logistic regression on the logit, with Platt's (1999) smoothed targets
    (N+ + 1)/(N+ + 2) and 1/(N- + 2), so a small or separable validation split gives a finite slope.
    The soft targets are fitted as each film twice, once per label, weighted by its target.
    A non-positive slope would reverse the ranking, which no calibration should do: refused."""
    y = np.asarray(y, np.int64)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    target = np.where(y == 1, (pos + 1) / (pos + 2), 1 / (neg + 2))
    z = _logit(proba)[:, None]
    model = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000)
    model.fit(np.vstack([z, z]), np.r_[np.ones(len(z)), np.zeros(len(z))], sample_weight=np.r_[target, 1 - target])
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    if slope <= 0:
        raise CalibrationError(f"Platt scaling on validation gives slope {slope:.3g} <= 0 (the model ranks "
                               "validation worse than chance): use --calibration temperature or none")
    return Calibration("platt", {"slope": round(slope, 8), "intercept": round(intercept, 8)})


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> Calibration:
    """The temperature T minimising validation log-loss of sigmoid(logit / T) (Guo et al., 2017)."""
    z, y = _logit(proba), np.asarray(y, np.float64)

    def nll(log_t: float) -> float:
        q = np.clip(expit(z / np.exp(log_t)), _EPS, 1 - _EPS)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return Calibration("temperature", {"temperature": round(float(np.exp(result.x)), 8)})


def fit_calibration(proba: np.ndarray, y: np.ndarray, method: str) -> Calibration:
    """Called after training: a fit that cannot be made falls back (with a warning) rather than lose the
    trained model; the version's `calibration.method` tag says what was actually used."""
    if method not in CALIBRATION_METHODS:
        raise CalibrationError(f"--calibration {method!r}: expected one of {', '.join(CALIBRATION_METHODS)}")
    if method == "none":
        return Calibration()
    if len(np.unique(y)) < 2:
        log.warning("validation has one class only: the served probability stays uncalibrated")
        return Calibration()
    if method == "platt":
        try:
            return fit_platt(proba, y)
        except CalibrationError as err:
            log.warning("%s; falling back to temperature scaling", err)
    return fit_temperature(proba, y)
