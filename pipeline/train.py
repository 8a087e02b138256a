"""Retrain the best searched configuration in two stages (head, then the top of the backbone)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np

from . import tracking
from .augment import image_dataset
from .config import AugmentConfig, ModelConfig, PipelineError, RetrainConfig
from .data import Dataset, class_weights
from .features import BACKBONE_WEIGHTS, CALIBRATION_IMAGES
from .model import (build_backbone, build_classifier, build_head, calibrate_batchnorm, compile_model,
                    unfreeze_top)
from .preprocess import to_model_input


class RetrainError(PipelineError, RuntimeError):
    """No search to retrain from, or its record is incomplete."""


@dataclass
class SearchRecord:
    """What retrain-best needs from a search's parent run."""
    run_id: str
    params: dict[str, str]
    best_params: dict
    best_trial: str
    data_fingerprint: str
    features_key: str


def find_search(experiment: str, search_run_id: str | None = None) -> SearchRecord:
    """The chosen search run, or the latest finished one in the experiment."""
    if search_run_id:
        try:
            run = mlflow.get_run(search_run_id)
        except mlflow.exceptions.MlflowException as err:
            raise RetrainError(f"no MLflow run {search_run_id} ({err})") from err
    else:
        run = tracking.latest_run(experiment, "search", finished=True)
        if run is None:
            raise RetrainError(f"no finished search in MLflow experiment '{experiment}' "
                               f"({tracking.tracking_uri()}); run `make search` first or pass --search-run-id")
    tags = run.data.tags
    if tags.get(tracking.RUN_TYPE) != "search" or "best_trial" not in tags:
        raise RetrainError(f"run {run.info.run_id} is not a finished search (no best_trial tag)")
    best = {k[len("best."):]: tags[k] for k in tags if k.startswith("best.")}
    best_params = {"dense_units": int(best["dense_units"]),
                   **{k: float(best[k]) for k in ("dropout", "l2", "learning_rate")}}
    return SearchRecord(run.info.run_id, run.data.params, best_params, tags["best_trial"],
                        tags.get("data_fingerprint", ""), tags.get("features_key", ""))


def searched_backbone(model_cfg: ModelConfig, features_dir: Path, train_images: np.ndarray, seed: int) -> keras.Model:
    """The backbone exactly as the search saw it (a random start is only reproducible this way)."""
    base = build_backbone(model_cfg, seed=seed)
    saved = features_dir / BACKBONE_WEIGHTS
    if saved.exists():
        base.load_weights(saved)
    elif model_cfg.weights == "none":
        pick = np.random.default_rng(seed).permutation(len(train_images))[:CALIBRATION_IMAGES]
        calibrate_batchnorm(base, to_model_input(train_images[np.sort(pick)]))
    return base


class _LogEpochs(keras.callbacks.Callback):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        tracking.log_epoch(logs, epoch, prefix=self.prefix)
        shown = " ".join(f"{k}={v:.4f}" for k, v in logs.items() if k in ("loss", "auc", "val_loss", "val_auc"))
        print(f"  {self.prefix}epoch {epoch + 1}: {shown}", flush=True)


def _callbacks(cfg: RetrainConfig, prefix: str) -> list:
    return [keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=cfg.patience,
                                          restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.3,
                                              patience=max(1, cfg.patience // 2), min_lr=1e-7),
            _LogEpochs(prefix)]


def retrain(dataset: Dataset, model_cfg: ModelConfig, augment_cfg: AugmentConfig, params: dict,
            cfg: RetrainConfig, features_dir: Path, seed: int = 42) -> keras.Model:
    """Stage 1: head on the frozen backbone. Stage 2: top layers unfrozen at a lower learning rate."""
    x_train, y_train = dataset.split("train")
    x_val, y_val = dataset.split("val")
    base = searched_backbone(model_cfg, features_dir, x_train, seed)
    head = build_head(base.output.shape[-1], params["dense_units"], params["dropout"], params["l2"], seed=seed)
    model = build_classifier(base, head)
    train_ds = image_dataset(x_train, y_train, cfg.batch_size, augment=augment_cfg, shuffle=True, seed=seed)
    val_ds = image_dataset(x_val, y_val, cfg.batch_size)
    weights = class_weights(y_train)

    base.trainable = False
    compile_model(model, params["learning_rate"])
    print(f"stage 1: head on frozen {model_cfg.backbone}, lr={params['learning_rate']:.2g}", flush=True)
    # shuffle=False: the tf.data pipeline shuffles itself (Keras only warns about its own flag).
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, class_weight=weights, verbose=0, shuffle=False,
              callbacks=_callbacks(cfg, "stage1/"))

    stage1_auc = _val_auc(model, val_ds)
    if cfg.fine_tune_epochs > 0:
        stage1_weights = model.get_weights()
        # Pretrained BatchNorm statistics are worth keeping (inference mode); a random start has
        # none worth keeping, so there BatchNorm learns along with everything else.
        trainable = unfreeze_top(base, cfg.fine_tune_layers, train_batchnorm=model_cfg.weights == "none")
        lr = cfg.fine_tune_lr or params["learning_rate"] * cfg.fine_tune_lr_factor
        compile_model(model, lr)
        print(f"stage 2: {trainable} backbone layers unfrozen ({cfg.fine_tune_layers}), lr={lr:.2g}", flush=True)
        model.fit(train_ds, validation_data=val_ds, epochs=cfg.fine_tune_epochs, class_weight=weights, verbose=0,
                  shuffle=False,
                  callbacks=_callbacks(cfg, "stage2/"))
        stage2_auc = _val_auc(model, val_ds)
        if stage2_auc < stage1_auc:  # keep the best weights of the two stages, not just of the last
            print(f"stage 2 did not improve val AUC ({stage2_auc:.4f} < {stage1_auc:.4f}): keeping stage 1", flush=True)
            model.set_weights(stage1_weights)
    return model


def _val_auc(model: keras.Model, val_ds) -> float:
    return float(model.evaluate(val_ds, verbose=0, return_dict=True)["auc"])


def retrain_best(dataset: Dataset, search: SearchRecord, model_cfg: ModelConfig, augment_cfg: AugmentConfig,
                 preprocess_cfg, cfg: RetrainConfig, features_dir: Path, seed: int, tags: dict | None = None):
    """Retrain, pick the threshold on val, evaluate once on test, log everything, register as challenger."""
    from mlflow.models import infer_signature

    from .config import flat_params
    from .evaluate import choose_threshold, confusion_figure, pick_gradcam_cases, roc_figure, test_report
    from .gradcam import gradcam, grid_figure
    from .model import conv_layer_name, predict_proba
    from .registry import register

    lineage = {tracking.RUN_TYPE: "retrain", "search_run_id": search.run_id, "best_trial": search.best_trial,
               "data_fingerprint": dataset.fingerprint, "features_key": search.features_key, **(tags or {})}
    if search.data_fingerprint and search.data_fingerprint != dataset.fingerprint:
        print(f"warning: data fingerprint {dataset.fingerprint} differs from the search's "
              f"{search.data_fingerprint}", flush=True)
    with mlflow.start_run(run_name=f"retrain-best-trial-{search.best_trial}", tags=lineage) as run:
        mlflow.log_params({**search.best_params, **flat_params(cfg), "backbone": model_cfg.backbone,
                           "weights": model_cfg.weights, "image_size": model_cfg.image_size, "seed": seed})
        model = retrain(dataset, model_cfg, augment_cfg, search.best_params, cfg, features_dir, seed)

        x_val, y_val = dataset.split("val")
        threshold = choose_threshold(y_val, predict_proba(model, to_model_input(x_val)), cfg.threshold_rule,
                                     cfg.target_sensitivity)
        # The test split is used once, here, after every choice (weights, threshold) is fixed.
        x_test, y_test = dataset.split("test")
        proba = predict_proba(model, to_model_input(x_test))
        report = test_report(y_test, proba, threshold)
        mlflow.log_metrics({k.replace("@", "_"): v for k, v in report.items()})
        tracking.log_figure(confusion_figure(y_test, proba, threshold), "evaluation/confusion_matrix.png")
        tracking.log_figure(roc_figure(y_test, proba, threshold), "evaluation/roc_curve.png")
        if cfg.gradcam_images:
            idx = pick_gradcam_cases(y_test, proba, threshold, cfg.gradcam_images, seed)
            cams = gradcam(model, to_model_input(x_test[idx]), conv_layer_name(model))
            tracking.log_figure(grid_figure(x_test[idx], cams, y_test[idx], proba[idx], threshold=threshold,
                                            title=f"Grad-CAM on test images (red: misclassified at {threshold:.3f})"),
                                "evaluation/gradcam_test.png")
        example = to_model_input(x_test[:1])
        model_uri = _log_keras_model(model, example, infer_signature(example, model.predict(example, verbose=0)))
        version_tags = {**{k: f"{report[k]:.6f}" for k in ("test_auc", "test_accuracy", "test_sensitivity",
                                                            "test_specificity", "threshold")},
                        "evaluation": "complete", "image_size": preprocess_cfg.image_size,
                        "clahe_clip_limit": preprocess_cfg.clahe_clip_limit,
                        "clahe_tile_grid": preprocess_cfg.clahe_tile_grid, "gradcam_layer": conv_layer_name(model),
                        "backbone": model_cfg.backbone, "weights": model_cfg.weights, "retrain_run_id": run.info.run_id,
                        **{k: v for k, v in lineage.items() if k != tracking.RUN_TYPE}}
        version = register(model_uri, cfg.model_name, version_tags)
        mlflow.set_tags({"registered_model": cfg.model_name, "registered_version": version.version})
    return run.info.run_id, version, report


def _log_keras_model(model: keras.Model, example: np.ndarray, signature) -> str:
    """Save with the mlflow.keras flavor into a folder that exists, then log it as the run's 'model'.

    mlflow 3.17's log_model writes the input example before creating its own folder (and fails),
    so the folder is made here first.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        path.mkdir()
        mlflow.keras.save_model(model, str(path), signature=signature, input_example=example)
        mlflow.log_artifacts(str(path), "model")
    return f"runs:/{mlflow.active_run().info.run_id}/model"
