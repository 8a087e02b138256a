"""Where MLflow and Optuna write, the few logging helpers every step shares, and the clean-up of runs
whose process died."""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import mlflow
import pandas as pd

from pipeline.config import ConfigError, sqlite_folder
from pipeline.infra.fresh_store import create_once

STORE = Path("mlruns")
RUN_TYPE = "pipeline.run_type"
STALE_HEARTBEATS = 3  # an Optuna trial is dead after this many missed heartbeats (its grace period)


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set (a server, say), else a SQLite store under mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(STORE / 'mlflow.db').resolve()}"


def connect() -> bool:
    """Point MLflow (tracking and registry) at the store; True when it is the local default."""
    local = not os.environ.get("MLFLOW_TRACKING_URI")  # read first: set_tracking_uri sets it
    uri = tracking_uri()
    if local:
        STORE.mkdir(parents=True, exist_ok=True)
    create_once(uri, _create_mlflow_tables)  # commands started together on a fresh store: one migrates it
    mlflow.set_tracking_uri(uri)
    return local


def _create_mlflow_tables(uri: str) -> None:
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments(max_results=1)  # opening the tracking store runs its migrations
    client.search_registered_models(max_results=1)  # and the registry's
    for store in (client._tracking_client.store, client._get_registry_client().store):
        store.engine.dispose()  # the file is renamed next: no connection may stay open on it


def setup(experiment: str) -> str:
    """Point MLflow at the store and the experiment (created on first use); returns its id."""
    local = connect()
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage == "deleted":
        raise ConfigError(f"MLflow experiment '{experiment}' was deleted: restore it (mlflow experiments restore "
                          f"--experiment-id {found.experiment_id}) or choose another --experiment")
    if found is not None:
        mlflow.set_experiment(experiment)
        return found.experiment_id
    location = None
    if local:
        # Keep artifacts beside the database, under mlruns/, not in the current directory.
        folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment)
        location = (STORE / "artifacts" / folder).resolve().as_uri()
    experiment_id = mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return experiment_id


def log_table(frame: pd.DataFrame, artifact_file: str) -> None:
    mlflow.log_text(frame.to_csv(index=False), artifact_file)


def log_epoch(logs: dict[str, float], epoch: int, prefix: str = "epoch/") -> None:
    """Per-epoch curves under their own names, so the final val_* metrics stay single values."""
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in logs.items()}, step=epoch)


def log_figure(fig, artifact_file: str) -> None:
    import matplotlib.pyplot as plt

    mlflow.log_figure(fig, artifact_file)
    plt.close(fig)


def latest_run(experiment: str, run_type: str, finished: bool = False) -> mlflow.entities.Run | None:
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return None
    query = f"tags.`{RUN_TYPE}` = '{run_type}'" + (" and attributes.status = 'FINISHED'" if finished else "")
    runs = mlflow.search_runs([found.experiment_id], filter_string=query,
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return runs[0] if runs else None


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_tags() -> dict[str, str]:
    """Which process owns a run, so a later search on this host can tell a dead owner from a live one."""
    return {"worker.host": socket.gethostname(), "worker.pid": str(os.getpid())}


def end_runs(run_ids, status: str = "KILLED", force: bool = False) -> int:
    """Mark runs ended; only RUNNING ones unless force. Returns how many were changed."""
    client, changed = mlflow.MlflowClient(), 0
    for run_id in filter(None, run_ids):
        try:
            run = client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            continue
        if force or run.info.status == "RUNNING":
            client.set_terminated(run_id, status)
            changed += 1
    return changed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only (PermissionError means it exists, as another user's)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def kill_orphans(experiment_id: str, study_name: str) -> int:
    """Search and trial runs of this study left RUNNING by a process of this host that no longer exists
    (kill -9, power loss) become KILLED. Other hosts' dead trials are caught by Optuna's heartbeat."""
    host = socket.gethostname()
    query = (f"tags.study_name = '{study_name}' and attributes.status = 'RUNNING' "
             f"and tags.`worker.host` = '{host}'")
    runs = mlflow.search_runs([experiment_id], filter_string=query, output_format="list")
    dead = [r for r in runs if not process_alive(int(r.data.tags.get("worker.pid", "0") or 0))]
    return end_runs([r.info.run_id for r in dead])


def runs_of_trial(experiment_id: str, study_name: str, number: int, worker: str) -> list[str]:
    """RUNNING runs of one trial, and of the search of the worker ("host:pid") that ran it."""
    found = mlflow.search_runs([experiment_id], output_format="list",
                               filter_string=f"tags.study_name = '{study_name}' and attributes.status = 'RUNNING'")
    host, _, pid = worker.partition(":")
    return [r.info.run_id for r in found
            if r.data.tags.get("trial_number") == str(number)
            or (r.data.tags.get(RUN_TYPE) == "search" and pid and r.data.tags.get("worker.pid") == pid
                and r.data.tags.get("worker.host") == host)]


def trial_run_ids(experiment_id: str, study_name: str) -> dict[int, str]:
    """{trial number: run id} of the study's finished trial runs (the latest wins)."""
    query = f"tags.study_name = '{study_name}' and tags.`{RUN_TYPE}` = 'trial' and attributes.status = 'FINISHED'"
    runs = mlflow.search_runs([experiment_id], filter_string=query, output_format="list",
                              order_by=["attributes.start_time ASC"])
    return {int(r.data.tags["trial_number"]): r.info.run_id for r in runs}


def default_optuna_storage() -> str:
    """The Optuna storage when --storage is not given: a SQLite file beside the MLflow store."""
    return f"sqlite:///{(STORE / 'optuna.db').resolve()}"


def optuna_storage(url: str | None, heartbeat: int, on_stale=None):
    """RDB storage with heartbeats: a trial whose worker died (kill -9, lost machine) is failed by
    the next worker that looks, grace = 3 heartbeats later, and `on_stale` is called for it."""
    import warnings

    import optuna

    url = url or default_optuna_storage()
    if sqlite_folder(url):
        sqlite_folder(url).mkdir(parents=True, exist_ok=True)  # SQLite makes the file, not its folder
    # SQLite serialises writers: wait for the lock instead of failing with "database is locked".
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    # workers started together on a fresh file would all create its tables at once: one does
    create_once(url, lambda fresh: optuna.storages.RDBStorage(fresh, engine_kwargs=engine_kwargs).engine.dispose())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                          grace_period=STALE_HEARTBEATS * heartbeat,
                                          heartbeat_stale_trial_callback=on_stale)


def fail_stale_trials(study) -> None:
    """Optuna's own check (experimental in 5.0, hence the filter): trials of dead workers become FAIL."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def log_dataset_input(frame: pd.DataFrame, source: str, name: str, context: str) -> None:
    """A manifest as an MLflow dataset input of the active run (lineage: which files, which labels).

    MLflow warns here about things that do not apply to a file list (integer label columns in an
    inferred schema, a local path that two source types could read); the warnings are muted for
    this call only, so users see the ones that matter.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\.")
        mlflow.log_input(mlflow.data.from_pandas(frame, source=source, targets="label", name=name), context=context)
