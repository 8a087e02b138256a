"""Out-of-distribution detectors: a score per film (higher = less like the training films) and a threshold.

Every detector is fitted on TRAINING films only; its threshold is the validation quantile that flags
`flag_share` of validation films. Features are the classifier's own pooled backbone output ("pool")
or a layout/intensity descriptor of the model's gray view; benchmarks/ood_guard.py compares them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from sklearn.covariance import LedoitWolf

from pipeline.config import OOD_DETECTORS, PipelineError

DETECTORS = tuple(d for d in OOD_DETECTORS if d != "none")
COMBINED = ("mahalanobis", "pixel")  # the parts of "combined": each scaled by its own validation threshold
NEEDS_FEATURES = {"mahalanobis", "knn", "combined"}
KNN_K = 5
KNN_MAX_TRAIN = 2000  # stored with the version: bounds the artifact (2000 x 1280 float16 = 5 MB)


class OodError(PipelineError, ValueError):
    """A detector cannot be fitted or loaded."""


def pixel_descriptor(grays: np.ndarray) -> np.ndarray:
    """Per film: an 8x8 thumbnail (layout: catches rotation, inversion, photos), a 16-bin histogram and edge
    energy (catches blank and noise), all from the (size, size) uint8 view the classifier sees."""
    grays = np.asarray(grays)
    out = []
    for g in grays:
        g = g.astype(np.float32)
        thumb = cv2.resize(g, (8, 8), interpolation=cv2.INTER_AREA).ravel() / 255.0
        hist = np.histogram(g, bins=16, range=(0, 256))[0] / g.size
        gx, gy = np.abs(np.diff(g, axis=1)).mean() / 255.0, np.abs(np.diff(g, axis=0)).mean() / 255.0
        out.append(np.concatenate([thumb, hist, [gx, gy, g.std() / 255.0]]))
    return np.asarray(out, np.float64).reshape(len(grays), -1)


def _mahalanobis_fit(x: np.ndarray) -> dict[str, np.ndarray]:
    lw = LedoitWolf().fit(np.asarray(x, np.float64))
    return {"location": lw.location_, "precision": lw.precision_}


def _mahalanobis_score(arrays: dict, x: np.ndarray) -> np.ndarray:
    d = np.asarray(x, np.float64) - arrays["location"]
    return np.einsum("ij,jk,ik->i", d, arrays["precision"], d)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _knn_fit(x: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    pick = np.sort(np.random.default_rng(seed).permutation(len(x))[:KNN_MAX_TRAIN])
    return {"bank": _unit(x[pick]).astype(np.float16)}


def _knn_score(arrays: dict, x: np.ndarray) -> np.ndarray:
    """Mean cosine distance to the K nearest training films."""
    sim = _unit(x) @ arrays["bank"].astype(np.float32).T
    k = min(KNN_K, sim.shape[1])
    return 1.0 - np.sort(sim, axis=1)[:, -k:].mean(axis=1)


@dataclass
class OodDetector:
    name: str
    threshold: float
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def needs_features(self) -> bool:
        return self.name in NEEDS_FEATURES

    def score(self, features: np.ndarray | None, grays: np.ndarray) -> np.ndarray:
        return _score(self.name, self.arrays, features, grays)

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """True where a film is out of distribution (a NaN score is never flagged)."""
        return np.asarray(scores, np.float64) > self.threshold

    def save(self, path: Path) -> None:
        np.savez(path, name=np.array(self.name), threshold=np.array(self.threshold), **self.arrays)

    @classmethod
    def load(cls, path: Path) -> OodDetector:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files if k not in ("name", "threshold")}
            return cls(str(stored["name"]), float(stored["threshold"]), arrays)


def _score(name: str, arrays: dict, features, grays) -> np.ndarray:
    if name == "mahalanobis":
        return _mahalanobis_score(arrays, features)
    if name == "knn":
        return _knn_score(arrays, features)
    if name == "pixel":
        return _mahalanobis_score(arrays, pixel_descriptor(grays))
    if name == "combined":
        parts = [_score(p, _sub(arrays, p), features, grays) / float(arrays[f"{p}.scale"]) for p in COMBINED]
        return np.max(parts, axis=0)
    raise OodError(f"unknown out-of-distribution detector {name!r}: expected one of {', '.join(DETECTORS)}")


def _sub(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + ".")}


def _fit_arrays(name: str, train_features, train_grays, val_features, val_grays, flag_share: float) -> dict:
    if name == "mahalanobis":
        return _mahalanobis_fit(train_features)
    if name == "knn":
        return _knn_fit(train_features)
    if name == "pixel":
        return _mahalanobis_fit(pixel_descriptor(train_grays))
    arrays = {}
    for part in COMBINED:
        sub = _fit_arrays(part, train_features, train_grays, val_features, val_grays, flag_share)
        scale = np.quantile(_score(part, sub, val_features, val_grays), 1 - flag_share)
        arrays.update({f"{part}.{k}": v for k, v in sub.items()})
        arrays[f"{part}.scale"] = np.array(max(float(scale), 1e-12))
    return arrays


def fit_detector(name: str, train_features, train_grays, val_features, val_grays,
                 flag_share: float = 0.05) -> OodDetector:
    """Fit on train only; the threshold flags `flag_share` of validation films (their upper quantile)."""
    if name not in DETECTORS:
        raise OodError(f"--ood-detector {name!r}: expected one of {', '.join(DETECTORS)} or none")
    if len(train_grays) < 2 or len(val_grays) < 1:
        raise OodError("the out-of-distribution detector needs at least 2 training and 1 validation film")
    arrays = _fit_arrays(name, train_features, train_grays, val_features, val_grays, flag_share)
    val_scores = _score(name, arrays, val_features, val_grays)
    return OodDetector(name, float(np.quantile(val_scores, 1 - flag_share)), arrays)
