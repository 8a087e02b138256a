"""Helpers the test modules share (fixtures live in conftest.py): command lines and paths, one home each."""
from __future__ import annotations

import contextlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE_SPACE = str(REPO / "search_spaces" / "smoke.yaml")
RETRAIN_ARGV = ["retrain-best", "--experiment", "t-registry", "--epochs", "1", "--fine-tune-epochs", "1",
                "--fine-tune-layers", "all", "--gradcam-images", "4"]


def search_argv(data_dir: Path, cache: Path, engine: str, trials: int, experiment: str, *extra: str) -> list[str]:
    """The smallest real search: 32 px MobileNetV2 from a random start, the smoke space, 2 epochs per trial."""
    return ["search", "--data-dir", str(data_dir), "--cache-dir", str(cache), "--engine", engine,
            "--trials", str(trials), "--epochs", "2", "--backbone", "mobilenetv2", "--weights", "none",
            "--image-size", "32", "--space", SMOKE_SPACE, "--experiment", experiment, "--augment-views", "1",
            "--gradcam-images", "4", *extra]


def runs_of(experiment: str):
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    return mlflow.search_runs([exp.experiment_id], output_format="list")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(port: int, payload: dict, path: str = "/invocations") -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def mlflow_models_serve(model_uri: str, tracking_uri: str, folder: Path, timeout_s: float = 240):
    """`make serve`'s command as a real process on a free port; yields the port, stops its process group."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    mlflow_bin = Path(sys.executable).parent / "mlflow"
    port = free_port()
    # mlflow starts `uvicorn` through the shell: the venv's bin/ must be on PATH, as `make serve` puts it
    env = {**os.environ, "PATH": f"{mlflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([str(mlflow_bin), "models", "serve", "-m", model_uri, "--env-manager", "local",
                                   "-h", "127.0.0.1", "-p", str(port)], cwd=folder, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, log_path.read_text()[-3000:]
                assert time.time() < deadline, f"server did not come up in {timeout_s:.0f} s"
                time.sleep(2)
        yield port
    finally:  # the server's own process group: mlflow starts its workers in it
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
