"""`make serve`'s command: the real `mlflow models serve` process answers a JPEG and a 16-bit PNG."""
from __future__ import annotations

import base64

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.registry.promotion import CHAMPION, TEST_FINGERPRINT, register
from tests.helpers import mlflow_models_serve, post_json

pytestmark = pytest.mark.slow  # starts a server process that loads TensorFlow


def test_served_champion_answers_a_jpeg_and_a_16_bit_png(registry, synthetic_dir, tmp_path):
    name = "t-serve"
    src = mlflow.MlflowClient().get_model_version("trained", "1")
    version = register(f"runs:/{src.run_id}/model", name, {TEST_FINGERPRINT: "x"}).version
    mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION, version)
    jpeg = sorted((synthetic_dir / "test" / "PNEUMONIA").iterdir())[0]
    png16 = tmp_path / "film16.png"
    gray = cv2.imread(str(sorted((synthetic_dir / "test" / "NORMAL").iterdir())[0]), cv2.IMREAD_GRAYSCALE)
    assert cv2.imwrite(str(png16), gray.astype(np.uint16) * 16)
    encoded = [base64.b64encode(p.read_bytes()).decode("ascii") for p in (jpeg, png16)]
    expected = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(pd.DataFrame({"image": encoded}))

    with mlflow_models_serve(f"models:/{name}@champion", f"sqlite:///{registry / 'mlruns' / 'mlflow.db'}",
                             tmp_path) as port:
        one = post_json(port, {"dataframe_split": {"columns": ["image"], "data": [[encoded[0]]]}})["predictions"]
        two = post_json(port, {"dataframe_records": [{"image": encoded[1]}]})["predictions"]
    for answer, (_, row) in zip((one[0], two[0]), expected.iterrows()):
        assert set(answer) == {"probability", "label", "threshold", "in_distribution", "ood_score"}
        assert answer["probability"] == pytest.approx(row["probability"], abs=1e-5)
        assert answer["label"] == row["label"] and answer["threshold"] == pytest.approx(row["threshold"])
