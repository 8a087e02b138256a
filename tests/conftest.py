"""Shared fixtures: small SYNTHETIC data sets built by pipeline.data.synthetic, one fresh copy per test."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from pipeline.config import DataConfig, PreprocessConfig
from pipeline.data.synthetic import make_synthetic_dataset
from tests.helpers import RETRAIN_ARGV, search_argv

# Small but enough for a 15% patient-grouped val: 8 PNEUMONIA + 16 NORMAL train patients.
SPEC = SimpleNamespace(train=16, test=6, size=64)  # images per class in train/ and test/, pixels


@pytest.fixture(scope="session")
def spec() -> SimpleNamespace:
    """How the synthetic data sets here are built (tests compare counts against it)."""
    return SPEC


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """One synthetic data set for the whole session: treat it as read-only (copy it to change files)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "chest_xray", per_class_train=SPEC.train,
                                  per_class_test=SPEC.test, size=SPEC.size, seed=0)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """A cache folder shared by the tests of a session, so decoded images and features are reused."""
    return tmp_path_factory.mktemp("shared_cache")


@pytest.fixture
def synthetic_dataset(synthetic_dir, tmp_path) -> Path:
    """A private copy, so a test may rename, delete or add files."""
    return Path(shutil.copytree(synthetic_dir, tmp_path / "chest_xray"))


@pytest.fixture
def data_cfg(synthetic_dataset, tmp_path):
    """DataConfig for the synthetic copy; the cache lives under tmp_path, never in the repo."""
    def make(**overrides) -> DataConfig:
        values = {"data_dir": synthetic_dataset, "cache_dir": tmp_path / "cache", "seed": 0}
        values.update(overrides)
        return DataConfig(**values)
    return make


@pytest.fixture
def pre_cfg() -> PreprocessConfig:
    return PreprocessConfig(image_size=32)


@pytest.fixture
def bad_dataset(synthetic_dataset) -> dict[str, Path]:
    """The synthetic copy plus files a real download can contain; returns {kind: path}."""
    rng = np.random.default_rng(0)
    normal, pneumonia = synthetic_dataset / "train" / "NORMAL", synthetic_dataset / "train" / "PNEUMONIA"
    files = {
        "corrupt": normal / "corrupt.jpeg",         # random bytes: no JPEG header
        "truncated": pneumonia / "truncated.jpeg",  # a JPEG header, then garbage: fails only when decoded
        "zero_byte": normal / "empty.jpeg",
        "text": pneumonia / "notes.txt",
        "rgba": normal / "IM-9001-0001.png",
        "png16": pneumonia / "person9002_bacteria_1.png",
    }
    files["corrupt"].write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    files["truncated"].write_bytes(b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    files["zero_byte"].write_bytes(b"")
    files["text"].write_text("radiologist notes, not an image\n")
    gray = cv2.imread(str(sorted(normal.glob("*.jpeg"))[0]), cv2.IMREAD_GRAYSCALE)
    rgba = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA)
    rgba[..., 3] = 200
    assert cv2.imwrite(str(files["rgba"]), rgba)
    assert cv2.imwrite(str(files["png16"]), gray.astype(np.uint16) * 16)  # 12-bit values in a 16-bit PNG
    return files


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory, synthetic_dir, shared_cache) -> Path:
    """One tiny search + retrain-best for the session (the slow part): a folder whose mlruns/ holds a
    real SQLite registry with version 1 of model 'trained' as challenger. Tests register further
    versions under their own model names, so none depends on another's registry state."""
    from pipeline.cli import main

    work = tmp_path_factory.mktemp("registry")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        assert main(search_argv(synthetic_dir, shared_cache, "optuna", 2, "t-registry")) == 0
        assert main([*RETRAIN_ARGV, "--model-name", "trained"]) == 0
    finally:
        mp.undo()
    return work


@pytest.fixture
def registry(trained_registry, monkeypatch) -> Path:
    """Run a test inside the session's registry folder (MLflow's local SQLite store there)."""
    from pipeline.infra import tracking

    monkeypatch.chdir(trained_registry)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    tracking.connect()
    return trained_registry
