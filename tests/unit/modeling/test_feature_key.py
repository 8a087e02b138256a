"""The feature cache's key: what changes the cached vectors changes it; a setting added later does not
orphan the caches (and the studies named after them) made before it, while it is off."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from pipeline.config import AugmentConfig, ModelConfig, PreprocessConfig
from pipeline.modeling.features import FORMAT_VERSION, cache_key, weights_id

MODEL, PRE = ModelConfig("mobilenetv2", "none", 96), PreprocessConfig(image_size=96)


def key(augment: AugmentConfig) -> str:
    return cache_key(MODEL, PRE, augment, views=1, data_fingerprint="abc", seed=42, cam_count=4)


def test_crop_off_keeps_the_key_caches_had_before_crop_existed():
    before = {k: v for k, v in asdict(AugmentConfig()).items() if k != "crop"}  # AugmentConfig at 588b127
    parts = {"version": FORMAT_VERSION, "backbone": "mobilenetv2", "weights": weights_id("none"),
             "preprocess": asdict(PRE), "augment": before, "views": 1, "data": "abc", "seed": 42, "cam_count": 4}
    assert key(AugmentConfig()) == hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def test_what_changes_the_vectors_changes_the_key():
    assert len({key(AugmentConfig()), key(AugmentConfig(crop=0.7)), key(AugmentConfig(crop=0.8)),
                key(AugmentConfig(zoom=0.0))}) == 4
