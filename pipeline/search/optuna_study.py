"""The Optuna engine: a study in real storage (SQLite or PostgreSQL) shared by any number of workers;
dead workers' trials are found by heartbeat and retried, surplus trials of a finished budget are dropped."""
from __future__ import annotations

import time

import mlflow
import numpy as np

from pipeline.config import (
    SearchConfig,
)
from pipeline.evaluate.metrics import LOWER_IS_BETTER
from pipeline.infra import tracking
from pipeline.search.dead_trials import fail_dead_trials
from pipeline.search.space import SearchSpace
from pipeline.search.trials import MAX_CONSECUTIVE_FAILURES, SearchError, TrialRunner
from pipeline.search.workers import check_stop


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


def _run_optuna(runner: TrialRunner, cfg: SearchConfig, space: SearchSpace, study_name: str,
                settings: dict, parent_run_id: str) -> list[dict]:
    """Trials until the study (all workers, all restarts) holds cfg.trials finished ones."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = tracking.optuna_storage(cfg.storage, cfg.heartbeat, _on_stale_trial)
    direction = "minimize" if cfg.metric in LOWER_IS_BETTER else "maximize"
    study = optuna.create_study(study_name=study_name, storage=storage, direction=direction, load_if_exists=True,
                                sampler=_per_trial_sampler(runner.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    elif stored != settings:
        changed = sorted(k for k in settings.keys() | stored.keys() if stored.get(k) != settings.get(k))
        same_balance = (f" or --imbalance {stored.get('imbalance', 'class-weights')} to resume it"
                        if "imbalance" in changed else "")
        raise SearchError(f"Optuna study '{study_name}' in {storage.url} was run with other settings "
                          f"({', '.join(changed)} differ), so its trials would not be comparable. "
                          f"Use --study-name NEW for a new study{same_balance}.")
    grace = max(60, tracking.STALE_HEARTBEATS * cfg.heartbeat)  # for trials that never wrote a heartbeat
    fail_dead_trials(study, grace)
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
        fail_dead_trials(study, grace)  # and the dead ones without a heartbeat, whenever the kill landed
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
