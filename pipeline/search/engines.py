"""Search drivers: Optuna or Keras Tuner call the one objective; every trial becomes an MLflow child run."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import mlflow
import pandas as pd

from pipeline.config import (
    AugmentConfig,
    DataConfig,
    Interrupted,
    ModelConfig,
    PreprocessConfig,
    SearchConfig,
    flat_params,
)
from pipeline.data.dataset import Dataset
from pipeline.evaluate.metrics import LOWER_IS_BETTER
from pipeline.infra import tracking
from pipeline.modeling.features import FeatureSet
from pipeline.search.kerastuner_project import _run_kerastuner
from pipeline.search.optuna_study import _counts, _run_optuna
from pipeline.search.space import PARAMS, SearchSpace
from pipeline.search.trials import SearchError, SearchOutcome, TrialRunner, _fmt
from pipeline.search.workers import deferred_stop


def _study_settings(cfg: SearchConfig, space: SearchSpace, features: FeatureSet) -> dict:
    """What must not change when a study is resumed, or its trials stop being comparable."""
    return {"features": features.key, "space": hashlib.sha256(Path(space.source).read_bytes()).hexdigest()[:16],
            "epochs": cfg.epochs, "metric": cfg.metric, "batch_size": cfg.batch_size, "patience": cfg.patience,
            # absent means class-weights: studies made before --imbalance existed hold no such key
            **({"imbalance": cfg.imbalance} if cfg.imbalance != "class-weights" else {})}


def _where(cfg: SearchConfig, cache_dir: Path) -> str:
    if cfg.engine == "optuna":
        return cfg.storage or tracking.default_optuna_storage()
    return str(Path(cache_dir) / "kerastuner")


def _finished_count(cfg: SearchConfig, study_name: str, cache_dir: Path) -> int:
    """Finished trials of the study as its storage holds them (what a resume will find)."""
    try:
        if cfg.engine == "optuna":
            import optuna

            study = optuna.load_study(study_name=study_name, storage=tracking.optuna_storage(cfg.storage, cfg.heartbeat))
            return _counts(study)["finished"]
        trial_files = (Path(cache_dir) / "kerastuner" / study_name).glob("trial_*/trial.json")
        return sum('"status": "COMPLETED"' in f.read_text() for f in trial_files)
    except Exception:  # noqa: BLE001 - a count for a message must not hide the interruption
        return 0


def run_search(dataset: Dataset, features: FeatureSet, space: SearchSpace, cfg: SearchConfig,
               data_cfg: DataConfig, preprocess_cfg: PreprocessConfig, augment_cfg: AugmentConfig,
               model_cfg: ModelConfig, tags: dict | None = None) -> SearchOutcome:
    """One parent run per search; the engine runs trials; the parent gets the table and the best trial."""
    experiment_id = tracking.setup(cfg.experiment)
    settings = _study_settings(cfg, space, features)
    study_name = cfg.study_name or f"{cfg.experiment}-{cfg.engine}-{model_cfg.backbone}-{features.key[:8]}"
    killed = tracking.kill_orphans(experiment_id, study_name)
    if killed:
        print(f"marked {killed} MLflow run(s) of dead workers of study '{study_name}' KILLED", flush=True)
    runner = TrialRunner(features, cfg, cfg.trials, study_name, seed=data_cfg.seed)
    run_name = f"search-{cfg.engine}-{time.strftime('%Y%m%d-%H%M%S')}"
    with mlflow.start_run(run_name=run_name, tags={tracking.RUN_TYPE: "search", "engine": cfg.engine,
                                                   "study_name": study_name, "data_fingerprint": dataset.fingerprint,
                                                   "features_key": features.key, **tracking.worker_tags(),
                                                   **(tags or {})}) as parent:
        mlflow.log_params(flat_params(data_cfg, preprocess_cfg, augment_cfg, model_cfg, cfg))
        mlflow.log_artifact(str(space.source), "search_space")
        tracking.log_table(dataset.manifest.drop(columns=["sha"]), "data/manifest.csv")
        mlflow.log_dict({"skipped": dataset.skipped, "counts": dataset.counts()}, "data/data_check.json")
        mlflow.log_metrics({"n_train": len(features.y_train), "n_val": len(features.y_val),
                            "n_skipped": len(dataset.skipped)})
        try:
            with deferred_stop():
                if cfg.engine == "optuna":
                    rows = _run_optuna(runner, cfg, space, study_name, settings, parent.info.run_id)
                else:
                    rows = _run_kerastuner(runner, cfg, space, study_name, data_cfg.cache_dir)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: the engine has recorded the interrupted trial as failed; leave no
            # MLflow run RUNNING (the `with` blocks would say FAILED, which it was not).
            tracking.end_runs([runner.current_run_id], force=True)
            mlflow.end_run("KILLED")  # the parent; its `with` then leaves it as it is
            raise Interrupted(f"{_finished_count(cfg, study_name, data_cfg.cache_dir)} finished trials kept in "
                              f"study '{study_name}' ({_where(cfg, data_cfg.cache_dir)}); the same command resumes")
        trials = pd.DataFrame(rows).sort_values("number").reset_index(drop=True)
        tracking.log_table(trials, "trials.csv")
        ok = trials[(trials["status"] == "COMPLETE") & trials["score"].notna()]
        if ok.empty:
            mlflow.set_tag("status", "FAILED")
            raise SearchError("no trial completed; see the FAILED trial runs in MLflow for the errors")
        pick = ok["score"].idxmin() if cfg.metric in LOWER_IS_BETTER else ok["score"].idxmax()
        best = ok.loc[pick]
        best_params = {k: (int(best[k]) if k == "dense_units" else float(best[k])) for k in PARAMS}
        mlflow.log_dict({"number": int(best["number"]), "score": float(best["score"]), "metric": cfg.metric,
                         "run_id": best["run_id"], "params": best_params}, "best_trial.json")
        mlflow.set_tags({"best_trial": int(best["number"]), "best_run_id": best["run_id"],
                         **{f"best.{k}": v for k, v in best_params.items()}})
        mlflow.log_metric(f"best_{cfg.metric}", float(best["score"]))
        counts = trials["status"].value_counts().to_dict()
        print(f"search done: {json.dumps(counts)}; best trial {int(best['number'])} "
              f"{cfg.metric}={best['score']:.4f} ({_fmt(best_params)})", flush=True)
        print(f"MLflow parent run {parent.info.run_id} in experiment '{cfg.experiment}' ({tracking.tracking_uri()})")
        return SearchOutcome(parent.info.run_id, int(best["number"]), float(best["score"]), best_params,
                             str(best["run_id"]), trials)
