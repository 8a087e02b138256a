"""Ctrl-C (a real SIGINT) in the middle of a trial: one `interrupted:` line and no traceback on the terminal,
and the trial's MLflow run says what happened to it (status tag KILLED), as every other trial run does."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from tests.helpers import REPO, search_argv

pytestmark = pytest.mark.slow  # a real search process with TensorFlow


def _wait_for_running_trial(proc, tmp_path, experiment: str, timeout: float = 240):
    client, deadline = None, time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        if not (tmp_path / "mlruns" / "optuna.db").exists():  # made after the MLflow store: its tables exist
            continue
        client = client or mlflow.MlflowClient()
        exp = client.get_experiment_by_name(experiment)
        running = exp and client.search_runs([exp.experiment_id], "tags.`pipeline.run_type` = 'trial' and "
                                             "attributes.status = 'RUNNING'")
        if running:
            return client, exp, running[0].info.run_id
    pytest.fail(f"no trial started in {timeout:.0f} s (rc {proc.poll()})")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_mid_trial_prints_one_line_and_tags_the_trial_killed(synthetic_dir, shared_cache, tmp_path, workers):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    experiment = f"t-ctrl-c-{workers}"
    # long trials (many epochs, no early stop), so the signal lands inside one
    argv = search_argv(synthetic_dir, shared_cache, "optuna", 3, experiment, "--study-name", f"ctrl-c-{workers}",
                       "--epochs", "400", "--patience", "400", "--workers", workers)
    # its own process group, as a terminal gives a command: Ctrl-C is a SIGINT to every process in it
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *argv], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
        client, exp, run_id = _wait_for_running_trial(proc, tmp_path, experiment)
        time.sleep(1.0)  # inside the epochs, not at the run's first line
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err + out and "KeyboardInterrupt" not in err + out, (err + out)[-3000:]
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("interrupted: "), err[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "KILLED", run.info.status
    assert run.data.tags.get("status") == "KILLED", run.data.tags
    trials = client.search_runs([exp.experiment_id], "tags.`pipeline.run_type` = 'trial'")
    assert trials and all("status" in t.data.tags for t in trials), [t.data.tags for t in trials]  # none untold
