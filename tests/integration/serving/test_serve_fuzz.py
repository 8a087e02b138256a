"""A few hundred malformed requests (seeded) against a real `python -m pipeline serve` (which runs `mlflow models
serve`): each gets a 4xx with a reason and no stack trace, the server stays up, and a good request afterwards is
answered as the in-process pyfunc answers it. Also the pre-check: no such model / no champion is one line."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.registry.promotion import CHAMPION, TEST_FINGERPRINT, register
from tests.helpers import REPO, free_port, http_server

pytestmark = pytest.mark.slow  # starts a server process that loads TensorFlow
SEED = 20


def _env(registry) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{registry / 'mlruns' / 'mlflow.db'}",
            "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


def _serve(registry, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "serve", *args], cwd=registry, env=_env(registry),
                            text=True, start_new_session=True, **kw)


@pytest.mark.parametrize("model, expected", [
    ("models:/no-such-model@champion", "error: models:/no-such-model@champion: no registered model 'no-such-model'"),
    ("models:/t-fuzz-nochamp@champion", "error: models:/t-fuzz-nochamp@champion: model 't-fuzz-nochamp' has no "
                                        "alias 'champion' (aliases: @challenger; versions: 1)"),
])
def test_serve_without_the_model_is_one_error_line(registry, model, expected):
    src = mlflow.MlflowClient().get_model_version("trained", "1")
    if "nochamp" in model and not mlflow.MlflowClient().search_model_versions("name = 't-fuzz-nochamp'"):
        register(f"runs:/{src.run_id}/model", "t-fuzz-nochamp", {TEST_FINGERPRINT: "x"})
    proc = _serve(registry, "--model", model, "--port", str(free_port()), stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-3000:]
    assert err.startswith(expected), err


def _post(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def _records(*rows) -> bytes:
    return json.dumps({"dataframe_records": list(rows)}).encode()


def malformed_requests(rng: np.random.Generator, film_path: str) -> list[tuple[str, bytes, str]]:
    """(what, body, content type): each one a request no answer can be given to."""
    b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731
    rand = lambda n: rng.integers(0, 256, int(n), dtype=np.uint8).tobytes()  # noqa: E731
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=!@#$%^&*()_- \n"))
    cases = []
    for i in range(60):
        cases.append((f"random bytes {i}", rand(rng.integers(1, 5000)), "application/json"))
    for i in range(20):
        cases.append((f"random csv {i}", rand(rng.integers(1, 2000)), "text/csv"))
    for i in range(10):
        cases.append((f"random parquet {i}", rand(rng.integers(1, 2000)), "application/vnd.apache.parquet"))
    shapes = [[], [1, 2], 5, "image", None, {}, {"foo": 1}, {"dataframe_split": 5}, {"dataframe_records": [1, 2]},
              {"dataframe_records": "abc"}, {"dataframe_split": {"columns": ["image"]}},
              {"dataframe_split": {"columns": ["image"], "data": [[1, 2]]}}, {"inputs": 5},
              {"instances": [{"image": 5}]}, {"dataframe_records": [{"image": 5}]},
              {"dataframe_records": [{"image": None}]}, {"dataframe_records": [{"image": [1, 2, 3]}]},
              {"dataframe_records": [{"image": {"a": 1}}]}, {"dataframe_records": [{"image": True}]},
              {"dataframe_records": [{"file": "x"}]}, {"dataframe_records": [{"image": ""}]},
              {"dataframe_records": [{"path": ""}]}, {"dataframe_records": [{}]},
              {"dataframe_records": [{"image": "x"}], "params": {"a": 1}}]
    for i, shape in enumerate(shapes):
        cases.append((f"wrong type {i}: {str(shape)[:40]}", json.dumps(shape).encode(), "application/json"))
    for i in range(50):
        text = "".join(rng.choice(alphabet, int(rng.integers(1, 300))))
        cases.append((f"bad base64 {i}", _records({"image": text}), "application/json"))
    non_images = [b"", b"plain text, not a film\n", b"%PDF-1.4\n" + rand(500), b"PK\x03\x04" + rand(500),
                  b"\xff\xd8\xff\xe0" + rand(2000), b"\x89PNG\r\n\x1a\n" + rand(2000), b"DICM" * 40,
                  b"GIF89a" + rand(300), b"<svg xmlns='http://www.w3.org/2000/svg'/>"]
    for i in range(40):
        data = non_images[i] if i < len(non_images) else rand(rng.integers(1, 20000))
        cases.append((f"non-image {i}", _records({"image": b64(data)}), "application/json"))
    paths = [film_path, "/etc/passwd", "/etc/shadow", "../../../../etc/hostname", "/proc/self/environ", "mlruns",
             "mlruns/mlflow.db", "/nonexistent/file.jpeg", "a\x00b", "~/.ssh/id_rsa", "." * 300, "/" * 5000]
    for i, path in enumerate(paths):
        cases.append((f"path {i}", _records({"path": path}), "application/json"))
        cases.append((f"path split {i}", json.dumps({"dataframe_split": {"columns": ["path"], "data": [[path]]}})
                      .encode(), "application/json"))
    cases.append(("empty body", b"", "application/json"))
    cases.append(("empty csv", b"", "text/csv"))
    cases.append(("wrong content type", _records({"image": "x"}), "text/plain"))
    cases.append(("huge random base64", _records({"image": b64(rand(12_000_000))}), "application/json"))
    cases.append(("huge invalid json", b"{" + b"\"a\":[" * 200_000, "application/json"))
    cases.append(("many bad rows", _records(*[{"image": "@@"}] * 5000), "application/json"))
    return cases


def test_malformed_requests_get_a_4xx_with_a_reason_and_the_server_stays_up(registry, synthetic_dir, tmp_path):
    name = "t-serve-fuzz"
    src = mlflow.MlflowClient().get_model_version("trained", "1")
    version = register(f"runs:/{src.run_id}/model", name, {TEST_FINGERPRINT: "x"}).version
    mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION, version)
    films = sorted((synthetic_dir / "test" / "PNEUMONIA").iterdir())[:2]
    good = [base64.b64encode(p.read_bytes()).decode("ascii") for p in films]
    expected = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(pd.DataFrame({"image": good}))

    port = free_port()
    argv = [sys.executable, "-m", "pipeline", "serve", "--model", f"models:/{name}@champion", "--port", str(port)]
    with http_server(argv, port, tmp_path, _env(registry)) as server:
        started = time.time()
        cases = malformed_requests(np.random.default_rng(SEED), str(films[0]))
        assert len(cases) >= 200
        failures = []
        for what, body, content_type in cases:
            status, text = _post(port, body, content_type)
            if not (400 <= status < 500) or not text.strip() or "Traceback" in text or "stack_trace" in text \
                    or 'File "' in text:
                failures.append(f"{what}: {status} {text[:300]!r}")
        assert not failures, f"{len(failures)} of {len(cases)}:\n" + "\n".join(failures[:20])
        # a readable and an unreadable row together: 200, the good one answered, the bad one told why
        status, text = _post(port, _records({"image": good[0]}, {"image": "@@@"}, {"path": "/etc/passwd"}))
        mixed = json.loads(text)["predictions"]
        assert status == 200 and mixed[0]["error"] is None and mixed[0]["probability"] is not None
        assert mixed[1]["probability"] is None and mixed[1]["error"].startswith("row 1: column 'image' is not base64")
        assert mixed[2]["error"].startswith("row 2: column 'path' is not accepted over HTTP")
        status, text = _post(port, json.dumps({"dataframe_split": {"columns": ["image"], "data": [[good[0]],
                                                                                              [good[1]]]}}).encode())
        assert status == 200, text[:500]
        answer = json.loads(text)["predictions"]
        assert time.time() - started < 120, "the fuzz run should stay under 2 minutes"
        assert server.poll() is None
    assert mixed[0]["probability"] == pytest.approx(expected["probability"][0], abs=1e-5)
    for got, (_, row) in zip(answer, expected.iterrows()):
        assert got["probability"] == pytest.approx(row["probability"], abs=1e-5) and got["label"] == row["label"]
