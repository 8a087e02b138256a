"""`python -m pipeline serve`: everything `mlflow models serve` would find wrong only after a 50-line traceback
(no such model, no champion, a bad PNEUMONIA_SERVE_PATH_ROOT) is checked first; then MLflow's server runs."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipeline.config import ConfigError, check_model_uri
from pipeline.data.preprocess import ImageError
from pipeline.infra import tracking
from pipeline.registry.promotion import RegistryError, version_uri
from pipeline.serving import requests


def servable_version(uri: str) -> ModelVersion:
    """The version `uri` names, or a RegistryError that says which part is missing and what to run."""
    name, alias, number = re.fullmatch(r"models:/([^@/]+)(?:@([^/]+)|/(\d+))", uri).groups()
    client, store = mlflow.MlflowClient(), mlflow.get_tracking_uri()
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        known = [m.name for m in client.search_registered_models(max_results=20)]
        listed = f"models there: {', '.join(known)}" if known else "no model is registered there yet"
        raise RegistryError(f"{uri}: no registered model '{name}' in {store} ({listed}); pass MODEL_NAME=NAME, or "
                            "register one first: make search && make retrain-best && make promote") from None
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        aliases = ", ".join(f"@{a}" for a in sorted(model.aliases)) or "none"
        what = f"no alias '{alias}'" if alias else f"no version {number}"
        raise RegistryError(f"{uri}: model '{name}' has {what} (aliases: {aliases}; versions: "
                            f"{', '.join(map(str, versions)) or 'none'}); make one champion with make promote "
                            f"MODEL_NAME={name}, or serve a version: MODEL=models:/{name}/N") from None


def check_path_root() -> Path | None:
    try:
        return requests.path_root()
    except ImageError as err:
        raise RegistryError(str(err)) from None


def serve_argv(version: ModelVersion, host: str, port: int) -> list[str]:
    """MLflow's own server for the pinned version, from this environment (no conda or virtualenv built)."""
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    return [str(mlflow_bin), "models", "serve", "-m", version_uri(version), "--env-manager", "local",
            "-h", host, "-p", str(port)]


def serve_env() -> dict[str, str]:
    """The venv's bin/ first on PATH (mlflow starts uvicorn through the shell), the same store, no telemetry."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "MLFLOW_DISABLE_TELEMETRY":
            os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true"), "DO_NOT_TRACK": os.environ.get("DO_NOT_TRACK", "true")}


def serve(model_uri: str, host: str, port: int) -> int:
    """Checks first (one `error:` line, exit 2), then this process becomes `mlflow models serve` (exec: the
    server gets Ctrl-C and gives the exit status)."""
    check_model_uri(model_uri)
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} is invalid: expected a TCP port from 1 to 65535, e.g. 5001")
    tracking.connect()
    version = servable_version(model_uri)
    root = check_path_root()
    argv = serve_argv(version, host, port)
    print(f"serving {version.name} v{version.version} ({model_uri}) on http://{host}:{port}/invocations; "
          f"paths: {f'inside {root}' if root else 'refused (image only)'}", flush=True)
    os.execve(argv[0], argv, serve_env())
    return 0  # not reached
