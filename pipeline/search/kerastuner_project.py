"""The Keras Tuner engine: random search in one process, its project folder under the cache, resumable."""
from __future__ import annotations

from pathlib import Path

import mlflow

from pipeline.config import (
    SearchConfig,
)
from pipeline.evaluate.metrics import LOWER_IS_BETTER
from pipeline.infra import tracking
from pipeline.search.space import PARAMS, SearchSpace
from pipeline.search.trials import TrialRunner
from pipeline.search.workers import check_stop


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
    tuner = Tuner(objective=kt.Objective(cfg.metric, direction), max_trials=cfg.trials, seed=runner.seed,
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
