"""A worker SIGKILLed after its trial was created (parameters drawn, `worker` set) but before its first
Optuna heartbeat: the probe's resumed search waited on that RUNNING trial forever."""
from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys

import optuna
import pytest
import sqlalchemy

from pipeline.cli import main
from pipeline.infra import tracking
from pipeline.search.dead_trials import fail_dead_trials
from tests.helpers import REPO, SMOKE_SPACE, search_argv

pytestmark = pytest.mark.slow  # real processes, real SQLite storage; the resume test trains

# What a worker has done when the kill lands: the trial exists, its parameters are drawn and `worker`
# names this process, but no heartbeat was written yet. Then it is SIGKILLed.
KILLED_WORKER = """
import os, signal, socket, sys
import optuna
from pipeline.search.space import load_space
study = optuna.load_study(study_name=sys.argv[1], storage=sys.argv[2])
trial = study.ask()
trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
load_space(sys.argv[3]).suggest_optuna(trial)
print(trial.number, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}


def _killed_worker_trial(study_name: str, storage: str, cwd) -> int:
    proc = subprocess.run([sys.executable, "-c", KILLED_WORKER, study_name, storage, SMOKE_SPACE], cwd=cwd,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    return int(proc.stdout.split()[0])


def _backdate(storage: str, trial_id: int, seconds: int) -> None:
    """Make a trial look started `seconds` ago, in the real storage (its start column)."""
    engine = sqlalchemy.create_engine(storage)
    with engine.begin() as conn:
        start = conn.execute(sqlalchemy.text("SELECT datetime_start FROM trials WHERE trial_id = :i"),
                             {"i": trial_id}).scalar()
        old = datetime.datetime.fromisoformat(str(start)) - datetime.timedelta(seconds=seconds)
        conn.execute(sqlalchemy.text("UPDATE trials SET datetime_start = :s WHERE trial_id = :i"),
                     {"s": old.isoformat(sep=" "), "i": trial_id})
    engine.dispose()


def test_trials_without_heartbeat_of_dead_workers_fail_and_live_ones_stay(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    stale = []
    study = optuna.create_study(study_name="s", storage=tracking.optuna_storage(
        storage, 1, on_stale=lambda st, t: stale.append(t.number)))
    killed_here = _killed_worker_trial("s", storage, tmp_path)

    def running(worker: str) -> optuna.trial.Trial:
        trial = study.ask()
        trial.set_user_attr("worker", worker)
        return trial

    alive_here = running(f"{socket.gethostname()}:{os.getpid()}")  # control: this very process
    fresh_elsewhere = running("other-host:1")  # control: cannot be checked, and still young
    silent_elsewhere = running("other-host:2")
    _backdate(storage, silent_elsewhere._trial_id, 600)

    assert sorted(fail_dead_trials(study, grace=60)) == sorted([killed_here, silent_elsewhere.number])
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states[killed_here] == states[silent_elsewhere.number] == "FAIL"
    assert states[alive_here.number] == states[fresh_elsewhere.number] == "RUNNING"
    assert sorted(stale) == sorted([killed_here, silent_elsewhere.number])  # handed on, to be queued again
    assert fail_dead_trials(study, grace=60) == []  # once


def test_resumed_search_does_not_wait_for_a_worker_killed_before_its_first_heartbeat(tmp_path, monkeypatch,
                                                                                     synthetic_dir, shared_cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = search_argv(synthetic_dir, shared_cache, "optuna", 1, "t-dead", "--study-name", "dead", "--heartbeat", "1")
    assert main(argv) == 0
    storage = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    killed = _killed_worker_trial("dead", storage, tmp_path)
    params = optuna.load_study(study_name="dead", storage=storage).trials[killed].params
    assert optuna.load_study(study_name="dead", storage=storage).trials[killed].state.name == "RUNNING"

    argv[argv.index("--trials") + 1] = "2"  # one slot left, held by the dead trial
    try:
        resumed = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=tmp_path, env=_env(),
                                 capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"the resumed search waited on the dead trial: {str(err.stdout)[-2000:]}") from None
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"trial {killed:3d} lost its worker" in resumed.stdout
    study = optuna.load_study(study_name="dead", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 2 and "RUNNING" not in states, states
    assert study.trials[killed].state.name == "FAIL"
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].params == params  # the dead trial's parameters, run again
