"""Typed settings, validated once where they enter (CLI or YAML); code further in trusts them."""
from __future__ import annotations

import os
import re
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

BACKBONES = ("resnet50", "resnet152", "mobilenetv2", "efficientnetb0", "densenet121")
ENGINES = ("optuna", "kerastuner")
METRICS = ("val_auc", "val_f1", "val_accuracy", "val_loss")
THRESHOLD_RULES = ("sensitivity", "youden")
LIME_SAMPLES = 150  # pipeline/explain/lime.py says why: about 2-30 s per film on 2 cores, by backbone


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


SEED_MAX = 2**32 - 1  # NumPy's and scikit-learn's limit for a seed


def check_seed(seed) -> None:
    _check(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX, "seed", seed,
           f"a whole number from 0 to {SEED_MAX} (--seed)")


def check_folder(path: Path, name: str, flag: str | None = None) -> Path:
    """A folder that exists or can be made: nothing on the way may be a file. Nothing is created here."""
    path, flag = Path(path), flag or name
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = "is a file" if part == path else f"cannot be made because {part} is a file"
                raise ConfigError(f"{name} {path} {where}, not a folder: remove it or choose another {flag}")
            if not os.access(part, os.W_OK | os.X_OK):
                raise ConfigError(f"{name} {path} cannot be written (no permission on {part}): choose another {flag}")
            break
    return path


def check_storage(url: str) -> str:
    """Parse an Optuna storage URL with SQLAlchemy before any work, so a typo fails in one line, not a traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    example = "sqlite:///mlruns/optuna.db or postgresql+psycopg2://user:pass@host/db"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"storage={url!r} is not a database URL: expected e.g. {example} (--storage)") from None
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(f"storage={url!r} names an unknown database kind {parsed.drivername!r}: "
                          f"expected e.g. {example} (--storage)") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise ConfigError(f"storage={url!r} needs the Python driver {err.name!r}, which is not installed: "
                          f"install it, or name an installed driver, e.g. {example} (--storage)") from None
    folder = sqlite_folder(url)
    if folder is not None:
        check_folder(folder, "the folder of --storage", "--storage")
    return url


def sqlite_folder(url: str) -> Path | None:
    """The folder a SQLite storage file lives in (SQLite makes the file, not the folder); None for other kinds."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).parent
    return None


_MODEL_URI = re.compile(r"^models:/[^/@\s]+(@[A-Za-z0-9_-]+|/[1-9][0-9]*)$")


def check_model_uri(uri: str) -> str:
    """Registry URIs only, checked before MLflow is touched: the threshold and preprocessing live in version tags."""
    _check(isinstance(uri, str) and bool(_MODEL_URI.match(uri)), "model", uri,
           "models:/NAME@ALIAS (e.g. models:/pneumonia-classifier@champion) or models:/NAME/VERSION (--model)")
    return uri


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
    brightness: float = 0.0  # intensity changes, fraction of the 0..255 range (exposure differs between sites)
    contrast: float = 0.0

    def __post_init__(self):
        for name in ("rotation", "shift", "zoom", "shear", "brightness", "contrast"):
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
        check_seed(self.seed)
        check_folder(self.cache_dir, "--cache-dir")


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
    augment_views: int = 0  # benchmarks/augment_views.py: more views scored lower on the real data
    gradcam_images: int = 8
    seed: int = 42
    heartbeat: int = 10  # seconds between a trial's Optuna heartbeats; dead after 3 missed

    def __post_init__(self):
        object.__setattr__(self, "space", Path(self.space))
        _check(self.engine in ENGINES, "engine", self.engine, f"one of {', '.join(ENGINES)}")
        _check(self.metric in METRICS, "metric", self.metric, f"one of {', '.join(METRICS)}")
        for name, low in (("trials", 1), ("epochs", 1), ("batch_size", 1), ("patience", 1),
                          ("augment_views", 0), ("gradcam_images", 0), ("heartbeat", 1)):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= low, name, value, f"an integer >= {low}")
        _check(bool(self.experiment.strip()), "experiment", self.experiment, "a non-empty name")
        check_seed(self.seed)
        if self.storage is not None:
            check_storage(self.storage)


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
    lime_images: int = 0  # LIME costs seconds per image: off unless asked
    sanity_images: int = 32  # test films of the explanation sanity checks (explain/sanity.py); 0: off
    deterministic: bool = True  # TF op determinism: the same seed gives the same model (costs time, see README)

    def __post_init__(self):
        _check(self.fine_tune_layers == "all" or str(self.fine_tune_layers).isdigit(),
               "fine_tune_layers", self.fine_tune_layers, "a whole number of layers or 'all'")
        _check(self.threshold_rule in THRESHOLD_RULES, "threshold_rule", self.threshold_rule,
               f"one of {', '.join(THRESHOLD_RULES)}")
        _in_range("target_sensitivity", self.target_sensitivity, 0.0, 1.0, low_open=True)
        _in_range("fine_tune_lr_factor", self.fine_tune_lr_factor, 0.0, 1.0, low_open=True)
        if self.fine_tune_lr is not None:
            _in_range("fine_tune_lr", self.fine_tune_lr, 0.0, 1.0, low_open=True)
        for name, low in (("epochs", 1), ("fine_tune_epochs", 0), ("batch_size", 1), ("patience", 1),
                          ("gradcam_images", 0), ("lime_images", 0), ("sanity_images", 0)):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= low, name, value, f"an integer >= {low}")


@dataclass(frozen=True)
class PretrainConfig:
    """The offline backbone: every layer trained from a random start on the train split, once.
    Defaults: the recipe measured in README's Results (val AUC 0.990 at 96 px in 35 min on 2 cores)."""
    epochs: int = 20
    learning_rate: float = 1e-3  # peak of the warmup + cosine schedule
    warmup_epochs: int = 1
    weight_decay: float = 1e-4  # AdamW's decoupled decay
    label_smoothing: float = 0.05
    batch_size: int = 32
    patience: int = 6
    dense_units: int = 128  # the throwaway head the backbone learns under
    dropout: float = 0.3
    deterministic: bool = True

    def __post_init__(self):
        for name, low in (("epochs", 1), ("warmup_epochs", 0), ("batch_size", 1), ("patience", 1),
                          ("dense_units", 1)):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= low, name, value, f"an integer >= {low}")
        _check(self.warmup_epochs < self.epochs, "warmup_epochs", self.warmup_epochs, "fewer than --epochs")
        _in_range("learning_rate", self.learning_rate, 0.0, 1.0, low_open=True)
        _in_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _in_range("label_smoothing", self.label_smoothing, 0.0, 0.5)
        _in_range("dropout", self.dropout, 0.0, 0.9)


@dataclass(frozen=True)
class PromoteConfig:
    """The promotion criteria, in one place; every decision records them (registry.promote)."""
    min_auc: float = 0.8  # every promotion, the first included: better than chance is not enough
    min_sensitivity: float = 0.9
    margin: float = 0.005  # test ROC-AUC gain over the champion, on the same test fingerprint

    def __post_init__(self):
        _in_range("min_auc", self.min_auc, 0.0, 1.0)
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
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if f.name in params:
            values[f.name] = _from_param(f.name, params[f.name], hints[f.name])
    values.update(overrides)
    return cls(**values)


def _from_param(name: str, raw: str, kind):
    """One logged string back to its field's type: int, float, str, bool, Path, or one of those | None."""
    options = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
    if raw == "None" and type(None) in typing.get_args(kind):
        return None
    target = options[0]
    if target is bool:
        _check(raw in ("True", "False"), name, raw, "True or False")
        return raw == "True"
    try:
        return target(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} (a logged run param) is invalid: expected {target.__name__}") from None
