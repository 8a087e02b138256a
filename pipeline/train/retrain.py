"""`retrain-best` as MLflow Recipes would cut it: train -> evaluate -> register, one module per step.

Each step reads what the previous one produced: the train step's logged pyfunc is what the evaluate
step loads (the same `evaluate_model` that `make evaluate` runs), and its figures are what the
register step writes on the new version.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow

from pipeline.config import AugmentConfig, ModelConfig, PreprocessConfig, RetrainConfig
from pipeline.data.dataset import Dataset
from pipeline.evaluate.calibration import ood_tags
from pipeline.evaluate.step import Evaluation, evaluate_model
from pipeline.explain.sanity import log_sanity_checks
from pipeline.infra import tracking
from pipeline.registry.model_card import DATA_COUNTS, publish_card
from pipeline.registry.promotion import TEST_FINGERPRINT, eval_tags, register
from pipeline.serving.pyfunc import load
from pipeline.train.finetune import SearchRecord, train_step
from pipeline.train.members import Member


def log_manifest(dataset: Dataset) -> None:
    """The manifest as the run's inputs, one MLflow dataset per context (train, val), for lineage;
    the evaluate step logs the test one."""
    for split in ("train", "val"):
        part = dataset.manifest[dataset.manifest["split"] == split]
        source = os.path.commonpath(dataset.manifest["path"].tolist())
        tracking.log_dataset_input(part, source, f"{split}-{dataset.fingerprint}", split)


def run_name(members: list[Member]) -> str:
    if len(members) == 1:
        return f"retrain-best-trial-{members[0].trial}"
    trials = list(dict.fromkeys(m.trial for m in members))
    return f"retrain-ensemble-{len(members)}-trial{'s' if len(trials) > 1 else ''}-{'-'.join(trials)}"


def retrain_best(dataset: Dataset, search: SearchRecord, members: list[Member], model_cfg: ModelConfig,
                 augment_cfg: AugmentConfig, preprocess_cfg: PreprocessConfig, cfg: RetrainConfig, features_dir: Path,
                 seed: int, tags: dict | None = None):
    """Train `members` (plan_members), evaluate once on test, register as challenger.
    Returns (run id, version, evaluation)."""
    lineage = {tracking.RUN_TYPE: "retrain", "search_run_id": search.run_id, "best_trial": search.best_trial,
               "data_fingerprint": dataset.fingerprint, "features_key": search.features_key, **(tags or {})}
    if search.data_fingerprint and search.data_fingerprint != dataset.fingerprint:
        print(f"warning: data fingerprint {dataset.fingerprint} differs from the search's "
              f"{search.data_fingerprint}", flush=True)
    with mlflow.start_run(run_name=run_name(members), tags=lineage) as run:
        log_manifest(dataset)
        trained = train_step(dataset, search, members, model_cfg, augment_cfg, preprocess_cfg, cfg, features_dir)
        # The test split is used once, here, after every choice (weights, threshold) is fixed.
        test = dataset.manifest[dataset.manifest["split"] == "test"].reset_index(drop=True)
        model = load(trained.model_uri)
        evaluation = evaluate_model(model, test, gradcam_images=cfg.gradcam_images, seed=seed,
                                    lime_images=cfg.lime_images)
        sanity = log_sanity_checks(model.model, trained.gradcam_layer, *dataset.split("test"), cfg.sanity_images, seed)
        version = register_step(trained.model_uri, evaluation, cfg.model_name, preprocess_cfg, model_cfg,
                                {**lineage, "retrain_run_id": run.info.run_id, "gradcam_layer": trained.gradcam_layer,
                                 **trained.version_tags, **ood_tags(evaluation.fingerprint, evaluation.report),
                                 **sanity, DATA_COUNTS: json.dumps(dataset.counts())})
        mlflow.set_tags({"registered_model": cfg.model_name, "registered_version": version.version})
        publish_card(cfg.model_name, version.version)
    return run.info.run_id, version, evaluation


def register_step(model_uri: str, evaluation: Evaluation, name: str, preprocess_cfg: PreprocessConfig,
                  model_cfg: ModelConfig, lineage: dict):
    """New version (alias challenger) with its evaluation under its test fingerprint, preprocessing and lineage."""
    report = evaluation.report
    tags = {**{k: f"{report[k]:.6f}" for k in ("test_auc", "test_accuracy", "test_sensitivity", "test_specificity",
                                                "threshold")},
            TEST_FINGERPRINT: evaluation.fingerprint,
            **eval_tags(evaluation.fingerprint, evaluation.summary(), evaluation.run_id, len(evaluation.manifest)),
            "image_size": preprocess_cfg.image_size, "clahe_clip_limit": preprocess_cfg.clahe_clip_limit,
            "clahe_tile_grid": preprocess_cfg.clahe_tile_grid, "backbone": model_cfg.backbone,
            "weights": model_cfg.weights, **{k: v for k, v in lineage.items() if k != tracking.RUN_TYPE}}
    return register(model_uri, name, tags)

