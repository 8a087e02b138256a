"""Ensembles and test-time views: the arithmetic every version's served probability goes through."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.config import TTA_CHOICES, ConfigError, RetrainConfig
from pipeline.modeling.ensemble import TTA, VIEWS, choose_tta, combine, mean_probability, members_table, view, \
    view_probabilities
from pipeline.train.finetune import SearchRecord
from pipeline.train.members import plan_members


def test_tta_choices_are_the_views_table_plus_auto():
    assert set(TTA_CHOICES) == {"auto", *TTA}
    assert all(set(v) <= set(VIEWS) for v in TTA.values())


def test_views_flip_and_crop_the_batch_as_named():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (3, 40, 40, 3)).astype(np.float32)
    np.testing.assert_array_equal(view(pixels, "identity"), pixels)
    np.testing.assert_array_equal(view(pixels, "flip"), pixels[:, :, ::-1])
    crop = view(pixels, "crop")
    assert crop.shape == pixels.shape
    assert not np.allclose(crop, pixels)  # control: the crop changes the film
    # a film constant in its centre stays that constant after the central crop
    centre = np.zeros_like(pixels)
    centre[:, 2:38, 2:38] = 100.0
    np.testing.assert_allclose(view(centre, "crop"), 100.0, atol=1e-3)
    np.testing.assert_allclose(view(pixels, "flip-crop"), crop[:, :, ::-1], atol=1e-4)
    with pytest.raises(ValueError, match="unknown view"):
        view(pixels, "rotate")


def test_combine_is_the_mean_over_members_and_the_chosen_views():
    a = {"identity": np.array([0.2, 0.8]), "flip": np.array([0.4, 0.6]), "crop": np.array([0.0, 1.0]),
         "flip-crop": np.array([0.0, 1.0])}
    b = {k: v / 2 for k, v in a.items()}
    np.testing.assert_allclose(combine([a], "none"), [0.2, 0.8])
    np.testing.assert_allclose(combine([a], "flip"), [0.3, 0.7])
    np.testing.assert_allclose(combine([a, b], "none"), [0.15, 0.6])
    np.testing.assert_allclose(combine([a, b], "flip-crops"), np.mean([a[k] for k in VIEWS] + [b[k] for k in VIEWS],
                                                                    axis=0))


def test_choose_tta_takes_the_best_val_auc_and_a_tie_goes_to_fewer_views():
    y = np.array([0, 0, 1, 1])
    perfect = np.array([0.1, 0.2, 0.8, 0.9])
    noisy = np.array([0.9, 0.2, 0.1, 0.8])
    same = {name: perfect for name in VIEWS}
    assert choose_tta([same], y)[0] == "none"  # every setting ties at 1.0
    flips_help = {"identity": noisy, "flip": perfect * 3, "crop": noisy, "flip-crop": noisy}
    tta, aucs = choose_tta([flips_help], y)
    assert tta == "flip" and aucs["flip"] > aucs["none"]


def test_members_table_scores_each_member_and_the_running_mean():
    y = np.array([0, 0, 1, 1])
    good = {"identity": np.array([0.1, 0.2, 0.8, 0.9])}
    bad = {"identity": np.array([0.9, 0.8, 0.2, 0.1])}
    rows = members_table([good, bad], y, "none")
    assert [r["members"] for r in rows] == [1, 2]
    assert rows[0]["member_val_auc"] == 1.0 and rows[1]["member_val_auc"] == 0.0
    assert rows[1]["ensemble_val_auc"] == 0.5


def _tiny(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def test_mean_probability_of_real_models_is_the_mean_of_their_view_predictions():
    grays = np.random.default_rng(1).integers(0, 255, (5, 16, 16), dtype=np.uint8)
    members = [_tiny(1), _tiny(2)]
    per_member = [view_probabilities(m, grays) for m in members]
    for tta in TTA:
        served, features = mean_probability(members, grays, tta)
        np.testing.assert_allclose(served, combine(per_member, tta), atol=1e-6)
        assert features is None
    assert not np.allclose(per_member[0]["identity"], per_member[1]["identity"])  # control: members differ
    scorer = keras.Model(members[0].input, [members[0].output, members[0].get_layer("pool").output])
    served, features = mean_probability(members, grays, "flip", feature_model=scorer)
    np.testing.assert_allclose(served, combine(per_member, "flip"), atol=1e-6)
    assert features.shape == (5, 4)


def _search(best_trial="3"):
    return SearchRecord("run", {"metric": "val_auc"}, {"dense_units": 8, "dropout": 0.1, "l2": 1e-4,
                                                       "learning_rate": 1e-3}, best_trial, "", "", "0", "study")


def test_seeds_make_members_of_the_best_trial_with_consecutive_seeds():
    members = plan_members(_search(), RetrainConfig(seeds=3), seed=42)
    assert [(m.trial, m.seed) for m in members] == [("3", 42), ("3", 43), ("3", 44)]
    assert [(m.trial, m.seed) for m in plan_members(_search(), RetrainConfig(), seed=7)] == [("3", 7)]


@pytest.mark.parametrize("kwargs,flag", [({"top_k": 0}, "--top-k"), ({"seeds": 11}, "--seeds"),
                                         ({"top_k": 2, "seeds": 2}, "top-k"), ({"tta": "rotate"}, "--tta")])
def test_ensemble_settings_are_checked_where_they_enter(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        RetrainConfig(**kwargs)
