"""Find a chest X-ray dataset on disk, check its files, split it by patient and fingerprint it."""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils.class_weight import compute_class_weight

from pipeline.config import DataConfig, PipelineError, PreprocessConfig
from pipeline.data import dicom
from pipeline.data.strays import unused_entries

log = logging.getLogger(__name__)

CLASSES = ("NORMAL", "PNEUMONIA")  # label 0, label 1
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", *dicom.DICOM_SUFFIXES}  # and any file with the DICM marker
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
# Kermany file names carry the patient: person123_bacteria_45, IM-0115-0001, NORMAL2-IM-0427-0001.
_PATIENT_PATTERNS = (re.compile(r"^(person\d+)_", re.I), re.compile(r"^((?:NORMAL\d*-)?IM-\d+)-", re.I))


class DatasetError(PipelineError, ValueError):
    """The dataset cannot be used as it is; the message names the folder or file."""


@dataclass
class Dataset:
    """What a run saw: one row per used image, the decoded images in the same order, what was skipped."""
    manifest: pd.DataFrame
    images: np.ndarray  # (n, size, size) uint8, CLAHE applied
    skipped: list[dict] = field(default_factory=list)
    fingerprint: str = ""

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = (self.manifest["split"] == name).to_numpy()
        return self.images[rows], self.manifest.loc[rows, "label"].to_numpy(dtype=np.int64)

    def counts(self) -> dict[str, dict[str, int]]:
        return count_by_split(self.manifest)


def count_by_split(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    return {split: {cls: int(((manifest["split"] == split) & (manifest["class_name"] == cls)).sum())
                    for cls in CLASSES}
            for split in SPLITS if (manifest["split"] == split).any()}


def patient_id(filename: str) -> str:
    """Patient id from a Kermany-style file name; the file stem when the name has none."""
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(filename)
        if match:
            return match.group(1).upper()
    return Path(filename).stem.upper()


def _child_dir(parent: Path, name: str) -> Path | None:
    """Case-insensitive lookup, because copies of the set differ (train/NORMAL vs Train/normal)."""
    if not parent.is_dir():
        return None
    matches = [p for p in _list_folder(parent) if p.is_dir() and p.name.lower() == name.lower()]
    return matches[0] if matches else None


def _entry_problem(path: Path) -> str | None:
    """Why an entry of a class folder is not an image we can use, or None; every skipped entry gets a reason."""
    if path.name.startswith("."):
        return "hidden entry (name starts with '.')"
    try:
        info = path.stat()  # follows links: a link to a good image is used like the image
    except FileNotFoundError:
        return f"dangling symbolic link (its target {os.readlink(path)} does not exist)"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symbolic link loop (the link points back to itself)"
        return f"cannot be read ({err.strerror})"
    if stat.S_ISDIR(info.st_mode):
        return "a folder, not an image file (images must sit directly in the class folder)"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (device, pipe or socket)"
    if info.st_size == 0:
        return "empty file (0 bytes)" if path.suffix.lower() in IMAGE_SUFFIXES else _not_an_image(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(dicom.MAGIC_OFFSET + len(dicom.MAGIC))
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if dicom.is_dicom(path.name, head):  # the header says whether it is one film, before any pixel is decoded
        return dicom.file_problem(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return _not_an_image(path)
    if not any(head.startswith(magic) for magic in _MAGIC):
        return "not a readable JPEG or PNG (bad file header)"
    return None


def is_image_file(path: Path) -> bool:
    """An image by its name, or a DICOM file by its marker whatever its name (archives often use none)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            return dicom.has_magic(handle.read(dicom.MAGIC_OFFSET + len(dicom.MAGIC)))
    except OSError:
        return False


def _not_an_image(path: Path) -> str:
    return (f"not an image file (suffix {path.suffix or 'none'!r}; expected .jpeg, .jpg, .png or .dcm, "
            "or a DICOM file with the DICM marker at byte 128)")


_file_problem = _entry_problem  # the older name, still imported by evaluate.py


def usable_images(folder: Path) -> tuple[list[Path], list[dict]]:
    """The usable image files of one class folder, and {path, reason} for every other entry in it."""
    paths, skipped = [], []
    for path in _list_folder(folder):
        problem = _entry_problem(path)
        if problem:
            log.warning("skipping %s: %s", path, problem)
            skipped.append({"path": str(path), "reason": problem})
        else:
            paths.append(path)
    return paths, skipped


def _list_folder(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        raise DatasetError(f"{folder} cannot be listed ({err.strerror}): check its permissions") from None


def _content_hash(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=12).hexdigest()


def scan(data_dir: Path) -> tuple[pd.DataFrame, list[dict]]:
    """List candidate images of every split and class; files that cannot be images are skipped."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"dataset folder {data_dir} does not exist")
    rows, skipped = [], []
    for split in SPLITS:
        split_dir = _child_dir(data_dir, split)
        if split_dir is None:
            if split == "val":
                continue
            raise DatasetError(f"{data_dir} has no '{split}/' folder (expected train/, test/ and optional val/)")
        for label, cls in enumerate(CLASSES):
            class_dir = _child_dir(split_dir, cls)
            if class_dir is None:
                raise DatasetError(f"{split_dir} has no '{cls}/' folder (expected {' and '.join(CLASSES)})")
            paths, skipped_here = usable_images(class_dir)
            skipped.extend(skipped_here)
            for path in paths:
                rows.append({"path": str(path), "label": label, "class_name": cls, "source_split": split,
                             "patient_id": patient_id(path.name), "sha": _content_hash(path)})
    for item in unused_entries(data_dir, SPLITS, CLASSES):  # data-check lists them too
        log.warning("not used: %s: %s", item["path"], item["reason"])
    manifest = pd.DataFrame(rows, columns=["path", "label", "class_name", "source_split", "patient_id", "sha"])
    _require_both_classes(manifest, data_dir, ("train", "test"))
    return manifest, skipped


def _require_both_classes(manifest: pd.DataFrame, data_dir: Path, splits, column: str = "source_split") -> None:
    for split in splits:
        part = manifest[manifest[column] == split]
        if part.empty:
            raise DatasetError(f"split '{split}' of {data_dir} has no usable images")
        missing = [cls for cls in CLASSES if not (part["class_name"] == cls).any()]
        if missing:
            raise DatasetError(f"split '{split}' of {data_dir} has only one class: no usable "
                               f"{' or '.join(missing)} images, and a classifier needs both")


def assign_splits(manifest: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Use val/ when it is big enough; otherwise carve a patient-grouped, stratified val out of train."""
    out = manifest.copy()
    out["split"] = out["source_split"]
    if (out["split"] == "val").sum() >= max(cfg.min_val_images, 1):
        return out
    pool = out["split"].isin(["train", "val"]).to_numpy()
    part = out[pool]
    n_splits = max(2, round(1 / cfg.val_fraction))
    if part["patient_id"].nunique() < n_splits:
        raise DatasetError(f"train split has {part['patient_id'].nunique()} patients; "
                           f"need at least {n_splits} to carve a validation split of {cfg.val_fraction:.0%}")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=cfg.seed)
    _, val_idx = next(folds.split(np.zeros(len(part)), part["label"], groups=part["patient_id"]))
    split = np.array(["train"] * len(part), dtype=object)
    split[val_idx] = "val"
    out.loc[pool, "split"] = split
    return out


def limit_per_class(manifest: pd.DataFrame, max_per_class: int | None, seed: int) -> pd.DataFrame:
    """A deterministic subset of at most max_per_class images per (split, class), for smoke runs."""
    if max_per_class is None:
        return manifest
    parts = [group.sample(n=min(len(group), max_per_class), random_state=seed)
             for _, group in manifest.groupby(["split", "class_name"], sort=True)]
    return pd.concat(parts).sort_index()


def fingerprint(manifest: pd.DataFrame) -> str:
    """Short hash of which files (by content), labels and splits a run used."""
    digest = hashlib.sha256()
    for row in manifest.sort_values("path").itertuples():
        digest.update(f"{Path(row.path).name}|{row.sha}|{row.label}|{row.split}\n".encode())
    return digest.hexdigest()[:16]


def load_dataset(cfg: DataConfig, preprocess_cfg: PreprocessConfig, progress: bool = True) -> Dataset:
    """Discover, split, subset, decode (cached) and fingerprint: everything a run needs from disk."""
    from pipeline.data.preprocess import load_images  # the image layer sits below this one

    manifest, skipped = scan(cfg.data_dir)
    manifest = limit_per_class(assign_splits(manifest, cfg), cfg.max_per_class, cfg.seed)
    manifest = manifest.sort_values(["split", "path"]).reset_index(drop=True)
    images, failed = load_images(manifest, preprocess_cfg, cfg.cache_dir, progress=progress)
    if failed:
        for path, reason in failed.items():
            log.warning("skipping %s: %s", path, reason)
            skipped.append({"path": path, "reason": reason})
        keep = ~manifest["path"].isin(failed).to_numpy()
        manifest, images = manifest[keep].reset_index(drop=True), images[keep]
    _require_both_classes(manifest, cfg.data_dir, ("train", "val", "test"), column="split")
    return Dataset(manifest=manifest, images=images, skipped=skipped, fingerprint=fingerprint(manifest))


def shared_patient_ids(manifest: pd.DataFrame) -> list[str]:
    """Patient ids found in both train/val and test: the folders are trusted, but a user should know."""
    test = set(manifest.loc[manifest["split"] == "test", "patient_id"])
    return sorted(test & set(manifest.loc[manifest["split"] != "test", "patient_id"]))


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """'Balanced' weights so the minority class (NORMAL in Kermany) is not drowned out."""
    classes = np.array([0, 1])
    weights = compute_class_weight("balanced", classes=classes, y=np.asarray(labels))
    return {int(c): float(w) for c, w in zip(classes, weights)}
