"""Decode -> grayscale -> CLAHE -> resize, once per image, cached on disk for every later run."""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.config import PreprocessConfig
from pipeline.data.dicom import DicomError, is_dicom, read_dicom
from pipeline.infra.files import atomic_path


class ImageError(ValueError):
    """An image file could not be decoded; `reason` is the message without the file's name."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """Accept what users have: 8/16-bit, gray, RGB or RGBA; return 8-bit gray."""
    if image.ndim == 3 and image.shape[2] <= 2:  # gray (+ alpha)
        image = image[:, :, 0]
    elif image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    if image.dtype != np.uint8:
        # 16-bit X-rays rarely use the full range (often 12 bits): stretch what is there.
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
    return image


def preprocess_array(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """CLAHE evens out exposure between machines before the image is shrunk to the model's size."""
    gray = to_gray_uint8(image)
    clahe = cv2.createCLAHE(clipLimit=cfg.clahe_clip_limit, tileGridSize=(cfg.clahe_tile_grid,) * 2)
    equalized = clahe.apply(gray)
    return cv2.resize(equalized, (cfg.image_size, cfg.image_size), interpolation=cv2.INTER_AREA)


def decode_bytes(data: bytes, name: str = "image") -> np.ndarray:
    """File bytes -> what OpenCV decodes (JPEG, PNG: 8/16 bit, gray, RGB or RGBA), or for DICOM (by `.dcm`
    name or the DICM marker) 8-bit gray as a viewer shows it; training and serving both decode here."""
    if is_dicom(name, data[:132]):
        try:
            return read_dicom(data)
        except DicomError as err:
            raise ImageError(f"{name}: {err}", reason=str(err)) from None
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None or image.size == 0:
        reason = "cannot be decoded as a JPEG, PNG or DICOM image"
        raise ImageError(f"{name}: {reason}", reason=reason)
    return image


def read_image(path: str | Path) -> np.ndarray:
    return decode_bytes(Path(path).read_bytes(), str(path))


def preprocess_file(path: str | Path, cfg: PreprocessConfig) -> np.ndarray:
    return preprocess_array(read_image(path), cfg)


def to_model_input(gray: np.ndarray) -> np.ndarray:
    """(..., H, W) uint8 gray -> (..., H, W, 3) float32 in 0..255; the model does its own scaling."""
    return np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)


def _cache_key(manifest: pd.DataFrame, cfg: PreprocessConfig) -> str:
    digest = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    digest.update("\n".join(manifest["sha"]).encode())
    return digest.hexdigest()[:20]


def load_images(manifest: pd.DataFrame, cfg: PreprocessConfig, cache_dir: Path,
                progress: bool = True) -> tuple[np.ndarray, dict[str, str]]:
    """Preprocessed images in manifest order, and {path: reason} for those that failed to decode."""
    cache = Path(cache_dir) / "images"
    key = _cache_key(manifest, cfg)
    array_path, failed_path = cache / f"{key}.npy", cache / f"{key}.failed.json"
    if array_path.exists() and failed_path.exists():
        return np.load(array_path), json.loads(failed_path.read_text())

    paths = manifest["path"].tolist()
    images = np.zeros((len(paths), cfg.image_size, cfg.image_size), dtype=np.uint8)
    failed: dict[str, str] = {}

    def work(i: int) -> None:
        try:
            images[i] = preprocess_file(paths[i], cfg)
        except ImageError as err:
            failed[paths[i]] = err.reason or f"cannot be decoded as an image ({err.__class__.__name__})"
        except cv2.error as err:
            failed[paths[i]] = f"cannot be decoded as an image ({err.__class__.__name__})"

    # OpenCV releases the GIL, so threads use every core for decode + CLAHE.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(tqdm(pool.map(work, range(len(paths))), total=len(paths), disable=not progress,
                  desc=f"decode + CLAHE + resize to {cfg.image_size}px", unit="img"))
    cache.mkdir(parents=True, exist_ok=True)
    # Private names, renamed only when complete: a killed run or a full disk never leaves a partial entry.
    way_out = f"free space there or choose another --cache-dir (this entry needs {images.nbytes / 2**20:.0f} MiB)"
    with atomic_path(array_path, way_out) as partial:
        np.save(partial, images)
    try:
        with atomic_path(failed_path, way_out) as partial:
            partial.write_text(json.dumps(failed, indent=1))
    except BaseException:
        array_path.unlink(missing_ok=True)  # an entry is read only with both files: keep none or both
        raise
    return images, failed
