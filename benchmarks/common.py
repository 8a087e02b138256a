"""Shared pieces of the benchmark scripts: flags, timing, tables, the image subset, the seeds' generator.

Every script writes its caches into a temporary folder, so a run leaves nothing in the repository.
"""
from __future__ import annotations

import argparse
import atexit
import math
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the figures
REPO = Path(__file__).resolve().parents[1]

import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")  # retracing notices: expected when every trial builds a new model

from pipeline.config import AugmentConfig, DataConfig, ModelConfig, PreprocessConfig  # noqa: E402
from pipeline.data.dataset import assign_splits, limit_per_class, scan  # noqa: E402


def parser(description: str, per_class: int | None = 100) -> argparse.ArgumentParser:
    """Flags every script shares; per_class=None leaves --per-class out (for scripts that sweep it)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default="data/chest_xray", help="dataset root with train/ and test/")
    if per_class is not None:
        p.add_argument("--per-class", type=int, default=per_class,
                       help="images per class in each of train and val (carved out of train/, by patient)")
    p.add_argument("--backbone", default="mobilenetv2", help="frozen backbone, weights=none (seeded)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--seed", type=int, default=42)
    return p


def full_size_search_parser(description: str) -> argparse.ArgumentParser:
    """Flags of the full-size search benchmarks: every image by default (--per-class 0), MobileNetV2 at
    128 px, 20 trials x 15 epochs (the figures docs/results.md reports for the limit of a cached search)."""
    p = parser(description, per_class=0)
    p.set_defaults(image_size=128)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--space", default=str(REPO / "search_spaces/default.yaml"))
    return p


def head_benchmark_parser(description: str) -> argparse.ArgumentParser:
    """full_size_search_parser plus the backbone's --weights: the benchmarks that compare heads on cached features."""
    p = full_size_search_parser(description)
    p.add_argument("--weights", default="none", help="backbone weights: none or a local *.weights.h5 (make pretrain)")
    return p


def head_features(a):
    """The cached backbone features the head benchmarks share (train and val; test is never read by them)."""
    import dataclasses

    from pipeline.data.dataset import load_dataset
    from pipeline.modeling.features import build_features

    a.per_class = a.per_class or None
    data_cfg, pre_cfg, model_cfg, aug_cfg = configs(a)
    model_cfg = dataclasses.replace(model_cfg, weights=a.weights)
    dataset = load_dataset(data_cfg, pre_cfg, progress=False)
    return build_features(dataset, model_cfg, pre_cfg, aug_cfg, 0, data_cfg.cache_dir, seed=a.seed, cam_count=0,
                          batch_size=a.batch_size, progress=False)


def tempdir(prefix: str) -> Path:
    """A fresh temporary folder, removed when the script ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def configs(a, per_class: int | None = None) -> tuple[DataConfig, PreprocessConfig, ModelConfig, AugmentConfig]:
    """The pipeline's own configs for these flags; the cache lives in a fresh temporary folder."""
    cache = tempdir("bench-cache-")
    data = DataConfig(data_dir=Path(a.data_dir), max_per_class=per_class or a.per_class, seed=a.seed, cache_dir=cache)
    return data, PreprocessConfig(a.image_size), ModelConfig(a.backbone, "none", a.image_size), AugmentConfig()


def subset(data_cfg: DataConfig, splits=("train", "val")) -> pd.DataFrame:
    """The images load_dataset would use for these splits: same scan, split and per-class limit."""
    manifest, _ = scan(data_cfg.data_dir)
    manifest = limit_per_class(assign_splits(manifest, data_cfg), data_cfg.max_per_class, data_cfg.seed)
    manifest = manifest[manifest["split"].isin(splits)]
    return manifest.sort_values(["split", "path"]).reset_index(drop=True)


@contextmanager
def timed(store: dict, name: str):
    """Adds the block's wall time in seconds to store[name]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        store[name] = store.get(name, 0.0) + time.perf_counter() - start


def table(rows: list[dict], title: str = "") -> None:
    """A plain aligned table; floats get 2 decimals (or 3 significant digits when small)."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1 else f"{v:,.2f}"
        return str(v)

    if title:
        print(f"\n{title}")
    cols = list(rows[0])
    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  " + "  ".join(v.rjust(w) for v, w in zip(row, widths)))


def header(title: str, a, **extra) -> None:
    settings = {k: v for k, v in vars(a).items()}
    settings.update(extra)
    print(f"== {title} ==")
    print("  " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    print(f"  cpu cores={os.cpu_count()}, tensorflow {tf.__version__}, load average {os.getloadavg()[0]:.1f} "
          "(another job on the machine makes every figure slower and noisier)", flush=True)


# --- the seeds' way: Keras ImageDataGenerator, decoding every image again on every epoch ----------

def seeds_generator(augment_cfg: AugmentConfig | None, preprocess_cfg: PreprocessConfig):
    """Keras's legacy ImageDataGenerator with the pipeline's augmentation ranges and its CLAHE step.

    Keras 3 dropped keras.preprocessing.image.ImageDataGenerator; keras.src.legacy still ships it
    (the same per-image scipy affine transforms), so the seeds' code runs unchanged here.
    """
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    from pipeline.data.preprocess import preprocess_array, to_model_input

    def clahe(x):  # the generator hands over float RGB 0..255; the pipeline's own CLAHE + resize
        return to_model_input(preprocess_array(x.astype("uint8"), preprocess_cfg))

    if augment_cfg is None:
        return ImageDataGenerator(preprocessing_function=clahe)
    return ImageDataGenerator(
        preprocessing_function=clahe,
        rotation_range=augment_cfg.rotation * 360,  # Keras layers take a fraction of a turn, the generator degrees
        width_shift_range=augment_cfg.shift, height_shift_range=augment_cfg.shift,
        zoom_range=augment_cfg.zoom,
        shear_range=math.degrees(math.atan(augment_cfg.shear)),  # RandomShear's factor is the shear's tangent
        horizontal_flip=augment_cfg.flip, fill_mode="constant", cval=0.0)


SEEDS_GENERATOR_NAME = "keras.src.legacy.preprocessing.image.ImageDataGenerator (Keras 3 has no keras.preprocessing one)"


def seeds_flow(manifest: pd.DataFrame, augment_cfg: AugmentConfig | None, preprocess_cfg: PreprocessConfig,
               batch_size: int, shuffle: bool, seed: int):
    """flow_from_dataframe: like flow_from_directory, it decodes every JPEG (PIL) on every pass."""
    from pipeline.data.dataset import CLASSES

    size = preprocess_cfg.image_size
    return seeds_generator(augment_cfg, preprocess_cfg).flow_from_dataframe(
        manifest, x_col="path", y_col="class_name", classes=list(CLASSES), class_mode="binary",
        target_size=(size, size), color_mode="rgb", batch_size=batch_size, shuffle=shuffle, seed=seed,
        validate_filenames=False)


def ratio(slow: float, fast: float) -> str:
    return f"{slow / fast:.1f}x" if fast > 0 else "n/a"


def sample_params(space_path: str | Path, count: int, seed: int) -> list[dict]:
    """`count` head settings drawn at random (seeded) from a search-space YAML: the same list for both sides."""
    import optuna

    from pipeline.search.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(space_path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))  # in memory, nothing written
    return [space.suggest_optuna(study.ask()) for _ in range(count)]


def fmt_params(params: dict) -> str:
    return " ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def clock_calibration(store: dict) -> None:
    """Record build_features' BatchNorm calibration time in store["calibration"].

    Only weights=none calibrates (one training-mode pass over 128 images); ImageNet weights skip it,
    so the scripts report it apart. Wraps the name pipeline.modeling.features calls; the pipeline is unchanged.
    """
    import pipeline.modeling.features as features

    original = features.calibrate_batchnorm

    def timed_calibration(*args, **kwargs):
        with timed(store, "calibration"):
            return original(*args, **kwargs)

    features.calibrate_batchnorm = timed_calibration


def warm_up(a) -> float:
    """One untimed calibration pass: the first big eager pass in a process costs several times a later one,
    and would otherwise land on whichever side or size runs first."""
    import keras
    import numpy as np

    from pipeline.config import ModelConfig
    from pipeline.modeling.backbones import build_backbone, calibrate_batchnorm
    from pipeline.modeling.features import CALIBRATION_IMAGES

    start = time.perf_counter()
    base = build_backbone(ModelConfig(a.backbone, "none", a.image_size), seed=a.seed)
    calibrate_batchnorm(base, np.zeros((CALIBRATION_IMAGES, a.image_size, a.image_size, 3), np.float32))
    keras.backend.clear_session()
    return time.perf_counter() - start
