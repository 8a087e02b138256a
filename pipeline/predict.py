"""Predict with a registered model: the same preprocessing as training, its threshold, a Grad-CAM overlay."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .config import PreprocessConfig
from .data import CLASSES
from .preprocess import ImageError, preprocess_file, to_model_input


@dataclass
class Prediction:
    path: str
    probability: float | None = None
    label: str | None = None
    overlay: str | None = None
    error: str | None = None


def predict_images(model_uri: str, paths: list[str], output_dir: Path) -> tuple[list[Prediction], float]:
    """One Prediction per path, in order; an unreadable file gets an error and the others still run."""
    import mlflow

    from .gradcam import gradcam, overlay
    from .registry import resolve

    version = resolve(model_uri)
    tags = version.tags
    cfg = PreprocessConfig(int(tags["image_size"]), float(tags["clahe_clip_limit"]), int(tags["clahe_tile_grid"]))
    threshold = float(tags["threshold"])
    model = mlflow.keras.load_model(model_uri)

    results, grays = [], {}
    for i, path in enumerate(paths):
        results.append(Prediction(path))
        try:
            grays[i] = preprocess_file(path, cfg)
        except (ImageError, cv2.error) as err:
            results[i].error = str(err)
        except OSError as err:
            results[i].error = f"{path}: cannot be read ({err.strerror or err})"
    if not grays:
        return results, threshold
    order = sorted(grays)
    batch = to_model_input(np.stack([grays[i] for i in order]))
    probs = model.predict(batch, verbose=0).reshape(-1)
    cams = gradcam(model, batch, tags["gradcam_layer"])
    output_dir.mkdir(parents=True, exist_ok=True)
    for i, prob, cam in zip(order, probs, cams):
        target = output_dir / f"{Path(paths[i]).stem}_gradcam.png"
        cv2.imwrite(str(target), overlay(grays[i], cam)[:, :, ::-1])
        results[i].probability = float(prob)
        results[i].label = CLASSES[int(prob >= threshold)]
        results[i].overlay = str(target)
    return results, threshold
