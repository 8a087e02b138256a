"""Predict with a registered model: resolve the alias once, then the pyfunc's own preprocessing and
threshold for every file, a predictions.csv, and a Grad-CAM overlay per film at its own resolution."""
from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.config import LIME_SAMPLES
from pipeline.data.dataset import IMAGE_SUFFIXES, is_image_file
from pipeline.data.preprocess import ImageError, to_gray_uint8, to_model_input
from pipeline.explain.gradcam import overlay
from pipeline.explain.lime import agreement, explain_lime, lime_overlay
from pipeline.infra.files import atomic_path, write_bytes
from pipeline.registry.promotion import resolve, version_uri
from pipeline.serving.pyfunc import load, read_path

CHUNK = 32  # films held in memory at once (raw files can be 2-3k px)
CSV_NAME = "predictions.csv"
OUTPUT_WAY_OUT = "free space there or choose another --output"


def write_png(target: Path, image: np.ndarray) -> None:
    """cv2.imwrite only returns False on a full disk (and may leave a partial file): encode, then write whole."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ImageError(f"{target}: the overlay could not be encoded as PNG")
    write_bytes(target, encoded.tobytes(), OUTPUT_WAY_OUT)


@dataclass
class Prediction:
    path: str
    probability: float | None = None
    label: str | None = None
    threshold: float | None = None
    in_distribution: bool | None = None  # False: unlike the training films (the version's OOD detector)
    ood_score: float | None = None  # NaN for a version registered without a detector
    model_version: str | None = None
    overlay: str | None = None
    lime_overlay: str | None = None
    agreement: float | None = None  # IoU of Grad-CAM's top pixels with LIME's superpixels (explain lime/both)
    error: str | None = None


@dataclass
class PredictionRun:
    model_uri: str  # the pinned models:/NAME/VERSION the alias resolved to
    version: str
    threshold: float
    results: list[Prediction]
    csv: Path


def expand_inputs(items: list[str]) -> tuple[list[Path], list[Prediction]]:
    """Files, folders (searched recursively for .jpeg/.jpg/.png/.dcm, and files of any name with the DICOM
    marker) and glob patterns -> image files, in a stable order without duplicates; an item that names
    nothing becomes an error row."""
    found, missing = [], []
    for item in items:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        if not matches:
            missing.append(Prediction(item, error=f"{item}: no such file, folder or matching image"))
        found.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique, missing


def overlay_names(paths: list[Path]) -> list[str]:
    """Unique overlay names from each path relative to the inputs' common folder: test/NORMAL/a.jpeg
    and val/NORMAL/a.jpeg become test__NORMAL__a_gradcam.png and val__NORMAL__a_gradcam.png."""
    if not paths:
        return []
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return ["__".join(_stem(p.relative_to(root)).parts) + "_gradcam.png" for p in paths]


def _stem(path: Path) -> Path:
    """Drop an image suffix only: DICOM names such as 1.2.840.5 and 1.2.840.6 must not both become 1.2.840."""
    return path.with_suffix("") if path.suffix.lower() in IMAGE_SUFFIXES else path


def film_overlay(raw: np.ndarray, cam: np.ndarray, probability: float, label: str) -> np.ndarray:
    """BGR uint8 at the film's own resolution: the heat map resized up to it, and the verdict written on it."""

    film = to_gray_uint8(raw)
    h, w = film.shape[:2]
    rgb = overlay(film, cv2.resize(cam.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR))
    return _write_verdict(np.ascontiguousarray(rgb[:, :, ::-1]), probability, label)


def _write_verdict(image: np.ndarray, probability: float, label: str) -> np.ndarray:
    """The verdict written on an overlay, scaled to the film."""
    h, w = image.shape[:2]
    scale = max(w, h) / 800
    text = f"{label}  p(pneumonia)={probability:.3f}"
    org = (int(12 * scale) + 4, int(36 * scale) + 8)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), max(2, int(6 * scale)), cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, int(2 * scale)),
                cv2.LINE_AA)
    return image


def write_overlays(model, raws: list[np.ndarray], grays: np.ndarray, rows: list[Prediction],
                   targets: list[Path], explain: str = "gradcam", lime_samples: int = LIME_SAMPLES,
                   seed: int = 42) -> None:
    """Explanations of a chunk of films at each film's resolution: Grad-CAM, LIME or both, and with LIME
    the agreement of the two (Grad-CAM is computed either way, since the agreement needs it)."""

    cams = model.gradcam(to_model_input(grays))
    for raw, gray, cam, row, target in zip(raws, grays, cams, rows, targets):
        if explain in ("gradcam", "both"):
            write_png(target, film_overlay(raw, cam, row.probability, row.label))
            row.overlay = str(target)
        if explain in ("lime", "both"):
            lime = explain_lime(model, gray, samples=lime_samples, seed=seed)
            row.agreement = agreement(cam, lime.mask)
            lime_target = target.with_name(target.name.replace("_gradcam.png", "_lime.png"))
            image = np.ascontiguousarray(lime_overlay(to_gray_uint8(raw), lime.mask)[:, :, ::-1])
            write_png(lime_target, _write_verdict(image, row.probability, row.label))
            row.lime_overlay = str(lime_target)


def predict_images(model_uri: str, inputs: list[str], output_dir: Path, explain: str = "gradcam",
                   lime_samples: int = LIME_SAMPLES) -> PredictionRun:
    """One row per image (unreadable ones get an error and the others still run), all from one version."""

    version = resolve(model_uri)  # once: a promotion landing meanwhile cannot mix two versions
    pinned = version_uri(version)
    model = load(pinned)
    paths, results = expand_inputs(inputs)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = overlay_names(paths)
    for start in range(0, len(paths), CHUNK):
        chunk_rows, raws, grays, targets = [], [], [], []
        for path, name in zip(paths[start:start + CHUNK], names[start:start + CHUNK]):
            row = Prediction(str(path), model_version=str(version.version))
            results.append(row)
            try:
                raw = read_path(str(path))
                grays.append(model.gray(raw, str(path)))
            except ImageError as err:
                row.error = str(err)
                continue
            raws.append(raw)
            chunk_rows.append(row)
            targets.append(output_dir / name)
        if not chunk_rows:
            continue
        table = model.output_table(np.stack(grays))
        for row, out in zip(chunk_rows, table.itertuples()):
            row.probability, row.label, row.threshold = float(out.probability), out.label, float(out.threshold)
            row.in_distribution, row.ood_score = bool(out.in_distribution), float(out.ood_score)
        write_overlays(model, raws, np.stack(grays), chunk_rows, targets, explain, lime_samples)
    csv = output_dir / CSV_NAME
    frame = pd.DataFrame([asdict(r) for r in results], columns=list(Prediction.__dataclass_fields__))
    frame.insert(frame.columns.get_loc("model_version"), "model_name", version.name)
    with atomic_path(csv, OUTPUT_WAY_OUT) as partial:  # a full disk leaves no empty or cut-off CSV
        frame.to_csv(partial, index=False)
    return PredictionRun(pinned, str(version.version), model.threshold, results, csv)
