"""Frozen-backbone feature cache: the backbone runs once per image and view, not once per epoch per trial."""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
from filelock import FileLock
from tqdm import tqdm

from pipeline.config import AugmentConfig, ModelConfig, PreprocessConfig
from pipeline.data.augment import image_dataset
from pipeline.data.dataset import Dataset
from pipeline.data.preprocess import to_model_input
from pipeline.infra.files import check_space, disk_full, is_disk_full
from pipeline.modeling.backbones import build_backbone, calibrate_batchnorm, feature_extractor, weights_id

BACKBONE_WEIGHTS = "backbone.weights.h5"
CALIBRATION_IMAGES = 128
CACHE_WAY_OUT = "free space there or choose another --cache-dir"
FORMAT_VERSION = 2  # bump when the way features are computed changes: old entries stop matching


@dataclass
class FeatureSet:
    """Pooled backbone features for train (clean view first, then augmented views) and val,
    plus the backbone's last conv maps of a fixed set of val images, for cheap per-trial Grad-CAM."""
    train_views: np.ndarray  # (views, n_train, dim)
    y_train: np.ndarray
    val: np.ndarray
    y_val: np.ndarray
    cam_maps: np.ndarray  # (k, h, w, channels)
    cam_images: np.ndarray  # (k, size, size) uint8 gray
    cam_labels: np.ndarray
    directory: Path
    key: str
    from_cache: bool

    @property
    def backbone_weights(self) -> Path:
        """The exact backbone the features came from (matters for weights=none: a seeded random start)."""
        return self.directory / BACKBONE_WEIGHTS


# augmentation settings added after caches existed: keyed only when on, so a cache (and the study named
# after its key) made before them is still found when they are off
KEYED_WHEN_ON = ("crop",)


def cache_key(model_cfg: ModelConfig, preprocess_cfg: PreprocessConfig, augment_cfg: AugmentConfig,
              views: int, data_fingerprint: str, seed: int, cam_count: int) -> str:
    augment = {k: v for k, v in asdict(augment_cfg).items() if v or k not in KEYED_WHEN_ON}
    parts = {"version": FORMAT_VERSION, "backbone": model_cfg.backbone, "weights": weights_id(model_cfg.weights),
             "preprocess": asdict(preprocess_cfg), "augment": augment, "views": views,
             "data": data_fingerprint, "seed": seed, "cam_count": cam_count}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def pick_cam_images(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A fixed, balanced set of indices (half per class) so every trial's Grad-CAM grid shows the same films."""
    rng = np.random.default_rng(seed)
    picks = []
    for label in (0, 1):
        idx = np.flatnonzero(labels == label)
        want = count // 2 + (count % 2 if label == 1 else 0)
        picks.extend(sorted(rng.choice(idx, size=min(want, len(idx)), replace=False)))
    return np.array(picks, dtype=np.int64)


def calibrate_on_train(base: keras.Model, x_train: np.ndarray, seed: int) -> None:
    """BatchNorm statistics of a random start from a seeded sample of the training images: the same
    sample when the search builds its cache and when retrain-best rebuilds that backbone."""
    pick = np.random.default_rng(seed).permutation(len(x_train))[:CALIBRATION_IMAGES]
    calibrate_batchnorm(base, to_model_input(x_train[np.sort(pick)]))


def _run(model: keras.Model, images: np.ndarray, batch_size: int, desc: str, progress: bool,
         augment: AugmentConfig | None = None, seed: int = 0) -> np.ndarray:
    if not len(images):  # e.g. --gradcam-images 0
        return np.zeros((0, *model.output.shape[1:]), np.float32)
    ds = image_dataset(images, None, batch_size, augment=augment, seed=seed)
    total = -(-len(images) // batch_size)
    out = [model.predict_on_batch(batch) for batch in tqdm(ds, total=total, desc=desc, unit="batch",
                                                          disable=not progress)]
    return np.concatenate(out).astype(np.float32)


def build_features(dataset: Dataset, model_cfg: ModelConfig, preprocess_cfg: PreprocessConfig,
                   augment_cfg: AugmentConfig, views: int, cache_dir: Path, seed: int = 42,
                   cam_count: int = 8, batch_size: int = 32, progress: bool = True) -> FeatureSet:
    """Load features for this exact (backbone, weights, preprocessing, augmentation, data), or build them."""
    key = cache_key(model_cfg, preprocess_cfg, augment_cfg, views, dataset.fingerprint, seed, cam_count)
    directory = Path(cache_dir) / "features" / key
    _, y_train = dataset.split("train")
    x_val, y_val = dataset.split("val")
    cam_idx = pick_cam_images(y_val, cam_count, seed)
    from_cache = (directory / "features.npz").exists()
    if not from_cache:
        # Several workers may want the same entry: one builds it, the others wait on the lock and
        # then load it. The lock file lives beside the entry, so it works for every process that
        # shares this cache folder (on one machine; a network file system's locks are not trusted).
        directory.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(directory.with_name(key + ".lock"))):
            from_cache = (directory / "features.npz").exists()  # built by another worker meanwhile
            if not from_cache:
                try:
                    _build_entry(directory, dataset, model_cfg, augment_cfg, views, seed, cam_idx, batch_size,
                                 progress)
                except OSError as err:  # the disk filled up meanwhile; the partial entry is already removed
                    if is_disk_full(err):
                        raise disk_full(directory.parent, CACHE_WAY_OUT) from None
                    raise
    with np.load(directory / "features.npz") as stored:
        return FeatureSet(train_views=stored["train_views"], y_train=y_train, val=stored["val"], y_val=y_val,
                          cam_maps=stored["cam_maps"], cam_images=x_val[cam_idx], cam_labels=y_val[cam_idx],
                          directory=directory, key=key, from_cache=from_cache)


def _build_entry(directory: Path, dataset: Dataset, model_cfg: ModelConfig, augment_cfg: AugmentConfig, views: int,
                 seed: int, cam_idx: np.ndarray, batch_size: int, progress: bool) -> None:
    """Compute one entry in a private temporary folder; only a complete entry is renamed to the key's name."""
    x_train, _ = dataset.split("train")
    x_val, _ = dataset.split("val")
    tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".partial-", dir=directory.parent))
    try:
        base = build_backbone(model_cfg, seed=seed)
        if model_cfg.weights == "none":
            calibrate_on_train(base, x_train, seed)
        extractor = feature_extractor(base)
        name = f"{model_cfg.backbone}@{model_cfg.image_size}px"
        train_views = [_run(extractor, x_train, batch_size, f"{name} features: train", progress)]
        for v in range(views):
            train_views.append(_run(extractor, x_train, batch_size, f"{name} features: train view {v + 1}/{views}",
                                    progress, augment=augment_cfg, seed=seed + 1 + v))
        val = _run(extractor, x_val, batch_size, f"{name} features: val", progress)
        cam_maps = _run(base, x_val[cam_idx], batch_size, "Grad-CAM maps", False)
        # h5py writing onto a full disk fails noisily (and again when freed): check the room first
        arrays = sum(a.nbytes for a in (*train_views, val, cam_maps))
        check_space(tmp.parent, base.count_params() * 4 + arrays, CACHE_WAY_OUT)
        base.save_weights(tmp / BACKBONE_WEIGHTS)
        np.savez(tmp / "features.npz", train_views=np.stack(train_views), val=val, cam_maps=cam_maps)
        (tmp / "meta.json").write_text(json.dumps({"backbone": model_cfg.backbone, "weights": model_cfg.weights,
                                                   "image_size": model_cfg.image_size, "views": views,
                                                   "data_fingerprint": dataset.fingerprint}, indent=1))
        shutil.rmtree(directory, ignore_errors=True)  # an incomplete leftover of an older format
        tmp.rename(directory)  # only a complete entry ever carries the key's name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        keras.backend.clear_session()
