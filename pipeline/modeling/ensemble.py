"""Several trained classifiers and test-time views as one probability: the mean over members and views.

A registered version may hold K members (`retrain-best --top-k K` or `--seeds N`) and a set of views of each
film (test-time augmentation, chosen on validation). Training, the served pyfunc and the benchmarks all
average through `view_probabilities` + `combine`, so the number a version is evaluated with is the number it
serves. Views are cheap to predict once and recombine: every member's prediction of every view is kept, and
the choice of members and views on validation is then arithmetic, not more forward passes.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from pipeline.data.preprocess import to_model_input

# A view is a deterministic change of the whole batch. The crop keeps the central 90% (a film is framed a little
# differently at every site) and resizes it back; flips mirror left and right (the heart is on the left, but
# the training augmentation flips too, so the network has seen both).
VIEWS = ("identity", "flip", "crop", "flip-crop")
TTA = {"none": ("identity",), "flip": ("identity", "flip"), "flip-crops": VIEWS}
CENTRAL_CROP = 0.9



def view(pixels: np.ndarray, name: str) -> np.ndarray:
    """One view of a (n, size, size, 3) float batch, the same shape."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}: one of {', '.join(VIEWS)}")
    out = pixels
    if name in ("crop", "flip-crop"):
        size = pixels.shape[1]
        cut = int(round(size * (1 - CENTRAL_CROP) / 2))
        out = tf.image.resize(out[:, cut:size - cut, cut:size - cut, :], (size, size)).numpy()
    if name in ("flip", "flip-crop"):
        out = out[:, :, ::-1, :]
    return np.ascontiguousarray(out, dtype=np.float32)


def view_probabilities(model: keras.Model, grays: np.ndarray, views=VIEWS, batch_size: int = 32
                       ) -> dict[str, np.ndarray]:
    """The model's probability of each film under each view: {view: (n,)}."""
    pixels = to_model_input(grays)
    return {name: np.asarray(model.predict(view(pixels, name), batch_size=batch_size, verbose=0),
                             np.float64).reshape(-1) for name in views}


def combine(per_member: list[dict[str, np.ndarray]], tta: str) -> np.ndarray:
    """Mean probability over the members and the views of `tta` (every member sees the same views)."""
    return np.mean([member[name] for member in per_member for name in TTA[tta]], axis=0)


def choose_tta(per_member: list[dict[str, np.ndarray]], labels: np.ndarray) -> tuple[str, dict[str, float]]:
    """The TTA setting with the highest validation ROC-AUC; a tie goes to fewer views (cheaper to serve)."""
    from sklearn.metrics import roc_auc_score

    aucs = {tta: float(roc_auc_score(labels, combine(per_member, tta))) for tta in TTA}
    best = max(aucs.values())
    return next(tta for tta in TTA if aucs[tta] >= best - 1e-9), aucs


def members_table(per_member: list[dict[str, np.ndarray]], labels: np.ndarray, tta: str) -> list[dict]:
    """Validation ROC-AUC of each member alone and of the first k members averaged, k = 1..K, under `tta`
    (members in the order given: best trial first for --top-k)."""
    from sklearn.metrics import roc_auc_score

    rows = []
    for k in range(1, len(per_member) + 1):
        rows.append({"members": k,
                     "member_val_auc": float(roc_auc_score(labels, combine([per_member[k - 1]], tta))),
                     "ensemble_val_auc": float(roc_auc_score(labels, combine(per_member[:k], tta)))})
    return rows


def mean_probability(members: list[keras.Model], grays: np.ndarray, tta: str, batch_size: int = 32,
                     feature_model: keras.Model | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """What a version serves before calibration: the mean over members and views. With `feature_model`
    (member 0 returning [probability, pooled features]) its identity pass also gives the OOD detector's
    features, so the guard costs no extra pass."""
    pixels = to_model_input(grays)
    features, probabilities = None, []
    for i, member in enumerate(members):
        for name in TTA[tta]:
            batch = pixels if name == "identity" else view(pixels, name)
            if i == 0 and name == "identity" and feature_model is not None:
                proba, features = feature_model.predict(batch, batch_size=batch_size, verbose=0)
            else:
                proba = member.predict(batch, batch_size=batch_size, verbose=0)
            probabilities.append(np.asarray(proba, np.float64).reshape(-1))
    return np.mean(probabilities, axis=0), features
