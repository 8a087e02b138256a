"""LIME beside Grad-CAM on tiny real Keras models and synthetic films (pipeline.explain.lime)."""
from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest

from pipeline.explain.lime import (
    ExplainError,
    agreement,
    check_explain,
    explain_lime,
    iou,
    lime_grid_figure,
    lime_overlay,
    side_by_side_figure,
)

SIZE = 48
HALF = SIZE // 2


def smooth_film(seed: int = 0) -> np.ndarray:
    """Soft blobs of brightness (SLIC cuts them into about 14 superpixels at n_segments=16)."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (SIZE, SIZE)).astype(np.float32), (0, 0), 3.0)
    return np.uint8(np.clip(120 + 2.0 * (base - base.mean()), 0, 255))


def top_left_model() -> keras.Model:
    """p(pneumonia) rises with the brightness of the top-left quadrant only, by construction.

    Hiding (blackening) a top-left superpixel lowers p; hiding any other changes nothing. So LIME
    must choose top-left superpixels, and Grad-CAM's gradients live only there too.
    """
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(1, 1, activation="relu", name="conv", use_bias=False,
                               kernel_initializer=keras.initializers.Constant(1 / (3 * 255)))(inputs)
    quadrant = keras.layers.Cropping2D(((0, SIZE - HALF), (0, SIZE - HALF)))(conv)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(quadrant)
    out = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.Constant(8.0),
                             bias_initializer=keras.initializers.Constant(-4.0))(pooled)
    return keras.Model(inputs, out)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return top_left_model()


@pytest.mark.slow
def test_lime_chooses_the_region_the_model_reads_and_agrees_with_gradcam(model):
    from pipeline.explain.gradcam import gradcam

    film = smooth_film()
    lime = explain_lime(model, film, samples=150, seed=3, n_segments=16, features=3)
    assert lime.mask.any()
    inside = lime.mask[:HALF, :HALF].sum() / lime.mask.sum()
    assert inside > 0.6, f"only {inside:.0%} of LIME's chosen area is in the quadrant the model reads"
    assert 0.0 < lime.probability < 1.0
    cam = gradcam(model, np.repeat(film[None, ..., None], 3, axis=-1).astype(np.float32), "conv")[0]
    assert cam.shape == film.shape
    # A map that points elsewhere scores far lower than Grad-CAM, which reads the same quadrant.
    elsewhere = np.zeros_like(cam)
    elsewhere[HALF:, HALF:] = 1.0
    assert agreement(cam, lime.mask) > 0.3 > agreement(elsewhere, lime.mask)


@pytest.mark.slow
def test_same_seed_gives_the_same_superpixels_weights_and_mask(model):
    film = smooth_film(1)
    first, again = (explain_lime(model, film, samples=60, seed=7, n_segments=16) for _ in range(2))
    np.testing.assert_array_equal(first.segments, again.segments)
    np.testing.assert_array_equal(first.mask, again.mask)
    assert first.weights == again.weights
    assert first.segments.min() == 0 and len(np.unique(first.segments)) == first.segments.max() + 1  # lime's 0..n-1
    other = explain_lime(model, film, samples=60, seed=8, n_segments=16)
    assert other.weights != first.weights  # the seed does drive the perturbations


@pytest.mark.slow
def test_lime_on_the_pipelines_classifier_writes_overlays_at_the_films_resolution(tmp_path):
    """The real flat classifier (pipeline.modeling.backbones) on a synthetic film; overlays at a larger, non-square original."""
    from pipeline.config import ModelConfig
    from pipeline.data.preprocess import to_model_input
    from pipeline.modeling.backbones import build_backbone, build_classifier, build_head, calibrate_batchnorm

    films = np.stack([cv2.resize(smooth_film(seed), (32, 32), interpolation=cv2.INTER_AREA) for seed in range(8)])
    base = build_backbone(ModelConfig("mobilenetv2", "none", 32), seed=0)
    calibrate_batchnorm(base, to_model_input(films))  # as build_features does: else p is 0.5 whatever the film
    classifier = build_classifier(base, build_head(base.output.shape[-1], 8, 0.0, 0.0, seed=0))
    film = films[2]
    lime = explain_lime(classifier, film, samples=30, seed=0, n_segments=12, features=2)
    assert lime.segments.shape == film.shape and lime.mask.shape == film.shape
    assert lime.mask.any() and lime.probability != 0.5

    original = cv2.resize(film, (80, 96))  # (rows 96, cols 80): the film as the user gave it
    target = tmp_path / "film_lime.png"
    assert cv2.imwrite(str(target), lime_overlay(original, lime.mask)[:, :, ::-1])
    written = cv2.imread(str(target))[:, :, ::-1]
    assert written.shape == (96, 80, 3)
    stretched = cv2.resize(lime.mask.astype(np.uint8), (80, 96), interpolation=cv2.INTER_NEAREST).astype(bool)
    green = (written[..., 1].astype(int) - written[..., 0]) > 30
    assert green[stretched].mean() > 0.9 and green[~stretched].mean() < 0.1

    cam = np.random.default_rng(0).uniform(size=film.shape).astype(np.float32)
    figures = [lime_grid_figure(np.stack([film] * 3), np.stack([lime.mask] * 3), np.array([1, 0, 1]),
                                np.array([0.2, 0.7, 0.9]), np.array([0.5, np.nan, 0.1]), title="LIME on test"),
               side_by_side_figure(original, cam, lime.mask, 0.7, agreement(cam, lime.mask), "film")]
    for i, fig in enumerate(figures):
        fig.savefig(tmp_path / f"figure{i}.png")
        assert (tmp_path / f"figure{i}.png").stat().st_size > 1000
    titles = [ax.get_title() for ax in figures[0].axes if ax.get_title()]
    assert len(titles) == 3 and "agreement 0.50" in titles[0] and "true NORMAL" in titles[1]


def test_agreement_is_one_for_identical_masks_and_zero_for_disjoint_ones():
    mask = np.zeros((20, 20), bool)
    mask[2:8, 3:12] = True
    assert agreement(mask.astype(np.float32), mask) == 1.0
    assert agreement(np.where(mask, 0.0, 1.0).astype(np.float32), mask) == 0.0
    # Grad-CAM's strongest pixels, as many as LIME chose: a smooth map peaking inside the mask.
    yy, xx = np.mgrid[:20, :20]
    cam = np.exp(-((yy - 4.5) ** 2 + (xx - 7) ** 2) / 30.0).astype(np.float32)
    assert 0.5 < agreement(cam, mask) <= 1.0
    assert agreement(mask.astype(np.float32), mask, top_fraction=2 * mask.mean()) == pytest.approx(0.5, abs=0.01)


def test_agreement_edge_cases():
    empty = np.zeros((10, 10), bool)
    assert np.isnan(agreement(np.ones((10, 10), np.float32), empty))  # LIME chose nothing: no figure
    assert np.isnan(iou(empty, empty))
    with pytest.raises(ExplainError, match=r"\(10, 10\).*\(12, 12\)"):
        agreement(np.ones((10, 10), np.float32), np.ones((12, 12), bool))


def test_bad_explain_value_names_it_and_the_choices():
    assert check_explain("both") == "both"
    with pytest.raises(ExplainError, match=r"--explain 'heatmap'.*gradcam, lime, both"):
        check_explain("heatmap")


def test_misclassified_first_keeps_the_picks_and_their_order_within_groups():
    from pipeline.explain.lime import misclassified_first

    labels = np.array([0, 1, 0, 1, 0, 1])
    proba = np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.6])  # wrong at 0.5: films 0, 3, 4
    np.testing.assert_array_equal(misclassified_first(np.array([0, 1, 2, 3, 4]), labels, proba, 0.5), [0, 3, 4, 1, 2])


@pytest.mark.slow
def test_explain_test_images_gives_a_grid_and_one_agreement_per_image(model):
    from pipeline.explain.lime import explain_test_images

    grays = np.stack([smooth_film(seed) for seed in range(3)])
    fig, agreements = explain_test_images(model, "conv", grays, np.array([1, 0, 1]), np.array([0.9, 0.2, 0.3]),
                                          0.5, np.array([2, 0]), samples=40, seed=0)
    assert agreements.shape == (2,) and np.all((agreements >= 0) & (agreements <= 1))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 2 and f"agreement {agreements[0]:.2f}" in titles[0]
