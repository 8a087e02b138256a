"""LIME beside Grad-CAM: the superpixels that raise p(pneumonia), and how far the two explanations agree.

Grad-CAM reads the model's gradients at its last conv layer; LIME ignores them and asks the model
itself what happens when parts of the film are greyed out. A reviewer trusts a region both point at
more than either map alone, and a random-start model that looks at the film's borders shows up in both.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.config import EXPLAIN_CHOICES, LIME_SAMPLES, PipelineError  # noqa: E402
from pipeline.data.dataset import CLASSES  # noqa: E402
from pipeline.data.preprocess import to_model_input
from pipeline.explain.gradcam import gradcam, overlay

# benchmarks/explain_cost.py: a perturbed film costs about 0.2 CPU s with ResNet50 at 224 px (the
# default backbone) and about 0.017 with MobileNetV2 at 128 px, so 150 samples keep one film at
# 16-31 s (ResNet50) or 1.5-3 s (MobileNetV2) on 2 idle cores: within the ~30 s budget with either.
DEFAULT_SAMPLES = LIME_SAMPLES
DEFAULT_SEGMENTS = 50   # SLIC's target; a 224 px chest film gets about 35 superpixels
DEFAULT_FEATURES = 5    # superpixels shown: about a tenth of the film
LIME_BATCH = 50         # perturbed films per model call: bounds memory at 224 px (about 30 MB)
LIME_COLOR = (0, 255, 0)


class ExplainError(PipelineError, ValueError):
    """An explanation method or setting the pipeline does not have."""


def check_explain(method: str) -> str:
    """Validate --explain once, where it enters."""
    if method not in EXPLAIN_CHOICES:
        raise ExplainError(f"--explain {method!r} is not a method; use one of {', '.join(EXPLAIN_CHOICES)}")
    return method


def check_samples(samples: int) -> int:
    if samples < 10:
        raise ExplainError(f"--lime-samples {samples} is too few for LIME's linear fit; use at least 10 "
                           f"(default {DEFAULT_SAMPLES})")
    return samples


@dataclass
class LimeExplanation:
    """One film's LIME result at the model's input size."""
    segments: np.ndarray        # (H, W) int superpixel labels 0..n-1
    weights: dict[int, float]   # superpixel -> weight toward p(pneumonia) in LIME's local linear model
    mask: np.ndarray            # (H, W) bool: the chosen superpixels
    probability: float          # p(pneumonia) of the untouched film
    score: float                # R^2 of LIME's local linear model on its samples


def segmenter(n_segments: int = DEFAULT_SEGMENTS):
    """SLIC superpixels through lime's scikit-image wrapper.

    SLIC is deterministic (a grid start, no random draw), unlike quickshift, whose seed parameter
    scikit-image 0.26 renamed so that lime's default can no longer set it. start_label=0 because lime
    indexes superpixels 0..n-1: SLIC's default of 1 would leave the last one never greyed out.
    """
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    return SegmentationAlgorithm("slic", n_segments=n_segments, compactness=10, start_label=0)


class _Classifier:
    """What lime calls: (n, H, W, 3) perturbed films -> (n, 2) [p(normal), p(pneumonia)].

    Given the served model (the pyfunc's PneumoniaModel: members, test-time views, calibration) it
    explains that, the probability a user is shown; given a plain network, that network. lime's
    first sample is the untouched film, so its p is kept as the film's probability.
    """
    def __init__(self, model):
        self.model, self.probability = model, None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if hasattr(self.model, "probabilities"):  # lime's films are gray2rgb copies: one channel is the film
            p = self.model.probabilities(np.asarray(images[..., 0], np.uint8))
        else:  # predict_on_batch runs Keras's compiled predict step: 2-3x faster than an eager call here
            p = self.model.predict_on_batch(images.astype(np.float32))
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        if self.probability is None:
            self.probability = float(p[0])
        return np.stack([1.0 - p, p], axis=1)


def explain_lime(model, gray: np.ndarray, samples: int = DEFAULT_SAMPLES, seed: int = 42,
                 n_segments: int = DEFAULT_SEGMENTS, features: int = DEFAULT_FEATURES,
                 progress: bool = False) -> LimeExplanation:
    """LIME on one preprocessed film (H, W) uint8; the same film, model and seed give the same result.

    The explainer gets its own RandomState per film, so a film's explanation does not depend on
    which films were explained before it. Hidden superpixels turn black (hide_color=0, as lime's own
    tutorial does), not into their own mean (lime's default): an opacity is brighter lung, and a
    superpixel inside it filled with its own mean stays just as bright, so LIME could not see it.
    """
    from lime import lime_image

    explainer = lime_image.LimeImageExplainer(random_state=seed)
    classifier = _Classifier(model)
    explanation = _quiet(progress, explainer.explain_instance, np.asarray(gray, np.uint8),
                         classifier, labels=(1,), top_labels=None, hide_color=0, num_samples=samples,
                         batch_size=LIME_BATCH, segmentation_fn=segmenter(n_segments), random_seed=seed)
    _, mask = explanation.get_image_and_mask(1, positive_only=True, num_features=features, hide_rest=False)
    weights = {int(k): float(w) for k, w in explanation.local_exp[1]}
    return LimeExplanation(explanation.segments, weights, mask.astype(bool), classifier.probability,
                           float(explanation.score))


def _quiet(progress: bool, fn, *args, **kwargs):
    """lime draws a tqdm bar per film; without progress it is switched off for that call only."""
    if progress:
        return fn(*args, **kwargs)
    import lime.lime_image as module
    from tqdm.auto import tqdm

    original = module.tqdm
    module.tqdm = lambda iterable, **kw: tqdm(iterable, disable=True, **kw)
    try:
        return fn(*args, **kwargs)
    finally:
        module.tqdm = original


def top_pixels(cam: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the `count` highest pixels of a heat map (ties broken by position, stably)."""
    flat = np.zeros(cam.size, dtype=bool)
    if count > 0:
        flat[np.argsort(-cam.reshape(-1), kind="stable")[:count]] = True
    return flat.reshape(cam.shape)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; nan when both are empty (nothing to compare)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def agreement(cam: np.ndarray, lime_mask: np.ndarray, top_fraction: float | None = None) -> float:
    """IoU of Grad-CAM's top pixels with LIME's chosen superpixels, both at the model's input size.

    By default Grad-CAM gets as many pixels as LIME chose, so two explanations that point at the
    same place score 1.0 and the score never caps below 1 because of unequal areas; two random
    regions of area share a score about a / (2 - a) (0.05 for a tenth of the film).
    top_fraction fixes Grad-CAM's share instead. nan when LIME found no superpixel raising p(pneumonia).
    """
    if cam.shape != lime_mask.shape:
        raise ExplainError(f"Grad-CAM map {cam.shape} and LIME mask {lime_mask.shape} differ in size")
    if not lime_mask.any():
        return float("nan")
    share = lime_mask.mean() if top_fraction is None else top_fraction
    return iou(top_pixels(cam, int(round(share * cam.size))), lime_mask)


def upsample(values: np.ndarray, shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """A map or mask at the model's input size, stretched to a film's (rows, cols)."""
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out = cv2.resize(values.astype(np.float32), (shape[1], shape[0]), interpolation=interpolation)
    return out > 0.5 if nearest else out


def lime_overlay(film: np.ndarray, mask: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """RGB uint8 at the film's own resolution: chosen superpixels tinted green and outlined.

    The mask comes at the model's input size; it is stretched (nearest) to the film, so a full-size
    original film gets an overlay at full size.
    """
    mask = upsample(mask, film.shape[:2], nearest=True) if mask.shape != film.shape[:2] else mask.astype(bool)
    rgb = np.repeat(film[..., None], 3, axis=-1).astype(np.float32)
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.array(LIME_COLOR, np.float32)
    rgb = np.uint8(np.clip(rgb, 0, 255))
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.drawContours(rgb, contours, -1, LIME_COLOR, max(1, min(film.shape[:2]) // 200))


def gradcam_overlay(film: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """Grad-CAM's overlay at the film's own resolution (the map is stretched bilinearly)."""

    return overlay(film, upsample(cam, film.shape[:2]) if cam.shape != film.shape[:2] else cam)


def _title(label: int | None, prob: float, agree: float, threshold: float) -> tuple[str, str]:
    head = f"true {CLASSES[int(label)]}\n" if label is not None else ""
    wrong = label is not None and (prob >= threshold) != bool(label)
    return f"{head}p(pneumonia)={prob:.2f}  agreement {agree:.2f}", "red" if wrong else "black"


def lime_grid_figure(grays: np.ndarray, masks: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                     agreements: np.ndarray, title: str, threshold: float = 0.5, columns: int = 4):
    """The test report's LIME grid: tiles in the order given (misclassified first), titled like Grad-CAM's."""
    n = len(grays)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.3 * rows + 0.4), squeeze=False, dpi=80)
    for ax in axes.flat:
        ax.axis("off")
    for ax, gray, mask, label, prob, agree in zip(axes.flat, grays, masks, labels, probs, agreements):
        ax.imshow(lime_overlay(gray, mask))
        text, color = _title(label, prob, agree, threshold)
        ax.set_title(text, fontsize=9, color=color)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def side_by_side_figure(film: np.ndarray, cam: np.ndarray, mask: np.ndarray, prob: float, agree: float,
                        title: str = ""):
    """Film, Grad-CAM overlay and LIME overlay in a row, at the film's resolution, with their agreement."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 5), dpi=100)
    panels = (("film", np.repeat(film[..., None], 3, axis=-1)), ("Grad-CAM", gradcam_overlay(film, cam)),
              ("LIME: superpixels that raise p(pneumonia)", lime_overlay(film, mask)))
    for ax, (name, image) in zip(axes, panels):
        ax.imshow(image)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{title}\np(pneumonia)={prob:.3f}   Grad-CAM/LIME agreement (IoU) {agree:.2f}".strip(),
                 fontsize=11)
    fig.tight_layout()
    return fig



def misclassified_first(idx: np.ndarray, labels: np.ndarray, proba: np.ndarray, threshold: float) -> np.ndarray:
    """The same picks, misclassified ones first (each group keeps its order): what a reviewer reads first."""
    wrong = (proba[idx] >= threshold) != labels[idx].astype(bool)
    return np.concatenate([idx[wrong], idx[~wrong]]).astype(np.int64)


def explain_test_images(model, layer: str, grays: np.ndarray, labels: np.ndarray, proba: np.ndarray,
                        threshold: float, idx: np.ndarray, samples: int = DEFAULT_SAMPLES, seed: int = 42):
    """LIME grid of test images `idx` (in that order) and each one's agreement with Grad-CAM: at `layer` of a
    plain network, or averaged over a served version's members (LIME then explains what it serves too).

    Returns (figure, agreements); the retrain run logs the figure and the agreements' nan-mean.
    """

    pixels = to_model_input(grays[idx])
    cams = model.gradcam(pixels) if hasattr(model, "gradcam") else gradcam(model, pixels, layer)
    limes = [explain_lime(model, grays[i], samples=samples, seed=seed) for i in idx]
    agreements = np.array([agreement(cam, lime.mask) for cam, lime in zip(cams, limes)])
    fig = lime_grid_figure(grays[idx], np.stack([lime.mask for lime in limes]), labels[idx], proba[idx], agreements,
                           title=f"LIME on test images, {samples} samples (red: misclassified at {threshold:.3f}; "
                                 "agreement: IoU with Grad-CAM)", threshold=threshold)
    return fig, agreements
