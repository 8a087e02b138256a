"""Train step: retrain the best searched configuration in two stages (head, then the top of the
backbone), calibrate on val, fit the OOD guard on train, choose the threshold on calibrated val, and log the model; evaluate.py and registry.py take it from there."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import keras
import mlflow
import numpy as np

from pipeline.config import AugmentConfig, ModelConfig, PipelineError, PreprocessConfig, RetrainConfig, flat_params
from pipeline.data.augment import image_dataset
from pipeline.data.dataset import Dataset, class_weights
from pipeline.data.preprocess import to_model_input
from pipeline.evaluate.metrics import LOWER_IS_BETTER, choose_threshold
from pipeline.infra import tracking
from pipeline.modeling.backbones import (
    build_backbone,
    build_classifier,
    build_head,
    compile_model,
    conv_layer_name,
    unfreeze_top,
)
from pipeline.modeling.features import BACKBONE_WEIGHTS, calibrate_on_train
from pipeline.serving.pyfunc import KERAS_ARTIFACT, example_input, requirements, save_pyfunc
from pipeline.modeling.ensemble import combine, view_probabilities
from pipeline.train.guards import Guards, fit_guards
from pipeline.train.members import Member, choose_views, head_params, member_tags


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
    experiment_id: str = ""
    study_name: str = ""  # the Optuna study / Keras Tuner project: --top-k reads its trial runs


def find_search(experiment: str, search_run_id: str | None = None) -> SearchRecord:
    """The chosen search run; by default, of the study of the latest finished search, the parent run
    that holds the study's best trial (a study has one parent run per worker and per restart)."""
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
        run = _best_parent_of_study(run)
    tags = run.data.tags
    if tags.get(tracking.RUN_TYPE) != "search" or "best_trial" not in tags:
        raise RetrainError(f"run {run.info.run_id} is not a finished search (no best_trial tag)")
    best_params = head_params({k[len("best."):]: tags[k] for k in tags if k.startswith("best.")})
    return SearchRecord(run.info.run_id, run.data.params, best_params, tags["best_trial"],
                        tags.get("data_fingerprint", ""), tags.get("features_key", ""), run.info.experiment_id,
                        tags.get("study_name", ""))


def _best_parent_of_study(latest: mlflow.entities.Run) -> mlflow.entities.Run:
    """Among the finished parent runs with the latest one's study_name tag, the one whose best trial scored best."""
    study, metric = latest.data.tags.get("study_name"), latest.data.params.get("metric", "val_auc")
    if not study:
        return latest
    query = (f"tags.study_name = '{study}' and tags.`{tracking.RUN_TYPE}` = 'search' "
             "and attributes.status = 'FINISHED'")
    parents = [r for r in mlflow.search_runs([latest.info.experiment_id], filter_string=query, output_format="list")
               if f"best_{metric}" in r.data.metrics and "best_trial" in r.data.tags]
    if not parents:
        return latest
    pick = min if metric in LOWER_IS_BETTER else max
    return pick(parents, key=lambda r: (r.data.metrics[f"best_{metric}"], r.info.start_time))


def searched_backbone(model_cfg: ModelConfig, features_dir: Path, train_images: np.ndarray, seed: int) -> keras.Model:
    """The backbone exactly as the search saw it (a random start is only reproducible this way)."""
    base = build_backbone(model_cfg, seed=seed)
    saved = features_dir / BACKBONE_WEIGHTS
    if saved.exists():
        base.load_weights(saved)
    elif model_cfg.weights == "none":
        calibrate_on_train(base, train_images, seed)
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


def make_deterministic(seed: int) -> None:
    """Same seed, data and search -> the same weights on CPU: seeds Python, NumPy, TF and Keras, and
    makes TF pick deterministic kernels (cost: see docs/walkthrough.md, "Reproducible retrain")."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def retrain(dataset: Dataset, model_cfg: ModelConfig, augment_cfg: AugmentConfig, params: dict,
            cfg: RetrainConfig, features_dir: Path, seed: int = 42) -> keras.Model:
    """Stage 1: head on the frozen backbone. Stage 2: top layers unfrozen at a lower learning rate."""
    if cfg.deterministic:
        make_deterministic(seed)
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


@dataclass
class TrainedModel:
    """What the train step hands to evaluate and register: the logged pyfunc and its threshold."""
    run_id: str
    model_uri: str  # runs:/<run>/model, the pyfunc (takes image files)
    keras_uri: str  # runs:/<run>/keras_model, the same weights for Grad-CAM
    threshold: float
    gradcam_layer: str
    version_tags: dict = field(default_factory=dict)  # calibration.* and ood.* for the registered version


def train_step(dataset: Dataset, search: SearchRecord, members: list[Member], model_cfg: ModelConfig,
               augment_cfg: AugmentConfig, preprocess_cfg: PreprocessConfig, cfg: RetrainConfig,
               features_dir: Path) -> TrainedModel:
    """Inside the active run: retrain each member, let val choose the test-time views, calibrate the members'
    mean on val and fit the OOD guard on train, choose the threshold on calibrated val (what the pyfunc
    serves), log the Keras model(s) and the pyfunc."""
    seed = members[0].seed
    mlflow.log_params({**members[0].params, **flat_params(cfg), "backbone": model_cfg.backbone,
                       "weights": model_cfg.weights, "image_size": model_cfg.image_size, "seed": seed})
    models = []
    for i, member in enumerate(members):
        if len(members) > 1:
            print(f"member {i + 1}/{len(members)}: trial {member.trial}, seed {member.seed}, {member.params}",
                  flush=True)
        models.append(retrain(dataset, model_cfg, augment_cfg, member.params, cfg, features_dir, member.seed))
    x_val, y_val = dataset.split("val")
    per_member = [view_probabilities(model, x_val) for model in models]
    tta = choose_views(per_member, y_val, cfg)
    guards = fit_guards(models[0], dataset, cfg.calibration, cfg.ood_detector, cfg.ood_flag_share,
                        val_raw=combine(per_member, tta))
    threshold = choose_threshold(y_val, guards.val_calibrated, cfg.threshold_rule, cfg.target_sensitivity)
    mlflow.log_metric("threshold", threshold)
    layer = conv_layer_name(models[0])
    run_id = mlflow.active_run().info.run_id
    tags = {**guards.version_tags(), **member_tags(members, tta)}
    mlflow.set_tags(tags)
    log_models(models, preprocess_cfg, threshold, layer, x_val[0], guards, tta)
    return TrainedModel(run_id, f"runs:/{run_id}/model", f"runs:/{run_id}/{KERAS_ARTIFACT}", threshold, layer, tags)


def log_models(models: keras.Model | list[keras.Model], preprocess_cfg: PreprocessConfig, threshold: float,
               gradcam_layer: str, example_film: np.ndarray, guards: Guards | None = None, tta: str = "none") -> None:
    """The run's `model` (pyfunc: image files in, probability and label out; every member inside) and
    `keras_model` (mlflow.keras flavor of member 0, for Grad-CAM on one network).

    Both are saved to a local folder and then logged as artifacts: mlflow 3.17's log_model writes
    the input example before creating its own folder (and fails).
    """
    import tempfile

    from mlflow.models import infer_signature

    models = models if isinstance(models, list) else [models]
    model = models[0]
    with tempfile.TemporaryDirectory() as tmp:
        keras_dir = Path(tmp) / KERAS_ARTIFACT
        keras_dir.mkdir()
        pixels = to_model_input(example_film[None])
        # Pins given, not inferred: MLflow's inference loads the model again in a TensorFlow subprocess (~a minute).
        mlflow.keras.save_model(model, str(keras_dir), input_example=pixels, pip_requirements=requirements(),
                                signature=infer_signature(pixels, model.predict(pixels, verbose=0)))
        mlflow.log_artifacts(str(keras_dir), KERAS_ARTIFACT)
        keras_files = [Path(tmp) / f"classifier_{i}.keras" for i in range(len(models))]
        for member, keras_file in zip(models, keras_files):
            member.save(keras_file)
        pyfunc_dir = Path(tmp) / "model"
        save_pyfunc(pyfunc_dir, keras_files, preprocess_cfg, threshold, gradcam_layer, example_input(example_film),
                    guards.calibration if guards else None, guards.ood if guards else None, tta)
        mlflow.log_artifacts(str(pyfunc_dir), "model")
