"""`--workers` has an upper bound: the probe's `--workers 100000` forked until the machine stalled."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.config import ConfigError
from pipeline.search.workers import check_workers, cores, max_workers
from tests.helpers import REPO, search_argv


def test_the_bound_is_four_workers_per_core_and_the_bound_itself_is_accepted():
    assert max_workers() == 4 * cores()
    check_workers(max_workers())  # control: the largest allowed count passes
    with pytest.raises(ConfigError):
        check_workers(max_workers() + 1)


@pytest.mark.slow
def test_too_many_workers_is_one_error_line_naming_the_bound_and_starts_nothing(synthetic_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"})
    argv = search_argv(synthetic_dir, tmp_path / "cache", "optuna", 2, "t-bound", "--workers", "100000")
    # its own session, so that a regression (forking workers) can be stopped as a whole group
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *argv], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert proc.returncode == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert lines == [f"error: --workers 100000 is more than this machine can run: at most {max_workers()} "
                     f"(4 per core, {cores()} cores); use --workers {max_workers()} or fewer, and start more "
                     "workers on other machines with the same --storage and --study-name"], err[-2000:]
    assert "workers on one study" not in out  # the supervisor never got to start one
    assert not (tmp_path / "mlruns").exists()  # refused before any store was touched
