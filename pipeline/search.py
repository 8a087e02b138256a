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
import numpy as np
import pandas as pd

from . import tracking
from .config import AugmentConfig, DataConfig, Interrupted, ModelConfig, PipelineError, PreprocessConfig, SearchConfig, flat_params
from .data import Dataset
from .features import FeatureSet
from .gradcam import gradcam_on_features, grid_figure
from .objective import LOWER_IS_BETTER, TrialResult, head_proba, objective
from .space import PARAMS, SearchSpace
from .workers import check_stop, deferred_stop

GRADCAM_ARTIFACT = "gradcam/val_grid.png"
MAX_CONSECUTIVE_FAILURES = 3


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

    def __init__(self, features: FeatureSet, cfg: SearchConfig, engine_total: int, study_name: str = ""):
        self.features, self.cfg, self.total, self.study_name = features, cfg, engine_total, study_name
        self.best: float | None = None
        self.run_ids: dict[int, str] = {}
        self.current_run_id: str | None = None  # the trial run in progress, for cleanup on Ctrl-C

    def _better(self, a: float, b: float | None) -> bool:
        if b is None or math.isnan(b):
            return not math.isnan(a)
        return a < b if self.cfg.metric in LOWER_IS_BETTER else a > b

    def __call__(self, number: int, params: dict, keep_going: Callable[[int, dict], bool],
                 on_start: Callable[[str], None] | None = None) -> TrialResult:
        keras.backend.clear_session()  # models of earlier trials would otherwise pile up in memory
        cfg = self.cfg
        with mlflow.start_run(run_name=f"trial-{number:03d}", nested=True,
                              tags={tracking.RUN_TYPE: "trial", "trial_number": str(number), "engine": cfg.engine,
                                    "study_name": self.study_name, **tracking.worker_tags()}) as run:
            self.run_ids[number] = self.current_run_id = run.info.run_id
            if on_start is not None:
                on_start(run.info.run_id)
            mlflow.log_params(params)

            def on_epoch(epoch: int, logs: dict) -> bool:
                tracking.log_epoch(logs, epoch)
                check_stop()  # Ctrl-C / SIGTERM: stop here, between epochs
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
        self.current_run_id = None
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


def _per_trial_sampler(seed: int):
    """TPE whose random draws are seeded by (seed, trial number).

    Trial numbers are unique within a study, so parallel workers and restarted ones never replay
    one random sequence (a fixed-seed sampler per process would), and a study is still reproducible
    from its seed. TPE's constant liar keeps parallel workers from crowding one region.
    """
    import optuna

    class PerTrialSeedTPE(optuna.samplers.TPESampler):
        def before_trial(self, study, trial):
            super().before_trial(study, trial)
            trial_seed = int(np.random.SeedSequence([seed, trial.number]).generate_state(1)[0])
            self._rng.rng.seed(trial_seed)
            self._random_sampler._rng.rng.seed(trial_seed)

    return PerTrialSeedTPE(seed=seed, constant_liar=True)


def _on_stale_trial(study, trial) -> None:
    """A dead worker's trial was just failed: queue its parameters again, and tell MLflow the truth."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)(study, trial)
    # by id where the dead worker got to record it, else by tags (it may have died right after start_run)
    active = mlflow.active_run()
    found = tracking.runs_of_trial(active.info.experiment_id, study.study_name, trial.number,
                                   trial.user_attrs.get("worker", "")) if active else []
    killed = tracking.end_runs([trial.user_attrs.get("mlflow_run_id"), trial.user_attrs.get("mlflow_parent_run_id"),
                                *found])
    print(f"trial {trial.number:3d} lost its worker ({trial.user_attrs.get('worker', 'unknown')}): FAIL, "
          f"parameters queued again; {killed} MLflow run(s) marked KILLED", flush=True)


class _Surplus(Exception):
    """This trial would take the study past its budget (workers raced for the last slot)."""


def _counts(study) -> dict[str, int]:
    from collections import Counter

    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return {"finished": counts["COMPLETE"] + counts["PRUNED"], "running": counts["RUNNING"],
            "waiting": counts["WAITING"], "failed": counts["FAIL"]}


def _is_surplus(study, trial, budget: int) -> bool:
    """Trials are ranked by number (unique, assigned by the storage): a trial is surplus when the
    finished or running trials before it already fill the budget."""
    from optuna.trial import TrialState

    ahead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                  TrialState.RUNNING))
             if t.number < trial.number and not t.user_attrs.get("surplus")]
    return len(ahead) >= budget


def _fail_legacy_running(study, grace: int) -> None:
    """RUNNING trials without a worker mark come from runs before heartbeats existed: none can be alive."""
    import datetime

    from optuna.trial import TrialState

    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "worker" not in t.user_attrs and t.datetime_start and (now - t.datetime_start).total_seconds() > grace:
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)


def _run_optuna(runner: TrialRunner, cfg: SearchConfig, space: SearchSpace, study_name: str,
                settings: dict, parent_run_id: str) -> list[dict]:
    """Trials until the study (all workers, all restarts) holds cfg.trials finished ones."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = tracking.optuna_storage(cfg.storage, cfg.heartbeat, _on_stale_trial)
    direction = "minimize" if cfg.metric in LOWER_IS_BETTER else "maximize"
    study = optuna.create_study(study_name=study_name, storage=storage, direction=direction, load_if_exists=True,
                                sampler=_per_trial_sampler(cfg.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    elif stored != settings:
        changed = sorted(k for k in settings if stored.get(k) != settings[k])
        raise SearchError(f"Optuna study '{study_name}' in {storage.url} was run with other settings "
                          f"({', '.join(changed)} differ), so its trials would not be comparable. "
                          "Use --study-name NEW for a new study.")
    _fail_legacy_running(study, max(60, tracking.STALE_HEARTBEATS * cfg.heartbeat))
    counts = _counts(study)
    if counts["finished"] or counts["running"]:
        print(f"joining study '{study_name}': {counts['finished']} finished, {counts['running']} running, "
              f"{max(cfg.trials - counts['finished'], 0)} to go", flush=True)
    runner.total = cfg.trials
    worker = tracking.worker_id()

    def trial_fn(trial: optuna.Trial) -> float:
        if _is_surplus(study, trial, cfg.trials):
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"trial {trial.number} is past the study's budget of {cfg.trials}")
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("mlflow_parent_run_id", parent_run_id)
        params = space.suggest_optuna(trial)

        def keep_going(epoch: int, logs: dict) -> bool:
            if cfg.metric in logs:
                trial.report(logs[cfg.metric], epoch)
            return not trial.should_prune()

        result = runner(trial.number, params, keep_going,
                        on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id))
        if result.status == "PRUNED":
            raise optuna.TrialPruned()
        return result.score

    told_waiting, failures = False, []
    while True:
        check_stop()
        tracking.fail_stale_trials(study)  # the retry callback queues a dead worker's trial again
        counts = _counts(study)
        if counts["finished"] >= cfg.trials:
            break
        if counts["finished"] + counts["running"] >= cfg.trials and not counts["waiting"]:
            # Every slot is taken by a running trial: wait until they finish, or one turns out dead.
            if not told_waiting:
                print(f"waiting for {counts['running']} running trial(s) of other workers", flush=True)
                told_waiting = True
            time.sleep(cfg.heartbeat)
            continue
        told_waiting = False
        # A failing trial is recorded (Optuna and MLflow) and the study goes on.
        study.optimize(trial_fn, n_trials=1, catch=(Exception,), gc_after_trial=True,
                       callbacks=[lambda _, t: failures.append(t.state.name == "FAIL" and not t.user_attrs.get("surplus"))])
        if failures[-MAX_CONSECUTIVE_FAILURES:] == [True] * MAX_CONSECUTIVE_FAILURES:
            raise SearchError(f"{MAX_CONSECUTIVE_FAILURES} trials in a row failed in this worker; "
                              "see the FAILED trial runs in MLflow for the errors")
    return [{"number": t.number, "status": t.state.name, "score": t.value if t.value is not None else float("nan"),
             "run_id": t.user_attrs.get("mlflow_run_id", ""), **t.params}
            for t in study.trials if not t.user_attrs.get("surplus")]


def _run_kerastuner(runner: TrialRunner, cfg: SearchConfig, space: SearchSpace, study_name: str,
                    cache_dir: Path) -> list[dict]:
    import keras_tuner as kt

    class Tuner(kt.RandomSearch):
        def run_trial(self, trial, *args, **kwargs):
            check_stop()
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
    logged = tracking.trial_run_ids(mlflow.active_run().info.experiment_id, study_name)  # trials of earlier (resumed) runs too
    rows = []
    for trial in tuner.oracle.trials.values():
        score = trial.score if trial.score is not None else float("nan")
        status = {"COMPLETED": "COMPLETE"}.get(str(trial.status), str(trial.status))  # Optuna's word
        rows.append({"number": int(trial.trial_id), "status": status, "score": score,
                     "run_id": runner.run_ids.get(int(trial.trial_id)) or logged.get(int(trial.trial_id), ""),
                     **{k: trial.hyperparameters.values.get(k) for k in PARAMS}})
    return rows


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
    runner = TrialRunner(features, cfg, cfg.trials, study_name)
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
