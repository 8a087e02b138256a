"""Class balance for the head search: class weights, SMOTE on cached feature vectors, or nothing.

The seeds' SMOTE interpolated between raw pixel films, which makes blurred double exposures no
radiograph looks like. Here SMOTE (imbalanced-learn) interpolates between pooled backbone feature
vectors of training films, where a neighbour in feature space is a similar film, and only the
training vectors: validation and test are never resampled, so the scores stay honest.
"""
from __future__ import annotations

import numpy as np

from pipeline.data.dataset import class_weights

IMBALANCE = ("class-weights", "smote", "none")


def balance(x: np.ndarray, y: np.ndarray, how: str, seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, labels, per-sample loss weights) to train a head on; SMOTE appends synthetic minority vectors
    (with fewer than two minority vectors there is nothing to interpolate: class weights instead)."""
    counts = np.bincount(y.astype(np.int64), minlength=2)
    if how == "smote" and counts.min() < 2:  # no neighbour to interpolate towards (a smoke run's handful of films)
        how = "class-weights"
    if how == "smote":
        from imblearn.over_sampling import SMOTE

        # SMOTE's 5 neighbours by default; a minority smaller than 6 (smoke runs) gets as many as it has
        smote = SMOTE(random_state=seed, k_neighbors=int(min(5, counts.min() - 1)))
        x_res, y_res = smote.fit_resample(x, y.astype(np.int64))
        return x_res.astype(x.dtype), y_res.astype(y.dtype), np.ones(len(y_res), np.float32)
    if how == "class-weights":
        weights = class_weights(y)
        return x, y, np.where(y == 1, weights[1], weights[0]).astype(np.float32)
    if how == "none":
        return x, y, np.ones(len(y), np.float32)
    raise ValueError(f"imbalance={how!r}: expected one of {', '.join(IMBALANCE)}")
