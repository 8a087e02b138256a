"""Explanation sanity checks (pipeline.explain.sanity) on real Keras models built to pass or fail them."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.explain.sanity import (
    CENTRE_FRACTION,
    border_only,
    centre_box,
    centre_only,
    map_correlation,
    randomization_stages,
    randomization_test,
    randomized_copy,
    sanity_checks,
    shortcut_probe,
)
from pipeline.modeling.backbones import build_classifier, build_head, compile_model, conv_layer_name

SIZE = 48
PATCH = 6
# Where the class signal sits: a corner (in the border: the outer 20% is 10 px here) or the middle.
SIGNAL = {"border": (1, 1), "centre": (16, 16)}
BALANCE = {"border": (SIZE - 1 - PATCH, SIZE - 1 - PATCH), "centre": (27, 27)}


def films(where: str, per_class: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise films whose class shows only in one patch (bright for PNEUMONIA, dark for NORMAL), with a
    second patch of the opposite brightness so that the film's mean gray says nothing about the class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], per_class)
    grays = rng.integers(60, 200, (len(labels), SIZE, SIZE)).astype(np.uint8)
    (r, c), (rb, cb) = SIGNAL[where], BALANCE[where]
    for film, label in zip(grays, labels):
        film[r:r + PATCH, c:c + PATCH] = 255 * label
        film[rb:rb + PATCH, cb:cb + PATCH] = 255 * (1 - label)
    return grays, labels


def reader_of(where: str) -> keras.Model:
    """p(pneumonia) rises with the brightness of the signal patch alone, by construction."""
    (r, c) = SIGNAL[where]
    inputs = keras.Input((SIZE, SIZE, 3))
    patch = keras.layers.Cropping2D(((r, SIZE - r - PATCH), (c, SIZE - c - PATCH)))(inputs)
    conv = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(1 / (3 * 255)))(patch)
    pooled = keras.layers.GlobalAveragePooling2D()(conv)
    out = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.Constant(8.0),
                             bias_initializer=keras.initializers.Constant(-4.0))(pooled)
    return keras.Model(inputs, out)


def test_centre_box_is_the_central_square_and_masks_keep_only_their_part():
    box = centre_box(224)
    assert abs((box.stop - box.start) / 224 - CENTRE_FRACTION) < 0.01 and box.start + box.stop == 224
    grays, _ = films("border", per_class=2)
    border, centre = border_only(grays), centre_only(grays)
    means = grays.reshape(len(grays), -1).mean(axis=1).round()
    b = centre_box(SIZE)
    assert (border[:, b, b] == means[:, None, None]).all() and (centre[:, b, b] == grays[:, b, b]).all()
    outside = np.ones((SIZE, SIZE), bool)
    outside[b, b] = False
    assert (border[:, outside] == grays[:, outside]).all()
    assert (centre[:, outside] == np.repeat(means[:, None], outside.sum(), axis=1)).all()


@pytest.mark.parametrize("where, shown, hidden", [("border", "sanity_border_auc", "sanity_centre_auc"),
                                                  ("centre", "sanity_centre_auc", "sanity_border_auc")])
def test_shortcut_probe_finds_where_the_model_reads(where, shown, hidden):
    grays, labels = films(where)
    probe = shortcut_probe(reader_of(where), grays, labels)
    assert probe["sanity_full_auc"] == pytest.approx(1.0)
    assert probe[shown] == pytest.approx(probe["sanity_full_auc"], abs=0.02)
    # hiding the signal leaves only noise: chance, not the full AUC (the control is the other case)
    assert abs(probe[hidden] - 0.5) < 0.2, probe


@pytest.fixture(scope="module")
def trained() -> tuple[keras.Model, np.ndarray]:
    """A small flat classifier as build_classifier makes them (backbone layers, 'pool', 'head'), trained for
    real on films whose class is a corner patch."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    model = build_classifier(keras.Model(inputs, x), build_head(8, 8, 0.0, 0.0, seed=0))
    compile_model(model, 1e-2)
    grays, labels = films("border")
    x_train = np.repeat(grays[..., None], 3, axis=-1).astype(np.float32)
    model.fit(x_train, labels, epochs=40, batch_size=20, verbose=0)
    assert model.evaluate(x_train, labels, verbose=0, return_dict=True)["auc"] > 0.95
    return model, grays


def test_randomizing_the_head_changes_the_maps_and_an_untouched_copy_does_not(trained):
    model, grays = trained
    layer = conv_layer_name(model)
    before = [w.copy() for w in model.get_weights()]
    stages = randomization_stages(model)
    assert stages["head"] == ["head"] and set(stages["blocks"]) >= {"head", "conv1", "conv2"}

    from pipeline.data.preprocess import to_model_input
    from pipeline.explain.gradcam import gradcam

    images = to_model_input(grays[::6])
    maps = gradcam(model, images, layer)
    assert maps.std(axis=(1, 2)).min() > 0  # not flat maps: a correlation means something
    untouched = map_correlation(maps, gradcam(randomized_copy(model, []), images, layer))
    assert untouched == pytest.approx(1.0, abs=1e-6)  # control
    figures = randomization_test(model, layer, grays[::6], seed=1)
    assert figures["sanity_randomization_spearman_head"] < 0.9 < untouched, figures
    assert figures["sanity_randomization_spearman_blocks"] < 0.9, figures
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "the real model changed"


def test_sanity_checks_report_the_five_figures_and_zero_films_turns_them_off(trained):
    model, grays = trained
    labels = np.repeat([0, 1], len(grays) // 2)
    figures = sanity_checks(model, conv_layer_name(model), grays, labels, count=8, seed=0)
    assert set(figures) == {"sanity_randomization_spearman_head", "sanity_randomization_spearman_blocks",
                            "sanity_border_auc", "sanity_centre_auc", "sanity_full_auc", "sanity_images"}
    assert figures["sanity_images"] == 8 and all(np.isfinite(v) for v in figures.values())
    assert sanity_checks(model, conv_layer_name(model), grays, labels, count=0) == {}
