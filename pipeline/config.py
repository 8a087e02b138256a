"""Typed settings, validated once where they enter (CLI or YAML); code further in trusts them.

Every default lives here, once: a field made with `setting(...)` is also a flag of the commands that
take its dataclass (pipeline/options.py makes it; docs/cli.md lists them all).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Re-exported: the errors, checks and param helpers are imported from here all over the package.
from pipeline.checks import (  # noqa: F401
    SEED_MAX,
    _check,
    _in_range,
    check_folder,
    check_model_uri,
    check_seed,
    check_storage,
    sqlite_folder,
)
from pipeline.errors import ConfigError, Interrupted, PipelineError  # noqa: F401
from pipeline.options import setting
from pipeline.params import flat_params, from_params  # noqa: F401

BACKBONES = ("resnet50", "resnet152", "mobilenetv2", "efficientnetb0", "densenet121")
ENGINES = ("optuna", "kerastuner")
METRICS = ("val_auc", "val_f1", "val_accuracy", "val_loss")
THRESHOLD_RULES = ("sensitivity", "youden")
CALIBRATIONS = ("platt", "temperature", "none")  # fitted on val after retraining (modeling/calibration.py)
OOD_DETECTORS = ("combined", "mahalanobis", "knn", "pixel", "none")  # fitted on train (modeling/ood.py)
IMBALANCE = ("class-weights", "smote", "none")  # pipeline/modeling/balance.py; benchmarks/imbalance.py chose the default
EXPLAIN_CHOICES = ("gradcam", "lime", "both")
TTA_CHOICES = ("auto", "none", "flip", "flip-crops")  # pipeline/modeling/ensemble.py: the views of each
LIME_SAMPLES = 150  # pipeline/explain/lime.py says why: about 2-30 s per film on 2 cores, by backbone
MODEL_NAME = "pneumonia-classifier"
SEARCH_EXPERIMENT = "pneumonia-search"
DATA_DIR = Path("data/chest_xray")


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = setting(224, "square input size in pixels")
    clahe_clip_limit: float = setting(2.0, "CLAHE clip limit", flag="--clahe-clip")
    clahe_tile_grid: int = setting(8, "CLAHE tile grid size", flag="--clahe-grid")

    def __post_init__(self):
        _check(isinstance(self.image_size, int) and 32 <= self.image_size <= 1024,
               "image_size", self.image_size, "an integer from 32 to 1024")
        _in_range("clahe_clip_limit", self.clahe_clip_limit, 0.0, 40.0, low_open=True)
        _check(isinstance(self.clahe_tile_grid, int) and 1 <= self.clahe_tile_grid <= 64,
               "clahe_tile_grid", self.clahe_tile_grid, "an integer from 1 to 64")


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges as fractions, as Keras preprocessing layers take them (rotation: of a full turn)."""
    rotation: float = setting(0.03, "rotation, fraction of a full turn")
    shift: float = setting(0.1, "translation, fraction of size")
    zoom: float = setting(0.1, "zoom range")
    shear: float = setting(0.1, "shear range")
    flip: bool = setting(True, "turn off horizontal flips")
    # intensity changes, fraction of the 0..255 range (exposure differs between sites)
    brightness: float = setting(0.0, "brightness change, fraction of the pixel range")
    contrast: float = setting(0.0, "contrast change, fraction")
    # random-resized crop (Inception-style): a box of this share of the area or more, aspect 3:4 to 4:3, resized back
    crop: float = setting(0.0, "random-resized crop: smallest share of the film's area a crop keeps (0: off; 0.7 "
                               "keeps 70-100%)")

    def __post_init__(self):
        for name in ("rotation", "shift", "zoom", "shear", "brightness", "contrast"):
            _in_range(name, getattr(self, name), 0.0, 0.5)
        _check(self.crop == 0.0 or 0.3 <= self.crop < 1.0, "crop", self.crop,
               "0 (off) or a share of the area from 0.3 to below 1 (--crop)")


@dataclass(frozen=True)
class DataConfig:
    """`seed` lives here only: it seeds the split, the sampling and every initialisation downstream."""
    data_dir: Path = setting(DATA_DIR, "dataset root with train/, test/ [val/]")
    val_fraction: float = setting(0.15, "share of train carved out for validation, by patient")
    min_val_images: int = setting(100, "use the dataset's own val/ only if it has at least this many images")
    max_per_class: int | None = setting(None, "at most N images per class and split (smoke runs)",
                                        default_text="all images")
    seed: int = setting(42, "seed for splits, sampling and initialisation")
    cache_dir: Path = setting(Path(".cache"), "where decoded images and backbone features are cached")

    def __post_init__(self):
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        _in_range("val_fraction", self.val_fraction, 0.0, 0.5, low_open=True)
        _check(self.min_val_images >= 0, "min_val_images", self.min_val_images, "an integer >= 0")
        _check(self.max_per_class is None or self.max_per_class >= 2, "max_per_class",
               self.max_per_class, "an integer >= 2, or unset for all images")
        check_seed(self.seed)
        check_folder(self.cache_dir, "--cache-dir")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = setting("resnet50", "backbone architecture", choices=BACKBONES)
    weights: str = setting("imagenet", "imagenet, none, or a local .h5/.weights.h5 file")
    image_size: int = 224  # not a flag: always --image-size's value (PreprocessConfig)

    def __post_init__(self):
        _check(self.backbone in BACKBONES, "backbone", self.backbone, f"one of {', '.join(BACKBONES)}")
        if self.weights not in ("imagenet", "none"):
            path = Path(self.weights)
            _check(path.is_file() and path.name.endswith(".h5"), "weights", self.weights,
                   "'imagenet', 'none' or the path of an existing .h5 / .weights.h5 file")


def _at_least(cfg, lows: dict[str, int]) -> None:
    for name, low in lows.items():
        value = getattr(cfg, name)
        _check(isinstance(value, int) and value >= low, name, value, f"an integer >= {low}")


@dataclass(frozen=True)
class SearchConfig:
    engine: str = setting("optuna", "search engine", choices=ENGINES)
    trials: int = setting(10, "total trials (a resumed study counts those it has)")
    epochs: int = setting(10, "max epochs per trial, early stopping inside")
    batch_size: int = setting(32, "images per training batch")
    patience: int = setting(3, "early-stopping patience in epochs")
    metric: str = setting("val_auc", "what the search optimises (val_loss: lowest wins)", choices=METRICS)
    space: Path = setting(Path("search_spaces/default.yaml"), "search space YAML")
    experiment: str = setting(SEARCH_EXPERIMENT, "MLflow experiment")
    storage: str | None = setting(None, "Optuna storage URL", default_text="sqlite:///mlruns/optuna.db")
    study_name: str | None = setting(None, "Optuna study / Keras Tuner project; the same name resumes",
                                     default_text="derived from experiment, engine, backbone, data")
    # benchmarks/augment_views.py: more views scored lower on the real data
    augment_views: int = setting(0, "augmented copies of train in the feature cache; 0 scored best on the real "
                                    "data (benchmarks/augment_views.py)")
    gradcam_images: int = setting(8, "validation images in each trial's Grad-CAM grid")
    heartbeat: int = setting(10, "seconds between a trial's heartbeats; a worker silent for 3 is dead and its "
                                 "trial retried")
    # benchmarks/imbalance.py on the 160 px pretrained features (docs/results.md): smote 0.9863 best val AUC,
    # class-weights 0.9854, none 0.9854, and smote's val accuracy at sensitivity 0.95 was the highest too
    imbalance: str = setting("smote", "class balance of the head's training vectors: smote (imbalanced-learn) "
                                      "works on the cached train features only, never val/test; validation chose it "
                                      "(benchmarks/imbalance.py)",
                             choices=IMBALANCE)

    def __post_init__(self):
        object.__setattr__(self, "space", Path(self.space))
        _check(self.engine in ENGINES, "engine", self.engine, f"one of {', '.join(ENGINES)}")
        _check(self.metric in METRICS, "metric", self.metric, f"one of {', '.join(METRICS)}")
        _check(self.imbalance in IMBALANCE, "imbalance", self.imbalance, f"one of {', '.join(IMBALANCE)} (--imbalance)")
        _at_least(self, {"trials": 1, "epochs": 1, "batch_size": 1, "patience": 1, "augment_views": 0,
                         "gradcam_images": 0, "heartbeat": 1})
        _check(bool(self.experiment.strip()), "experiment", self.experiment, "a non-empty name")
        if self.storage is not None:
            check_storage(self.storage)


@dataclass(frozen=True)
class RetrainConfig:
    epochs: int = setting(10, "stage 1 epochs, frozen backbone")
    fine_tune_epochs: int = setting(10, "stage 2 epochs; 0 skips it")
    fine_tune_layers: str = setting("30", "top backbone layers to unfreeze, or 'all' (use 'all' with --weights none)")
    fine_tune_lr_factor: float = setting(0.1, "stage 2 learning rate = best lr x this")
    # absolute stage-2 rate; wins over the factor (from-scratch training)
    fine_tune_lr: float | None = setting(None, "stage 2 learning rate, overriding the factor (training a random "
                                               "start from scratch wants ~1e-3)", default_text="best lr x factor")
    batch_size: int = setting(32, "images per training batch")
    patience: int = setting(4, "early-stopping patience")
    threshold_rule: str = setting("sensitivity", "how val picks the threshold: sensitivity reaches "
                                                 "--target-sensitivity, youden maximises J", choices=THRESHOLD_RULES)
    target_sensitivity: float = setting(0.95, "val sensitivity the threshold must reach (rule sensitivity)")
    model_name: str = setting(MODEL_NAME, "registered model name")
    gradcam_images: int = setting(12, "test images in the Grad-CAM grid")
    lime_images: int = setting(0, "LIME grid of the same test images and its agreement with Grad-CAM; slow "
                                  "(seconds per image), so off unless asked")
    calibration: str = setting("platt", "calibration of the served probability, fitted on val before the threshold "
                                        "is chosen", choices=CALIBRATIONS)
    ood_detector: str = setting("combined", "out-of-distribution guard in the served model, fitted on train "
                                            "(docs/calibration-and-ood.md)", choices=OOD_DETECTORS)
    ood_flag_share: float = setting(0.05, "share of val films the guard's threshold flags")
    sanity_images: int = setting(32, "test films of the explanation sanity checks (Grad-CAM randomization, "
                                     "border/centre AUC; docs/model-card.md); 0 turns them off")
    top_k: int = setting(1, "retrain the K best trials and register their mean probability as one version")
    seeds: int = setting(1, "retrain the best trial with N seeds and register their mean probability as one version")
    tta: str = setting("auto", "test-time augmentation inside the served model; auto: validation chooses among none, "
                               "flip and flip-crops", choices=TTA_CHOICES)
    deterministic: bool = True  # TF op determinism: the same seed gives the same model (costs time, see docs/walkthrough.md)

    def __post_init__(self):
        _check(self.tta in TTA_CHOICES, "tta", self.tta, f"one of {', '.join(TTA_CHOICES)} (--tta)")
        for name in ("top_k", "seeds"):
            value = getattr(self, name)
            _check(isinstance(value, int) and 1 <= value <= 10, name, value,
                   f"an integer from 1 to 10 (--{name.replace('_', '-')})")
        _check(self.top_k == 1 or self.seeds == 1, "seeds", self.seeds,
               "1 when --top-k is above 1 (--seeds): an ensemble is the K best trials or one trial with N seeds, "
               "so drop one of the two flags")
        _check(self.calibration in CALIBRATIONS, "calibration", self.calibration, f"one of {', '.join(CALIBRATIONS)}")
        _check(self.ood_detector in OOD_DETECTORS, "ood_detector", self.ood_detector,
               f"one of {', '.join(OOD_DETECTORS)}")
        _in_range("ood_flag_share", self.ood_flag_share, 0.0, 0.5, low_open=True)
        _check(self.fine_tune_layers == "all" or str(self.fine_tune_layers).isdigit(),
               "fine_tune_layers", self.fine_tune_layers, "a whole number of layers or 'all'")
        _check(self.threshold_rule in THRESHOLD_RULES, "threshold_rule", self.threshold_rule,
               f"one of {', '.join(THRESHOLD_RULES)}")
        _in_range("target_sensitivity", self.target_sensitivity, 0.0, 1.0, low_open=True)
        _in_range("fine_tune_lr_factor", self.fine_tune_lr_factor, 0.0, 1.0, low_open=True)
        if self.fine_tune_lr is not None:
            _in_range("fine_tune_lr", self.fine_tune_lr, 0.0, 1.0, low_open=True)
        _at_least(self, {"epochs": 1, "fine_tune_epochs": 0, "batch_size": 1, "patience": 1, "gradcam_images": 0,
                         "lime_images": 0, "sanity_images": 0})


@dataclass(frozen=True)
class PretrainConfig:
    """The offline backbone: every layer trained from a random start on the train split, once.
    Defaults: the recipe measured in docs/results.md (val AUC 0.990 at 96 px in 35 min on 2 cores)."""
    epochs: int = setting(20, "epochs, every layer trained")
    learning_rate: float = setting(1e-3, "peak learning rate of the warmup + cosine schedule")
    warmup_epochs: int = setting(1, "epochs of linear warmup to the peak rate")
    weight_decay: float = setting(1e-4, "AdamW weight decay (decoupled)")
    label_smoothing: float = setting(0.05, "label smoothing of the cross-entropy")
    batch_size: int = setting(32, "images per training batch")
    patience: int = setting(6, "early-stopping patience on val AUC")
    dense_units: int = 128  # the throwaway head the backbone learns under
    dropout: float = 0.3
    deterministic: bool = True

    def __post_init__(self):
        _at_least(self, {"epochs": 1, "warmup_epochs": 0, "batch_size": 1, "patience": 1, "dense_units": 1})
        _check(self.warmup_epochs < self.epochs, "warmup_epochs", self.warmup_epochs, "fewer than --epochs")
        _in_range("learning_rate", self.learning_rate, 0.0, 1.0, low_open=True)
        _in_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _in_range("label_smoothing", self.label_smoothing, 0.0, 0.5)
        _in_range("dropout", self.dropout, 0.0, 0.9)


@dataclass(frozen=True)
class PromoteConfig:
    """The promotion criteria, in one place; every decision records them (registry.promote)."""
    # every promotion, the first included: better than chance is not enough
    min_auc: float = setting(0.8, "test ROC-AUC every promotion needs, the first included")
    min_sensitivity: float = setting(0.9, "challenger's test sensitivity must reach this")
    # test ROC-AUC gain over the champion, on the same test fingerprint
    margin: float = setting(0.005, "ROC-AUC gain the challenger needs")
    alpha: float = setting(0.05, "the paired DeLong test of the AUC gain on the same films must give a one-sided "
                                 "p below this")

    def __post_init__(self):
        _in_range("min_auc", self.min_auc, 0.0, 1.0)
        _in_range("margin", self.margin, 0.0, 1.0)
        _in_range("alpha", self.alpha, 0.0, 1.0, low_open=True)
        _in_range("min_sensitivity", self.min_sensitivity, 0.0, 1.0)

