"""The one objective both engines call: head hyperparameters in, validation score out."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from .data import class_weights
from .features import FeatureSet
from .model import build_head, compile_model

LOWER_IS_BETTER = {"val_loss"}
STEPS_PER_EXECUTION = 32  # a head on cached vectors: per-batch Python overhead is most of an epoch


@dataclass
class TrialResult:
    score: float
    metrics: dict[str, float]
    history: dict[str, list[float]]
    head: keras.Model
    val_proba: np.ndarray
    seconds: float
    status: str = "COMPLETE"  # or "PRUNED"


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5,
                           prefix: str = "val_") -> dict[str, float]:
    pred = (proba >= threshold).astype(int)
    both = len(np.unique(y_true)) == 2
    return {
        f"{prefix}auc": float(roc_auc_score(y_true, proba)) if both else float("nan"),
        f"{prefix}accuracy": float(accuracy_score(y_true, pred)),
        f"{prefix}precision": float(precision_score(y_true, pred, zero_division=0)),
        f"{prefix}recall": float(recall_score(y_true, pred, zero_division=0)),
        f"{prefix}f1": float(f1_score(y_true, pred, zero_division=0)),
    }


def head_proba(head: keras.Model, vectors: np.ndarray) -> np.ndarray:
    """P(pneumonia) per pooled feature vector: one eager call, because predict() would trace a
    new graph for every trial's head."""
    return keras.ops.convert_to_numpy(head(vectors, training=False)).reshape(-1)


class _ValidationF1(keras.callbacks.Callback):
    """Put val_f1 into the epoch's logs, which Keras does not compute, so that EarlyStopping (best
    weights) and the pruner can watch it like any other metric. Must come before them in the list:
    every callback gets the same logs dict, in order."""

    def __init__(self, x_val: np.ndarray, y_val: np.ndarray):
        super().__init__()
        self.x_val, self.y_val = x_val, y_val

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            pred = (head_proba(self.model, self.x_val) >= 0.5).astype(int)
            logs["val_f1"] = float(f1_score(self.y_val, pred, zero_division=0))


class _EpochHook(keras.callbacks.Callback):
    def __init__(self, on_epoch: Callable[[int, dict], bool] | None):
        super().__init__()
        self.on_epoch = on_epoch
        self.history: dict[str, list[float]] = {}
        self.stopped_by_pruner = False

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"}
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)
        if self.on_epoch is not None and not self.on_epoch(epoch, logs):
            self.stopped_by_pruner = True
            self.model.stop_training = True


def objective(params: dict, features: FeatureSet, *, epochs: int, batch_size: int = 32, patience: int = 3,
              metric: str = "val_auc", seed: int = 42,
              on_epoch: Callable[[int, dict], bool] | None = None) -> TrialResult:
    """Train a head on cached features (clean + augmented views) and score it on validation.

    on_epoch(epoch, logs) is called after every epoch with Keras's logs; returning False stops the
    trial as PRUNED (that is how an engine's pruner reaches in without the objective knowing it).
    """
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    views, n, dim = features.train_views.shape
    x_train = features.train_views.reshape(views * n, dim)
    y_train = np.tile(features.y_train, views).astype(np.float32)
    head = compile_model(build_head(dim, int(params["dense_units"]), float(params["dropout"]),
                                    float(params["l2"]), seed=seed), float(params["learning_rate"]),
                         steps_per_execution=STEPS_PER_EXECUTION)
    mode = "min" if metric in LOWER_IS_BETTER else "max"
    hook = _EpochHook(on_epoch)
    y_val = features.y_val.astype(np.float32)
    head.fit(x_train, y_train, validation_data=(features.val, y_val),
             epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
             class_weight=class_weights(features.y_train),
             callbacks=[_ValidationF1(features.val, features.y_val),
                        keras.callbacks.EarlyStopping(monitor=metric, mode=mode, patience=patience,
                                                      restore_best_weights=True),
                        hook])
    proba = head_proba(head, features.val)
    metrics = classification_metrics(features.y_val, proba)
    # the compiled loss plus the L2 penalties, as evaluate() reports it, without tracing another graph
    metrics["val_loss"] = float(head.compute_loss(y=y_val.reshape(-1, 1), y_pred=proba.reshape(-1, 1), training=False))
    return TrialResult(score=metrics[metric], metrics=metrics, history=hook.history, head=head, val_proba=proba,
                       seconds=time.perf_counter() - start,
                       status="PRUNED" if hook.stopped_by_pruner else "COMPLETE")
