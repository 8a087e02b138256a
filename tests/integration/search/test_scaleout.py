"""Several workers on one study, on SQLite and on a real PostgreSQL + `mlflow server`, with one worker
killed (SIGKILL) mid-trial: the budget holds exactly, nothing is duplicated, lost or left RUNNING."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import mlflow
import optuna
import pytest

from pipeline.cli import main
from pipeline.infra import servers
from pipeline.search.space import PARAMS
from tests.helpers import REPO, search_argv

pytestmark = pytest.mark.slow  # worker processes, real Keras training, real servers
HEARTBEAT = "1"  # seconds: a killed worker's trial is failed 3 s after its last heartbeat


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on a free port (skipped only where the server binaries are missing)."""
    if servers.postgres_bindir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed: apt-get install -y postgresql "
                    "(.ci/run installs them)")
    folder = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))  # /tmp: reachable by the postgres user under root
    try:
        yield servers.start_postgres(folder, servers.free_port())
    finally:
        servers.stop_postgres(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    """`mlflow server` with the PostgreSQL backend store; yields its tracking URI."""
    artifacts = tmp_path_factory.mktemp("mlflow-artifacts")
    port = servers.free_port()
    proc = servers.start_mlflow_server(f"{postgres}/mlflow", str(artifacts), port, log=artifacts.parent / "mlflow.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _kill_one_worker_mid_trial(supervisor: subprocess.Popen, experiment: str, ready: Path,
                               timeout: float = 240) -> int:
    """SIGKILL the first worker seen with a trial run in progress; returns its pid."""
    client, deadline = None, time.time() + timeout
    while time.time() < deadline and supervisor.poll() is None:
        time.sleep(0.3)
        workers = set(_children(supervisor.pid))
        if not ready.exists():  # the supervisor creates the stores first; a client made earlier would race it
            continue
        client = client or mlflow.MlflowClient()
        exp = client.get_experiment_by_name(experiment)
        if exp is None or not workers:
            continue
        running = client.search_runs([exp.experiment_id], "tags.`pipeline.run_type` = 'trial' and "
                                     "attributes.status = 'RUNNING'")
        pids = [int(r.data.tags["worker.pid"]) for r in running if int(r.data.tags["worker.pid"]) in workers]
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
    out = supervisor.communicate()[0] if supervisor.poll() is not None else ""
    raise AssertionError(f"no worker was ever seen mid-trial (supervisor status {supervisor.poll()}): {out[-3000:]}")


def _run_killing_one(workdir: Path, argv: list[str], experiment: str, env: dict) -> tuple[int, str, int]:
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *argv], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = workdir / "mlruns" / "optuna.db" if "--storage" not in argv else workdir
    killed = _kill_one_worker_mid_trial(proc, experiment, ready)
    out, _ = proc.communicate(timeout=400)
    return proc.returncode, out, killed


def _check_study(storage: str, study_name: str, experiment: str, trials: int, killed_pid: int) -> optuna.Study:
    study = optuna.load_study(study_name=study_name, storage=storage)
    mine = [t for t in study.trials if not t.user_attrs.get("surplus")]
    states = Counter(t.state.name for t in mine)
    assert states["COMPLETE"] + states["PRUNED"] == trials, states
    assert not states["RUNNING"] and not states["WAITING"], states
    finished = [t for t in mine if t.state.name in ("COMPLETE", "PRUNED")]
    keys = [tuple(t.params[k] for k in PARAMS) for t in finished]
    assert len(set(keys)) == len(keys), "two finished trials share all four parameters"
    failed = [t for t in mine if t.state.name == "FAIL"]
    assert failed, "the killed worker's trial should have ended FAIL"
    for t in failed:  # the dead worker's trial was retried with its parameters, once
        retries = [r for r in mine if r.system_attrs.get("failed_trial") == t.number]
        assert len(retries) == 1 and retries[0].params == t.params

    exp = mlflow.get_experiment_by_name(experiment)
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    children = [r for r in runs if r.data.tags.get("pipeline.run_type") == "trial"]
    by_number = Counter(int(r.data.tags["trial_number"]) for r in children)
    assert by_number == Counter(t.number for t in mine), "not exactly one MLflow child run per Optuna trial"
    status = {int(r.data.tags["trial_number"]): r.info.status for r in children}
    assert all(status[t.number] == "FINISHED" for t in finished)
    assert all(status[t.number] == "KILLED" for t in failed)
    parents = [r for r in runs if r.data.tags.get("pipeline.run_type") == "search"]
    assert {r.data.tags["study_name"] for r in parents} == {study_name}
    for parent in parents:
        dead = parent.data.tags["worker.pid"] == str(killed_pid)
        assert parent.info.status == ("KILLED" if dead else "FINISHED"), parent.data.tags["worker.pid"]
    return study


def _best_of(study: optuna.Study) -> int:
    return max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value).number


def test_three_workers_on_postgres_and_mlflow_server_survive_a_sigkill(postgres, mlflow_server, synthetic_dir,
                                                                       shared_cache, tmp_path, monkeypatch):
    storage, experiment, trials = f"{postgres}/optuna", "scale-pg", 5
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": mlflow_server,
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    argv = search_argv(synthetic_dir, shared_cache, "optuna", trials, experiment, "--study-name", "pg-study",
                       "--storage", storage, "--workers", "3", "--heartbeat", HEARTBEAT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    rc, out, killed = _run_killing_one(tmp_path, argv, experiment, env)
    assert rc == 1 and "worker w" in out, out[-3000:]  # the killed worker counts as failed
    assert out.count(" COMPLETE ") + out.count(" PRUNED ") >= trials, out[-3000:]  # one line per finished trial
    study = _check_study(storage, "pg-study", experiment, trials, killed)

    # retrain-best through the same server takes the best trial of the whole study
    monkeypatch.chdir(tmp_path)
    assert main(["retrain-best", "--experiment", experiment, "--epochs", "1", "--fine-tune-epochs", "0",
                 "--gradcam-images", "2", "--model-name", "scale-pg-model"]) == 0
    exp = mlflow.get_experiment_by_name(experiment)
    retrain = mlflow.search_runs([exp.experiment_id], "tags.`pipeline.run_type` = 'retrain'", output_format="list")
    assert len(retrain) == 1 and retrain[0].data.tags["best_trial"] == str(_best_of(study))


def test_two_workers_on_sqlite_and_a_cold_cache_survive_a_sigkill(synthetic_dir, tmp_path, monkeypatch):
    """SQLite for Optuna and MLflow; the feature cache is cold, so both workers want to build one entry."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    experiment, trials = "scale-sqlite", 4
    argv = search_argv(synthetic_dir, tmp_path / "cold-cache", "optuna", trials, experiment,
                       "--study-name", "sqlite-study", "--workers", "2", "--heartbeat", HEARTBEAT)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    rc, out, killed = _run_killing_one(tmp_path, argv, experiment, env)
    assert rc == 1, out[-3000:]
    assert "Error" not in out.replace("error: worker", ""), out[-3000:]  # no lock error, no traceback
    assert out.count("features cached in") == 1 and out.count("features loaded from") == 1, out[-3000:]
    entries = list((tmp_path / "cold-cache" / "features").iterdir())
    assert [p.name for p in entries if p.is_dir()] == [p.name for p in entries if p.is_dir() and "partial" not in p.name]
    _check_study(f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}", "sqlite-study", experiment, trials, killed)


def test_ctrl_c_stops_cleanly_and_leaves_nothing_running(synthetic_dir, shared_cache, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    argv = search_argv(synthetic_dir, shared_cache, "optuna", 20, "t-sigint", "--study-name", "sigint")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    client, deadline = None, time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # wait until a trial is in progress
        time.sleep(0.3)
        if not (tmp_path / "mlruns" / "optuna.db").exists():  # made after the MLflow store: no race on its tables
            continue
        client = client or mlflow.MlflowClient()
        exp = client.get_experiment_by_name("t-sigint")
        if exp and client.search_runs([exp.experiment_id], "tags.`pipeline.run_type` = 'trial' and "
                                      "attributes.status = 'RUNNING'"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted: ") and "finished trials kept in study 'sigint'" in line, line
    assert "the same command resumes" in line
    client = client or mlflow.MlflowClient()
    study = optuna.load_study(study_name="sigint", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    exp = client.get_experiment_by_name("t-sigint")
    statuses = Counter(r.info.status for r in client.search_runs([exp.experiment_id]))
    assert not statuses["RUNNING"] and statuses["KILLED"] >= 1, statuses


def test_kerastuner_with_several_workers_is_refused_in_one_line(synthetic_dir, shared_cache, tmp_path,
                                                                monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = search_argv(synthetic_dir, shared_cache, "kerastuner", 2, "t-kt-workers", "--workers", "2")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--engine optuna" in err[0]
