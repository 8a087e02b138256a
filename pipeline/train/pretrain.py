"""Pretrain step: the offline backbone. Without ImageNet weights (an air-gapped hospital, this
machine) a head search on frozen *random* features ranks heads on noise (val AUC ~0.86); one
backbone trained from scratch on the train split, saved as a weights file, gives the search
features that mean something (`search --weights PATH`) and retrain-best a trained starting point.

Only the train split is learned from; val picks the epoch (as it picks everything else); test is
never read here.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import mlflow

from pipeline.config import AugmentConfig, ModelConfig, PreprocessConfig, PretrainConfig, flat_params
from pipeline.data.augment import image_dataset
from pipeline.data.dataset import Dataset, class_weights
from pipeline.data.preprocess import to_model_input
from pipeline.infra import tracking
from pipeline.modeling.backbones import (
    build_backbone,
    build_classifier,
    build_head,
    calibrate_batchnorm,
    compile_model,
    unfreeze_top,
)
from pipeline.train.finetune import make_deterministic

PRETRAIN_EXPERIMENT = "pneumonia-pretrain"
WEIGHTS_ARTIFACT = "backbone"


CALIBRATION_CHUNK = 32  # a training batch's memory, not 256 films' at once


def default_output(model_cfg: ModelConfig, fingerprint: str) -> Path:
    """Outside .cache/ on purpose: `make clean` must not throw away an hour of training."""
    return Path("pretrained") / f"{model_cfg.backbone}-{model_cfg.image_size}px-{fingerprint}.weights.h5"


def schedule(cfg: PretrainConfig, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warmup to the peak rate, then cosine decay to zero over the remaining epochs."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else cfg.learning_rate, decay_steps=cfg.epochs * steps_per_epoch - warmup,
        warmup_target=cfg.learning_rate if warmup else None, warmup_steps=warmup)


class _Progress(keras.callbacks.Callback):
    """One line per epoch (an epoch is minutes on a CPU) and the curves in MLflow."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs, self.start = epochs, time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        tracking.log_epoch(logs, epoch)
        elapsed = time.perf_counter() - self.start
        left = elapsed / (epoch + 1) * (self.epochs - epoch - 1)
        print(f"  pretrain epoch {epoch + 1}/{self.epochs}: loss={logs['loss']:.4f} val_auc={logs['val_auc']:.4f} "
              f"lr={logs['learning_rate']:.2g} ({elapsed / 60:.1f} min, at most {left / 60:.0f} min left)", flush=True)


def pretrain(dataset: Dataset, model_cfg: ModelConfig, augment_cfg: AugmentConfig, cfg: PretrainConfig, output: Path,
             seed: int = 42) -> tuple[Path, float]:
    """Train every layer of a random-start backbone under a throwaway head; save the backbone alone
    (no top, the form `--weights PATH` loads). Returns the file and its best val AUC."""
    if cfg.deterministic:
        make_deterministic(seed)
    x_train, y_train = dataset.split("train")
    x_val, y_val = dataset.split("val")
    base = build_backbone(model_cfg, seed=seed)
    calibrate_batchnorm(base, to_model_input(x_train[:256]), chunk=CALIBRATION_CHUNK)  # only a start: training moves it
    head = build_head(base.output.shape[-1], cfg.dense_units, cfg.dropout, 0.0, seed=seed)
    model = build_classifier(base, head)
    unfreeze_top(base, "all", train_batchnorm=True)
    steps = math.ceil(len(x_train) / cfg.batch_size)
    optimizer = keras.optimizers.AdamW(schedule(cfg, steps), weight_decay=cfg.weight_decay)
    compile_model(model, cfg.learning_rate, optimizer=optimizer, label_smoothing=cfg.label_smoothing)
    train_ds = image_dataset(x_train, y_train, cfg.batch_size, augment=augment_cfg, shuffle=True, seed=seed)
    val_ds = image_dataset(x_val, y_val, cfg.batch_size)
    print(f"pretraining {model_cfg.backbone} @{model_cfg.image_size}px from a random start on {len(x_train)} train "
          f"images, {cfg.epochs} epochs (val {len(x_val)} images picks the epoch)", flush=True)
    stop = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=cfg.patience,
                                         restore_best_weights=True)
    # shuffle=False: the tf.data pipeline shuffles itself.
    history = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, class_weight=class_weights(y_train),
                        verbose=0, shuffle=False, callbacks=[stop, _Progress(cfg.epochs)])
    best_auc = max(history.history["val_auc"])
    output.parent.mkdir(parents=True, exist_ok=True)
    base.save_weights(output)
    return output, best_auc


def run_pretrain(dataset: Dataset, model_cfg: ModelConfig, augment_cfg: AugmentConfig,
                 preprocess_cfg: PreprocessConfig, cfg: PretrainConfig, output: Path, seed: int,
                 tags: dict | None = None) -> tuple[Path, float, str]:
    """Inside an MLflow run of its own: params, curves, the weights file as an artifact (nothing lost
    if the local copy goes). Returns the file, its best val AUC and the run id."""
    tracking.setup(PRETRAIN_EXPERIMENT)
    run_tags = {tracking.RUN_TYPE: "pretrain", "data_fingerprint": dataset.fingerprint, **(tags or {})}
    with mlflow.start_run(run_name=f"pretrain-{model_cfg.backbone}-{model_cfg.image_size}", tags=run_tags) as run:
        mlflow.log_params({**flat_params(cfg, augment_cfg, preprocess_cfg, model_cfg), "seed": seed})
        path, best_auc = pretrain(dataset, model_cfg, augment_cfg, cfg, output, seed)
        mlflow.log_metric("best_val_auc", best_auc)
        mlflow.log_artifact(str(path), WEIGHTS_ARTIFACT)
        mlflow.set_tag("weights_file", str(path))
    return path, best_auc, run.info.run_id
