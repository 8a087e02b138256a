"""Versions registered before pipeline/ was cut into stages keep loading and serving: the fixture
was saved by the pre-move code (commit c52da94) and its pickle names `pipeline.serving.PneumoniaModel`."""
from __future__ import annotations

import base64

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.infra import tracking
from pipeline.registry.promotion import CHAMPION, TEST_FINGERPRINT, register
from pipeline.serving import pyfunc
from tests.helpers import REPO, mlflow_models_serve, post_json

pytestmark = pytest.mark.slow  # a real Keras model, a real registry, a real server process
FIXTURE = REPO / "tests" / "fixtures" / "premove_model"
NAME = "t-premove"


@pytest.fixture
def old_champion(tmp_path, monkeypatch) -> str:
    """The pre-move pyfunc as version 1 of its own model in a fresh SQLite registry, alias champion."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    tracking.setup("t-premove")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(FIXTURE), "model")
    version = register(f"runs:/{run.info.run_id}/model", NAME, {TEST_FINGERPRINT: "x"}).version
    mlflow.MlflowClient().set_registered_model_alias(NAME, CHAMPION, version)
    return f"models:/{NAME}@{CHAMPION}"


def film_png(tmp_path) -> str:
    """A generated 64 px gray PNG (not the model's 32 px), base64-encoded as a client sends it."""
    yy, xx = np.mgrid[0:64, 0:64]
    gray = (127 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
    path = tmp_path / "film.png"
    assert cv2.imwrite(str(path), gray)
    return base64.b64encode(path.read_bytes()).decode("ascii")


def test_the_fixture_is_a_pre_move_pyfunc():
    """The control: without this the test below could be loading a model saved by today's code."""
    pickled = (FIXTURE / "python_model.pkl").read_bytes()
    assert b"pipeline.serving\x94\x8c\x0ePneumoniaModel" in pickled and b"pipeline.serving.pyfunc" not in pickled
    assert (FIXTURE / "code" / "pipeline" / "serving.py").is_file()  # the flat package it was saved with
    assert not (FIXTURE / "code" / "pipeline" / "serving").exists()
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) < 1024 * 1024


def test_a_pre_move_version_loads_in_process_and_serves_the_same_probability(old_champion, tmp_path):
    image = film_png(tmp_path)
    model = pyfunc.load(old_champion)
    assert type(model) is pyfunc.PneumoniaModel  # today's class, reached through the old name
    local = model.predict(None, pd.DataFrame({"image": [image]}))
    # today's class answers with today's columns; an old version has no guard, so nothing is flagged
    assert list(local.columns) == ["probability", "label", "threshold", "in_distribution", "ood_score"]
    assert bool(local["in_distribution"].iloc[0]) and np.isnan(local["ood_score"].iloc[0])
    probability = float(local["probability"].iloc[0])
    assert 0.0 < probability < 1.0 and local["threshold"].iloc[0] == pytest.approx(0.5)
    assert local["label"].iloc[0] == ("PNEUMONIA" if probability >= 0.5 else "NORMAL")

    tracking_uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    with mlflow_models_serve(old_champion, tracking_uri, tmp_path) as port:
        [answer] = post_json(port, {"dataframe_split": {"columns": ["image"], "data": [[image]]}})["predictions"]
    assert set(answer) == {"probability", "label", "threshold"}
    assert answer["probability"] == pytest.approx(probability, abs=1e-5)
    assert answer["label"] == local["label"].iloc[0] and answer["threshold"] == pytest.approx(0.5)
