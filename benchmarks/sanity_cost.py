"""Seconds the explanation sanity checks (pipeline.explain.sanity) add to retrain-best, on real test films.

The classifier is a seeded random start (weights=none, BatchNorm calibrated on real train films, an
untrained head), as in explain_cost.py: ImageNet weights cannot be downloaded here. Its figures mean
nothing medically; the seconds are what a trained model of the same architecture and size costs.
"""
from __future__ import annotations

import time

import common
import numpy as np
from explain_cost import films, random_classifier

from pipeline.config import PreprocessConfig, RetrainConfig
from pipeline.data.preprocess import preprocess_file, to_model_input
from pipeline.explain.gradcam import gradcam
from pipeline.explain.sanity import sanity_checks
from pipeline.modeling.backbones import conv_layer_name

TARGET_SECONDS = 60.0  # "well under a minute" at the default --sanity-images on 2 cores


def main() -> None:
    p = common.parser(__doc__, per_class=None)
    p.add_argument("--images", type=int, default=RetrainConfig().sanity_images, help="test films (--sanity-images)")
    a = p.parse_args()
    common.header("explanation sanity checks: cost", a, model="RANDOM weights (untrained head), see docstring")
    pre = PreprocessConfig(a.image_size)
    calibration = np.stack([preprocess_file(f, pre) for f in films(a.data_dir, "train", 32, a.seed)])
    model = random_classifier(a, calibration)
    layer = conv_layer_name(model)
    paths = films(a.data_dir, "test", a.images, a.seed)
    grays = np.stack([preprocess_file(f, pre) for f in paths])
    labels = np.array([int("PNEUMONIA" in f) for f in paths])
    gradcam(model, to_model_input(grays[:1]), layer)  # warm-up: retrain-best has traced the model already
    start, cpu = time.perf_counter(), time.process_time()
    figures = sanity_checks(model, layer, grays, labels, a.images, a.seed)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    for name, value in figures.items():
        print(f"  {name:40s} {value:.4f}")
    print(f"\n{a.images} films, {a.backbone} at {a.image_size} px: {wall:.1f} s wall, {cpu:.1f} s CPU time "
          f"(on 2 idle cores about {cpu / 2:.0f}-{cpu:.0f} s wall); target < {TARGET_SECONDS:.0f} s: "
          f"{'met' if wall < TARGET_SECONDS else 'NOT met at this load'} (wall), "
          f"{'met' if cpu / 2 < TARGET_SECONDS else 'NOT met'} (CPU time / 2)")


if __name__ == "__main__":
    main()
