"""DICOM twins of real films: does every kind of twin reach the model as the film itself, and what does reading
DICOM cost beside JPEG? Prints one row per twin kind (films, identical after preprocessing, max pixel difference,
median read time).

    .venv/bin/python benchmarks/dicom_read.py --films 50
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import PreprocessConfig  # noqa: E402
from pipeline.data.preprocess import preprocess_array, read_image, to_gray_uint8  # noqa: E402
from tests.helpers import DICOM_TWINS, write_dicom  # noqa: E402


def timed_read(path: Path) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    image = read_image(path)
    return image, (time.perf_counter() - start) * 1000


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "chest_xray"))
    args.add_argument("--films", type=int, default=50, help="films per class from train/ (default: %(default)s)")
    args.add_argument("--image-size", type=int, default=224)
    a = args.parse_args()
    cfg = PreprocessConfig(image_size=a.image_size)
    train = Path(a.data_dir) / "train"
    films = sorted((train / "NORMAL").glob("*.jpeg"))[:a.films] + sorted((train / "PNEUMONIA").glob("*.jpeg"))[:a.films]
    rows = {kind: {"same": 0, "max": 0, "ms": []} for kind in ["jpeg (the film)", *sorted(DICOM_TWINS)]}
    with tempfile.TemporaryDirectory() as tmp:
        for i, film in enumerate(films):
            raw, ms = timed_read(film)
            gray = to_gray_uint8(raw)
            expected = preprocess_array(gray, cfg)
            rows["jpeg (the film)"]["ms"].append(ms)
            rows["jpeg (the film)"]["same"] += 1
            for kind, (make, keywords) in DICOM_TWINS.items():
                path = write_dicom(Path(tmp) / f"{kind}_{i}.dcm", make(gray), **keywords)
                image, ms = timed_read(path)
                diff = int(np.abs(preprocess_array(image, cfg).astype(int) - expected).max())
                rows[kind]["ms"].append(ms)
                rows[kind]["same"] += diff == 0
                rows[kind]["max"] = max(rows[kind]["max"], diff)
    print(f"{len(films)} real training films from {train}, preprocessed to {a.image_size} px")
    print(f"{'file':30s} {'identical':>10s} {'max |diff|':>10s} {'read ms (median)':>17s}")
    for kind, row in rows.items():
        print(f"{kind:30s} {row['same']:>4d}/{len(films):<5d} {row['max']:>10d} {statistics.median(row['ms']):>17.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
