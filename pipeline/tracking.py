"""Where MLflow writes, and the few logging helpers every step shares."""
from __future__ import annotations

import os
import re
from pathlib import Path

import mlflow
import pandas as pd

from .config import ConfigError

STORE = Path("mlruns")
RUN_TYPE = "pipeline.run_type"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set (a server, say), else a SQLite store under mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(STORE / 'mlflow.db').resolve()}"


def connect() -> bool:
    """Point MLflow (tracking and registry) at the store; True when it is the local default."""
    local = not os.environ.get("MLFLOW_TRACKING_URI")  # read first: set_tracking_uri sets it
    uri = tracking_uri()
    if local:
        STORE.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return local


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
