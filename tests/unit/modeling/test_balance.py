"""Class balance of the head's training vectors: SMOTE only adds minority vectors, on train only."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError, SearchConfig
from pipeline.modeling.balance import IMBALANCE, balance


def _features(seed=0, n_major=60, n_minor=20, dim=8):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (n_major, dim)), rng.normal(3, 1, (n_minor, dim))]).astype(np.float32)
    y = np.concatenate([np.ones(n_major), np.zeros(n_minor)]).astype(np.float32)  # PNEUMONIA is the majority
    return x, y


def test_smote_balances_by_adding_minority_vectors_between_neighbours():
    x, y = _features()
    xs, ys, ws = balance(x, y, "smote", seed=1)
    assert np.sum(ys == 0) == np.sum(ys == 1) == 60
    assert np.array_equal(xs[: len(x)], x) and np.array_equal(ys[: len(y)], y)  # originals kept, in order
    new = xs[len(x):]
    assert np.all(ys[len(y):] == 0) and len(new) == 40
    minority = x[y == 0]
    # every synthetic vector lies inside the minority class's bounding box (interpolated, not invented)
    assert np.all(new >= minority.min(0) - 1e-6) and np.all(new <= minority.max(0) + 1e-6)
    assert np.all(ws == 1)
    again, _, _ = balance(x, y, "smote", seed=1)
    assert np.array_equal(again, xs)  # deterministic given the seed
    other, _, _ = balance(x, y, "smote", seed=2)
    assert not np.array_equal(other[len(x):], new)  # control: the seed matters


def test_smote_on_a_tiny_minority_uses_the_neighbours_it_has_or_class_weights():
    x, y = _features(n_major=20, n_minor=3)
    xs, ys, _ = balance(x, y, "smote", seed=1)  # 3 minority vectors: 2 neighbours each, not SMOTE's 5
    assert np.sum(ys == 0) == np.sum(ys == 1) == 20
    x1, y1 = _features(n_major=20, n_minor=1)
    xw, yw, ww = balance(x1, y1, "smote")  # one minority vector: nothing to interpolate towards
    assert np.array_equal(xw, x1) and len(set(ww.tolist())) == 2  # the class weights, not a crash


def test_smote_is_the_default_validation_chose():
    assert SearchConfig().imbalance == "smote"


def test_class_weights_and_none():
    x, y = _features()
    xw, yw, ww = balance(x, y, "class-weights")
    assert xw is x and np.allclose(ww[y == 0], 80 / (2 * 20)) and np.allclose(ww[y == 1], 80 / (2 * 60))
    _, _, wn = balance(x, y, "none")
    assert np.all(wn == 1)


def test_unknown_imbalance_is_refused_where_it_enters():
    with pytest.raises(ConfigError, match=r"imbalance='oversample'.*class-weights, smote, none.*--imbalance"):
        SearchConfig(imbalance="oversample")
    assert set(IMBALANCE) == {"class-weights", "smote", "none"}
    with pytest.raises(ValueError):
        balance(*_features(), "oversample")
