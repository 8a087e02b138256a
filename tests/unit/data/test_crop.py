"""The random-resized crop of `--crop`: a box of at least the given share of the film, resized back."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import AugmentConfig, ConfigError
from pipeline.data.augment import RandomResizedCrop, augmenter, image_dataset


def test_crops_keep_the_size_and_change_the_framing():
    films = np.zeros((16, 64, 64, 1), np.float32)
    films[:, :, :32] = 200.0  # left half bright: a crop moves the edge
    out = RandomResizedCrop(0.5, seed=1)(films, training=True).numpy()
    assert out.shape == films.shape
    bright = (out[..., 0] > 100).mean(axis=(1, 2))
    assert bright.std() > 0.02  # different boxes per film
    # a box of half the area or more is over 0.6 of the width wide, so it always holds both halves
    assert np.all((bright > 0.0) & (bright < 1.0))
    np.testing.assert_array_equal(RandomResizedCrop(0.5, seed=1)(films, training=False), films)


def test_a_larger_minimum_share_crops_less():
    films = np.random.default_rng(0).uniform(0, 255, (32, 48, 48, 1)).astype(np.float32)

    def change(share):
        return float(np.abs(RandomResizedCrop(share, seed=3)(films, training=True).numpy() - films).mean())

    assert change(0.95) < change(0.4)


def test_crop_is_in_the_training_pipeline_only_when_asked():
    names = [layer.__class__.__name__ for layer in augmenter(AugmentConfig(crop=0.7)).layers]
    assert names[0] == "RandomResizedCrop"
    assert "RandomResizedCrop" not in [layer.__class__.__name__ for layer in augmenter(AugmentConfig()).layers]
    x = np.full((4, 32, 32), 90, np.uint8)
    batch = next(iter(image_dataset(x, np.zeros(4), 4, augment=AugmentConfig(crop=0.7, rotation=0, shift=0, zoom=0,
                                                                              shear=0, flip=False))))[0]
    assert batch.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(batch.numpy(), 90.0, atol=1e-3)  # a flat film stays flat under any crop


@pytest.mark.parametrize("share", [0.2, 1.0, -0.1])
def test_crop_share_is_checked(share):
    with pytest.raises(ConfigError, match="--crop"):
        AugmentConfig(crop=share)
