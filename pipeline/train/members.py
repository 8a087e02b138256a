"""Which classifiers an ensemble version holds: the K best trials of the search (`--top-k`) or the best
trial with N seeds (`--seeds`), and the validation table that says what averaging them bought."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import mlflow
import numpy as np

from pipeline.config import PipelineError, RetrainConfig
from pipeline.evaluate.metrics import LOWER_IS_BETTER
from pipeline.infra import tracking
from pipeline.modeling.ensemble import choose_tta, members_table

HEAD_PARAMS = ("dense_units", "dropout", "l2", "learning_rate")


class MembersError(PipelineError, RuntimeError):
    """The search has fewer finished trials than --top-k asks for."""


@dataclass(frozen=True)
class Member:
    trial: str
    seed: int
    params: dict


def head_params(params: dict[str, str]) -> dict:
    return {"dense_units": int(float(params["dense_units"])),
            **{k: float(params[k]) for k in ("dropout", "l2", "learning_rate")}}


def top_trials(experiment_id: str, study_name: str, metric: str, k: int) -> list[tuple[str, dict]]:
    """The k best finished trials of the study, best first, as (trial number, head params)."""
    order = "ASC" if metric in LOWER_IS_BETTER else "DESC"
    runs = mlflow.search_runs([experiment_id], output_format="list", max_results=max(k, 1) * 4,
                              filter_string=f"tags.study_name = '{study_name}' and tags.status = 'COMPLETE' "
                                            f"and tags.`{tracking.RUN_TYPE}` = 'trial'",
                              order_by=[f"metrics.{metric} {order}"])
    seen, chosen = set(), []
    for run in runs:  # a trial retried after a dead worker has two runs: count it once
        number = run.data.tags.get("trial_number", run.info.run_id)
        if number in seen or not set(HEAD_PARAMS) <= set(run.data.params) or metric not in run.data.metrics:
            continue
        seen.add(number)
        chosen.append((number, head_params(run.data.params)))
    return chosen[:k]


def plan_members(search, cfg: RetrainConfig, seed: int) -> list[Member]:
    """--top-k K: the K best trials, each with the run's seed + its rank; --seeds N: the best trial with seeds
    seed .. seed + N - 1; neither: the best trial alone (what retrain-best always did)."""
    if cfg.top_k > 1:
        trials = top_trials(search.experiment_id, search.study_name, search.params.get("metric", "val_auc"),
                            cfg.top_k)
        if len(trials) < cfg.top_k:
            raise MembersError(f"--top-k {cfg.top_k}: the search's study '{search.study_name}' has only "
                               f"{len(trials)} finished trial(s); lower --top-k or search more trials "
                               "(the same study name resumes)")
        return [Member(number, seed + rank, params) for rank, (number, params) in enumerate(trials)]
    return [Member(search.best_trial, seed + i, search.best_params) for i in range(cfg.seeds)]


def choose_views(per_member: list[dict[str, np.ndarray]], y_val: np.ndarray, cfg: RetrainConfig) -> str:
    """The version's test-time augmentation: the one given, or (auto) the one with the best val AUC. Logs the
    members-by-views table on validation (what 1, 3, 5 members give) as metrics and prints it."""
    tta, aucs = choose_tta(per_member, y_val)
    if cfg.tta != "auto":
        tta = cfg.tta
    mlflow.log_metrics({f"val_auc_tta_{name.replace('-', '_')}": value for name, value in aucs.items()})
    rows = members_table(per_member, y_val, tta)
    for row in rows:
        mlflow.log_metrics({"val_auc_member": row["member_val_auc"], "val_auc_first_members": row["ensemble_val_auc"]},
                           step=row["members"])
    print("validation ROC-AUC by test-time augmentation: "
          + ", ".join(f"{name} {value:.4f}" for name, value in aucs.items()) + f" -> {tta}"
          + (" (given)" if cfg.tta != "auto" else " (chosen on val)"), flush=True)
    if len(per_member) > 1:
        print("validation ROC-AUC, members averaged (tta " + tta + "):", flush=True)
        for row in rows:
            print(f"  first {row['members']}: {row['ensemble_val_auc']:.4f}  (member {row['members']} alone "
                  f"{row['member_val_auc']:.4f})", flush=True)
    mlflow.log_metric("val_auc_ensemble", float(rows[-1]["ensemble_val_auc"]))
    return tta


def member_tags(members: list[Member], tta: str) -> dict[str, str]:
    """What the registered version says about its members (the model card and `make evaluate` read them)."""
    return {"ensemble.members": str(len(members)), "ensemble.tta": tta,
            "ensemble.list": json.dumps([asdict(m) for m in members])}

