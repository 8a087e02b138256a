"""Share of films each out-of-distribution detector flags, for one registered version, with 95% Wilson intervals.

Every detector is fitted on the version's TRAINING films only (the same patient-grouped split its
search used, rebuilt from the search run's params) and thresholded to flag --flag-share of its
VALIDATION films; the version's own stored detector is the first column. Measured, never fitted on:
the official test split (target <= 5% flagged), photographs from scikit-image, blank and noise images,
inverted and 90-degree-rotated test films, and the adult films of --external (target >= 90% flagged).

    .venv/bin/python benchmarks/ood_guard.py --model models:/NAME/VERSION \
        --data-dir ../shared/data/chest_xray --external ../shared/data/adult_external
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import common
import cv2
import mlflow
import numpy as np
from scipy.stats import binomtest

from pipeline.config import DataConfig, PreprocessConfig, from_params
from pipeline.data.dataset import IMAGE_SUFFIXES, load_dataset
from pipeline.data.preprocess import ImageError
from pipeline.evaluate.testset import labelled_manifest
from pipeline.infra import tracking
from pipeline.modeling.ood import DETECTORS, fit_detector
from pipeline.registry.promotion import resolve, version_uri
from pipeline.serving.pyfunc import load, read_path
from pipeline.train.guards import probabilities_and_features

PHOTOS = ("astronaut", "brick", "camera", "cat", "coffee", "coins", "colorwheel", "grass", "gravel", "horse",
          "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "rocket", "text", "clock",
          "checkerboard", "retina", "microaneurysms", "binary_blobs")


def wilson(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def photographs() -> list[np.ndarray]:
    """scikit-image's bundled pictures (the ones that need a download are skipped offline)."""
    from skimage import data

    out = []
    for name in PHOTOS:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # not bundled in this version, or needs pooch and the network
            continue
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 3:
            image = cv2.cvtColor(image[..., :3].astype(np.uint8), cv2.COLOR_RGB2BGR)
        out.append(image.astype(np.uint8))
    return out


def synthetic_oddities(size: int, seed: int) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    blank = [np.full((size, size), v, np.uint8) for v in np.linspace(0, 255, 16).astype(int)]
    noise = [rng.integers(0, 256, (size, size)).astype(np.uint8) for _ in range(16)]
    noise += [np.clip(rng.normal(128, s, (size, size)), 0, 255).astype(np.uint8) for s in np.linspace(10, 80, 16)]
    return {"blank": blank, "noise": noise}


def grays_of(model, raws) -> np.ndarray:
    out = []
    for raw in raws:
        try:
            out.append(model.gray(raw))
        except ImageError:
            continue
    return np.asarray(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="models:/NAME/VERSION (or @alias)")
    p.add_argument("--data-dir", required=True, help="the data-set root the version was trained on")
    p.add_argument("--external", required=True, help="folder of films from elsewhere (searched recursively)")
    p.add_argument("--max-train", type=int, default=1500, help="training films the refitted detectors see")
    p.add_argument("--transformed", type=int, default=200, help="test films inverted / rotated")
    p.add_argument("--flag-share", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    start = time.time()
    tracking.connect()
    version = resolve(a.model)
    model = load(version_uri(version))
    search = mlflow.get_run(mlflow.get_run(version.run_id).data.tags["search_run_id"])
    data_cfg = from_params(DataConfig, search.data.params, data_dir=Path(a.data_dir),
                           cache_dir=common.tempdir("ood-cache-"))
    dataset = load_dataset(data_cfg, from_params(PreprocessConfig, search.data.params), progress=False)
    common.header("out-of-distribution guard", a, version=f"{version.name} v{version.version}",
                  served=model.ood.name if model.ood else "none")

    x_train, _ = dataset.split("train")
    x_val, _ = dataset.split("val")
    pick = np.sort(np.random.default_rng(a.seed).permutation(len(x_train))[:a.max_train])
    x_train = x_train[pick]
    _, f_train = probabilities_and_features(model.model, x_train)
    _, f_val = probabilities_and_features(model.model, x_val)
    detectors = {d: fit_detector(d, f_train, x_train, f_val, x_val, a.flag_share) for d in DETECTORS}

    test = labelled_manifest(Path(a.data_dir) / "test")
    test_raws = [read_path(path) for path in test["path"]]
    rng = np.random.default_rng(a.seed)
    some = [test_raws[i] for i in rng.permutation(len(test_raws))[:a.transformed]]
    external = sorted(q for q in Path(a.external).rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
    odd = synthetic_oddities(256, a.seed)
    sets = {"val (fit threshold)": x_val, "test (official)": grays_of(model, test_raws),
            "photographs (skimage)": grays_of(model, photographs()), "blank": grays_of(model, odd["blank"]),
            "noise": grays_of(model, odd["noise"]), "inverted test films": grays_of(model, [255 - r for r in some]),
            "rotated 90 deg test films": grays_of(model, [np.ascontiguousarray(np.rot90(r)) for r in some]),
            "adult films (external)": grays_of(model, [read_path(str(q)) for q in external])}

    rows = []
    for name, grays in sets.items():
        _, features = probabilities_and_features(model.model, grays)
        row = {"set": name, "n": len(grays)}
        columns = ([("served:" + model.ood.name, model.ood)] if model.ood else []) + list(detectors.items())
        for label, det in columns:
            k = int(det.flags(det.score(features, grays)).sum())
            low, high = wilson(k, len(grays))
            row[label] = f"{k / len(grays):.1%} [{low:.1%}, {high:.1%}]"
        rows.append(row)
    common.table(rows, "share flagged out of distribution [95% Wilson interval]; targets: test <= 5%, adult >= 90%")
    print(f"\ndetectors refitted on {len(x_train)} training films, thresholds on {len(x_val)} val films "
          f"({a.flag_share:.0%} flagged); adult films never used for fitting. {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
