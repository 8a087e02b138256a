"""Training input: tf.data pipelines with Keras preprocessing layers for augmentation."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from pipeline.config import AugmentConfig


class RandomResizedCrop(layers.Layer):
    """A random box of at least `min_area` of the film (aspect 3:4 to 4:3), resized back to the input size.

    Keras 3 has no such layer (RandomCrop only cuts, RandomZoom keeps the aspect); crops change the framing
    between sites more than a zoom does, which is what the from-scratch recipe needs (issue 21)."""

    def __init__(self, min_area: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.min_area = float(min_area)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        n = tf.shape(images)[0]
        size = tf.shape(images)[1:3]
        area = keras.random.uniform((n,), self.min_area, 1.0, seed=self.seed_generator)
        log_ratio = keras.random.uniform((n,), np.log(3 / 4), np.log(4 / 3), seed=self.seed_generator)
        ratio = tf.exp(log_ratio)
        height = tf.minimum(tf.sqrt(area / ratio), 1.0)
        width = tf.minimum(tf.sqrt(area * ratio), 1.0)
        top = keras.random.uniform((n,), 0.0, 1.0, seed=self.seed_generator) * (1.0 - height)
        left = keras.random.uniform((n,), 0.0, 1.0, seed=self.seed_generator) * (1.0 - width)
        boxes = tf.stack([top, left, top + height, left + width], axis=1)
        return tf.image.crop_and_resize(images, boxes, tf.range(n), size)


def augmenter(cfg: AugmentConfig, seed: int = 42) -> keras.Sequential:
    """Small geometric changes a chest film plausibly has, and optionally exposure and contrast
    (films from another site differ most in those); no colour changes (the input is gray)."""
    steps: list[layers.Layer] = []
    if cfg.crop:
        steps.append(RandomResizedCrop(cfg.crop, seed=seed))
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
