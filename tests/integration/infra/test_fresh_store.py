"""Commands started at the same instant on a fresh MLflow + Optuna SQLite store (the probe started two
searches together and both crashed in MLflow's schema migration, breaking the store for good)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import mlflow
import optuna
import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow  # real processes importing MLflow

PROCESSES = 4
# Each process imports everything, says it is ready, waits for the common go, then opens the store as
# every command does.
OPEN_STORE = """
import pathlib, sys, time
name = sys.argv[1]
from pipeline.infra import tracking
import mlflow, optuna
pathlib.Path("ready-" + name).touch()
while not pathlib.Path("go").exists():
    time.sleep(0.001)
tracking.setup(name)
with mlflow.start_run(run_name=name):
    mlflow.log_metric("x", 1.0)
optuna.create_study(study_name=name, storage=tracking.optuna_storage(None, 5))
print("opened", name)
"""


def test_processes_opening_one_fresh_store_at_once_all_succeed_and_the_store_works(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"})
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, f"e{i}"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(PROCESSES)]
    deadline = time.time() + 240
    while len(list(tmp_path.glob("ready-*"))) < PROCESSES and time.time() < deadline:
        assert all(p.poll() is None for p in procs), "a process ended before the common start"
        time.sleep(0.05)
    assert not (tmp_path / "mlruns").exists(), "the store must be fresh when they all start"
    (tmp_path / "go").touch()
    results = [p.communicate(timeout=400) for p in procs]
    for i, (p, (out, err)) in enumerate(zip(procs, results)):
        assert p.returncode == 0 and f"opened e{i}" in out, err[-3000:]

    db = tmp_path / "mlruns" / "mlflow.db"
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    names = {e.name for e in mlflow.search_experiments()}
    assert {f"e{i}" for i in range(PROCESSES)} <= names
    for i in range(PROCESSES):
        exp = mlflow.get_experiment_by_name(f"e{i}")
        runs = mlflow.search_runs([exp.experiment_id], output_format="list")
        assert [r.data.metrics["x"] for r in runs] == [1.0]
    storage = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    assert {s.study_name for s in optuna.get_all_study_summaries(storage)} == {f"e{i}" for i in range(PROCESSES)}
    assert not list((tmp_path / "mlruns").glob(".*partial")), "a private build was left behind"
