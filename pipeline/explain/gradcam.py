"""Grad-CAM heat maps (tf-keras-vis) and the image grids and overlays people look at."""
from __future__ import annotations

import cv2
import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tf_keras_vis.gradcam import Gradcam  # noqa: E402
from tf_keras_vis.utils.scores import BinaryScore  # noqa: E402

from pipeline.data.dataset import CLASSES  # noqa: E402

FEATURES_LAYER = "backbone_features"


def _scores(labels) -> BinaryScore:
    # Explain the predicted-pneumonia direction for every image, so maps are comparable across tiles.
    return BinaryScore([True] * len(labels))


def gradcam(model: keras.Model, images: np.ndarray, layer: str) -> np.ndarray:
    """Grad-CAM at `layer` of a flat model; (n, H, W) maps in 0..1 at the input's size."""
    cams = Gradcam(model, clone=True)(_scores(images), images, penultimate_layer=layer)
    return np.asarray(cams, dtype=np.float32)


def gradcam_on_features(head: keras.Model, feature_maps: np.ndarray, size: int) -> np.ndarray:
    """Exact Grad-CAM at the frozen backbone's last conv layer, computed from its cached output.

    The backbone is frozen, so the conv maps of the fixed images never change between trials;
    only the head's gradients do. This costs milliseconds instead of a backbone pass per trial.
    """
    inputs = keras.Input(feature_maps.shape[1:])
    maps = keras.layers.Identity(name=FEATURES_LAYER)(inputs)
    model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(maps)))
    cams = Gradcam(model, clone=False)(_scores(feature_maps), feature_maps, penultimate_layer=FEATURES_LAYER,
                                      seek_penultimate_conv_layer=False)
    return np.stack([cv2.resize(np.asarray(c, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
                     for c in np.atleast_3d(cams)]) if len(feature_maps) else np.zeros((0, size, size), np.float32)


def overlay(gray: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """RGB uint8 image: the film with the heat map (jet) blended on top."""
    heat = cv2.applyColorMap(np.uint8(255 * np.clip(cam, 0, 1)), cv2.COLORMAP_JET)[:, :, ::-1]
    film = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    return np.uint8(np.clip((1 - alpha) * film + alpha * heat, 0, 255))


def grid_figure(grays: np.ndarray, cams: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                title: str, threshold: float = 0.5, columns: int = 4):
    """A titled grid: each tile says the true class and the predicted probability of pneumonia."""
    n = len(grays)
    rows = max(1, -(-n // columns))
    # 80 dpi keeps a 224 px film at about its own resolution (3 in x 80): sharper costs PNG time every trial
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.3 * rows + 0.4), squeeze=False, dpi=80)
    for ax in axes.flat:
        ax.axis("off")
    for ax, gray, cam, label, prob in zip(axes.flat, grays, cams, labels, probs):
        ax.imshow(overlay(gray, cam))
        wrong = (prob >= threshold) != bool(label)
        ax.set_title(f"true {CLASSES[int(label)]}\np(pneumonia)={prob:.2f}", fontsize=9,
                     color="red" if wrong else "black")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
