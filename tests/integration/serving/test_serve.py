"""`make serve`'s command: the real `mlflow models serve` process answers a JPEG and a 16-bit PNG."""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.registry.promotion import CHAMPION, TEST_FINGERPRINT, register

pytestmark = pytest.mark.slow  # starts a server process that loads TensorFlow
MLFLOW = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, payload: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


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

    port = free_port()
    # mlflow starts `uvicorn` through the shell: the venv's bin/ must be on PATH, as `make serve` puts it
    env = {**os.environ, "PATH": f"{MLFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{registry / 'mlruns' / 'mlflow.db'}",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(MLFLOW), "models", "serve", "-m", f"models:/{name}@champion", "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                assert time.time() < deadline, "server did not come up in 240 s"
                time.sleep(2)
        one = post(port, {"dataframe_split": {"columns": ["image"], "data": [[encoded[0]]]}})["predictions"]
        two = post(port, {"dataframe_records": [{"image": encoded[1]}]})["predictions"]
    finally:  # the server's own process group: mlflow starts its workers in it
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    for answer, (_, row) in zip((one[0], two[0]), expected.iterrows()):
        assert set(answer) == {"probability", "label", "threshold", "in_distribution", "ood_score"}
        assert answer["probability"] == pytest.approx(row["probability"], abs=1e-5)
        assert answer["label"] == row["label"] and answer["threshold"] == pytest.approx(row["threshold"])
