"""Typed settings, validated once where they enter (CLI or YAML); code further in trusts them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

BACKBONES = ("resnet50", "resnet152", "mobilenetv2", "efficientnetb0", "densenet121")
ENGINES = ("optuna", "kerastuner")
METRICS = ("val_auc", "val_f1", "val_accuracy", "val_loss")
THRESHOLD_RULES = ("sensitivity", "youden")


class PipelineError(Exception):
    """Base of the errors a user can act on: the CLI prints their message, not a traceback."""


class ConfigError(PipelineError, ValueError):
    """A setting or input file is wrong; the message names it and what was expected."""


class Interrupted(PipelineError):
    """Ctrl-C (or SIGTERM) after the step saved what it had; the message says what was kept and how to go on.

    The CLI prints it as one `interrupted: ...` line and exits 130, the shell's code for SIGINT.
    """


def _check(ok: bool, name: str, value, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: expected {expected}")


def _in_range(name: str, value, low, high, *, low_open: bool = False) -> None:
    inside = (value > low if low_open else value >= low) and value <= high
    bracket = "(" if low_open else "["
    _check(inside, name, value, f"a number in {bracket}{low}, {high}]")


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = 224
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8

    def __post_init__(self):
        _check(isinstance(self.image_size, int) and 32 <= self.image_size <= 1024,
               "image_size", self.image_size, "an integer from 32 to 1024")
        _in_range("clahe_clip_limit", self.clahe_clip_limit, 0.0, 40.0, low_open=True)
        _check(isinstance(self.clahe_tile_grid, int) and 1 <= self.clahe_tile_grid <= 64,
               "clahe_tile_grid", self.clahe_tile_grid, "an integer from 1 to 64")


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges as fractions, as Keras preprocessing layers take them (rotation: of a full turn)."""
    rotation: float = 0.03
    shift: float = 0.1
    zoom: float = 0.1
    shear: float = 0.1
    flip: bool = True

    def __post_init__(self):
        for name in ("rotation", "shift", "zoom", "shear"):
            _in_range(name, getattr(self, name), 0.0, 0.5)


@dataclass(frozen=True)
class DataConfig:
    data_dir: Path = Path("data/chest_xray")
    val_fraction: float = 0.15
    min_val_images: int = 100
    max_per_class: int | None = None
    seed: int = 42
    cache_dir: Path = Path(".cache")

    def __post_init__(self):
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        _in_range("val_fraction", self.val_fraction, 0.0, 0.5, low_open=True)
        _check(self.min_val_images >= 0, "min_val_images", self.min_val_images, "an integer >= 0")
        _check(self.max_per_class is None or self.max_per_class >= 2, "max_per_class",
               self.max_per_class, "an integer >= 2, or unset for all images")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet50"
    weights: str = "imagenet"
    image_size: int = 224

    def __post_init__(self):
        _check(self.backbone in BACKBONES, "backbone", self.backbone, f"one of {', '.join(BACKBONES)}")
        if self.weights not in ("imagenet", "none"):
            path = Path(self.weights)
            _check(path.is_file() and path.name.endswith(".h5"), "weights", self.weights,
                   "'imagenet', 'none' or the path of an existing .h5 / .weights.h5 file")


@dataclass(frozen=True)
class SearchConfig:
    engine: str = "optuna"
    trials: int = 10
    epochs: int = 10
    batch_size: int = 32
    patience: int = 3
    metric: str = "val_auc"
    space: Path = Path("search_spaces/default.yaml")
    experiment: str = "pneumonia-search"
    storage: str | None = None
    study_name: str | None = None
    augment_views: int = 2
    gradcam_images: int = 8
    seed: int = 42

    def __post_init__(self):
        object.__setattr__(self, "space", Path(self.space))
        _check(self.engine in ENGINES, "engine", self.engine, f"one of {', '.join(ENGINES)}")
        _check(self.metric in METRICS, "metric", self.metric, f"one of {', '.join(METRICS)}")
        for name, low in (("trials", 1), ("epochs", 1), ("batch_size", 1), ("patience", 1),
                          ("augment_views", 0), ("gradcam_images", 0)):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= low, name, value, f"an integer >= {low}")
        _check(bool(self.experiment.strip()), "experiment", self.experiment, "a non-empty name")


@dataclass(frozen=True)
class RetrainConfig:
    epochs: int = 10
    fine_tune_epochs: int = 10
    fine_tune_layers: str = "30"
    fine_tune_lr_factor: float = 0.1
    fine_tune_lr: float | None = None  # absolute stage-2 rate; wins over the factor (from-scratch training)
    batch_size: int = 32
    patience: int = 4
    threshold_rule: str = "sensitivity"
    target_sensitivity: float = 0.95
    model_name: str = "pneumonia-classifier"
    gradcam_images: int = 12

    def __post_init__(self):
        _check(self.fine_tune_layers == "all" or str(self.fine_tune_layers).isdigit(),
               "fine_tune_layers", self.fine_tune_layers, "a whole number of layers or 'all'")
        _check(self.threshold_rule in THRESHOLD_RULES, "threshold_rule", self.threshold_rule,
               f"one of {', '.join(THRESHOLD_RULES)}")
        _in_range("target_sensitivity", self.target_sensitivity, 0.0, 1.0, low_open=True)
        _in_range("fine_tune_lr_factor", self.fine_tune_lr_factor, 0.0, 1.0, low_open=True)
        if self.fine_tune_lr is not None:
            _in_range("fine_tune_lr", self.fine_tune_lr, 0.0, 1.0, low_open=True)
        for name, low in (("epochs", 1), ("fine_tune_epochs", 0), ("batch_size", 1), ("patience", 1)):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= low, name, value, f"an integer >= {low}")


@dataclass(frozen=True)
class PromoteConfig:
    margin: float = 0.005
    min_sensitivity: float = 0.9

    def __post_init__(self):
        _in_range("margin", self.margin, 0.0, 1.0)
        _in_range("min_sensitivity", self.min_sensitivity, 0.0, 1.0)


def flat_params(*configs) -> dict[str, str]:
    """One flat, string-valued dict for MLflow params (same names in every run)."""
    out: dict[str, str] = {}
    for cfg in configs:
        out.update({k: str(v) for k, v in asdict(cfg).items()})
    return out



def from_params(cls, params: dict[str, str], **overrides):
    """Rebuild a config from the string params a run logged (flat_params' inverse), then validate."""
    import typing

    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if f.name not in params:
            continue
        raw, kind = params[f.name], hints[f.name]
        if raw == "None":
            values[f.name] = None
        elif kind is bool:
            values[f.name] = raw == "True"
        elif kind in (int, float, Path, str):
            values[f.name] = kind(raw)
        else:  # optional int / str
            values[f.name] = int(raw) if "int" in str(kind) else raw
    values.update(overrides)
    return cls(**values)
