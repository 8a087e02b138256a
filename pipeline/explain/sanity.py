"""Two sanity checks of a trained classifier, run on test films it already read (nothing is chosen by them).

- Model-parameter randomization (Adebayo et al., 2018, "Sanity Checks for Saliency Maps"): if the
  Grad-CAM maps barely change when the learned weights are replaced by random ones, the maps show the
  image's edges, not what the model learned.
- Shortcut probe: if the model separates the classes as well from the film's border alone as from the
  whole film, it reads something outside the lungs (markers, labels, collimation, patient position).
"""
from __future__ import annotations

import warnings

import keras
import numpy as np
from scipy.stats import ConstantInputWarning, spearmanr
from sklearn.metrics import roc_auc_score

from pipeline.data.preprocess import to_model_input
from pipeline.explain.gradcam import gradcam
from pipeline.modeling.backbones import predict_proba

CENTRE_FRACTION = 0.6
"""Side of the central square, as a share of the film's side: in these paediatric AP/PA films the lungs,
heart and diaphragm fill about the central 60% of width and height, while the outer 20% on each side holds
shoulders, arms, laterality markers, text labels and collimation edges, where shortcuts live."""
BLOCK_LAYERS = 30  # top backbone layers of the "blocks" stage: what retrain-best fine-tunes by default
HEAD, POOL = "head", "pool"  # layer names build_classifier gives the head and the pooling before it
METRICS = ("sanity_randomization_spearman_head", "sanity_randomization_spearman_blocks", "sanity_border_auc",
           "sanity_centre_auc", "sanity_full_auc")


def centre_box(size: int) -> slice:
    """The rows (and columns) of the central CENTRE_FRACTION square of a size x size film."""
    margin = int(round(size * (1 - CENTRE_FRACTION) / 2))
    return slice(margin, size - margin)


def border_only(grays: np.ndarray) -> np.ndarray:
    """(n, H, W) films with the central square set to each film's own mean gray."""
    out, box = grays.copy(), centre_box(grays.shape[-1])
    means = grays.reshape(len(grays), -1).mean(axis=1).round().astype(grays.dtype)
    out[:, box, box] = means[:, None, None]
    return out


def centre_only(grays: np.ndarray) -> np.ndarray:
    """(n, H, W) films with everything but the central square set to each film's own mean gray."""
    box = centre_box(grays.shape[-1])
    means = grays.reshape(len(grays), -1).mean(axis=1).round().astype(grays.dtype)
    out = np.broadcast_to(means[:, None, None], grays.shape).copy()
    out[:, box, box] = grays[:, box, box]
    return out


def shortcut_probe(model: keras.Model, grays: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ROC-AUC on the same films: whole, border only, centre only."""
    def auc(films: np.ndarray) -> float:
        return float(roc_auc_score(labels, predict_proba(model, to_model_input(films))))

    return {"sanity_full_auc": auc(grays), "sanity_border_auc": auc(border_only(grays)),
            "sanity_centre_auc": auc(centre_only(grays))}


def randomization_stages(model: keras.Model) -> dict[str, list[str]]:
    """Cascading from the top: the head alone, then the head and the top BLOCK_LAYERS backbone layers."""
    names = [layer.name for layer in model.layers]
    backbone = [n for n in names[1:names.index(POOL)] if model.get_layer(n).weights]
    return {"head": [HEAD], "blocks": [HEAD, *backbone[-BLOCK_LAYERS:]]}


def _reinitialise(layer: keras.layers.Layer, rng: np.random.Generator) -> None:
    """Fresh Glorot-uniform kernels, zero biases. BatchNorm keeps its statistics and scale: set to 0/1 they
    shrink activations to nothing (see modeling.backbones.calibrate_batchnorm) and every map goes flat."""
    if isinstance(layer, keras.Model):
        for inner in layer.layers:
            _reinitialise(inner, rng)
        return
    if isinstance(layer, keras.layers.BatchNormalization) or not layer.weights:
        return
    fresh = []
    for w in layer.get_weights():
        if w.ndim < 2:
            fresh.append(np.zeros_like(w))
            continue
        receptive = int(np.prod(w.shape[:-2]))
        limit = np.sqrt(6.0 / (receptive * (w.shape[-2] + w.shape[-1])))
        fresh.append(rng.uniform(-limit, limit, w.shape).astype(w.dtype))
    layer.set_weights(fresh)


def randomized_copy(model: keras.Model, layers: list[str], seed: int = 0) -> keras.Model:
    """A copy of `model` (the original untouched) whose named layers hold random weights."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    for name in layers:
        _reinitialise(copy.get_layer(name), rng)
    return copy


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Spearman rank correlation of paired (n, H, W) maps; a flat map ranks nothing, so it counts 0."""
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        for x, y in zip(a, b):
            rho = spearmanr(x.ravel(), y.ravel()).statistic
            values.append(float(rho) if np.isfinite(rho) else 0.0)
    return float(np.mean(values)) if values else float("nan")


def randomization_test(model: keras.Model, layer: str, grays: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Spearman correlation of the trained model's Grad-CAM maps with each randomized stage's maps."""
    images = to_model_input(grays)
    trained = gradcam(model, images, layer)
    return {f"sanity_randomization_spearman_{stage}":
            map_correlation(trained, gradcam(randomized_copy(model, names, seed), images, layer))
            for stage, names in randomization_stages(model).items()}


def pick_films(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Up to `count` indices, half per class where the classes allow it (both classes for an AUC), seeded."""
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in (0, 1)]
    first = min(len(by_class[0]), max(count // 2, count - len(by_class[1])))
    return np.sort(np.concatenate([by_class[0][:first], by_class[1][:count - first]])).astype(np.int64)


def sanity_checks(model: keras.Model, layer: str, grays: np.ndarray, labels: np.ndarray, count: int,
                  seed: int = 0) -> dict[str, float]:
    """Both checks on `count` test films (0: none); the five METRICS, or {} when turned off or one class."""
    idx = pick_films(labels, count, seed)
    if not count or len(np.unique(labels[idx])) < 2:
        return {}
    films, y = grays[idx], labels[idx]
    return {**randomization_test(model, layer, films, seed), **shortcut_probe(model, films, y),
            "sanity_images": float(len(idx))}


def log_sanity_checks(model: keras.Model, layer: str, grays: np.ndarray, labels: np.ndarray, count: int,
                      seed: int = 0) -> dict[str, str]:
    """Inside the active run: the checks as run metrics; returned as version tags (strings)."""
    import mlflow

    if count:
        print(f"sanity checks on {min(count, len(labels))} test films (randomization, shortcut probe)", flush=True)
    figures = sanity_checks(model, layer, grays, labels, count, seed)
    if figures:
        mlflow.log_metrics(figures)
    return {k: f"{v:.6f}" if k != "sanity_images" else str(int(v)) for k, v in figures.items()}
