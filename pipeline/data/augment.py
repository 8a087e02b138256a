"""Training input: tf.data pipelines with Keras preprocessing layers for augmentation."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from pipeline.config import AugmentConfig


def augmenter(cfg: AugmentConfig, seed: int = 42) -> keras.Sequential:
    """Small geometric changes a chest film plausibly has, and optionally exposure and contrast
    (films from another site differ most in those); no colour changes (the input is gray)."""
    steps: list[layers.Layer] = []
    if cfg.rotation:
        steps.append(layers.RandomRotation(cfg.rotation, fill_mode="constant", seed=seed))
    if cfg.shift:
        steps.append(layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode="constant", seed=seed))
    if cfg.zoom:
        steps.append(layers.RandomZoom(cfg.zoom, fill_mode="constant", seed=seed))
    if cfg.shear:
        steps.append(layers.RandomShear(x_factor=cfg.shear, y_factor=cfg.shear, fill_mode="constant", seed=seed))
    if cfg.flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed))
    if cfg.brightness:
        steps.append(layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed))
    if cfg.contrast:
        steps.append(layers.RandomContrast(cfg.contrast, seed=seed))
    return keras.Sequential(steps or [layers.Identity()], name="augment")  # every range 0: unchanged films


def image_dataset(images: np.ndarray, labels: np.ndarray | None, batch_size: int,
                  augment: AugmentConfig | None = None, shuffle: bool = False, seed: int = 42
                  ) -> tf.data.Dataset:
    """Batches of (size, size, 3) float pixels in 0..255 from cached uint8 gray images.

    Augmentation runs per batch on tf.data's threads, on the single gray channel before it is
    repeated to RGB (the same pixels, a third of the work); validation and test pass augment=None.
    """
    parts: tuple = (images,) if labels is None else (images, labels.astype(np.float32))
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    aug = augmenter(augment, seed) if augment is not None else None

    def prepare(x, *label):
        x = tf.cast(x, tf.float32)[..., None]
        if aug is not None:
            x = aug(x, training=True)
        x = tf.repeat(x, 3, axis=-1)
        return (x, *label) if label else x

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
