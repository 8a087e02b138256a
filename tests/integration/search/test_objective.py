"""The objective on tiny synthetic feature vectors: every allowed --metric drives early stopping,
best-weight restore and pruning (Keras itself logs no val_f1; the objective adds it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import METRICS
from pipeline.evaluate.metrics import LOWER_IS_BETTER
from pipeline.modeling.features import FeatureSet
from pipeline.search.objective import objective

PARAMS = {"dense_units": 16, "dropout": 0.0, "l2": 0.0, "learning_rate": 0.05}


@pytest.fixture(scope="module")
def features() -> FeatureSet:
    return synthetic_features()


def synthetic_features() -> FeatureSet:
    """Weakly separable random vectors: a big learning rate makes validation scores swing from epoch
    to epoch, so the best epoch is rarely the last and restoring it is visible."""
    rng = np.random.default_rng(0)
    dim, n_train, n_val = 12, 96, 48
    y_train, y_val = rng.integers(0, 2, n_train), np.tile([0, 1], n_val // 2)
    signal = np.zeros(dim, dtype=np.float32)
    signal[0] = 0.6

    def vectors(labels):
        return (rng.normal(size=(len(labels), dim)) + np.outer(labels, signal)).astype(np.float32)

    return FeatureSet(train_views=vectors(y_train)[None], y_train=y_train, val=vectors(y_val), y_val=y_val,
                      cam_maps=np.zeros((0, 1, 1, 1), np.float32), cam_images=np.zeros((0, 8, 8), np.uint8),
                      cam_labels=np.zeros(0, np.int64), directory=Path("unused"), key="synthetic", from_cache=False)


def _best(values: list[float], metric: str) -> tuple[int, float]:
    pick = int(np.argmin(values) if metric in LOWER_IS_BETTER else np.argmax(values))
    return pick, values[pick]


@pytest.mark.slow
@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_drives_early_stopping_best_weights_and_the_pruner(features, metric):
    seen = []

    def pruner(epoch, logs):
        seen.append(logs[metric])  # a KeyError here is what pruning on a metric nobody logs looked like
        return True

    result = objective(PARAMS, features, epochs=12, batch_size=16, patience=3, metric=metric, seed=1, on_epoch=pruner)
    curve = result.history.get(metric)
    assert curve, f"{metric} never reached the callbacks: {sorted(result.history)}"
    assert seen == curve
    best_epoch, best_value = _best(curve, metric)
    # Early stopping watched the metric: it stopped `patience` epochs after the best one (this data
    # swings enough that it always does, so restoring the best weights is visible).
    assert len(curve) == best_epoch + 1 + 3 and curve[-1] != best_value, curve
    # Best weights were restored: the final score is the best epoch's value, not the last epoch's.
    # The curve and the final score come from the same metrics (evaluate.metrics, sklearn's exact
    # AUC), so one tolerance serves every metric, val_auc included.
    tolerance = 1e-4
    assert result.score == pytest.approx(best_value, abs=tolerance), curve
    assert abs(result.score - curve[-1]) > tolerance, curve
    assert result.metrics[metric] == result.score


@pytest.mark.slow
def test_pruning_on_val_f1_stops_the_trial(features):
    def prune_after_two(epoch, logs):
        return epoch < 1

    result = objective(PARAMS, features, epochs=6, batch_size=16, patience=3, metric="val_f1", seed=1,
                       on_epoch=prune_after_two)
    assert result.status == "PRUNED" and len(result.history["val_f1"]) == 2


@pytest.mark.slow
def test_training_one_new_model_after_another_gives_no_retracing_warning(caplog, monkeypatch):
    """Each trial builds a new head; TensorFlow would call that "retracing" after five of them."""
    import logging

    import keras
    from tensorflow.python.eager.polymorphic_function import polymorphic_function as tf_function

    import pipeline

    def train_new_models(count: int) -> list[str]:
        # TensorFlow warns at most twice per process and code object: start each run from a fresh
        # count, or the second run (and any run after other tests) could not warn at all.
        monkeypatch.setattr(tf_function, "_frequent_tracing_detector_manager",
                            tf_function._FrequentTracingDetectorManager())
        caplog.clear()
        for _ in range(count):  # a new model each time, as every trial, retrain and prediction has
            keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]).predict(np.zeros((4, 3)), verbose=0)
        return [r.getMessage() for r in caplog.records if "retracing" in r.getMessage()]

    tf_logger = logging.getLogger("tensorflow")
    [ours] = [f for f in tf_logger.filters if isinstance(f, pipeline._NoRetracingWarning)]
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        assert train_new_models(5) == []
        tf_logger.removeFilter(ours)
        try:
            assert train_new_models(5), "the control: without the filter TensorFlow warns"
        finally:
            tf_logger.addFilter(ours)
