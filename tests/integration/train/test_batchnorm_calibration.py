"""BatchNorm calibration of a random start in chunks: the cumulative average of the chunks' statistics
(torch.optim.swa_utils.update_bn's rule), so pretrain's start costs a batch's memory, not 256 films'."""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from pipeline.config import ModelConfig
from pipeline.modeling.backbones import build_backbone, calibrate_batchnorm


def first_batchnorm(base: keras.Model):
    bn = next(layer for layer in base.layers if isinstance(layer, layers.BatchNormalization))
    return bn, keras.Model(base.input, bn.input)


def test_chunks_give_the_mean_of_the_chunks_statistics():
    films = np.random.default_rng(0).uniform(0, 255, (12, 32, 32, 3)).astype(np.float32)
    base = build_backbone(ModelConfig("mobilenetv2", "none", 32), seed=1)
    bn, upto = first_batchnorm(base)
    momentum = bn.momentum
    calibrate_batchnorm(base, films, chunk=4)
    x = np.asarray(upto(films, training=True)).reshape(3, -1, bn.input.shape[-1])  # 3 chunks, every pixel
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.mean(axis=1).mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), x.var(axis=1).mean(axis=0), rtol=1e-3, atol=1e-4)
    assert bn.momentum == momentum  # restored for training
    # the control: one pass is the statistics of all 12 films, whose variance includes the chunks' spread
    one = build_backbone(ModelConfig("mobilenetv2", "none", 32), seed=1)
    calibrate_batchnorm(one, films)
    bn_one, _ = first_batchnorm(one)
    np.testing.assert_allclose(bn_one.moving_mean.numpy(), bn.moving_mean.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn_one.moving_variance.numpy(), x.reshape(-1, x.shape[-1]).var(axis=0),
                               rtol=1e-3, atol=1e-4)
