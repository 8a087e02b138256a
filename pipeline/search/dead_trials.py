"""RUNNING trials whose worker is gone where Optuna's heartbeat check cannot see it.

Optuna fails a trial only once its heartbeat is stale, so a worker killed after its trial was created
but before the first heartbeat landed left that trial RUNNING for good, and every later worker waited
on it. A trial is dead here when its worker ("host:pid", set first thing in the trial) ran on this host
and that process is gone, or when it never wrote a heartbeat and started more than the grace period
ago (a live worker writes one within an instant of starting the trial).
"""
from __future__ import annotations

import copy
import datetime
import socket

from pipeline.infra.tracking import process_alive


def _beating(storage, study_id: int) -> set[int]:
    """Ids of the study's trials that wrote at least one heartbeat."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(storage.scoped_session) as session:
        rows = (session.query(models.TrialHeartbeatModel.trial_id)
                .join(models.TrialModel, models.TrialModel.trial_id == models.TrialHeartbeatModel.trial_id)
                .filter(models.TrialModel.study_id == study_id).all())
    return {row[0] for row in rows}


def worker_gone(worker: str, host: str | None = None) -> bool:
    """True only when `worker` ("host:pid") names a process of this host that no longer exists."""
    worker_host, _, pid = worker.partition(":")
    return worker_host == (host or socket.gethostname()) and pid.isdigit() and not process_alive(int(pid))


def fail_dead_trials(study, grace: float) -> list[int]:
    """Fail the study's dead RUNNING trials and hand each to the storage's stale-trial callback (which
    queues its parameters again), as Optuna does for a stale heartbeat; returns their numbers."""
    import optuna
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    storage = study._storage
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    backend = getattr(storage, "_backend", storage)  # create_study wraps the RDB storage in a cache
    beating = _beating(backend, study._study_id) if hasattr(backend, "scoped_session") else set()
    now, host, failed = datetime.datetime.now(), socket.gethostname(), []
    for trial in running:
        silent = trial._trial_id not in beating and trial.datetime_start is not None \
            and (now - trial.datetime_start).total_seconds() > grace
        if not (worker_gone(trial.user_attrs.get("worker", ""), host) or silent):
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
            continue
        failed.append(trial.number)
        callback = storage.get_heartbeat_stale_trial_callback() if isinstance(storage, BaseHeartbeat) else None
        if callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(trial._trial_id)))
    return failed
