"""`make demo`, the first command of the quick start: the real `python -m pipeline.demo` in a fresh
folder, as a user runs it, leaves a registered SYNTHETIC model and its predictions."""
from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.demo import EXPERIMENT, MODEL_NAME
from tests.helpers import REPO

pytestmark = pytest.mark.slow  # two searches, a retrain, promote and predict: a few minutes on 2 cores


def test_demo_runs_every_step_and_registers_a_synthetic_model(tmp_path):
    (tmp_path / "search_spaces").symlink_to(REPO / "search_spaces")  # the demo reads search_spaces/default.yaml
    assert not (tmp_path / "mlruns").exists()  # the control: whatever is found below, the demo wrote
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "pipeline.demo", "--trials", "1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=3600)  # 20+ min on a loaded 2-core machine
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "Demo finished on SYNTHETIC data" in done.stdout

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    try:
        client = MlflowClient()
        [version] = client.search_model_versions(f"name = '{MODEL_NAME}'")
        run = client.get_run(version.run_id)
        assert run.data.tags["dataset"] == "SYNTHETIC" and "SYNTHETIC" in MODEL_NAME
        assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
        searches = mlflow.search_runs([run.info.experiment_id], output_format="list",
                                      filter_string="tags.`pipeline.run_type` = 'search'")
        assert sorted(r.data.tags["engine"] for r in searches) == ["kerastuner", "optuna"]
        assert all(r.data.tags["dataset"] == "SYNTHETIC" for r in searches)
    finally:
        mlflow.set_tracking_uri(None)
    table = pd.read_csv(tmp_path / "outputs" / "SYNTHETIC-demo" / "predictions.csv")
    assert len(table) == 4 and table["probability"].between(0, 1).all()
    assert set(table["model_version"].astype(str)) == {str(version.version)}
