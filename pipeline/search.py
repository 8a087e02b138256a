"""Search drivers: Optuna or Keras Tuner call the one objective; every trial becomes an MLflow child run."""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import mlflow
import pandas as pd

from . import tracking
from .config import AugmentConfig, DataConfig, ModelConfig, PipelineError, PreprocessConfig, SearchConfig, flat_params
from .data import Dataset
from .features import FeatureSet
from .gradcam import gradcam_on_features, grid_figure
from .objective import LOWER_IS_BETTER, TrialResult, head_proba, objective
from .space import PARAMS, SearchSpace

GRADCAM_ARTIFACT = "gradcam/val_grid.png"


class SearchError(PipelineError, RuntimeError):
    """The search could not produce a usable trial, or cannot resume the study it was pointed at."""


@dataclass
class SearchOutcome:
    parent_run_id: str
    best_trial: int
    best_score: float
    best_params: dict
    best_run_id: str
    trials: pd.DataFrame


def _fmt(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class TrialRunner:
    """Runs one trial as an MLflow child run; shared by both engines so their runs line up."""

    def __init__(self, features: FeatureSet, cfg: SearchConfig, engine_total: int):
        self.features, self.cfg, self.total = features, cfg, engine_total
        self.best: float | None = None
        self.run_ids: dict[int, str] = {}

    def _better(self, a: float, b: float | None) -> bool:
        if b is None or math.isnan(b):
            return not math.isnan(a)
        return a < b if self.cfg.metric in LOWER_IS_BETTER else a > b

    def __call__(self, number: int, params: dict, keep_going: Callable[[int, dict], bool]) -> TrialResult:
        keras.backend.clear_session()  # models of earlier trials would otherwise pile up in memory
        cfg = self.cfg
        with mlflow.start_run(run_name=f"trial-{number:03d}", nested=True,
                              tags={tracking.RUN_TYPE: "trial", "trial_number": str(number),
                                    "engine": cfg.engine}) as run:
            self.run_ids[number] = run.info.run_id
            mlflow.log_params(params)

            def on_epoch(epoch: int, logs: dict) -> bool:
                tracking.log_epoch(logs, epoch)
                return keep_going(epoch, logs)

            try:
                result = objective(params, self.features, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                   patience=cfg.patience, metric=cfg.metric, seed=cfg.seed + number,
                                   on_epoch=on_epoch)
            except Exception as err:
                mlflow.set_tags({"status": "FAILED", "error": f"{err.__class__.__name__}: {err}"[:5000]})
                print(f"trial {number:3d} FAILED: {err.__class__.__name__}: {err}", flush=True)
                raise  # leaving the `with` block marks this child run FAILED
            mlflow.log_metrics({**result.metrics, "duration_s": result.seconds,
                                "epochs_run": len(result.history.get("loss", []))})
            cam_seconds = self._log_gradcam(result)
            mlflow.log_metric("gradcam_s", cam_seconds)
            mlflow.set_tag("status", result.status)
        if result.status == "COMPLETE" and self._better(result.score, self.best):
            self.best = result.score
        best = "n/a" if self.best is None else f"{self.best:.4f}"
        print(f"trial {number:3d}/{self.total} {result.status:8s} {_fmt(params)} | "
              f"{cfg.metric}={result.score:.4f} | best {best} | {result.seconds:.1f}s", flush=True)
        return result

    def _log_gradcam(self, result: TrialResult) -> float:
        f = self.features
        if not len(f.cam_maps):
            return 0.0
        start = time.perf_counter()
        size = f.cam_images.shape[1]
        cams = gradcam_on_features(result.head, f.cam_maps, size)
        probs = head_proba(result.head, f.cam_maps.mean(axis=(1, 2)))
        fig = grid_figure(f.cam_images, cams, f.cam_labels, probs,
                          title=f"Grad-CAM, fixed validation images ({self.cfg.metric}={result.score:.3f})")
        tracking.log_figure(fig, GRADCAM_ARTIFACT)
        return time.perf_counter() - start


def _study_settings(cfg: SearchConfig, space: SearchSpace, features: FeatureSet) -> dict:
    """What must not change when a study is resumed, or its trials stop being comparable."""
    return {"features": features.key, "space": hashlib.sha256(Path(space.source).read_bytes()).hexdigest()[:16],
            "epochs": cfg.epochs, "metric": cfg.metric, "batch_size": cfg.batch_size, "patience": cfg.patience}


def _run_optuna(runner: TrialRunner, cfg: SearchConfig, space: SearchSpace, study_name: str,
                settings: dict) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = cfg.storage or f"sqlite:///{(tracking.STORE / 'optuna.db').resolve()}"
    tracking.STORE.mkdir(exist_ok=True)
    direction = "minimize" if cfg.metric in LOWER_IS_BETTER else "maximize"
    study = optuna.create_study(study_name=study_name, storage=storage, direction=direction, load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=cfg.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    elif stored != settings:
        changed = sorted(k for k in settings if stored.get(k) != settings[k])
        raise SearchError(f"Optuna study '{study_name}' in {storage} was run with other settings "
                          f"({', '.join(changed)} differ), so its trials would not be comparable. "
                          "Use --study-name NEW for a new study.")
    done = [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
    todo = cfg.trials - len(done)
    if done:
        print(f"resuming study '{study_name}': {len(done)} finished trial(s) kept, {max(todo, 0)} to run", flush=True)
    runner.total = cfg.trials

    def trial_fn(trial: optuna.Trial) -> float:
        params = space.suggest_optuna(trial)

        def keep_going(epoch: int, logs: dict) -> bool:
            if cfg.metric in logs:
                trial.report(logs[cfg.metric], epoch)
            return not trial.should_prune()

        result = runner(trial.number, params, keep_going)
        trial.set_user_attr("mlflow_run_id", runner.run_ids[trial.number])
        if result.status == "PRUNED":
            raise optuna.TrialPruned()
        return result.score

    if todo > 0:
        # A failing trial is recorded (Optuna and MLflow) and the study goes on; Ctrl-C stops it,
        # and every finished trial is already in the storage.
        study.optimize(trial_fn, n_trials=todo, catch=(Exception,), gc_after_trial=True)
    return [{"number": t.number, "status": t.state.name, "score": t.value if t.value is not None else float("nan"),
             "run_id": t.user_attrs.get("mlflow_run_id", ""), **t.params} for t in study.trials]


def _run_kerastuner(runner: TrialRunner, cfg: SearchConfig, space: SearchSpace, study_name: str,
                    cache_dir: Path) -> list[dict]:
    import keras_tuner as kt

    class Tuner(kt.RandomSearch):
        def run_trial(self, trial, *args, **kwargs):
            params = SearchSpace.from_kerastuner(trial.hyperparameters)
            result = runner(int(trial.trial_id), params, lambda epoch, logs: True)
            return {cfg.metric: result.score}

    direction = "min" if cfg.metric in LOWER_IS_BETTER else "max"
    tuner = Tuner(objective=kt.Objective(cfg.metric, direction), max_trials=cfg.trials, seed=cfg.seed,
                  hyperparameters=space.kerastuner_hyperparameters(), tune_new_entries=False,
                  directory=str(Path(cache_dir) / "kerastuner"), project_name=study_name, overwrite=False,
                  max_consecutive_failed_trials=3)
    runner.total = cfg.trials
    tuner.search(verbose=0)
    rows = []
    for trial in tuner.oracle.trials.values():
        score = trial.score if trial.score is not None else float("nan")
        status = {"COMPLETED": "COMPLETE"}.get(str(trial.status), str(trial.status))  # Optuna's word
        rows.append({"number": int(trial.trial_id), "status": status, "score": score,
                     "run_id": runner.run_ids.get(int(trial.trial_id), ""),
                     **{k: trial.hyperparameters.values.get(k) for k in PARAMS}})
    return rows


def run_search(dataset: Dataset, features: FeatureSet, space: SearchSpace, cfg: SearchConfig,
               data_cfg: DataConfig, preprocess_cfg: PreprocessConfig, augment_cfg: AugmentConfig,
               model_cfg: ModelConfig, tags: dict | None = None) -> SearchOutcome:
    """One parent run per search; the engine runs trials; the parent gets the table and the best trial."""
    tracking.setup(cfg.experiment)
    settings = _study_settings(cfg, space, features)
    study_name = cfg.study_name or f"{cfg.experiment}-{cfg.engine}-{model_cfg.backbone}-{features.key[:8]}"
    runner = TrialRunner(features, cfg, cfg.trials)
    run_name = f"search-{cfg.engine}-{time.strftime('%Y%m%d-%H%M%S')}"
    with mlflow.start_run(run_name=run_name, tags={tracking.RUN_TYPE: "search", "engine": cfg.engine,
                                                   "study_name": study_name, "data_fingerprint": dataset.fingerprint,
                                                   "features_key": features.key, **(tags or {})}) as parent:
        mlflow.log_params(flat_params(data_cfg, preprocess_cfg, augment_cfg, model_cfg, cfg))
        mlflow.log_artifact(str(space.source), "search_space")
        tracking.log_table(dataset.manifest.drop(columns=["sha"]), "data/manifest.csv")
        mlflow.log_dict({"skipped": dataset.skipped, "counts": dataset.counts()}, "data/data_check.json")
        mlflow.log_metrics({"n_train": len(features.y_train), "n_val": len(features.y_val),
                            "n_skipped": len(dataset.skipped)})
        if cfg.engine == "optuna":
            rows = _run_optuna(runner, cfg, space, study_name, settings)
        else:
            rows = _run_kerastuner(runner, cfg, space, study_name, data_cfg.cache_dir)
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
