"""Backbones, the classification head, and the flat model that joins them (Grad-CAM needs it flat)."""
from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import layers

from pipeline.config import ModelConfig, PipelineError

log = logging.getLogger(__name__)

# Input scaling of each backbone, as mean/variance on 0..255 inputs, so that it lives inside the
# model: a saved model then takes plain CLAHE'd pixels and nobody can forget the scaling.
# Channels are identical (gray x3), so caffe's RGB->BGR swap changes nothing.
_CAFFE = ([103.939, 116.779, 123.68], [1.0, 1.0, 1.0])
_TF = ([127.5] * 3, [127.5 ** 2] * 3)
_TORCH = ([0.485 * 255, 0.456 * 255, 0.406 * 255], [(0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2])
BACKBONES = {
    "resnet50": (keras.applications.ResNet50, _CAFFE),
    "resnet152": (keras.applications.ResNet152, _CAFFE),
    "mobilenetv2": (keras.applications.MobileNetV2, _TF),
    "efficientnetb0": (keras.applications.EfficientNetB0, None),  # rescales inside the model
    "densenet121": (keras.applications.DenseNet121, _TORCH),
}


BN_MOMENTUM_FROM_SCRATCH = 0.9


class ModelError(PipelineError, RuntimeError):
    """A backbone could not be built with the requested weights."""


def weights_id(weights: str) -> str:
    """What identifies the backbone's starting weights in cache keys and run params."""
    if weights in ("imagenet", "none"):
        return weights
    return "file:" + hashlib.blake2b(Path(weights).read_bytes(), digest_size=8).hexdigest()


def build_backbone(cfg: ModelConfig, seed: int = 42) -> keras.Model:
    """Backbone without its top, taking (size, size, 3) pixels in 0..255; seeded for weights=none."""
    factory, scaling = BACKBONES[cfg.backbone]
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((cfg.image_size, cfg.image_size, 3), name="image")
    x = inputs
    if scaling is not None:
        mean, variance = scaling
        x = layers.Normalization(mean=mean, variance=variance, name="input_scaling")(x)
    try:
        base = factory(include_top=False, weights="imagenet" if cfg.weights == "imagenet" else None,
                       input_tensor=x)
    except Exception as err:  # keras raises several kinds for a failed download
        if cfg.weights == "imagenet":
            raise ModelError(
                f"could not get ImageNet weights for {cfg.backbone}: offline or behind a firewall? Use --weights none "
                "(random start) or --weights PATH with a local .h5 / .weights.h5 file\n" + _detail(err)) from err
        raise
    # Re-wrap with the single input tensor: Keras applications built on an input_tensor expect a
    # list of inputs and warn on every call with a plain tensor. Same layers, so still flat.
    base = keras.Model(inputs, base.output, name=base.name)
    if cfg.weights not in ("imagenet", "none"):
        _refuse_extra_layers(cfg, base)
        try:
            with warnings.catch_warnings(record=True) as caught:  # a wrong file warns once per layer first
                warnings.simplefilter("always")
                base.load_weights(cfg.weights)
            for warning in caught[:1]:
                log.warning("loading %s: %s (%d such warning(s))", cfg.weights, warning.message, len(caught))
        except Exception as err:
            raise ModelError(f"weights file {cfg.weights} does not fit backbone {cfg.backbone} without its top: "
                             "pass that backbone's no-top weights, or the --backbone the file was saved from\n"
                             + _detail(err)) from err
    return base


def _weighted_layers(path: str) -> tuple[bool, set[str]]:
    """(Keras 3 format?, the layer entries holding variables) of a `.weights.h5` or a Keras 2 `.h5` file."""
    import h5py

    with h5py.File(path, "r") as f:
        if "layers" in f:
            found = set()
            f["layers"].visititems(lambda name, node: found.add(name.split("/")[0])
                                   if isinstance(node, h5py.Dataset) else None)
            return True, found
        root = f["model_weights"] if "model_weights" in f else f
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs.get("layer_names", [])]
        return False, {n for n in names if len(root[n].attrs.get("weight_names", []))}


def _refuse_extra_layers(cfg: ModelConfig, base: keras.Model) -> None:
    """Keras loads the layers it finds and skips the rest without a word, so a file saved with its top
    (a classifier on the backbone) would load as if it were the backbone alone. Keras 3 files name layers by
    kind and position, so the backbone's own entries come from saving it the same way."""
    import tempfile

    try:
        keras3, found = _weighted_layers(cfg.weights)
    except (OSError, KeyError) as err:
        raise ModelError(f"weights file {cfg.weights} cannot be read as Keras weights ({err}): pass a .weights.h5 "
                         f"file saved from {cfg.backbone} without its top") from None
    if keras3:
        with tempfile.TemporaryDirectory() as tmp:
            base.save_weights(f"{tmp}/backbone.weights.h5")
            extra = sorted(found - _weighted_layers(f"{tmp}/backbone.weights.h5")[1])
    else:
        own = sum(1 for layer in base.layers if layer.weights)
        extra = [f"{len(found) - own} more layer(s) with weights"] if len(found) > own else []
    if extra:
        raise ModelError(f"weights file {cfg.weights} does not fit backbone {cfg.backbone} without its top: it holds "
                         f"layers the backbone has not ({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''}), "
                         "so it was saved with its top or from another model; save the backbone alone "
                         "(include_top=False), or use make pretrain")


def check_weights(cfg: ModelConfig) -> None:
    """A --weights file is tried on the backbone before any image is decoded (the build takes seconds; a
    refusal after decoding a data set takes minutes)."""
    if cfg.weights not in ("imagenet", "none"):
        build_backbone(cfg)
        keras.backend.clear_session()


def _detail(err: Exception, max_lines: int = 6) -> str:
    """Keras's own explanation, indented under the one-line summary and cut short: it can run to pages."""
    lines = [line[:300] + (" ..." if len(line) > 300 else "")
             for line in f"{err.__class__.__name__}: {err}".splitlines() if line.strip()]
    more = [f"  ... ({len(lines) - max_lines} more lines)"] if len(lines) > max_lines else []
    return "\n".join(["  detail: " + lines[0]] + ["  " + line for line in lines[1:max_lines]] + more)


def calibrate_batchnorm(base: keras.Model, images: np.ndarray, chunk: int | None = None) -> None:
    """Set BatchNorm moving statistics from real images, weights untouched.

    A random start has moving mean 0 / variance 1 everywhere, so in inference mode activations
    shrink layer after layer (about 1e-12 at MobileNetV2's output): frozen features carry no signal.
    One training-mode pass with momentum 0 gives every layer the statistics of real X-rays. That pass
    holds every activation of every image at once (18.5 GB peak for 256 films at 192 px), so
    `chunk` passes that many at a time and averages their statistics (momentum i/(i+1) for the
    i-th chunk: the cumulative average, as torch.optim.swa_utils.update_bn does); None keeps the one
    pass that the feature caches were built with.
    """
    bn_layers = [layer for layer in base.layers if isinstance(layer, layers.BatchNormalization)]
    momenta = [layer.momentum for layer in bn_layers]
    chunks = [images] if chunk is None else [images[i:i + chunk] for i in range(0, len(images), chunk)]
    for i, part in enumerate(chunks):
        for layer in bn_layers:
            layer.momentum = i / (i + 1)
        base(part, training=True)
    for layer, momentum in zip(bn_layers, momenta):
        layer.momentum = momentum


def conv_layer_name(classifier: keras.Model) -> str:
    """The backbone's last conv output in a flat classifier (what feeds the pooling): where Grad-CAM looks."""
    return classifier.get_layer("pool").input._keras_history.operation.name


def build_head(input_dim: int, dense_units: int, dropout: float, l2: float, seed: int = 42) -> keras.Sequential:
    """GlobalAveragePooling is applied before this, so the head can train on cached feature vectors."""
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential([
        keras.Input((input_dim,)),
        layers.Dense(dense_units, activation="relu", kernel_regularizer=keras.regularizers.L2(l2),
                     kernel_initializer=init, name="dense"),
        layers.Dropout(dropout, seed=seed, name="dropout"),
        layers.Dense(1, activation="sigmoid", kernel_initializer=init, name="prediction"),
    ], name="head")


def build_classifier(base: keras.Model, head: keras.Model) -> keras.Model:
    """Flat model (backbone layers at top level) so tf-keras-vis can reach the last conv layer."""
    pooled = layers.GlobalAveragePooling2D(name="pool")(base.output)
    return keras.Model(base.input, head(pooled), name="pneumonia_classifier")


def feature_extractor(base: keras.Model) -> keras.Model:
    pooled = layers.GlobalAveragePooling2D(name="pool")(base.output)
    return keras.Model(base.input, pooled, name="features")


def compile_model(model: keras.Model, learning_rate: float, steps_per_execution: int = 1, *,
                  optimizer: keras.optimizers.Optimizer | None = None, label_smoothing: float = 0.0) -> keras.Model:
    """steps_per_execution > 1 runs several batches per graph call: the same updates, far less
    Python overhead, which dominates when the model is a small head on cached features.
    Adam at a fixed rate unless an optimizer is given (pretrain brings AdamW with its schedule)."""
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate),
        steps_per_execution=steps_per_execution,
        loss=keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy"),
                 keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall")],
    )
    return model


def unfreeze_top(base: keras.Model, n_layers: str, train_batchnorm: bool) -> int:
    """Make the top n layers trainable (or all). BatchNorm stays in inference mode unless asked,
    because pretrained statistics are worth keeping; a random start has none worth keeping."""
    base.trainable = True
    n = len(base.layers) if n_layers == "all" else int(n_layers)
    cutoff = len(base.layers) - n
    trainable = 0
    for i, layer in enumerate(base.layers):
        is_bn = isinstance(layer, layers.BatchNormalization)
        layer.trainable = i >= cutoff and (train_batchnorm or not is_bn)
        if is_bn and layer.trainable:
            # Keras ships momentum 0.99-0.999: moving statistics would trail the changing weights
            # for epochs and validation would see garbage (val AUC stuck at 0.5).
            layer.momentum = min(layer.momentum, BN_MOMENTUM_FROM_SCRATCH)
        trainable += int(layer.trainable and bool(layer.weights))
    return trainable


def predict_proba(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return model.predict(images, batch_size=batch_size, verbose=0).reshape(-1)
