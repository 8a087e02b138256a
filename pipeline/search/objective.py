"""The one objective both engines call: head hyperparameters in, validation score out."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from pipeline.evaluate.metrics import LOWER_IS_BETTER, classification_metrics
from pipeline.modeling.backbones import build_head
from pipeline.modeling.balance import balance
from pipeline.modeling.features import FeatureSet
from pipeline.modeling.headfit import head_graph


@dataclass
class TrialResult:
    score: float
    metrics: dict[str, float]
    history: dict[str, list[float]]
    head: keras.Model
    val_proba: np.ndarray
    seconds: float
    status: str = "COMPLETE"  # or "PRUNED"


def head_proba(head: keras.Model, vectors: np.ndarray) -> np.ndarray:
    """P(pneumonia) per pooled feature vector of a Keras head: one eager call, because predict()
    would trace a new graph for every trial's head."""
    return keras.ops.convert_to_numpy(head(vectors, training=False)).reshape(-1)


class _EarlyStopping:
    """Keras's EarlyStopping rule (min_delta 0, restore_best_weights) on any logged metric."""

    def __init__(self, metric: str, patience: int):
        self.patience = patience
        self.lower = metric in LOWER_IS_BETTER
        self.best: float | None = None
        self.best_weights: list[np.ndarray] | None = None
        self.wait = 0

    def update(self, epoch: int, value: float, weights) -> bool:
        """Record the epoch; True when training should stop."""
        if np.isnan(value):
            return False
        if self.best is None or (value < self.best if self.lower else value > self.best):
            self.best, self.wait = value, 0
            self.best_weights = [w.numpy() for w in weights]
            return False
        self.wait += 1
        return self.wait >= self.patience and epoch > 0


def _epoch_logs(loss: float, train_proba: np.ndarray, train_y: np.ndarray, val_proba: np.ndarray,
                y_val: np.ndarray, val_loss: float) -> dict[str, float]:
    """The names Keras's fit logged (training metrics on the epoch's training-mode outputs), plus val_f1."""
    train = {k: v for k, v in classification_metrics(train_y, train_proba, prefix="").items() if k != "f1"}
    val = classification_metrics(y_val, val_proba)
    return {"loss": loss, **train, "val_loss": val_loss, **val}


def _val_loss(graph, proba: np.ndarray, y_val: np.ndarray) -> float:
    """Unweighted binary cross-entropy plus the L2 penalty, as Keras reports val_loss."""
    p = np.clip(proba.astype(np.float64), 1e-7, 1 - 1e-7)
    bce = -np.mean(y_val * np.log(p) + (1 - y_val) * np.log(1 - p))
    return float(bce + float(graph.penalty()))


def objective(params: dict, features: FeatureSet, *, epochs: int, batch_size: int = 32, patience: int = 3,
              metric: str = "val_auc", seed: int = 42, imbalance: str = "class-weights",
              on_epoch: Callable[[int, dict], bool] | None = None) -> TrialResult:
    """Train a head on cached features (clean + augmented views) and score it on validation.

    on_epoch(epoch, logs) is called after every epoch with the epoch's logs; returning False stops
    the trial as PRUNED (that is how an engine's pruner reaches in without the objective knowing it).
    Early stopping watches `metric` and the best epoch's weights are the trial's result.
    """
    start = time.perf_counter()
    views, n, dim = features.train_views.shape
    x_all, y_all, w_all = balance(features.train_views.reshape(views * n, dim),
                                  np.tile(features.y_train, views).astype(np.float32), imbalance, seed)
    x_train, labels, sample_weight = (tf.constant(x_all, tf.float32), tf.constant(y_all, tf.float32),
                                      tf.constant(w_all, tf.float32))
    dropout, l2 = float(params["dropout"]), float(params["l2"])
    # The Keras head gives the seeded start and, at the end, holds the trained weights (Grad-CAM, logging).
    head = build_head(dim, int(params["dense_units"]), dropout, l2, seed=seed)
    graph = head_graph(dim, int(params["dense_units"]))
    graph.reset(head.get_weights(), float(params["learning_rate"]), dropout, l2)
    x_val, y_val = tf.constant(features.val, tf.float32), features.y_val.astype(np.float32)
    stopper = _EarlyStopping(metric, patience)
    history: dict[str, list[float]] = {}
    status = "COMPLETE"
    for epoch in range(epochs):
        loss, train_proba, train_y = graph.train_epoch(x_train, labels, sample_weight,
                                                       tf.constant([seed, epoch], tf.int64), tf.constant(batch_size))
        val_proba = graph.predict(x_val).numpy()
        logs = _epoch_logs(float(loss), train_proba.numpy(), train_y.numpy(), val_proba, y_val,
                           _val_loss(graph, val_proba, y_val))
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        stop = stopper.update(epoch, logs[metric], graph.weights)
        if on_epoch is not None and not on_epoch(epoch, logs):
            status = "PRUNED"
            break
        if stop:
            break
    if stopper.best_weights is not None:
        for var, value in zip(graph.weights, stopper.best_weights):
            var.assign(value)
    proba = graph.predict(x_val).numpy()
    metrics = classification_metrics(features.y_val, proba)
    metrics["val_loss"] = _val_loss(graph, proba, y_val)
    head.set_weights([w.numpy() for w in graph.weights])
    return TrialResult(score=metrics[metric], metrics=metrics, history=history, head=head, val_proba=proba,
                       seconds=time.perf_counter() - start, status=status)
